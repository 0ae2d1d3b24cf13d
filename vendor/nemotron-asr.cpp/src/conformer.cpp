#include "conformer.h"

#include "f32_matmul.h"
#include "q8_0_matmul.h"

#include <cmath>

namespace nemotron {

// NeMo's LayerNorm epsilon.
static const float kLayerNormEps = 1e-5f;

ggml_tensor * linear_op::operator()(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const {
    const bool q8_0 = packed.count(w) != 0, f32 = host && w->type == GGML_TYPE_F32 && f32_matmul_available();
    if (!q8_0 && !f32) {
        ggml_tensor * y = ggml_mul_mat(ctx, w, x);
        return b != nullptr ? ggml_add(ctx, y, b) : y;
    }
    // These products take a matrix of columns: a strided or batched x is made one.
    const bool matrix = ggml_is_contiguous(x) && x->ne[2] == 1 && x->ne[3] == 1;
    ggml_tensor * columns = matrix ? x : ggml_reshape_2d(ctx, ggml_cont(ctx, x), x->ne[0], ggml_nelements(x) / x->ne[0]);
    ggml_tensor * y = q8_0 ? q8_0_matmul(ctx, w, columns) : f32_matmul(ctx, w, columns, b);
    if (!matrix) y = ggml_reshape_4d(ctx, y, w->ne[1], x->ne[1], x->ne[2], x->ne[3]);
    return q8_0 && b != nullptr ? ggml_add(ctx, y, b) : y; // f32_matmul adds the bias as it writes
}

ggml_tensor * linear_op::product(ggml_context * ctx, ggml_tensor * a, ggml_tensor * b) const {
    return host && f32_matmul_available() ? f32_matmul(ctx, a, b, nullptr) : ggml_mul_mat(ctx, a, b);
}

static ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, kLayerNormEps), w), b);
}

// The attention of a batch of streams: queries q [d, n_q, batch] against keys and values
// [d, n_kv, batch] (each stream's cached frames, then its chunk's), with Transformer-XL's relative
// positions; returns [d, n_q * batch]. Every product runs per stream and head as a batched matrix
// product, so each stream's columns come out as they would alone.
static ggml_tensor * attention(ggml_context * ctx, const conformer_layer_weights & L, const linear_op & linear, ggml_tensor * q,
                               ggml_tensor * k, ggml_tensor * v, ggml_tensor * pos, ggml_tensor * mask) {
    const int64_t d = q->ne[0], n_q = q->ne[1], n_kv = k->ne[1], n_batch = q->ne[2];
    const int64_t d_head = L.pos_bias_u->ne[0], n_head = L.pos_bias_u->ne[1];
    q = ggml_reshape_4d(ctx, q, d_head, n_head, n_q, n_batch);
    ggml_tensor * q_u = ggml_permute(ctx, ggml_add(ctx, q, L.pos_bias_u), 0, 2, 1, 3); // [d_head, n_q, head, batch]
    ggml_tensor * q_v = ggml_permute(ctx, ggml_add(ctx, q, L.pos_bias_v), 0, 2, 1, 3);
    ggml_tensor * k_heads = ggml_permute(ctx, ggml_reshape_4d(ctx, k, d_head, n_head, n_kv, n_batch), 0, 2, 1, 3);
    ggml_tensor * content = linear.product(ctx, k_heads, q_u); // [n_kv, n_q, head, batch]

    // pos holds positions n_kv-1 down to 1-n_q; query i (at n_kv-n_q+i) and key j need
    // position n_kv-n_q+i-j, which is row n_q-1-i+j: Transformer-XL's "relative shift" is
    // a strided view. The positions are the same for every stream of the batch.
    const int64_t n_pos = pos->ne[1];
    ggml_tensor * p = ggml_permute(ctx, ggml_reshape_3d(ctx, pos, d_head, n_head, n_pos), 0, 2, 1, 3);
    ggml_tensor * position = linear.product(ctx, p, q_v); // [n_pos, n_q, head, batch]
    position = ggml_view_4d(ctx, position, n_kv, n_q, n_head, n_batch, (size_t(n_pos) - 1) * position->nb[0],
                            position->nb[2], position->nb[3], size_t(n_q - 1) * position->nb[0]);
    ggml_tensor * scores = ggml_add(ctx, content, ggml_cont(ctx, position));
    ggml_tensor * attn = ggml_soft_max_ext(ctx, scores, mask, 1.0f / std::sqrt(float(d_head)), 0.0f);

    ggml_tensor * v_heads = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, v, d_head, n_head, n_kv, n_batch), 1, 2, 0, 3));
    ggml_tensor * o = linear.product(ctx, v_heads, attn); // [d_head, n_q, head, batch]
    o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3));
    return ggml_reshape_2d(ctx, o, d, n_q * n_batch);
}

