#include "q8_0_matmul.h"

#include "ggml-cpu.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
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

// Rows are packed 16 at a time: one 512-bit register holds one 32-bit value per row.
constexpr int kRows = 16;
// Columns per pass over a group of rows: their accumulators stay in registers.
constexpr int kColumns = 8;
// A packed group of 16 rows, per block of 32 columns of the weights: 8 x 64 bytes of quants, and
// the 16 rows' f16 scales after all the blocks' quants.
constexpr int64_t kGroupQuants = 8 * kRows * 4;
// How far ahead of the kernel's loads the weights are fetched: with few columns the kernel streams
// them from memory, and the hardware's prefetcher alone left it at about half the bandwidth.
constexpr int64_t kPrefetch = 8 * kGroupQuants;

// A column of activations quantized as ggml quantizes them for its own q8_0 products, per block:
// the quants, the scale, and the correction for reading the weights as unsigned (-128 x the sum
// of the block's quants).
struct prepared_column {
    std::vector<int8_t>  qs;    // [blocks][32]
    std::vector<float>   scale; // [blocks]
    std::vector<int32_t> fix;   // [blocks]
};

#ifdef NEMOTRON_Q8_0_VNNI

// Packs 16 rows of q8_0 blocks: for each block, its eight 4-byte groups of every row side by side
// (as unsigned bytes, q + 128), so that one register's lanes hold one group of each row.
static NEMOTRON_TARGET void pack_group(const block_q8 * const * rows, int64_t blocks, uint8_t * out) {
    const __m512i offset = _mm512_set1_epi8(char(0x80));
    ggml_fp16_t * scales = reinterpret_cast<ggml_fp16_t *>(out + blocks * kGroupQuants);
    for (int64_t b = 0; b < blocks; ++b) {
        __m256i quant[kRows];
        for (int i = 0; i < kRows; ++i) {
            quant[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[i][b].qs));
            scales[b * kRows + i] = rows[i][b].d;
        }
        // z[i] holds rows i and i + 4, z[4 + i] rows 8 + i and 12 + i: after the two unpack
        // stages each 128-bit lane holds one 4-byte group of four rows, and the last shuffle puts the
        // lanes of rows 0-3, 4-7, 8-11 and 12-15 in order.
        __m512i z[8];
        for (int i = 0; i < 4; ++i) {
            z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(quant[i]), quant[i + 4], 1);
            z[4 + i] = _mm512_inserti64x4(_mm512_castsi256_si512(quant[8 + i]), quant[12 + i], 1);
        }
        __m512i t[8], u[8];
        for (int h = 0; h < 8; h += 4) {
            t[h + 0] = _mm512_unpacklo_epi32(z[h + 0], z[h + 1]);
            t[h + 1] = _mm512_unpackhi_epi32(z[h + 0], z[h + 1]);
            t[h + 2] = _mm512_unpacklo_epi32(z[h + 2], z[h + 3]);
            t[h + 3] = _mm512_unpackhi_epi32(z[h + 2], z[h + 3]);
            u[h + 0] = _mm512_unpacklo_epi64(t[h + 0], t[h + 2]); // groups 0 and 4
            u[h + 1] = _mm512_unpackhi_epi64(t[h + 0], t[h + 2]); // groups 1 and 5
            u[h + 2] = _mm512_unpacklo_epi64(t[h + 1], t[h + 3]); // groups 2 and 6
            u[h + 3] = _mm512_unpackhi_epi64(t[h + 1], t[h + 3]); // groups 3 and 7
        }
        uint8_t * q = out + b * kGroupQuants;
        for (int j = 0; j < 4; ++j) {
            const __m512i lo = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88); // group j
            const __m512i hi = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD); // group j + 4
            _mm512_storeu_si512(q + 64 * j, _mm512_xor_si512(lo, offset));
            _mm512_storeu_si512(q + 64 * (j + 4), _mm512_xor_si512(hi, offset));
        }
    }
}

// out[c][0..16) = a packed group's 16 rows' dot products with C columns. Per row, column and
// block: the block's integer dot product (exact, in two chains so that one column does not wait
// on each step), then acc += that x (row scale x column scale), block after block: the same
// operations on each output whatever the number of columns.
template <int C>
static NEMOTRON_TARGET void kernel(const uint8_t * group, const prepared_column * cols, int64_t blocks, float * out,
                                   int64_t out_stride) {
    const ggml_fp16_t * scales = reinterpret_cast<const ggml_fp16_t *>(group + blocks * kGroupQuants);
    __m512 acc[C];
    for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t * w = group + b * kGroupQuants;
        __m512i even[C], odd[C];
        for (int c = 0; c < C; ++c) {
            even[c] = _mm512_set1_epi32(cols[c].fix[size_t(b)]);
            odd[c] = _mm512_setzero_si512();
        }
        for (int j = 0; j < 8; j += 2) {
            _mm_prefetch(reinterpret_cast<const char *>(w + kPrefetch + 64 * j), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char *>(w + kPrefetch + 64 * (j + 1)), _MM_HINT_T0);
            const __m512i w0 = _mm512_loadu_si512(w + 64 * j);
            const __m512i w1 = _mm512_loadu_si512(w + 64 * (j + 1));
            for (int c = 0; c < C; ++c) {
                int32_t x[2];
                std::memcpy(x, cols[c].qs.data() + 32 * b + 4 * j, sizeof(x));
                even[c] = _mm512_dpbusd_epi32(even[c], w0, _mm512_set1_epi32(x[0]));
                odd[c] = _mm512_dpbusd_epi32(odd[c], w1, _mm512_set1_epi32(x[1]));
            }
        }
        const __m512 w_scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(scales + b * kRows)));
        for (int c = 0; c < C; ++c) {
            const __m512 scale = _mm512_mul_ps(w_scale, _mm512_set1_ps(cols[c].scale[size_t(b)]));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(even[c], odd[c])), scale, acc[c]);
        }
    }
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + c * out_stride, acc[c]);
}

