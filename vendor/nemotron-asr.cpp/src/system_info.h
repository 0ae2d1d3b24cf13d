// What was built and what was found: ggml backends, devices, CPU features, core count.
#pragma once

#include "ggml-backend.h"

#include <string>

namespace nemotron {

// The device a load asks for, or an error naming what exists. With NEMOTRON_BACKEND_RPC, device
// `gpu_index` of the RPC server at `rpc_endpoint`.
ggml_backend_dev_t select_device(int backend_kind, int gpu_index, const char * rpc_endpoint);

// Serves `device` over ggml's RPC protocol at `endpoint` until the process ends; throws if it cannot.
void serve_rpc(const char * endpoint, ggml_backend_dev_t device, int n_threads);

// A backend on `device` computing with n_threads (where the backend has threads).
ggml_backend_t start_backend(ggml_backend_dev_t device, int n_threads);

const std::string & cpu_features_text();
const std::string & system_info_text();

} // namespace nemotron
