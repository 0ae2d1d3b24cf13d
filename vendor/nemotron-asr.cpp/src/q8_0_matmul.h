// The encoder's q8_0 matrix products on x86 CPUs with AVX-512 VNNI.
//
// ggml 0.15 multiplies q8_0 weights on x86 one row by one column at a time (and has no
// repacked q8_0 layout there), which leaves the encoder compute-bound on small machines.
// Here the weights are packed once, at load: 16 rows at a time, each block's quants laid out
// so that one 512-bit register holds 4 bytes of each of the 16 rows. A product multiplies a
// packed group by up to 8 columns: each row's integer dot product over a block sums in one
// 32-bit lane, so the conversion to float and the two scales cost one operation per 16 rows
// and block rather than per 4 bytes. Activations are quantized as ggml does. Each output is
// summed in the same order whatever the number of columns, so batched and single streams
// still agree bit for bit.
#pragma once

#include "ggml.h"

namespace nemotron {

// Whether this CPU runs the product (checked once, at run time).
bool q8_0_matmul_available();

// Whether `w` can be packed: q8_0 rows in groups of 16, on a CPU that runs the product.
bool q8_0_packable(const ggml_tensor * w);

// Writes the packed layout of w's q8_0 `data` (w's shape, ggml's layout) to `out`, which has
// the same size; `data` and `out` must not overlap.
void q8_0_pack(const ggml_tensor * w, const void * data, void * out);

// The inverse of q8_0_pack: ggml's layout of the packed `data` in `out`.
void q8_0_unpack(const ggml_tensor * w, const void * data, void * out);

// w [K, N] packed q8_0 (in host memory) times x [K, M] f32 (contiguous): a [N, M] f32 result,
// as ggml_mul_mat(w, x) computes it from the unpacked weights, as a ggml custom operation.
ggml_tensor * q8_0_matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

} // namespace nemotron