template <int... C>
static void kernel_columns(int n_cols, const uint8_t * group, const prepared_column * cols, int64_t blocks, float * out,
                           int64_t out_stride) {
    // Dispatches n_cols (1 to kColumns) to the kernel made for it.
    (void)std::initializer_list<int>{(n_cols == C ? (kernel<C>(group, cols, blocks, out, out_stride), 0) : 0)...};
}

static void prepare(const float * x, int64_t k, prepared_column & col) {
    static const ggml_from_float_t quantize = ggml_get_type_traits_cpu(GGML_TYPE_Q8_0)->from_float;
    const int64_t blocks = k / 32;
    thread_local std::vector<block_q8> q;
    q.resize(size_t(blocks));
    quantize(x, q.data(), k); // as ggml quantizes activations for its own q8_0 products
    col.qs.resize(size_t(blocks) * 32);
    col.scale.resize(size_t(blocks));
    col.fix.resize(size_t(blocks));
    for (int64_t b = 0; b < blocks; ++b) {
        const block_q8 & block = q[size_t(b)];
        std::memcpy(col.qs.data() + 32 * b, block.qs, 32);
        col.scale[size_t(b)] = ggml_fp16_to_fp32(block.d);
        int32_t sum = 0;
        for (int8_t v : block.qs) sum += v;
        col.fix[size_t(b)] = -128 * sum;
    }
}

static void compute(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int64_t k = w->ne[0], n = w->ne[1], m = x->ne[1], blocks = k / 32;
    // Every thread prepares every column (a few columns of a few thousand values): cheaper than
    // waiting for each other, and a custom operation has no barrier to wait at.
    thread_local std::vector<prepared_column> cols;
    if (cols.size() < size_t(m)) cols.resize(size_t(m));
    for (int64_t c = 0; c < m; ++c) {
        prepare(reinterpret_cast<const float *>(static_cast<const char *>(x->data) + c * x->nb[1]), k, cols[size_t(c)]);
    }
    // Each thread its share of the groups of 16 rows, each group read once for all columns.
    const int64_t groups = n / kRows;
    const int64_t per_thread = (groups + nth - 1) / nth;
    const int64_t first = per_thread * ith, last = std::min(groups, first + per_thread);
    const int64_t group_bytes = kRows * int64_t(w->nb[1]);
    float * out = static_cast<float *>(dst->data);
    for (int64_t g = first; g < last; ++g) {
        const uint8_t * group = static_cast<const uint8_t *>(w->data) + g * group_bytes;
        for (int64_t c0 = 0; c0 < m; c0 += kColumns) {
            const int n_cols = int(std::min<int64_t>(kColumns, m - c0));
            kernel_columns<1, 2, 3, 4, 5, 6, 7, 8>(n_cols, group, &cols[size_t(c0)], blocks, out + c0 * n + g * kRows, n);
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

bool q8_0_packable(const ggml_tensor * w) {
    return q8_0_matmul_available() && w->type == GGML_TYPE_Q8_0 && w->ne[1] % kRows == 0 && w->ne[2] == 1 && w->ne[3] == 1 &&
           ggml_is_contiguous(w);
}

void q8_0_pack(const ggml_tensor * w, const void * data, void * out) {
#ifdef NEMOTRON_Q8_0_VNNI
    const int64_t blocks = w->ne[0] / 32;
    for (int64_t g = 0; g < w->ne[1] / kRows; ++g) {
        const block_q8 * rows[kRows];
        for (int r = 0; r < kRows; ++r) {
            rows[r] = reinterpret_cast<const block_q8 *>(static_cast<const uint8_t *>(data) + (g * kRows + r) * int64_t(w->nb[1]));
        }
        pack_group(rows, blocks, static_cast<uint8_t *>(out) + g * kRows * int64_t(w->nb[1]));
    }
#else
    (void)w, (void)data, (void)out;
#endif
}

void q8_0_unpack(const ggml_tensor * w, const void * data, void * out) {
    const int64_t blocks = w->ne[0] / 32, group_bytes = kRows * int64_t(w->nb[1]);
    for (int64_t g = 0; g < w->ne[1] / kRows; ++g) {
        const uint8_t * group = static_cast<const uint8_t *>(data) + g * group_bytes;
        const ggml_fp16_t * scales = reinterpret_cast<const ggml_fp16_t *>(group + blocks * kGroupQuants);
        for (int r = 0; r < kRows; ++r) {
            block_q8 * row = reinterpret_cast<block_q8 *>(static_cast<uint8_t *>(out) + (g * kRows + r) * int64_t(w->nb[1]));
            for (int64_t b = 0; b < blocks; ++b) {
                row[b].d = scales[b * kRows + r];
                for (int i = 0; i < 32; ++i) row[b].qs[i] = int8_t(group[b * kGroupQuants + (i / 4) * kRows * 4 + r * 4 + i % 4] ^ 0x80);
            }
        }
    }
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
