// What was built and what was found: ggml backends, devices, CPU features, core count.
#pragma once

#include "ggml-backend.h"

#include <string>

namespace nemotron {

// The physical cores this process may use: those of the CPUs in its affinity mask, at most
// its cgroup's CPU quota rounded up (containers); at least 1.
int usable_core_count();

// The CPUs the cgroups of this process allow (quota / period, the tightest of every level of
// the v2 or v1 cpu hierarchy), or 0 without a limit. `root` prefixes /proc and the mount points
// (tests give a directory that stands in for them; the engine gives "").
double cgroup_cpu_limit(const std::string & root);

// The device a load asks for, or an error naming what exists.
ggml_backend_dev_t select_device(int backend_kind, int gpu_index);

// A backend on `device` computing with n_threads (where the backend has threads).
ggml_backend_t start_backend(ggml_backend_dev_t device, int n_threads);

const std::string & cpu_features_text();
const std::string & system_info_text();

} // namespace nemotron
