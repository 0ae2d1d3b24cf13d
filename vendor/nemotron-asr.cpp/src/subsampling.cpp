#include "subsampling.h"

#include "conformer.h"
#include "f32_matmul.h"
#include "subsampling_conv.h"

#include "ggml-cpu.h"

#include <cstdint>
#include <cstring>

namespace nemotron {

namespace subsampling {

int n_stages(int factor) {
    int n = 0;
    while ((1 << n) < factor) ++n;
    return n;
}

int64_t stage_length(int64_t n) {
    return (n + pad_before + pad_after - kernel) / stride + 1;
}

int output_length(int factor, int n) {
    for (int s = 0; s < n_stages(factor); ++s) n = int(stage_length(n));
    return n;
}

int symmetric_output_length(int factor, int n) {
    for (int s = 0; s < n_stages(factor); ++s) n = (n - 1) / stride + 1;
    return n;
}

int cache_frames(int factor) { return factor + 1; }

int dropped_frames(int factor) { return 1 + (cache_frames(factor) - 1) / factor; }

static ggml_tensor * causal_pad(ggml_context * ctx, ggml_tensor * x) {
    return ggml_pad_ext(ctx, x, pad_before, pad_after, pad_before, pad_after, 0, 0, 0, 0);
}

static ggml_tensor * channel_bias(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b) {
    return ggml_add(ctx, x, ggml_reshape_3d(ctx, b, 1, 1, b->ne[0]));
}

// ggml's operations, on any backend: images [freq, time, channels, batch].
static ggml_tensor * portable_stages(ggml_context * ctx, const subsampling_weights & w, ggml_tensor * mel) {
    ggml_tensor * x = mel;
    for (size_t s = 0; s < w.stages.size(); ++s) {
        const subsampling_weights::stage & st = w.stages[s];
        if (s == 0) { // a full convolution from the one input channel
            x = ggml_conv_2d(ctx, st.pw_w, causal_pad(ctx, x), stride, stride, 0, 0, 1, 1);
        } else { // depthwise with the stride, then pointwise
            x = ggml_conv_2d_dw_direct(ctx, st.dw_w, causal_pad(ctx, x), stride, stride, 0, 0, 1, 1);
            x = channel_bias(ctx, x, st.dw_b);
            x = ggml_conv_2d(ctx, st.pw_w, x, 1, 1, 0, 0, 1, 1);
        }
        x = ggml_relu(ctx, channel_bias(ctx, x, st.pw_b));
    }
    // [freq, time, channels, batch] -> per time step the features channel-major, as NeMo's
    // transpose(1, 2).reshape(b, t, c * f).
    const int64_t n_freq = x->ne[0], n_time = x->ne[1], n_ch = x->ne[2], n_batch = x->ne[3];
    x = ggml_cont(ctx, ggml_permute(ctx, x, 0, 2, 1, 3));
    return ggml_reshape_3d(ctx, x, n_freq * n_ch, n_time, n_batch);
}

// The CPU's kernels (subsampling_conv.h): images [channels, freq, time, batch]; the last pointwise
// product writes each time step's features channel-major.
static ggml_tensor * channel_last_stages(ggml_context * ctx, const subsampling_weights & w, ggml_tensor * mel) {
    const subsampling_weights::stage & first = w.stages[0];
    ggml_tensor * x = first_conv(ctx, mel, first.pw_w, first.pw_b);
    const int64_t n_ch = x->ne[0];
    for (size_t s = 1; s < w.stages.size(); ++s) {
        const subsampling_weights::stage & st = w.stages[s];
        x = depthwise_conv(ctx, x, st.dw_w, st.dw_b);
        const int64_t n_freq = x->ne[1], n_time = x->ne[2], n_batch = x->ne[3];
        const bool last = s + 1 == w.stages.size();
        x = f32_matmul(ctx, ggml_reshape_2d(ctx, st.pw_w, n_ch, n_ch), ggml_reshape_2d(ctx, x, n_ch, n_freq * n_time * n_batch),
                       st.pw_b, true, last ? n_freq : 1);
        if (last) return ggml_reshape_3d(ctx, x, n_freq * n_ch, n_time, n_batch);
        x = ggml_reshape_4d(ctx, x, n_ch, n_freq, n_time, n_batch);
    }
    // One stage only: the features from the channel-last image.
    const int64_t n_freq = x->ne[1], n_time = x->ne[2], n_batch = x->ne[3];
    x = ggml_cont(ctx, ggml_permute(ctx, x, 1, 0, 2, 3)); // [freq, channels, time, batch]
    return ggml_reshape_3d(ctx, x, n_freq * n_ch, n_time, n_batch);
}

// Whether the CPU's kernels compute what ggml's operations compute, bit for bit, with this ggml
// build: both run once on a small random image (three stages, 16 channels, remainders of every
// kind in the products) and are compared.
static bool cpu_kernels_match() {
    static const bool match = [] {
        const int64_t C = 16, n_mels = 21, frames = 23, batch = 2;
        ggml_init_params ip = {size_t(16) << 20, nullptr, false};
        ggml_context * ctx = ggml_init(ip);
        if (ctx == nullptr) return false;
        uint32_t state = 7;
        auto fill = [&](ggml_tensor * t, float scale) {
            float * d = static_cast<float *>(t->data);
            for (int64_t i = 0; i < ggml_nelements(t); ++i) {
                state = state * 1664525u + 1013904223u;
                d[i] = scale * (float(state >> 8) / float(1 << 23) - 1.0f);
            }
            return t;
        };
        subsampling_weights w;
        for (int s = 0; s < 3; ++s) {
            subsampling_weights::stage st;
            if (s > 0) {
                st.dw_w = fill(ggml_new_tensor_4d(ctx, GGML_TYPE_F32, kernel, kernel, 1, C), 0.5f);
                st.dw_b = fill(ggml_new_tensor_1d(ctx, GGML_TYPE_F32, C), 0.1f);
                st.pw_w = fill(ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 1, 1, C, C), 0.3f);
            } else {
                st.pw_w = fill(ggml_new_tensor_4d(ctx, GGML_TYPE_F32, kernel, kernel, 1, C), 0.5f);
            }
            st.pw_b = fill(ggml_new_tensor_1d(ctx, GGML_TYPE_F32, C), 0.1f);
            w.stages.push_back(st);
        }
        ggml_tensor * mel = fill(ggml_new_tensor_4d(ctx, GGML_TYPE_F32, n_mels, frames, 1, batch), 3.0f);
        ggml_tensor * ours = channel_last_stages(ctx, w, mel), * theirs = portable_stages(ctx, w, mel);
        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, ours);
        ggml_build_forward_expand(gf, theirs);
        const bool same = ggml_graph_compute_with_ctx(ctx, gf, 2) == GGML_STATUS_SUCCESS && ggml_are_same_shape(ours, theirs) &&
                          std::memcmp(ours->data, theirs->data, ggml_nbytes(ours)) == 0;
        ggml_free(ctx);
        return same;
    }();
    return match;
}

bool cpu_kernels_serve(const subsampling_weights & w) {
    return conv_kernels_available(w.stages[0].pw_w->ne[3]) && cpu_kernels_match();
}

ggml_tensor * build(ggml_context * ctx, const subsampling_weights & w, const linear_op & linear, ggml_tensor * mel,
                    int drop) {
    ggml_tensor * x = linear.host && cpu_kernels_serve(w) ? channel_last_stages(ctx, w, mel) : portable_stages(ctx, w, mel);
    const int64_t n_time = x->ne[1], n_batch = x->ne[2];
    if (drop > 0) {
        x = ggml_view_3d(ctx, x, x->ne[0], n_time - drop, n_batch, x->nb[1], x->nb[2], size_t(drop) * x->nb[1]);
    }
    x = linear(ctx, x, w.out_w, w.out_b); // [d, n_q, batch]
    return ggml_reshape_2d(ctx, x, x->ne[0], x->ne[1] * n_batch);
}

} // namespace subsampling

} // namespace nemotron
