// The conformer layers as ggml graphs: pure functions of weights, inputs and one chunk's view of
// each stream's caches (NeMo's ConformerLayer with RelPositionMultiHeadAttention, macaron
// feed-forward halves and the causal convolution module, as in its cache-aware streaming step).
#pragma once

#include "model.h"

#include "ggml.h"

#include <set>
#include <vector>

namespace nemotron {

// How a graph multiplies by weight matrices: this project's q8_0 product for the matrices the model
// packed for it, on the CPU its float32 product (f32_matmul.h, ggml's results) for float32 ones, and
// ggml's product for the rest.
struct linear_op {
    const std::set<const ggml_tensor *> & packed; // the model's q8_0_packed
    bool host = false;                            // the graph runs on the CPU backend
    ggml_tensor * operator()(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const;
    // ggml_mul_mat(a, b) of two float32 activations (the attention's), on the CPU by f32_matmul.
    ggml_tensor * product(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b) const;
};

// Where a chunk's graph reads and writes the batch's caches of one layer (see cache_pool): the
// pool's tensors and, shared by every layer, the rows of each chunk's window and new frames. A batch
// holds n_chunks consecutive chunks of each stream: batch = streams x n_chunks.
struct layer_caches {
    ggml_tensor * k = nullptr, * v = nullptr; // the pool's keys and values [d_model, capacity * slots]
    ggml_tensor * conv = nullptr;             // the pool's convolution inputs [d_model, conv_frames * slots]
    ggml_tensor * window = nullptr;           // I32 [(left + n_q) * batch]: each chunk's window and new frames, oldest first
    ggml_tensor * fresh = nullptr;            // I64 [n_q * batch]: where each chunk's new frames go
    ggml_tensor * conv_rows = nullptr;        // I32 [conv_frames * streams]: each stream's convolution inputs
    ggml_tensor * conv_rows_out = nullptr;    // I64, the same rows, to write them back
    int left = 0, conv_frames = 0, n_chunks = 1;
};

// One layer over x ([d_model, n_q * batch], each chunk's frames together, a stream's chunks in order)
// with relative positions `pos` ([d_model, n_kv + n_q - 1], this layer's projection of them) and the
// attention mask ([n_kv, n_q, 1, batch]); the caches' new frames are written by nodes added to `gf`.
ggml_tensor * conformer_layer(ggml_context * ctx, ggml_cgraph * gf, const conformer_layer_weights & L,
                              const linear_op & linear, ggml_tensor * x, ggml_tensor * pos, ggml_tensor * mask,
                              const layer_caches & caches);

// NeMo's RelPositionalEncoding for a chunk of n_q queries against n_kv keys: positions n_kv - 1
// down to 1 - n_q, [n_pos][d_model], in float32 as torch computes them.
void relative_positions(int d_model, int n_kv, int n_q, std::vector<float> & out);

} // namespace nemotron
