// Float32 products whose every output is the dot product ggml_vec_dot_f32 computes, bit for bit,
// so that using them changes no result: ggml's AVX-512 dot product sums 4 x 16-lane accumulators,
// 64 floats a step, reduces them, then adds the remaining products one by one; these kernels sum
// in that order, several outputs at once, with each loaded vector used for several of them
// (ggml computes one output at a time, two loads per multiply-add).
//
// - The decoder's products: y[i] = W x[i] + b for a few inputs at once (one per stream or
//   hypothesis), W row-major [rows][cols], its rows shared by a team of threads; every row block is
//   read once for all the inputs, so n inputs cost little more memory traffic than one. Where the
//   kernels are not available, ggml's own dot product runs row by row.
// - A graph's products (the subsampling's and the float32 weights' of a CPU graph) as a ggml custom
//   operation, in tiles of 4 x 6 outputs.
#pragma once

#include "row_team.h"

#include "ggml.h"

#include <cstdint>

namespace nemotron {

// b may be null (no bias).
void affine_rows(const row_team & team, const float * w, const float * b, const float * const * x, int n, int rows, int cols,
                 float * const * y);

// Rows [begin, end) of the same product, on the calling thread: a part of a product that a team's
// work function shares out with other work of its own.
void affine_rows_part(const float * w, const float * b, const float * const * x, int n, int begin, int end, int cols,
                      float * const * y);

// Whether the kernels sum as ggml's dot product does on this CPU and ggml build: asked of ggml once,
// at run time (AVX-512 and the same fused multiply-adds), so a different build only loses the speed.
bool f32_matmul_available();

// Of a dot product of n floats, how many of the products ggml's AVX-512 loop leaves (the last n % 64)
// its build adds unfused, one by one, before it fuses the rest: the compiler vectorizes that loop's
// products 16 and then 8 at a time. The kernels here repeat it; f32_matmul_available() checks it.
constexpr int64_t unfused_remainder(int64_t n) {
    return n % 64 - n % 8;
}

// Whether the four-row AVX-512 kernel serves the decoder's products of `cols` columns.
bool f32_rows_kernel_available(int cols);

// ggml_mul_mat(w, x) for w [K, N, A, B] and x [K, M, A a, B b] float32 (rows contiguous, any other
// strides; w's matrices broadcast as ggml broadcasts them), plus b [N] when given, then max(0, .)
// when relu, as a CPU custom operation: [N, M, A a, B b]. f32_matmul_available() must hold. With
// group g > 1 (2-D only) the columns come in groups of g and the result is [g, N, M / g]: column
// j's outputs at j % g + i g + (j / g) N g (a convolution's positions g at a time, channel-major).
ggml_tensor * f32_matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b, bool relu = false,
                         int64_t group = 1);

} // namespace nemotron
