#include "subsampling_conv.h"

#include "error.h"
#include "f32_matmul.h"
#include "subsampling.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define NEMOTRON_CONV_AVX512 1
#define NEMOTRON_TARGET __attribute__((target("avx512f,fma")))
#endif

namespace nemotron {

namespace subsampling {

namespace {

constexpr int kTaps = kernel * kernel;
constexpr int kLanes = 16; // channels a vector

#ifdef NEMOTRON_CONV_AVX512

// The taps of w ne [3, 3, 1, C] channel-last: [tap][channel], tap = ky * 3 + kx (time, frequency).
static void taps_by_channel(const ggml_tensor * w, std::vector<float> & out) {
    const int64_t C = w->ne[3];
    const float * data = static_cast<const float *>(w->data);
    out.resize(size_t(kTaps * C));
    for (int64_t c = 0; c < C; ++c) {
        for (int k = 0; k < kTaps; ++k) out[size_t(k * C + c)] = data[c * kTaps + k];
    }
}

// This thread's share of `rows` (each an output time step of one image).
static void share(int64_t rows, int ith, int nth, int64_t & begin, int64_t & end) {
    begin = rows * ith / nth;
    end = rows * (ith + 1) / nth;
}

// ggml: pad, im2col, then a product whose every output is a 9-float dot product (the padding's
// zeros included), then the bias added and ReLU.
NEMOTRON_TARGET static void first_conv_compute(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * mel = dst->src[0], * w = dst->src[1], * b = dst->src[2];
    const int64_t n_freq = mel->ne[0], n_time = mel->ne[1];
    const int64_t C = dst->ne[0], F = dst->ne[1], T = dst->ne[2];
    thread_local std::vector<float> taps;
    taps_by_channel(w, taps);
    const float * bias = static_cast<const float *>(b->data);
    const int64_t unfused = unfused_remainder(kTaps);
    int64_t begin, end;
    share(T * dst->ne[3], ith, nth, begin, end);
    for (int64_t row = begin; row < end; ++row) {
        const int64_t image = row / T, t = row % T;
        const float * in[kernel]; // the input rows under the kernel, null where padding
        for (int ky = 0; ky < kernel; ++ky) {
            const int64_t y = t * stride + ky - pad_before;
            in[ky] = y >= 0 && y < n_time ? reinterpret_cast<const float *>(static_cast<const char *>(mel->data) + image * mel->nb[3] +
                                                                            y * mel->nb[1])
                                          : nullptr;
        }
        float * out = static_cast<float *>(dst->data) + row * F * C;
        for (int64_t c = 0; c < C; c += kLanes) {
            __m512 wk[kTaps];
            for (int k = 0; k < kTaps; ++k) wk[k] = _mm512_loadu_ps(taps.data() + k * C + c);
            const __m512 bk = _mm512_loadu_ps(bias + c);
            for (int64_t f = 0; f < F; ++f) {
                __m512 acc = _mm512_setzero_ps();
                for (int k = 0; k < kTaps; ++k) {
                    const int ky = k / kernel, kx = k % kernel;
                    const int64_t x = f * stride + kx - pad_before;
                    const __m512 v = _mm512_set1_ps(in[ky] != nullptr && x >= 0 && x < n_freq ? in[ky][x] : 0.0f);
                    acc = k < unfused ? _mm512_add_ps(acc, _mm512_mul_ps(v, wk[k])) : _mm512_fmadd_ps(v, wk[k], acc);
                }
                _mm512_storeu_ps(out + f * C + c, _mm512_max_ps(_mm512_add_ps(acc, bk), _mm512_setzero_ps()));
            }
        }
    }
}

// ggml: pad, then a direct depthwise convolution summing `sum += w * x` tap by tap (fused), then the
// bias added.
NEMOTRON_TARGET static void depthwise_compute(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0], * w = dst->src[1], * b = dst->src[2];
    const int64_t C = x->ne[0], n_freq = x->ne[1], n_time = x->ne[2];
    const int64_t F = dst->ne[1], T = dst->ne[2];
    thread_local std::vector<float> taps;
    taps_by_channel(w, taps);
    const float * bias = static_cast<const float *>(b->data);
    int64_t begin, end;
    share(T * dst->ne[3], ith, nth, begin, end);
    for (int64_t row = begin; row < end; ++row) {
        const int64_t image = row / T, t = row % T;
        const float * in[kernel];
        for (int ky = 0; ky < kernel; ++ky) {
            const int64_t y = t * stride + ky - pad_before;
            in[ky] = y >= 0 && y < n_time ? static_cast<const float *>(x->data) + (image * n_time + y) * n_freq * C : nullptr;
        }
        float * out = static_cast<float *>(dst->data) + row * F * C;
        for (int64_t c = 0; c < C; c += kLanes) {
            __m512 wk[kTaps];
            for (int k = 0; k < kTaps; ++k) wk[k] = _mm512_loadu_ps(taps.data() + k * C + c);
            const __m512 bk = _mm512_loadu_ps(bias + c);
            for (int64_t f = 0; f < F; ++f) {
                __m512 acc = _mm512_setzero_ps();
                for (int k = 0; k < kTaps; ++k) {
                    const int ky = k / kernel, kx = k % kernel;
                    const int64_t xf = f * stride + kx - pad_before;
                    const __m512 v = in[ky] != nullptr && xf >= 0 && xf < n_freq ? _mm512_loadu_ps(in[ky] + xf * C + c) : _mm512_setzero_ps();
                    acc = _mm512_fmadd_ps(wk[k], v, acc);
                }
                _mm512_storeu_ps(out + f * C + c, _mm512_add_ps(acc, bk));
            }
        }
    }
}

#endif

} // namespace

bool conv_kernels_available(int64_t channels) {
#ifdef NEMOTRON_CONV_AVX512
    return channels % kLanes == 0 && f32_matmul_available();
#else
    (void) channels;
    return false;
#endif
}

ggml_tensor * first_conv(ggml_context * ctx, ggml_tensor * mel, ggml_tensor * w, ggml_tensor * b) {
#ifdef NEMOTRON_CONV_AVX512
    ggml_tensor * args[] = {mel, w, b};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[3], stage_length(mel->ne[0]), stage_length(mel->ne[1]), mel->ne[3], args, 3,
                          first_conv_compute, GGML_N_TASKS_MAX, nullptr);
#else
    (void) ctx, (void) mel, (void) w, (void) b;
    fail(NEMOTRON_ERR_INTERNAL, "the subsampling's convolutions are not built for this CPU");
#endif
}

ggml_tensor * depthwise_conv(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
#ifdef NEMOTRON_CONV_AVX512
    ggml_tensor * args[] = {x, w, b};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], stage_length(x->ne[1]), stage_length(x->ne[2]), x->ne[3], args, 3,
                          depthwise_compute, GGML_N_TASKS_MAX, nullptr);
#else
    (void) ctx, (void) x, (void) w, (void) b;
    fail(NEMOTRON_ERR_INTERNAL, "the subsampling's convolutions are not built for this CPU");
#endif
}

} // namespace subsampling

} // namespace nemotron