ggml_tensor * conformer_layer(ggml_context * ctx, ggml_cgraph * gf, const conformer_layer_weights & L,
                              const linear_op & linear, ggml_tensor * x, ggml_tensor * pos, ggml_tensor * mask,
                              const layer_caches & caches) {
    const int64_t d = x->ne[0];
    const int64_t n_batch = mask->ne[3];
    const int64_t n_q = x->ne[1] / n_batch; // x is [d, n_q * batch], each chunk's frames together
    const int64_t n_streams = n_batch / caches.n_chunks, n_seq = n_q * caches.n_chunks; // a stream's chunks in a row

    // Macaron feed-forward, half-step residual.
    ggml_tensor * h = layer_norm(ctx, x, L.norm_ff1_w, L.norm_ff1_b);
    h = linear(ctx, ggml_silu(ctx, linear(ctx, h, L.ff1_w1, L.ff1_b1)), L.ff1_w2, L.ff1_b2);
    x = ggml_add(ctx, x, ggml_scale(ctx, h, 0.5f));

    // Relative-position self-attention over [cached frames, this chunk]. The chunk's keys and values
    // go into the pool's rows after each window.
    h = layer_norm(ctx, x, L.norm_att_w, L.norm_att_b);
    ggml_tensor * q = linear(ctx, h, L.q_w, L.q_b);
    ggml_tensor * k = linear(ctx, h, L.k_w, L.k_b);
    ggml_tensor * v = linear(ctx, h, L.v_w, L.v_b);
    // The new frames are written first and then read back with the window in one gather: reading
    // from the write's result orders the two, and the keys come out in one copy.
    const int64_t n_kv = caches.left + n_q;
    k = ggml_reshape_3d(ctx, ggml_get_rows(ctx, ggml_set_rows(ctx, caches.k, k, caches.fresh), caches.window), d, n_kv, n_batch);
    v = ggml_reshape_3d(ctx, ggml_get_rows(ctx, ggml_set_rows(ctx, caches.v, v, caches.fresh), caches.window), d, n_kv, n_batch);
    ggml_tensor * o = attention(ctx, L, linear, ggml_reshape_3d(ctx, q, d, n_q, n_batch), k, v, pos, mask);
    x = ggml_add(ctx, x, linear(ctx, o, L.out_w, L.out_b));

    // Convolution module: pointwise, GLU, causal depthwise over [cached inputs, a stream's chunks],
    // norm, SiLU, pointwise.
    h = layer_norm(ctx, x, L.norm_conv_w, L.norm_conv_b);
    h = linear(ctx, h, L.pw1_w, L.pw1_b);
    ggml_tensor * value = ggml_view_2d(ctx, h, d, n_q * n_batch, h->nb[1], 0);
    ggml_tensor * gate = ggml_view_2d(ctx, h, d, n_q * n_batch, h->nb[1], size_t(d) * h->nb[0]);
    h = ggml_mul(ctx, value, ggml_sigmoid(ctx, gate));
    ggml_tensor * cached = ggml_reshape_3d(ctx, ggml_get_rows(ctx, caches.conv, caches.conv_rows), d, caches.conv_frames, n_streams);
    ggml_tensor * hc = ggml_concat(ctx, cached, ggml_reshape_3d(ctx, h, d, n_seq, n_streams), 1);
    // The last inputs become the cache. They are computed from the rows read above, so the graph
    // reads those rows before this writes them.
    ggml_tensor * tail = ggml_view_3d(ctx, hc, d, caches.conv_frames, n_streams, hc->nb[1], hc->nb[2], size_t(n_seq) * hc->nb[1]);
    ggml_build_forward_expand(gf, ggml_set_rows(ctx, caches.conv, ggml_reshape_2d(ctx, ggml_cont(ctx, tail), d, caches.conv_frames * n_streams),
                                                caches.conv_rows_out));
    h = ggml_ssm_conv(ctx, ggml_cont(ctx, ggml_transpose(ctx, hc)), L.dw_w); // [d, n_seq, streams]
    h = ggml_reshape_2d(ctx, h, d, n_q * n_batch);
    if (L.dw_b != nullptr) h = ggml_add(ctx, h, L.dw_b);
    h = ggml_silu(ctx, layer_norm(ctx, h, L.conv_norm_w, L.conv_norm_b));
    x = ggml_add(ctx, x, linear(ctx, h, L.pw2_w, L.pw2_b));

    h = layer_norm(ctx, x, L.norm_ff2_w, L.norm_ff2_b);
    h = linear(ctx, ggml_silu(ctx, linear(ctx, h, L.ff2_w1, L.ff2_b1)), L.ff2_w2, L.ff2_b2);
    x = ggml_add(ctx, x, ggml_scale(ctx, h, 0.5f));

    return layer_norm(ctx, x, L.norm_out_w, L.norm_out_b);
}

void relative_positions(int d, int n_kv, int n_q, std::vector<float> & out) {
    // In float32 as torch builds them: pe[p, 2i] = sin(p w_i), pe[p, 2i + 1] = cos(p w_i),
    // w_i = exp(2i * -(ln 10000 / d_model)).
    const int n_pos = n_kv + n_q - 1;
    out.resize(size_t(d) * size_t(n_pos));
    const float neg_log_base = float(-(std::log(10000.0) / d));
    for (int r = 0; r < n_pos; ++r) {
        const float p = float(n_kv - 1 - r);
        for (int i = 0; i < d / 2; ++i) {
            const float w = std::exp(float(2 * i) * neg_log_base);
            out[size_t(r) * size_t(d) + size_t(2 * i)] = std::sin(p * w);
            out[size_t(r) * size_t(d) + size_t(2 * i + 1)] = std::cos(p * w);
        }
    }
}

} // namespace nemotron
