#include "system_info.h"

#include "cpu_budget.h"
#include "error.h"
#include "nemotron-asr.h"

#include "ggml-rpc.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace nemotron {

static std::string device_list() {
    std::string s;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        s += (i ? ", " : "") + std::string(ggml_backend_dev_name(ggml_backend_dev_get(i)));
    }
    return s.empty() ? "none" : s;
}

static std::string backend_list() {
    std::string s;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        s += (i ? ", " : "") + std::string(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    return s;
}

// ggml's RPC backend, reached through the registry: the engine links only ggml's core libraries,
// and a build without RPC simply has no such entry.
template <class F>
static F * rpc_function(const char * name) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    void * f = reg != nullptr ? ggml_backend_reg_get_proc_address(reg, name) : nullptr;
    if (f == nullptr) {
        fail(NEMOTRON_ERR_BACKEND, "this build has no RPC backend (backends: %s); build ggml-python with "
             "CMAKE_ARGS=\"-DGGML_RPC=on\"", backend_list().c_str());
    }
    return reinterpret_cast<F *>(f);
}

static void check_endpoint(const char * endpoint, const char * what) {
    if (endpoint == nullptr || std::strchr(endpoint, ':') == nullptr) {
        fail(NEMOTRON_ERR_INVALID_ARG, "%s needs an endpoint \"host:port\", not \"%s\"", what,
             endpoint != nullptr ? endpoint : "(null)");
    }
}

static ggml_backend_dev_t rpc_device(const char * endpoint, int index) {
    check_endpoint(endpoint, "an RPC device");
    ggml_backend_reg_t server = rpc_function<decltype(ggml_backend_rpc_add_server)>("ggml_backend_rpc_add_server")(endpoint);
    if (server == nullptr) fail(NEMOTRON_ERR_BACKEND, "no ggml RPC server answers at %s", endpoint);
    const size_t n = ggml_backend_reg_dev_count(server);
    if (index < 0 || size_t(index) >= n) {
        fail(NEMOTRON_ERR_BACKEND, "the RPC server at %s has no device %d (it has %zu)", endpoint, index, n);
    }
    return ggml_backend_reg_dev_get(server, size_t(index));
}

ggml_backend_dev_t select_device(int backend_kind, int gpu_index, const char * rpc_endpoint) {
    if (backend_kind == NEMOTRON_BACKEND_RPC) return rpc_device(rpc_endpoint, gpu_index);
    std::vector<ggml_backend_dev_t> gpus;
    ggml_backend_dev_t cpu = nullptr;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        const enum ggml_backend_dev_type t = ggml_backend_dev_type(dev);
        if (t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            gpus.push_back(dev);
        } else if (t == GGML_BACKEND_DEVICE_TYPE_CPU && cpu == nullptr) {
            cpu = dev;
        }
    }
    switch (backend_kind) {
        case NEMOTRON_BACKEND_AUTO:
            if (!gpus.empty()) return gpus[0];
            if (cpu != nullptr) return cpu;
            break;
        case NEMOTRON_BACKEND_CPU:
            if (cpu != nullptr) return cpu;
            break;
        case NEMOTRON_BACKEND_GPU:
            if (gpu_index >= 0 && size_t(gpu_index) < gpus.size()) return gpus[size_t(gpu_index)];
            fail(NEMOTRON_ERR_BACKEND, "there is no GPU %d: this build found %zu GPU device(s) (backends built: %s; devices: %s)",
                 gpu_index, gpus.size(), backend_list().c_str(), device_list().c_str());
        default:
            fail(NEMOTRON_ERR_INVALID_ARG, "unknown backend kind %d", backend_kind);
    }
    fail(NEMOTRON_ERR_BACKEND, "no CPU device was found (devices: %s)", device_list().c_str());
}

void serve_rpc(const char * endpoint, ggml_backend_dev_t device, int n_threads) {
    check_endpoint(endpoint, "the RPC server");
    auto start = rpc_function<decltype(ggml_backend_rpc_start_server)>("ggml_backend_rpc_start_server");
    start(endpoint, nullptr, size_t(n_threads), 1, &device); // returns only when it cannot serve
    fail(NEMOTRON_ERR_BACKEND, "the RPC server cannot listen on %s", endpoint);
}

ggml_backend_t start_backend(ggml_backend_dev_t device, int n_threads) {
    ggml_backend_t backend = ggml_backend_dev_init(device, nullptr);
    if (backend == nullptr) fail(NEMOTRON_ERR_BACKEND, "cannot start the %s backend", ggml_backend_dev_name(device));
    auto set_n_threads = reinterpret_cast<ggml_backend_set_n_threads_t>(
        ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(device), "ggml_backend_set_n_threads"));
    if (set_n_threads != nullptr) set_n_threads(backend, n_threads);
    return backend;
}

const std::string & cpu_features_text() {
    static const std::string text = [] {
        std::string s;
        ggml_backend_reg_t reg = ggml_backend_reg_by_name("CPU");
        if (reg == nullptr) return s;
        auto get_features = reinterpret_cast<ggml_backend_get_features_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
        if (get_features == nullptr) return s;
        for (const ggml_backend_feature * f = get_features(reg); f != nullptr && f->name != nullptr; ++f) {
            s += (s.empty() ? "" : " | ") + std::string(f->name) + " = " + f->value;
        }
        return s;
    }();
    return text;
}

const std::string & system_info_text() {
    static const std::string text = [] {
        std::string s = std::string("nemotron-asr ") + nemotron_version() + " | ggml " + ggml_version() +
                        " | backends: " + backend_list() + " | devices: ";
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            size_t free = 0, total = 0;
            ggml_backend_dev_memory(dev, &free, &total);
            char memory[64];
            std::snprintf(memory, sizeof memory, ", %.1f of %.1f GiB free", double(free) / (1 << 30), double(total) / (1 << 30));
            s += (i ? ", " : "") + std::string(ggml_backend_dev_name(dev)) + " (" + ggml_backend_dev_description(dev) + memory + ")";
        }
        s += " | usable cores: " + std::to_string(usable_core_count());
        s += " | CPU: " + cpu_features_text();
        return s;
    }();
    return text;
}

} // namespace nemotron
