// NeMo's causal depthwise-striding subsampling ("dw_striding" with causal_downsampling: ConvSubsampling
// and CausalConv2D in nemo/collections/asr/parts/submodules/subsampling.py): log2(factor) stages of
// 3x3 convolutions with stride 2 over time and frequency, each padded kernel - 1 before and
// stride - 1 after, then a linear projection of every time step's channels x frequencies.
//
// Its geometry lives here, for the loader (tensor shapes), the encoder graph and the streams' chunk
// plans alike.
#pragma once

#include "model.h"

#include "ggml.h"

namespace nemotron {

struct linear_op;

namespace subsampling {

constexpr int kernel = 3;
constexpr int stride = 2;
constexpr int pad_before = kernel - 1; // causal: the past only
constexpr int pad_after = stride - 1;

// Stages of a factor (a power of two): 8 -> 3.
int n_stages(int factor);

// Frames (or frequency bins) after one stage: n to (n + pads - kernel) / stride + 1, which is
// n / 2 + 1 (NeMo's calc_length for these paddings); and after every stage of a factor.
int64_t stage_length(int64_t n);
int output_length(int factor, int n);

// A stage without the causal padding (an offline FastConformer's) maps n to (n - 1) / 2 + 1: the
// loader tells such a model by its projection's width.
int symmetric_output_length(int factor, int n);

// Mel frames NeMo's cache-aware streaming carries into a chunk from before it
// (pre_encode_cache_size[1] = factor + 1, ConvSubsampling.get_streaming_cache_size), and the
// subsampled frames it then drops as computed from them (drop_extra_pre_encoded =
// 1 + (cache - 1) // factor, ConformerEncoder.setup_streaming_params).
int cache_frames(int factor);
int dropped_frames(int factor);

// Whether the CPU's kernels (subsampling_conv.h) compute these weights' stages: on this CPU, and
// equal to ggml's operations bit for bit (asked once, on a small image).
bool cpu_kernels_serve(const subsampling_weights & w);

// The graph: mel ne [n_mels, frames, 1, batch] (an image per stream, time by frequency, as NeMo's
// (batch, 1, time, frequency)) to [d_model, (frames_out - drop) * batch], each stream's frames
// together, the first `drop` of every stream left out.
ggml_tensor * build(ggml_context * ctx, const subsampling_weights & w, const linear_op & linear, ggml_tensor * mel,
                    int drop);

} // namespace subsampling

} // namespace nemotron
