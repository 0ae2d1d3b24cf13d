// The subsampling's 3x3 convolutions on the CPU, over images stored channel-last ([channels,
// frequency, time, batch]), as ggml custom operations.
//
// ggml's graph (subsampling.cpp's portable one) pads each image, convolves it with frequency
// fastest, adds the bias as a broadcast and lays out an im2col copy for every pointwise product:
// several passes over the largest tensors of the encoder, each of them a loop of scalar
// operations. Channel-last, a tap of the full or depthwise convolution is one vector operation over
// 16 channels, the padding is never stored, bias and ReLU are applied in the same pass, and a
// pointwise convolution is a plain matrix product (f32_matmul) of the image's positions.
//
// Every value is the one ggml's operations compute, bit for bit: the same products summed in the
// same order, fused where ggml's build fuses them. subsampling::cpu_kernels_match() asks ggml once,
// on a small image, before the engine uses them.
#pragma once

#include "ggml.h"

namespace nemotron {

namespace subsampling {

// Whether the convolutions serve `channels` channels on this CPU (AVX-512, channels a multiple of
// 16, and ggml's float32 dot product matched by f32_matmul).
bool conv_kernels_available(int64_t channels);

// The first stage: the full convolution of mel ne [n_mels, frames, 1, batch] (one input channel)
// with w ne [3, 3, 1, C], stride 2, causally padded, plus b, then ReLU: ne [C, freq, time, batch].
ggml_tensor * first_conv(ggml_context * ctx, ggml_tensor * mel, ggml_tensor * w, ggml_tensor * b);

// A later stage's depthwise convolution of x ne [C, freq, time, batch] with w ne [3, 3, 1, C],
// stride 2, causally padded, plus b: ne [C, freq', time', batch].
ggml_tensor * depthwise_conv(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b);

} // namespace subsampling

} // namespace nemotron
