#include "system_info.h"

#include "error.h"
#include "nemotron-asr.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

namespace nemotron {

#ifdef __linux__
static const int kMaxCpus = 4096; // CPUs an affinity mask can name here
#endif

namespace {

std::vector<std::string> split(const std::string & s, char separator) {
    std::vector<std::string> out;
    std::string part;
    std::istringstream in(s);
    while (std::getline(in, part, separator)) out.push_back(part);
    return out;
}

// mountinfo writes spaces and other bytes of paths as octal escapes ("\040").
std::string unescape(const std::string & s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            const std::string digits = s.substr(i + 1, 3);
            if (digits.find_first_not_of("01234567") == std::string::npos) {
                out += char(std::stoi(digits, nullptr, 8));
                i += 3;
                continue;
            }
        }
        out += s[i];
    }
    return out;
}

// The CPUs a cgroup directory allows: its quota over its period, or 0 for no limit.
double cgroup_dir_limit(const std::string & dir, bool v2) {
    long long quota = -1, period = 0;
    if (v2) {
        std::ifstream f(dir + "/cpu.max");
        std::string max;
        if (!(f >> max >> period) || max == "max") return 0;
        quota = std::atoll(max.c_str());
    } else {
        std::ifstream q(dir + "/cpu.cfs_quota_us"), p(dir + "/cpu.cfs_period_us");
        if (!(q >> quota) || !(p >> period)) return 0;
    }
    return quota > 0 && period > 0 ? double(quota) / double(period) : 0;
}

} // namespace

double cgroup_cpu_limit(const std::string & root) {
    // The process's cgroup per hierarchy: "0::/path" (v2) and "N:cpu,cpuacct:/path" (v1).
    std::string v2_path, v1_path;
    bool has_v2 = false, has_v1 = false;
    {
        std::ifstream f(root + "/proc/self/cgroup");
        std::string line;
        while (std::getline(f, line)) {
            const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
            if (b == std::string::npos) continue;
            const std::string id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
            if (id == "0" && controllers.empty()) {
                v2_path = path;
                has_v2 = true;
            } else {
                for (const std::string & c : split(controllers, ',')) {
                    if (c == "cpu") {
                        v1_path = path;
                        has_v1 = true;
                    }
                }
            }
        }
    }
    double limit = 0;
    std::ifstream f(root + "/proc/self/mountinfo");
    std::string line;
    while (std::getline(f, line)) {
        // "id parent major:minor root mount-point options [optional...] - fstype source super-options"
        const size_t dash = line.find(" - ");
        if (dash == std::string::npos) continue;
        const std::vector<std::string> pre = split(line.substr(0, dash), ' '), post = split(line.substr(dash + 3), ' ');
        if (pre.size() < 5 || post.size() < 3) continue;
        bool v2 = false;
        std::string path;
        if (post[0] == "cgroup2" && has_v2) {
            v2 = true;
            path = v2_path;
        } else if (post[0] == "cgroup" && has_v1) {
            const std::vector<std::string> options = split(post[2], ',');
            if (std::find(options.begin(), options.end(), "cpu") == options.end()) continue;
            path = v1_path;
        } else {
            continue;
        }
        const std::string mount_root = unescape(pre[3]), mount_point = root + unescape(pre[4]);
        // The cgroup's directory under the mount; where the mount shows only a part of the tree
        // (a container), the part the process is in.
        const bool under_root = mount_root == "/" || path.compare(0, mount_root.size(), mount_root) == 0;
        const std::string relative = mount_root == "/" ? path : under_root ? path.substr(mount_root.size()) : "";
        // Every level up to the mount limits the process: the tightest counts.
        std::string dir = mount_point + (relative == "/" ? "" : relative);
        while (true) {
            const double here = cgroup_dir_limit(dir, v2);
            if (here > 0 && (limit == 0 || here < limit)) limit = here;
            if (dir.size() <= mount_point.size()) break;
            dir = dir.substr(0, dir.rfind('/'));
        }
    }
    return limit;
}

int usable_core_count() {
    const unsigned n_logical = std::max(1u, std::thread::hardware_concurrency());
    int cores = int(n_logical);
#ifdef __linux__
    // Hyper-threads share a core's arithmetic units, so ggml runs best with one thread per
    // physical core: count the (package, core) pairs of the CPUs this process may run on.
    cpu_set_t * set = CPU_ALLOC(kMaxCpus);
    const size_t size = CPU_ALLOC_SIZE(kMaxCpus);
    if (set != nullptr && sched_getaffinity(0, size, set) == 0) {
        std::set<std::pair<int, int>> physical;
        int allowed = 0;
        bool topology = true;
        for (int cpu = 0; cpu < kMaxCpus; ++cpu) {
            if (!CPU_ISSET_S(cpu, size, set)) continue;
            ++allowed;
            const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
            std::ifstream pkg(dir + "physical_package_id"), core(dir + "core_id");
            int p = -1, c = -1;
            if (!(pkg >> p) || !(core >> c)) topology = false;
            physical.insert({p, c});
        }
        if (allowed > 0) cores = topology ? int(physical.size()) : allowed;
    }
    if (set != nullptr) CPU_FREE(set);
#endif
    const double quota = cgroup_cpu_limit("");
    if (quota > 0) cores = std::min(cores, int(std::ceil(quota)));
    return std::max(cores, 1);
}

static std::string device_list() {
    std::string s;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        s += (i ? ", " : "") + std::string(ggml_backend_dev_name(ggml_backend_dev_get(i)));
    }
    return s.empty() ? "none" : s;
}

ggml_backend_dev_t select_device(int backend_kind, int gpu_index) {
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
            fail(NEMOTRON_ERR_BACKEND, "there is no GPU %d: this build found %zu GPU device(s) (devices: %s)", gpu_index,
                 gpus.size(), device_list().c_str());
        default:
            fail(NEMOTRON_ERR_INVALID_ARG, "unknown backend kind %d", backend_kind);
    }
    fail(NEMOTRON_ERR_BACKEND, "no CPU device was found (devices: %s)", device_list().c_str());
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
        std::string s = std::string("nemotron-asr ") + nemotron_version() + " | ggml " + ggml_version() + " | backends: ";
        for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
            s += (i ? ", " : "") + std::string(ggml_backend_reg_name(ggml_backend_reg_get(i)));
        }
        s += " | devices: ";
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            s += (i ? ", " : "") + std::string(ggml_backend_dev_name(dev)) + " (" + ggml_backend_dev_description(dev) + ")";
        }
        s += " | usable cores: " + std::to_string(usable_core_count());
        s += " | CPU: " + cpu_features_text();
        return s;
    }();
    return text;
}

} // namespace nemotron
