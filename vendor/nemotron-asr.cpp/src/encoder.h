// Running encoder chunks (llama.cpp's context, for this model): the graph of one chunk of one or
// several streams, built from the subsampling and conformer graph functions, kept while the chunk
// geometry and batch size hold, and computed on a backend of the runner's own. Each stream has one
// for its own chunks; a context has one for the chunks of several streams together.
//
// NeMo's offline encoder with a chunked_limited mask and its streaming step compute the same
// thing; running every utterance chunk by chunk keeps memory bounded by the chunk.
//
// Chunks of several streams with the same geometry run as one batch: the matrix products read
// each weight once for all of them and work on many columns at a time, and the attention runs as
// batched products over every stream's window, gathered from the cache pool (see encoder_cache.h).
// Consecutive chunks of one stream batch the same way (a file, or audio that arrived faster than
// real time): the chunked_limited mask lets no chunk see a later one, so each chunk's window is
// gathered after the keys and values of all of them are written, and only the convolution runs
// over the chunks as one sequence. The graph has the same operations for one chunk or a thousand,
// and every column is computed exactly as it would be alone.
#pragma once

#include "cpu_budget.h"
#include "encoder_cache.h"
#include "model.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"

#include <cstdint>
#include <map>
#include <vector>

namespace nemotron {

// One stream's chunks in a batch.
struct encoder_job {
    const float * mel;        // [n_chunks][n_frames][n_mels], consecutive chunks
    encoder_cache * cache;
    std::vector<float> * out; // encoder frames are appended here
    int32_t prompt = 0;       // the stream's language prompt (multilingual models)
};

class encoder {
public:
    // Computes on a backend of its own on `device`, with at most n_threads CPU threads (fewer
    // while other tasks keep the CPUs busy).
    encoder(const model & m, ggml_backend_dev_t device, int n_threads);
    ~encoder();
    encoder(const encoder &) = delete;
    encoder & operator=(const encoder &) = delete;

    // For every job and each of its n_chunks chunks: subsamples `n_frames` mel frames, drops the
    // first `drop` subsampled frames (those computed from the pre-encode cache), runs the conformer
    // layers on the rest against the job's cache and appends them to its `out` ([frames][d_model]).
    // Returns the number of frames of each chunk.
    int run_chunks(const std::vector<encoder_job> & jobs, int n_chunks, int n_frames, int drop);

private:
    // The relative positions a chunk of n_q queries needs, projected by every layer's
    // linear_pos: they depend only on the chunk geometry, so they are computed once per
    // geometry rather than in every chunk's graph.
    struct projected_positions {
        ggml_context * ctx = nullptr;
        ggml_backend_buffer_t buf = nullptr;
        std::vector<ggml_tensor *> layers; // [d_model, n_kv + n_q - 1] per layer
    };

    // The last chunk graph, kept while chunks keep their geometry and batch size and the cache pool
    // its tensors (every chunk of a stream after its first): running it again only sets its inputs,
    // among them the rows of the jobs' caches, instead of building and planning the graph anew.
    struct chunk_graph {
        int n_frames = -1, drop = -1, n_batch = -1, n_chunks = -1;
        uint64_t pool_generation = 0;
        ggml_context * ctx = nullptr;
        ggml_cgraph * gf = nullptr;
        ggml_tensor * mel = nullptr, * mask = nullptr, * one_hot = nullptr, * out = nullptr;
        ggml_tensor * window = nullptr, * fresh = nullptr, * conv_rows = nullptr, * conv_rows_out = nullptr;
    };

    const projected_positions & project_positions(int n_kv, int n_q);
    void allocate(ggml_context * ctx, ggml_cgraph * gf);
    void build_chunk_graph(const cache_pool & pool, int n_batch, int n_chunks, int n_frames, int drop, int n_q);
    void set_cache_rows(const std::vector<encoder_job> & jobs, int n_chunks, int n_q);

    const model & m_;
    ggml_backend_t backend_; // owned
    ggml_backend_set_n_threads_t set_n_threads_; // null for backends without threads
    thread_budget threads_;
    int threads_now_;                             // what the backend computes with
    bool host_;                                   // the CPU backend: graphs may use this project's CPU kernels
    ggml_gallocr_t alloc_;
    std::vector<uint8_t> meta_; // memory for the chunk graph's descriptions
    chunk_graph graph_;
    std::vector<float> mask_;   // the attention mask's values, kept so chunks do not allocate
    std::vector<int32_t> rows_; // ... and the caches' rows
    std::vector<int64_t> rows_out_;
    std::map<int, projected_positions> projected_; // by n_q
};

} // namespace nemotron
