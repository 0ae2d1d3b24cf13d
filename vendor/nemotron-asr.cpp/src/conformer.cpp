#include "conformer.h"

#include "q8_0_matmul.h"

#include <cmath>

namespace nemotron {

// NeMo's LayerNorm epsilon.
static const float kLayerNormEps = 1e-5f;

ggml_tensor * linear_op::operator()(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const {
    const bool q8_0 = own_q8_0 && w->type == GGML_TYPE_Q8_0 && w->ne[0] % 64 == 0 && x->type == GGML_TYPE_F32 &&
                      ggml_is_contiguous(x) && x->ne[2] == 1 && x->ne[3] == 1;
    ggml_tensor * y = q8_0 ? q8_0_matmul(ctx, w, x) : ggml_mul_mat(ctx, w, x);
    return b != nullptr ? ggml_add(ctx, y, b) : y;
}

static ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, kLayerNormEps), w), b);
}

// Tensors joined along `dim`, pairwise as a tree, so each part is copied log2(parts) times
// rather than once per part.
static ggml_tensor * join(ggml_context * ctx, std::vector<ggml_tensor *> parts, int dim) {
    while (parts.size() > 1) {
        std::vector<ggml_tensor *> next;
        for (size_t i = 0; i + 1 < parts.size(); i += 2) next.push_back(ggml_concat(ctx, parts[i], parts[i + 1], dim));
        if (parts.size() % 2) next.push_back(parts.back());
        parts.swap(next);
    }
    return parts[0];
}

// Writes the last frames of x ([d, frames], or one stream's slice b of [d, frames, batch]) back
// to a cache ([d, n]).
static void keep_last(ggml_context * ctx, ggml_cgraph * gf, ggml_tensor * x, ggml_tensor * cache, size_t b = 0) {
    const int64_t n = cache->ne[1];
    ggml_tensor * tail = ggml_view_2d(ctx, x, x->ne[0], n, x->nb[1], b * x->nb[2] + size_t(x->ne[1] - n) * x->nb[1]);
    ggml_build_forward_expand(gf, ggml_cpy(ctx, tail, cache));
}

// One stream's attention: queries q [d, n_q] against keys and values [d, n_kv] (the cached
// frames, then the chunk's), with Transformer-XL's relative positions; returns [d, n_q].
static ggml_tensor * attention(ggml_context * ctx, const conformer_layer_weights & L, ggml_tensor * q, ggml_tensor * k,
                               ggml_tensor * v, ggml_tensor * pos, ggml_tensor * mask) {
    const int64_t d = q->ne[0], n_q = q->ne[1], n_kv = k->ne[1];
    const int64_t d_head = L.pos_bias_u->ne[0], n_head = L.pos_bias_u->ne[1];
    q = ggml_reshape_3d(ctx, q, d_head, n_head, n_q);
    ggml_tensor * q_u = ggml_permute(ctx, ggml_add(ctx, q, L.pos_bias_u), 0, 2, 1, 3); // [d_head, n_q, head]
    ggml_tensor * q_v = ggml_permute(ctx, ggml_add(ctx, q, L.pos_bias_v), 0, 2, 1, 3);
    ggml_tensor * k_heads = ggml_permute(ctx, ggml_reshape_3d(ctx, k, d_head, n_head, n_kv), 0, 2, 1, 3);
    ggml_tensor * content = ggml_mul_mat(ctx, k_heads, q_u); // [n_kv, n_q, head]

    // pos holds positions n_kv-1 down to 1-n_q; query i (at n_kv-n_q+i) and key j need
    // position n_kv-n_q+i-j, which is row n_q-1-i+j: Transformer-XL's "relative shift" is
    // a strided view.
    const int64_t n_pos = pos->ne[1];
    ggml_tensor * p = ggml_permute(ctx, ggml_reshape_3d(ctx, pos, d_head, n_head, n_pos), 0, 2, 1, 3);
    ggml_tensor * position = ggml_mul_mat(ctx, p, q_v); // [n_pos, n_q, head]
    position = ggml_view_3d(ctx, position, n_kv, n_q, n_head, (size_t(n_pos) - 1) * position->nb[0], position->nb[2],
                            size_t(n_q - 1) * position->nb[0]);
    ggml_tensor * scores = ggml_add(ctx, content, ggml_cont(ctx, position));
    ggml_tensor * attn = ggml_soft_max_ext(ctx, scores, mask, 1.0f / std::sqrt(float(d_head)), 0.0f);

    ggml_tensor * v_heads = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, v, d_head, n_head, n_kv), 1, 2, 0, 3));
    ggml_tensor * o = ggml_mul_mat(ctx, v_heads, attn); // [d_head, n_q, head]
    o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3));
    return ggml_reshape_2d(ctx, o, d, n_q);
}

