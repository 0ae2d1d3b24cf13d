#include "q8_0_matmul.h"

#include "ggml-cpu.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
// GCC 12's AVX-512 headers build results from _mm512_undefined_*(), which its own
// -Wuninitialized then reports inside every intrinsic used here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define NEMOTRON_Q8_0_VNNI 1
#define NEMOTRON_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c")))
#endif

namespace nemotron {

namespace {

// ggml's q8_0 block: an f16 scale and 32 signed quants.
struct block_q8 {
    ggml_fp16_t d;
    int8_t      qs[32];
};
static_assert(sizeof(block_q8) == 34, "q8_0 blocks are 34 bytes");

// A column of activations prepared for the kernel, per pair of q8_0 blocks (64 values): the
// quants side by side, the two scales spread over the lanes that hold each block, and the
// correction for reading the weights as unsigned (each lane's 4 quants summed, times -128).
struct prepared_column {
    std::vector<int8_t>  qs;    // [pairs][64]
    std::vector<float>   scale; // [pairs][16]
    std::vector<int32_t> fix;   // [pairs][16]
};

#ifdef NEMOTRON_Q8_0_VNNI

// acc[r][c] += dot(row r, column c) over every pair of blocks. The weights' signed quants are
// read as unsigned (q + 128) because VNNI multiplies unsigned by signed bytes; the column's
// correction undoes the offset. R and C are template constants so the accumulators stay in
// registers; the operations on each output are the same for every R and C.
template <int R, int C>
static NEMOTRON_TARGET void kernel(const block_q8 * const * rows, const prepared_column * cols, int64_t pairs, float * out,
                                   int64_t out_stride) {
    __m512 acc[R][C];
    for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    }
    const __m512i offset = _mm512_set1_epi8(char(0x80));
    for (int64_t p = 0; p < pairs; ++p) {
        __m512i w[R];
        __m512 w_scale[R];
        for (int r = 0; r < R; ++r) {
            const block_q8 * b = rows[r] + 2 * p;
            const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b[0].qs));
            const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b[1].qs));
            w[r] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), offset);
            w_scale[r] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(_cvtsh_ss(b[0].d))),
                                            _mm256_set1_ps(_cvtsh_ss(b[1].d)), 1);
        }
        for (int c = 0; c < C; ++c) {
            const __m512i x = _mm512_loadu_si512(cols[c].qs.data() + 64 * p);
            const __m512i fix = _mm512_loadu_si512(cols[c].fix.data() + 16 * p);
            const __m512 x_scale = _mm512_loadu_ps(cols[c].scale.data() + 16 * p);
            for (int r = 0; r < R; ++r) {
                const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(fix, w[r], x));
                acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(dot, x_scale), w_scale[r], acc[r][c]);
            }
        }
    }
    for (int c = 0; c < C; ++c) {
        for (int r = 0; r < R; ++r) out[c * out_stride + r] = _mm512_reduce_add_ps(acc[r][c]);
    }
}

template <int R>
static void kernel_columns(const block_q8 * const * rows, const prepared_column * cols, int n_cols, int64_t pairs,
                           float * out, int64_t out_stride) {
    switch (n_cols) {
        case 3: kernel<R, 3>(rows, cols, pairs, out, out_stride); break;
        case 2: kernel<R, 2>(rows, cols, pairs, out, out_stride); break;
        default: kernel<R, 1>(rows, cols, pairs, out, out_stride); break;
    }
}

static void prepare(const float * x, int64_t k, prepared_column & col) {
    static const ggml_from_float_t quantize = ggml_get_type_traits_cpu(GGML_TYPE_Q8_0)->from_float;
    const int64_t blocks = k / 32, pairs = k / 64;
    thread_local std::vector<block_q8> q;
    q.resize(size_t(blocks));
    quantize(x, q.data(), k); // as ggml quantizes activations for its own q8_0 products
    col.qs.resize(size_t(pairs) * 64);
    col.scale.resize(size_t(pairs) * 16);
    col.fix.resize(size_t(pairs) * 16);
    for (int64_t b = 0; b < blocks; ++b) {
        std::memcpy(col.qs.data() + 32 * b, q[size_t(b)].qs, 32);
        const float d = ggml_fp16_to_fp32(q[size_t(b)].d);
        for (int lane = 0; lane < 8; ++lane) {
            const int8_t * g = q[size_t(b)].qs + 4 * lane;
            col.scale[size_t(8 * b + lane)] = d;
            col.fix[size_t(8 * b + lane)] = -128 * (int32_t(g[0]) + g[1] + g[2] + g[3]);
        }
    }
}

static void compute(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int64_t k = w->ne[0], n = w->ne[1], m = x->ne[1];
    // Every thread prepares every column (a few columns of a few thousand values): cheaper than
    // waiting for each other, and a custom operation has no barrier to wait at.
    thread_local std::vector<prepared_column> cols;
    if (cols.size() < size_t(m)) cols.resize(size_t(m));
    for (int64_t c = 0; c < m; ++c) {
        prepare(reinterpret_cast<const float *>(static_cast<const char *>(x->data) + c * x->nb[1]), k, cols[size_t(c)]);
    }
    const int64_t per_thread = ((n + nth - 1) / nth + 3) / 4 * 4;
    const int64_t first = per_thread * ith, last = std::min(n, first + per_thread);
    float * out = static_cast<float *>(dst->data);
    for (int64_t r0 = first; r0 < last; r0 += 4) {
        const int n_rows = int(std::min<int64_t>(4, last - r0));
        const block_q8 * rows[4];
        for (int r = 0; r < n_rows; ++r) {
            rows[r] = reinterpret_cast<const block_q8 *>(static_cast<const char *>(w->data) + (r0 + r) * w->nb[1]);
        }
        for (int64_t c0 = 0; c0 < m; c0 += 3) {
            const int n_cols = int(std::min<int64_t>(3, m - c0));
            float * o = out + c0 * n + r0;
            switch (n_rows) {
                case 4: kernel_columns<4>(rows, &cols[size_t(c0)], n_cols, k / 64, o, n); break;
                case 3: kernel_columns<3>(rows, &cols[size_t(c0)], n_cols, k / 64, o, n); break;
                case 2: kernel_columns<2>(rows, &cols[size_t(c0)], n_cols, k / 64, o, n); break;
                default: kernel_columns<1>(rows, &cols[size_t(c0)], n_cols, k / 64, o, n); break;
            }
        }
    }
}

#endif

} // namespace

bool q8_0_matmul_available() {
#ifdef NEMOTRON_Q8_0_VNNI
    static const bool available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                                  __builtin_cpu_supports("avx512vnni");
    return available;
#else
    return false;
#endif
}

ggml_tensor * q8_0_matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
#ifdef NEMOTRON_Q8_0_VNNI
    ggml_tensor * args[] = {w, x};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, compute, GGML_N_TASKS_MAX, nullptr);
#else
    return ggml_mul_mat(ctx, w, x);
#endif
}

} // namespace nemotron
