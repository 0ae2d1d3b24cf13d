#include "f32_matmul.h"

#include "error.h"

#include "ggml-cpu.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define NEMOTRON_F32_AVX512 1
#define NEMOTRON_TARGET __attribute__((target("avx512f,fma")))
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
// ggml's reduction of its four accumulators: (a0 + a2) + (a1 + a3), then the 16 lanes as
// _mm512_reduce_add_ps adds them.
NEMOTRON_TARGET static inline float reduce(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3)));
}

// R rows at w (R <= 4) times x: each row summed exactly as ggml_vec_dot_f32 sums it (fmadd into
// four accumulators, then reduce()).
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
            // The same floats of the next block of rows, which a decoder step reads from memory next.
            for (int j = 0; j < 4; ++j) _mm_prefetch(reinterpret_cast<const char *>(row + 4 * cols + 16 * j), _MM_HINT_T0);
            for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_fmadd_ps(_mm512_loadu_ps(row + 16 * j), xv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < R; ++r) out[r] = reduce(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
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

#ifdef NEMOTRON_F32_AVX512
// sum + x[i] y[i] for the i in [begin, k) that ggml's 64-float steps leave, added as its build adds
// them (unfused_remainder).
NEMOTRON_TARGET static inline float dot_remainder(const float * x, const float * y, int64_t begin, int64_t k, float sum) {
    const int64_t unfused = begin + unfused_remainder(k);
    __m128 s = _mm_set_ss(sum);
    for (int64_t i = begin; i < unfused; ++i) s = _mm_add_ss(s, _mm_mul_ss(_mm_set_ss(x[i]), _mm_set_ss(y[i])));
    for (int64_t i = unfused; i < k; ++i) s = _mm_fmadd_ss(_mm_set_ss(x[i]), _mm_set_ss(y[i]), s);
    return _mm_cvtss_f32(s);
}

// A tile of a graph's product: out[r * C + c] = (row r of a) . (row c of b) for R rows of a and C of
// b, each summed as ggml_vec_dot_f32 sums it: lane group j (floats 16j..16j+15 of every 64) in its
// own accumulator, fmadd step after step, then reduce(), then the last k % 64 products
// (dot_remainder). The four lane groups are summed one after the other so that R x C accumulators
// stay in registers: each step loads R + C vectors for R x C multiply-adds, where a dot product at a
// time loads two for one.
template <int R, int C>
NEMOTRON_TARGET static void tile(const float * a, size_t lda, const float * b, size_t ldb, int64_t k, float * out) {
    const int64_t whole = k / kStep * kStep;
    alignas(64) float lanes[4][R][C][16];
    for (int j = 0; j < 4; ++j) {
        __m512 acc[R][C];
        for (int r = 0; r < R; ++r) {
            for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
        }
        for (int64_t s = 16 * j; s < whole; s += kStep) {
            __m512 av[R];
            for (int r = 0; r < R; ++r) av[r] = _mm512_loadu_ps(a + size_t(r) * lda + size_t(s));
            for (int c = 0; c < C; ++c) {
                const __m512 bv = _mm512_loadu_ps(b + size_t(c) * ldb + size_t(s));
                for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(av[r], bv, acc[r][c]);
            }
        }
        for (int r = 0; r < R; ++r) {
            for (int c = 0; c < C; ++c) _mm512_store_ps(lanes[j][r][c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) {
            const float sum = reduce(_mm512_load_ps(lanes[0][r][c]), _mm512_load_ps(lanes[1][r][c]), _mm512_load_ps(lanes[2][r][c]),
                                     _mm512_load_ps(lanes[3][r][c]));
            out[r * C + c] = dot_remainder(a + size_t(r) * lda, b + size_t(c) * ldb, whole, k, sum);
        }
    }
}

using tile_fn = void (*)(const float *, size_t, const float *, size_t, int64_t, float *);

template <int R, int... C>
static constexpr std::array<tile_fn, sizeof...(C)> tile_row() {
    return {&tile<R, C>...};
}

// Tiles of 4 rows of the weights by 6 columns: 24 accumulators, 10 loads a step.
constexpr int kTileRows = 4, kTileColumns = 6;
// Columns computed against every row tile before the next ones (their rows stay in cache).
constexpr int kColumnBlock = 8 * kTileColumns;

static const std::array<std::array<tile_fn, kTileColumns>, kTileRows> kTiles = {
    tile_row<1, 1, 2, 3, 4, 5, 6>(), tile_row<2, 1, 2, 3, 4, 5, 6>(), tile_row<3, 1, 2, 3, 4, 5, 6>(),
    tile_row<4, 1, 2, 3, 4, 5, 6>()};

// A graph product's options, carried in the custom operation's userdata as one integer.
struct matmul_options {
    bool relu;
    int64_t group;
    static void * encode(bool relu, int64_t group) { return reinterpret_cast<void *>(uintptr_t(group) << 1 | uintptr_t(relu)); }
    static matmul_options decode(const void * p) {
        const uintptr_t v = reinterpret_cast<uintptr_t>(p);
        return {(v & 1) != 0, int64_t(v >> 1)};
    }
};

// One matrix of a product: rows [r0, r1) of w times columns [c0, c1) of x into out (see f32_matmul).
static void product_block(const float * w, size_t lda, const float * x, size_t ldb, int64_t k, int64_t n, const float * bias,
                          matmul_options opt, float * out, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    const int64_t g = opt.group;
    float t[kTileRows * kTileColumns];
    for (int64_t cb = c0; cb < c1; cb += kColumnBlock) {
        const int64_t cb_end = std::min(c1, cb + kColumnBlock);
        for (int64_t r = r0; r < r1; r += kTileRows) {
            const int R = int(std::min<int64_t>(kTileRows, r1 - r));
            for (int64_t c = cb; c < cb_end; c += kTileColumns) {
                const int C = int(std::min<int64_t>(kTileColumns, cb_end - c));
                kTiles[size_t(R - 1)][size_t(C - 1)](w + size_t(r) * lda, lda, x + size_t(c) * ldb, ldb, k, t);
                for (int i = 0; i < R; ++i) {
                    const float b = bias != nullptr ? bias[r + i] : 0.0f;
                    for (int jj = 0; jj < C; ++jj) {
                        float v = t[i * C + jj];
                        if (bias != nullptr) v += b;
                        if (opt.relu) v = v > 0.0f ? v : 0.0f;
                        const int64_t j = c + jj;
                        out[g == 1 ? j * n + r + i : j % g + (r + i) * g + j / g * n * g] = v;
                    }
                }
            }
        }
    }
}

static void matmul_compute(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0], * x = dst->src[1], * bias = dst->src[2];
    const matmul_options opt = matmul_options::decode(userdata);
    const int64_t k = w->ne[0], n = w->ne[1], m = x->ne[1];
    const size_t lda = w->nb[1] / sizeof(float), ldb = x->nb[1] / sizeof(float);
    const float * bd = bias != nullptr ? static_cast<const float *>(bias->data) : nullptr;
    const int64_t items = x->ne[2] * x->ne[3];
    auto item = [&](int64_t i, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        // x's matrix i2, i3 against w's, broadcast as ggml_mul_mat broadcasts it.
        const int64_t i2 = i % x->ne[2], i3 = i / x->ne[2];
        const char * wi = static_cast<const char *>(w->data) + i2 / (x->ne[2] / w->ne[2]) * w->nb[2] + i3 / (x->ne[3] / w->ne[3]) * w->nb[3];
        const char * xi = static_cast<const char *>(x->data) + i2 * x->nb[2] + i3 * x->nb[3];
        product_block(reinterpret_cast<const float *>(wi), lda, reinterpret_cast<const float *>(xi), ldb, k, n, bd, opt,
                      static_cast<float *>(dst->data) + i * n * m, r0, r1, c0, c1);
    };
    if (items > 1) { // each thread whole matrices
        for (int64_t i = items * ith / nth; i < items * (ith + 1) / nth; ++i) item(i, 0, n, 0, m);
    } else if (m >= n) { // each thread a share of the longer side, in whole tiles
        const int64_t tiles = (m + kTileColumns - 1) / kTileColumns;
        item(0, 0, n, std::min(m, tiles * ith / nth * kTileColumns), std::min(m, tiles * (ith + 1) / nth * kTileColumns));
    } else {
        const int64_t tiles = (n + kTileRows - 1) / kTileRows;
        item(0, std::min(n, tiles * ith / nth * kTileRows), std::min(n, tiles * (ith + 1) / nth * kTileRows), 0, m);
    }
}
#endif

// Whether tile() sums as ggml_vec_dot_f32 on this CPU and ggml build: asked of ggml's own dot
// product on lengths without a remainder and with remainders of every kind (its order, and which of
// its last products are fused).
static bool tiles_match_ggml() {
#ifdef NEMOTRON_F32_AVX512
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("fma") || !ggml_cpu_has_avx512()) return false;
    const ggml_vec_dot_t dot = ggml_get_type_traits_cpu(GGML_TYPE_F32)->vec_dot;
    float x[2 * kStep + 29], y[2 * kStep + 29];
    uint32_t state = 12345;
    for (size_t i = 0; i < sizeof(x) / sizeof(float); ++i) { // values whose products round
        state = state * 1664525u + 1013904223u;
        x[i] = float(int32_t(state >> 8) - (1 << 23)) / float(1 << 21);
        state = state * 1664525u + 1013904223u;
        y[i] = 1.0f + float(state >> 9) / float(1 << 23);
    }
    for (const int k : {9, kStep, 2 * kStep + 29}) {
        float ours = 0.0f, theirs = 0.0f;
        tile<1, 1>(x, 0, y, 0, k, &ours);
        dot(k, &theirs, 0, x, 0, y, 0, 1);
        if (std::memcmp(&ours, &theirs, sizeof(float)) != 0) return false;
    }
    return true;
#else
    return false;
#endif
}

} // namespace

