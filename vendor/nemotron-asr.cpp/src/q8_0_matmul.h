// The encoder's q8_0 matrix products on x86 CPUs with AVX-512 VNNI.
//
// ggml 0.15 multiplies q8_0 weights on x86 one row by one column at a time (and has no
// repacked q8_0 layout there), which leaves the encoder compute-bound on small machines.
// This product works on 4 rows x 3 columns at a time with 512-bit VNNI dot products,
// reading ggml's q8_0 blocks where they lie (no copy of the weights) and quantizing the
// activations as ggml does. Each output is summed in the same order whatever the number of
// columns, so batched and single streams still agree bit for bit.
#pragma once

#include "ggml.h"

namespace nemotron {

// Whether this CPU runs the product (checked once, at run time).
bool q8_0_matmul_available();

// w [K, N] q8_0 (in host memory, K a multiple of 64) times x [K, M] f32 (contiguous): a
// [N, M] f32 result, as ggml_mul_mat(w, x) computes it, as a ggml custom operation.
ggml_tensor * q8_0_matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

} // namespace nemotron
