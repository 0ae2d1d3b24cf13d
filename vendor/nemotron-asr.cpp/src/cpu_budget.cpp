#include "cpu_budget.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#ifdef __linux__
#include <dirent.h>
#include <sched.h>
#include <unistd.h>
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

int threads_for_load(int n, int cpus, int running, int own) {
    // Our own running tasks beyond the caller and its team are load like any other process's.
    const int others = std::max(0, running - 1 - std::min(std::max(own - 1, 0), n - 1));
    return std::max(1, std::min(n, cpus - others));
}

#ifdef __linux__
// The threads for this instant, or n where the counts cannot be read.
static int threads_for_this_instant(int n) {
    // "0.52 0.58 0.59 3/468 12345": the fourth field's first number is the tasks running now.
    std::ifstream loadavg("/proc/loadavg");
    std::string a, b, c, tasks;
    if (!(loadavg >> a >> b >> c >> tasks)) return n;
    const int running = std::atoi(tasks.c_str());
    int own = 0;
    if (DIR * dir = opendir("/proc/self/task")) {
        while (const dirent * entry = readdir(dir)) {
            if (entry->d_name[0] == '.') continue;
            std::ifstream stat(std::string("/proc/self/task/") + entry->d_name + "/stat");
            std::string line;
            std::getline(stat, line);
            const size_t name_end = line.rfind(')'); // the name may hold spaces and parentheses
            if (name_end != std::string::npos && name_end + 2 < line.size() && line[name_end + 2] == 'R') ++own;
        }
        closedir(dir);
    }
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 && running > 0 ? threads_for_load(n, int(cpus), running, std::max(own, 1)) : n;
}
#endif

int thread_budget::threads() {
#ifdef __linux__
    const auto now = std::chrono::steady_clock::now();
    if (n_ <= 1 || now < next_look_) return current_;
    int n = threads_for_this_instant(n_);
    // Another task may run for a moment (a kernel worker, a timer): going down to fewer threads
    // needs the CPUs to stay taken for a millisecond; going up needs one look.
    for (int look = 0; look < 4 && n < current_; ++look) {
        std::this_thread::sleep_for(std::chrono::microseconds(250));
        n = std::max(n, threads_for_this_instant(n_));
    }
    current_ = n;
    next_look_ = now + std::chrono::milliseconds(10);
#endif
    return current_;
}

} // namespace nemotron
