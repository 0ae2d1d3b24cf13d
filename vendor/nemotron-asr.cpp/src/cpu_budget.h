// How many CPU threads the engine may use: the cores this process may run on (its affinity mask
// and its cgroup's CPU quota), and how many of them other processes keep busy right now.
#pragma once

#include <chrono>
#include <string>

namespace nemotron {

// The physical cores this process may use: those of the CPUs in its affinity mask, at most
// its cgroup's CPU quota rounded up (containers); at least 1.
int usable_core_count();

// The CPUs the cgroups of this process allow (quota / period, the tightest of every level of
// the v2 or v1 cpu hierarchy), or 0 without a limit. `root` prefixes /proc and the mount points
// (tests give a directory that stands in for them; the engine gives "").
double cgroup_cpu_limit(const std::string & root);

// The threads of one kind of computation over time: at most n, fewer while other processes keep
// the CPUs busy. ggml's workers wait for each other after every operation, so one that has to
// share its core with another process stalls them all at each of a graph's hundreds of barriers:
// with fewer CPUs free than threads, fewer threads finish sooner. It reads how many tasks are
// running on the machine (/proc/loadavg) and how many of them are this process's (without that
// information, not on Linux, it keeps n), no more than every 10 ms: the load changes more slowly
// than a small model's chunks come, and looking costs tens of microseconds.
class thread_budget {
public:
    explicit thread_budget(int n) : n_(n), current_(n) {}

    int max() const { return n_; }
    int threads();

private:
    int n_, current_;
    std::chrono::steady_clock::time_point next_look_{};
};

// The rule itself: `cpus` online, `running` tasks running on the machine of which `own` are this
// process's, among them the calling thread and up to n - 1 of its idle workers.
int threads_for_load(int n, int cpus, int running, int own);

} // namespace nemotron
