// Threads that share the rows of a decoding step's products.
//
// A greedy or beam step is a few matrix-vector products over ~24 MB of float32 weights, tens of
// microseconds apart, with a decision on the host between them: too small and too frequent for a
// ggml graph, and memory-bound on one core. Where ggml's CPU backend runs on OpenMP, a team is an
// OpenMP parallel region per product: it runs on the very workers that computed the encoder's chunk,
// which spin for a while after each graph (a pool of the engine's own would compete with them for the
// cores, and a sleeping one would pay a wake-up per product). Without OpenMP a team is the calling
// thread alone.
#pragma once

namespace nemotron {

class row_team {
public:
    // n_threads counts the calling thread.
    explicit row_team(int n_threads) : n_threads_(n_threads) {}

    // Calls work(begin, end, context) on [0, n) split into one part per thread, each part's bounds a
    // multiple of `grain` (but the last); returns when all are done.
    using work_fn = void (*)(int begin, int end, const void * context);
    void run(int n, int grain, work_fn work, const void * context) const;

private:
    int n_threads_;
};

} // namespace nemotron