ggml_tensor * conformer_layer(ggml_context * ctx, ggml_cgraph * gf, const conformer_layer_weights & L,
                              const linear_op & linear, ggml_tensor * x, ggml_tensor * pos, ggml_tensor * mask,
                              const std::vector<layer_caches> & caches) {
    const int64_t d = x->ne[0];
    const int64_t n_batch = int64_t(caches.size());
    const int64_t n_q = x->ne[1] / n_batch; // x is [d, n_q * batch], each stream's frames together
    std::vector<ggml_tensor *> conv_caches;
    for (const layer_caches & c : caches) conv_caches.push_back(c.conv);
    const int64_t n_kv = caches[0].left + n_q;

    // Macaron feed-forward, half-step residual.
    ggml_tensor * h = layer_norm(ctx, x, L.norm_ff1_w, L.norm_ff1_b);
    h = linear(ctx, ggml_silu(ctx, linear(ctx, h, L.ff1_w1, L.ff1_b1)), L.ff1_w2, L.ff1_b2);
    x = ggml_add(ctx, x, ggml_scale(ctx, h, 0.5f));

    // Relative-position self-attention over [cached frames, this chunk]: the projections for
    // the whole batch at once, the attention itself per stream against its own caches (copying
    // the caches into a batch would cost more than the small per-stream products).
    h = layer_norm(ctx, x, L.norm_att_w, L.norm_att_b);
    ggml_tensor * q_all = linear(ctx, h, L.q_w, L.q_b);
    ggml_tensor * k_all = linear(ctx, h, L.k_w, L.k_b);
    ggml_tensor * v_all = linear(ctx, h, L.v_w, L.v_b);
    std::vector<ggml_tensor *> outputs;
    for (int64_t b = 0; b < n_batch; ++b) {
        auto columns = [&](ggml_tensor * t) { return ggml_view_2d(ctx, t, d, n_q, t->nb[1], size_t(b * n_q) * t->nb[1]); };
        const layer_caches & cache = caches[size_t(b)];
        // The chunk's keys and values go after the window; the attention reads both in place.
        // The copies are in the graph before the reads, and ggml runs a graph in order.
        auto window = [&](ggml_tensor * kind, ggml_tensor * fresh) {
            ggml_build_forward_expand(gf, ggml_cpy(ctx, columns(fresh),
                                                   ggml_view_2d(ctx, kind, d, n_q, kind->nb[1], size_t(cache.end) * kind->nb[1])));
            return ggml_view_2d(ctx, kind, d, n_kv, kind->nb[1], size_t(cache.end - cache.left) * kind->nb[1]);
        };
        ggml_tensor * k = window(cache.k, k_all); // [d, n_kv]
        ggml_tensor * v = window(cache.v, v_all);
        ggml_tensor * stream_mask = ggml_view_2d(ctx, mask, n_kv, n_q, mask->nb[1], size_t(b) * mask->nb[3]);
        outputs.push_back(attention(ctx, L, columns(q_all), k, v, pos, stream_mask));
    }
    x = ggml_add(ctx, x, linear(ctx, join(ctx, outputs, 1), L.out_w, L.out_b));

    // Convolution module: pointwise, GLU, causal depthwise over [cached inputs, chunk], norm, SiLU, pointwise.
    h = layer_norm(ctx, x, L.norm_conv_w, L.norm_conv_b);
    h = linear(ctx, h, L.pw1_w, L.pw1_b);
    ggml_tensor * value = ggml_view_2d(ctx, h, d, n_q * n_batch, h->nb[1], 0);
    ggml_tensor * gate = ggml_view_2d(ctx, h, d, n_q * n_batch, h->nb[1], size_t(d) * h->nb[0]);
    h = ggml_mul(ctx, value, ggml_sigmoid(ctx, gate));
    // The depthwise convolution's caches are a few frames: cheap to gather into one batch.
    ggml_tensor * hc = ggml_concat(ctx, join(ctx, conv_caches, 2), ggml_reshape_3d(ctx, h, d, n_q, n_batch), 1);
    for (size_t b = 0; b < conv_caches.size(); ++b) keep_last(ctx, gf, hc, conv_caches[b], b);
    h = ggml_ssm_conv(ctx, ggml_cont(ctx, ggml_transpose(ctx, hc)), L.dw_w); // [d, n_q, batch]
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
