#include "f32_matmul.h"

#include "ggml-cpu.h"

#include <cstddef>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define NEMOTRON_F32_AVX512 1
#define NEMOTRON_TARGET __attribute__((target("avx512f")))
#endif

namespace nemotron {

namespace {

// ggml's AVX-512 dot product: 4 accumulators of 16 lanes over 64 floats a step.
constexpr int kStep = 64;

struct product {
    const float * w;
    const float * b;
    const float * const * x;
    float * const * y;
    int n, rows, cols;
};

#ifdef NEMOTRON_F32_AVX512
// R rows at w (R <= 4) times x: each row summed exactly as ggml_vec_dot_f32 sums it (fmadd into
// four accumulators, then (a0 + a2) + (a1 + a3), then the 16 lanes as _mm512_reduce_add_ps does).
template <int R>
NEMOTRON_TARGET static void rows_dot(const float * w, size_t cols, const float * x, float * out) {
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
    }
    for (size_t k = 0; k < cols; k += kStep) {
        __m512 xv[4];
        for (int j = 0; j < 4; ++j) xv[j] = _mm512_loadu_ps(x + k + 16 * size_t(j));
        for (int r = 0; r < R; ++r) {
            const float * row = w + size_t(r) * cols + k;
            for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_fmadd_ps(_mm512_loadu_ps(row + 16 * j), xv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < R; ++r) {
        const __m512 even = _mm512_add_ps(acc[r][0], acc[r][2]), odd = _mm512_add_ps(acc[r][1], acc[r][3]);
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
    }
}
#endif

// out[r] = (row r at w) . x for up to four consecutive rows, each ggml_vec_dot_f32's result.
static void dot_rows(const float * w, int rows, int cols, const float * x, float * out) {
#ifdef NEMOTRON_F32_AVX512
    if (f32_rows_kernel_available(cols)) {
        switch (rows) {
        case 4: rows_dot<4>(w, size_t(cols), x, out); return;
        case 3: rows_dot<3>(w, size_t(cols), x, out); return;
        case 2: rows_dot<2>(w, size_t(cols), x, out); return;
        default: rows_dot<1>(w, size_t(cols), x, out); return;
        }
    }
#endif
    static const ggml_vec_dot_t dot = ggml_get_type_traits_cpu(GGML_TYPE_F32)->vec_dot;
    for (int r = 0; r < rows; ++r) {
        out[r] = 0.0f;
        dot(cols, &out[r], 0, w + size_t(r) * size_t(cols), 0, x, 0, 1);
    }
}

// Rows [begin, end) of a product, four at a time, each block read once for all the inputs.
static void product_rows(int begin, int end, const void * context) {
    const product & p = *static_cast<const product *>(context);
    float dots[4];
    for (int r = begin; r < end; r += 4) {
        const int m = end - r < 4 ? end - r : 4;
        const float * w = p.w + size_t(r) * size_t(p.cols);
        for (int i = 0; i < p.n; ++i) {
            dot_rows(w, m, p.cols, p.x[i], dots);
            for (int k = 0; k < m; ++k) p.y[i][r + k] = dots[k] + (p.b != nullptr ? p.b[r + k] : 0.0f);
        }
    }
}

} // namespace

bool f32_rows_kernel_available(int cols) {
#ifdef NEMOTRON_F32_AVX512
    // Only where ggml's own dot product is its AVX-512 one, whose order the kernel repeats.
    static const bool available = __builtin_cpu_supports("avx512f") && ggml_cpu_has_avx512();
    return available && cols % kStep == 0;
#else
    (void) cols;
    return false;
#endif
}

void affine_rows(const row_team & team, const float * w, const float * b, const float * const * x, int n, int rows, int cols,
                 float * const * y) {
    const product p{w, b, x, y, n, rows, cols};
    team.run(rows, 4, product_rows, &p);
}

} // namespace nemotron
