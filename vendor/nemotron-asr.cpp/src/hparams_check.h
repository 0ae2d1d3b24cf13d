// What the engine runs: one table of checks on the hyperparameters, applied by the loader to
// every file and offered to converters through nemotron_hparams_check.
#pragma once

#include "nemotron-asr.h"

namespace nemotron {

// Fails with NEMOTRON_ERR_UNSUPPORTED (a feature the engine does not run) or
// NEMOTRON_ERR_INVALID_MODEL (values that contradict each other), naming every problem.
void check_hparams(const nemotron_hparams & hp);

} // namespace nemotron
