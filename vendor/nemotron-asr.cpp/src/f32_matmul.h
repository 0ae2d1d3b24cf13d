// The decoder's float32 products: y[i] = W x[i] + b for a few inputs at once (one per stream or
// hypothesis), W row-major [rows][cols], its rows shared by a team of threads.
//
// Each output is the dot product ggml_vec_dot_f32 computes, bit for bit: where ggml's CPU backend
// was built with AVX-512 (its 4 x 16-lane accumulators, 64 floats a step), four rows are multiplied
// at once in the same order, so one pass reads four weight streams and the input stays in
// registers; elsewhere ggml's own dot product runs row by row. Every row block is read once for
// all the inputs, so n inputs cost little more memory traffic than one.
#pragma once

#include "row_team.h"

namespace nemotron {

// b may be null (no bias).
void affine_rows(const row_team & team, const float * w, const float * b, const float * const * x, int n, int rows, int cols,
                 float * const * y);

// Whether the four-row AVX-512 kernel serves products of `cols` columns on this CPU and ggml build.
bool f32_rows_kernel_available(int cols);

} // namespace nemotron