bool f32_matmul_available() {
    static const bool available = tiles_match_ggml();
    return available;
}

bool f32_rows_kernel_available(int cols) {
    return f32_matmul_available() && cols % kStep == 0;
}

void affine_rows(const row_team & team, const float * w, const float * b, const float * const * x, int n, int rows, int cols,
                 float * const * y) {
    const product p{w, b, x, y, n, rows, cols};
    team.run(rows, 4, product_rows, &p);
}

void affine_rows_part(const float * w, const float * b, const float * const * x, int n, int begin, int end, int cols,
                      float * const * y) {
    const product p{w, b, x, y, n, end, cols};
    product_rows(begin, end, &p);
}


ggml_tensor * f32_matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b, bool relu, int64_t group) {
#ifdef NEMOTRON_F32_AVX512
    ggml_tensor * args[] = {w, x, b};
    if (group > 1) {
        return ggml_custom_4d(ctx, GGML_TYPE_F32, group, w->ne[1], x->ne[1] / group, 1, args, b != nullptr ? 3 : 2, matmul_compute,
                              GGML_N_TASKS_MAX, matmul_options::encode(relu, group));
    }
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], x->ne[2], x->ne[3], args, b != nullptr ? 3 : 2, matmul_compute,
                          GGML_N_TASKS_MAX, matmul_options::encode(relu, 1));
#else
    (void) ctx, (void) w, (void) x, (void) b, (void) relu, (void) group;
    fail(NEMOTRON_ERR_INTERNAL, "the float32 product is not built for this CPU");
#endif
}

} // namespace nemotron
