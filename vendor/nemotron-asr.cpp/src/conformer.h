// The conformer layers as ggml graphs: pure functions of weights, inputs and one chunk's view of
// each stream's caches (NeMo's ConformerLayer with RelPositionMultiHeadAttention, macaron
// feed-forward halves and the causal convolution module, as in its cache-aware streaming step).
#pragma once

#include "encoder_cache.h"
#include "model.h"

#include "ggml.h"

#include <vector>

namespace nemotron {

// How a chunk graph multiplies by weight matrices: ggml's product, or this project's q8_0 kernel
// where it is the faster (q8_0 weights, activations of two or more frames per stream).
struct linear_op {
    bool own_q8_0 = false;
    ggml_tensor * operator()(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const;
};

// One layer over x ([d_model, n_q * batch], each stream's frames together) with relative positions
// `pos` ([d_model, n_kv + n_q - 1], this layer's projection of them) and the attention mask
// ([n_kv, n_q, 1, batch]); the caches' new frames are written into them by nodes added to `gf`.
ggml_tensor * conformer_layer(ggml_context * ctx, ggml_cgraph * gf, const conformer_layer_weights & L,
                              const linear_op & linear, ggml_tensor * x, ggml_tensor * pos, ggml_tensor * mask,
                              const std::vector<layer_caches> & caches);

// NeMo's RelPositionalEncoding for a chunk of n_q queries against n_kv keys: positions n_kv - 1
// down to 1 - n_q, [n_pos][d_model], in float32 as torch computes them.
void relative_positions(int d_model, int n_kv, int n_q, std::vector<float> & out);

} // namespace nemotron
