#include "subsampling.h"

#include "conformer.h"

namespace nemotron {

namespace subsampling {

int n_stages(int factor) {
    int n = 0;
    while ((1 << n) < factor) ++n;
    return n;
}

int output_length(int factor, int n) {
    for (int s = 0; s < n_stages(factor); ++s) n = (n + pad_before + pad_after - kernel) / stride + 1;
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

ggml_tensor * build(ggml_context * ctx, const subsampling_weights & w, const linear_op & linear, ggml_tensor * mel,
                    int drop) {
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
    x = ggml_reshape_3d(ctx, x, n_freq * n_ch, n_time, n_batch);
    if (drop > 0) {
        x = ggml_view_3d(ctx, x, x->ne[0], n_time - drop, n_batch, x->nb[1], x->nb[2], size_t(drop) * x->nb[1]);
    }
    x = linear(ctx, x, w.out_w, w.out_b); // [d, n_q, batch]
    return ggml_reshape_2d(ctx, x, x->ne[0], x->ne[1] * n_batch);
}

} // namespace subsampling

} // namespace nemotron
