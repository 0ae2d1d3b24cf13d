// Messages of the engine, and of ggml while an engine call runs, to the callback set with
// nemotron_log_set (by default warnings and errors to stderr), one whole line at a time.
//
// ggml has one logger per process. The engine does not take it over: it puts a router in front
// of whatever logger was installed before it, which forwards every message made outside an
// engine call to that logger unchanged, so other users of ggml in the process (ggml-python, a
// llama.cpp binding) log as they did.
#pragma once

#include "nemotron-asr.h"

namespace nemotron {

void log(nemotron_log_level level, const char * fmt, ...) __attribute__((format(printf, 2, 3)));

// Marks this thread as running an engine call for its lifetime: ggml's messages made on the
// thread meanwhile are the engine's.
class log_scope {
public:
    log_scope();
    ~log_scope();
    log_scope(const log_scope &) = delete;
    log_scope & operator=(const log_scope &) = delete;
};

} // namespace nemotron
