// The cache-aware FastConformer encoder on ggml: one graph per chunk runs the causal
// depthwise-striding subsampling over the chunk's mel frames and then every conformer layer
// against the stream's caches (the last `att_left_context` keys and values of each layer's
// attention, the last kernel-1 inputs of each depthwise convolution).
//
// NeMo's offline encoder with a chunked_limited mask and its streaming step compute the
// same thing; running every utterance chunk by chunk keeps memory bounded by the chunk.
//
// Chunks of several streams with the same geometry run as one batch: the matrix products
// read each weight once for all of them and work on many columns at a time. The attention
// runs per stream against that stream's own caches, read in place; the small convolution
// caches are gathered into the batch and scattered back. Every column is computed exactly as
// it would be alone.
#pragma once

#include "cpu_budget.h"
#include "model.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"

#include <map>
#include <vector>

namespace nemotron {

// Per-stream encoder state.
class encoder_cache {
public:
    encoder_cache(const model & m, ggml_backend_dev_t device);
    ~encoder_cache();
    encoder_cache(const encoder_cache &) = delete;
    encoder_cache & operator=(const encoder_cache &) = delete;

    void reset();
    // Makes room for n new frames after the window, moving the window to the front if needed.
    void make_room(int n);

    // Keys and values are a sliding window over a longer buffer: a chunk writes its frames
    // after the window and reads the window and them in place, and the window moves to the
    // front only when the buffer is full, instead of every cache being copied every chunk.
    std::vector<ggml_tensor *> k, v; // [d_model, left + slack] per layer: projected keys and values
    std::vector<ggml_tensor *> conv; // [d_model, kernel - 1] per layer: depthwise conv inputs
    int left = 0;                    // frames in the window
    int end = 0;                     // the window is frames [end - left, end) of k and v
    int n_valid = 0;                 // how many of the window's frames hold real frames

private:
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buf_ = nullptr;
};

// One stream's chunk in a batch.
struct encoder_job {
    const float * mel;        // [n_frames][n_mels]
    encoder_cache * cache;
    std::vector<float> * out; // encoder frames are appended here
};

class encoder {
public:
    // n_threads: the most CPU threads a chunk may use (fewer while other processes keep CPUs busy).
    encoder(const model & m, ggml_backend_t backend, int n_threads);
    ~encoder();
    encoder(const encoder &) = delete;
    encoder & operator=(const encoder &) = delete;

    // For every job: subsamples `n_frames` mel frames, drops the first `drop` subsampled
    // frames (those computed from the pre-encode cache), runs the conformer layers on the rest
    // against the job's cache and appends them to its `out` ([frames][d_model]). Returns the
    // number of frames appended to each.
    int run_chunks(const std::vector<encoder_job> & jobs, int n_frames, int drop);

private:
    // The relative positions a chunk of n_q queries needs, projected by every layer's
    // linear_pos: they depend only on the chunk geometry, so they are computed once per
    // geometry rather than in every chunk's graph.
    struct projected_positions {
        ggml_context * ctx = nullptr;
        ggml_backend_buffer_t buf = nullptr;
        std::vector<ggml_tensor *> layers; // [d_model, n_kv + n_q - 1] per layer
    };

    // The last chunk graph, kept while chunks keep their geometry and batch size (every chunk
    // of a stream after its first): running it again only points the views of the caches at
    // the current jobs' caches and windows, instead of building and planning the graph anew.
    struct chunk_graph {
        int n_frames = -1, drop = -1, n_batch = -1;
        ggml_context * ctx = nullptr;
        ggml_cgraph * gf = nullptr;
        ggml_tensor * mel = nullptr, * mask = nullptr, * out = nullptr;
        enum cache_kind { key, value, conv };
        struct cache_ref {
            int slot, layer;
            cache_kind kind;
        };
        struct view_ref {
            ggml_tensor * t;
            cache_ref cache;
            size_t offset; // from the window's end (keys, values) or the tensor's start (conv)
        };
        struct src_ref {
            ggml_tensor * node;
            int src;
            cache_ref cache;
        };
        std::vector<view_ref> views;
        std::vector<src_ref> srcs;
    };

    ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const;
    ggml_tensor * subsampling(ggml_context * ctx, ggml_tensor * mel, int drop);
    ggml_tensor * conformer_layer(ggml_context * ctx, ggml_cgraph * gf, int il, ggml_tensor * x, ggml_tensor * pos,
                                  ggml_tensor * mask, const std::vector<encoder_job> & jobs);
    void positions(int n_kv, int n_q, std::vector<float> & out) const;
    const projected_positions & project_positions(int n_kv, int n_q);
    void allocate(ggml_context * ctx, ggml_cgraph * gf);
    void build_chunk_graph(const std::vector<encoder_job> & jobs, int n_frames, int drop, int n_q);
    void bind_caches(const std::vector<encoder_job> & jobs);

    const model & m_;
    ggml_backend_t backend_;
    ggml_backend_set_n_threads_t set_n_threads_; // null for backends without threads
    thread_budget threads_;
    int threads_now_;                             // what the backend computes with
    bool q8_0_kernel_;       // this CPU runs our own q8_0 kernel (x86 with AVX-512 VNNI)
    bool q8_0_now_ = false;  // ... and the chunk being built uses it
    ggml_gallocr_t alloc_;
    std::vector<uint8_t> meta_; // memory for the chunk graph's descriptions
    chunk_graph graph_;
    std::vector<float> mask_;   // the attention mask's values, kept so chunks do not allocate
    std::map<int, projected_positions> projected_; // by n_q
};

// Mel frames in, encoder frames out: the length after subsampling n frames.
int subsampled_length(const nemotron_hparams & hp, int n_frames);

} // namespace nemotron
