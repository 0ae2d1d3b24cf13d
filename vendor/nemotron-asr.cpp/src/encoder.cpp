#include "encoder.h"

#include "error.h"

#include <cmath>
#include <limits>

namespace nemotron {

// NeMo's LayerNorm epsilon.
static const float kLayerNormEps = 1e-5f;

int subsampled_length(const nemotron_hparams & hp, int n_frames) {
    // Each causal stride-2 stage pads kernel-1 = 2 on the left and stride-1 = 1 on the right.
    for (int f = hp.subsampling_factor; f > 1; f /= 2) n_frames = n_frames / 2 + 1;
    return n_frames;
}

// ---- cache ------------------------------------------------------------------------------

encoder_cache::encoder_cache(const model & m, ggml_backend_dev_t device) {
    const nemotron_hparams & hp = m.hparams;
    ggml_init_params ip = {ggml_tensor_overhead() * size_t(3 * hp.n_layers + 1), nullptr, true};
    ctx_ = ggml_init(ip);
    if (ctx_ == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "out of memory");
    const int left = std::max(hp.att_left_context, 1);
    for (int il = 0; il < hp.n_layers; ++il) {
        k.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, left));
        v.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, left));
        conv.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, std::max(hp.conv_kernel_size - 1, 1)));
    }
    buf_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, ggml_backend_dev_buffer_type(device));
    if (buf_ == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate the encoder caches");
    reset();
}

encoder_cache::~encoder_cache() {
    if (buf_) ggml_backend_buffer_free(buf_);
    if (ctx_) ggml_free(ctx_);
}

void encoder_cache::reset() {
    // Zero caches are NeMo's initial state: zero conv inputs are the causal padding, and
    // the attention never looks at cached frames that are not valid yet.
    ggml_backend_buffer_clear(buf_, 0);
    n_valid = 0;
}

// ---- graph ------------------------------------------------------------------------------

encoder::encoder(const model & m, ggml_backend_t backend) : m_(m), backend_(backend) {
    alloc_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    if (alloc_ == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "cannot create the graph allocator");
}

encoder::~encoder() {
    for (auto & entry : projected_) {
        ggml_backend_buffer_free(entry.second.buf);
        ggml_free(entry.second.ctx);
    }
    ggml_gallocr_free(alloc_);
}

void encoder::allocate(ggml_context * ctx, ggml_cgraph * gf) {
    if (!ggml_gallocr_alloc_graph(alloc_, gf)) {
        ggml_free(ctx);
        fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate an encoder graph");
    }
}

const encoder::projected_positions & encoder::project_positions(int n_kv, int n_q) {
    auto found = projected_.find(n_q);
    if (found != projected_.end()) return found->second;
    const nemotron_hparams & hp = m_.hparams;
    const int n_pos = n_kv + n_q - 1;

    projected_positions out;
    ggml_init_params cp = {ggml_tensor_overhead() * size_t(hp.n_layers), nullptr, true};
    out.ctx = ggml_init(cp);
    for (int il = 0; il < hp.n_layers; ++il) {
        out.layers.push_back(ggml_new_tensor_2d(out.ctx, GGML_TYPE_F32, hp.d_model, n_pos));
    }
    out.buf = ggml_backend_alloc_ctx_tensors_from_buft(out.ctx, ggml_backend_get_default_buffer_type(backend_));
    if (out.buf == nullptr) {
        ggml_free(out.ctx);
        fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate the projected positions");
    }

    const size_t n_nodes = size_t(8 + 4 * hp.n_layers);
    const size_t meta = ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false);
    if (meta_.size() < meta) meta_.resize(meta);
    ggml_init_params ip = {meta_.size(), meta_.data(), true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, n_nodes, false);
    ggml_tensor * pos = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.d_model, n_pos);
    ggml_set_input(pos);
    for (int il = 0; il < hp.n_layers; ++il) {
        ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_mul_mat(ctx, m_.layers[size_t(il)].pos_w, pos), out.layers[size_t(il)]));
    }
    allocate(ctx, gf);
    std::vector<float> host;
    positions(n_kv, n_q, host);
    ggml_backend_tensor_set(pos, host.data(), 0, ggml_nbytes(pos));
    const ggml_status status = ggml_backend_graph_compute(backend_, gf);
    ggml_free(ctx);
    if (status != GGML_STATUS_SUCCESS) fail(NEMOTRON_ERR_BACKEND, "the position graph failed (ggml status %d)", int(status));
    return projected_.emplace(n_q, std::move(out)).first->second;
}

static ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, kLayerNormEps), w), b);
}

static ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    return b != nullptr ? ggml_add(ctx, y, b) : y;
}

// A causal 2-D convolution stage: pad (kernel-1) before and (stride-1) after on both axes.
static ggml_tensor * causal_pad(ggml_context * ctx, ggml_tensor * x) {
    return ggml_pad_ext(ctx, x, 2, 1, 2, 1, 0, 0, 0, 0);
}

static ggml_tensor * channel_bias(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b) {
    return ggml_add(ctx, x, ggml_reshape_3d(ctx, b, 1, 1, b->ne[0]));
}

ggml_tensor * encoder::subsampling(ggml_context * ctx, ggml_tensor * mel, int drop) {
    const subsampling_weights & sw = m_.subsampling;
    // mel ne [n_mels, T] is an image of width n_mels (frequency) and height T (time), as
    // NeMo's (batch, 1, time, frequency) input.
    ggml_tensor * x = ggml_reshape_4d(ctx, mel, mel->ne[0], mel->ne[1], 1, 1);
    for (size_t s = 0; s < sw.stages.size(); ++s) {
        const subsampling_weights::stage & st = sw.stages[s];
        if (s == 0) {
            x = ggml_conv_2d(ctx, st.pw_w, causal_pad(ctx, x), 2, 2, 0, 0, 1, 1);
        } else {
            x = ggml_conv_2d_dw_direct(ctx, st.dw_w, causal_pad(ctx, x), 2, 2, 0, 0, 1, 1);
            x = channel_bias(ctx, x, st.dw_b);
            x = ggml_conv_2d(ctx, st.pw_w, x, 1, 1, 0, 0, 1, 1);
        }
        x = ggml_relu(ctx, channel_bias(ctx, x, st.pw_b));
    }
    // [freq, time, channels] -> per time step the features channel-major, as NeMo's
    // transpose(1, 2).reshape(b, t, c * f).
    const int64_t n_freq = x->ne[0], n_time = x->ne[1], n_ch = x->ne[2];
    x = ggml_cont(ctx, ggml_permute(ctx, x, 0, 2, 1, 3));
    x = ggml_reshape_2d(ctx, x, n_freq * n_ch, n_time);
    if (drop > 0) {
        x = ggml_view_2d(ctx, x, x->ne[0], n_time - drop, x->nb[1], size_t(drop) * x->nb[1]);
    }
    return linear(ctx, x, sw.out_w, sw.out_b);
}

ggml_tensor * encoder::conformer_layer(ggml_context * ctx, ggml_cgraph * gf, int il, ggml_tensor * x, ggml_tensor * pos,
                                       ggml_tensor * mask, encoder_cache & cache) {
    const nemotron_hparams & hp = m_.hparams;
    const conformer_layer_weights & L = m_.layers[size_t(il)];
    const int64_t d = hp.d_model, n_head = hp.n_heads, d_head = hp.d_head;
    const int64_t n_q = x->ne[1];
    const int64_t left = cache.k[size_t(il)]->ne[1];
    const int64_t n_kv = left + n_q;

    // Macaron feed-forward, half-step residual.
    ggml_tensor * h = layer_norm(ctx, x, L.norm_ff1_w, L.norm_ff1_b);
    h = linear(ctx, ggml_silu(ctx, linear(ctx, h, L.ff1_w1, L.ff1_b1)), L.ff1_w2, L.ff1_b2);
    x = ggml_add(ctx, x, ggml_scale(ctx, h, 0.5f));

    // Relative-position self-attention over [cached frames, this chunk].
    h = layer_norm(ctx, x, L.norm_att_w, L.norm_att_b);
    ggml_tensor * q = linear(ctx, h, L.q_w, L.q_b);
    ggml_tensor * k = ggml_concat(ctx, cache.k[size_t(il)], linear(ctx, h, L.k_w, L.k_b), 1);
    ggml_tensor * v = ggml_concat(ctx, cache.v[size_t(il)], linear(ctx, h, L.v_w, L.v_b), 1);
    ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_view_2d(ctx, k, d, left, k->nb[1], size_t(n_q) * k->nb[1]),
                                           cache.k[size_t(il)]));
    ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_view_2d(ctx, v, d, left, v->nb[1], size_t(n_q) * v->nb[1]),
                                           cache.v[size_t(il)]));

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
    o = linear(ctx, ggml_reshape_2d(ctx, o, d, n_q), L.out_w, L.out_b);
    x = ggml_add(ctx, x, o);

    // Convolution module: pointwise, GLU, causal depthwise over [cached inputs, chunk], norm, SiLU, pointwise.
    h = layer_norm(ctx, x, L.norm_conv_w, L.norm_conv_b);
    h = linear(ctx, h, L.pw1_w, L.pw1_b);
    ggml_tensor * value = ggml_view_2d(ctx, h, d, n_q, h->nb[1], 0);
    ggml_tensor * gate = ggml_view_2d(ctx, h, d, n_q, h->nb[1], size_t(d) * h->nb[0]);
    h = ggml_mul(ctx, value, ggml_sigmoid(ctx, gate));
    ggml_tensor * conv_cache = cache.conv[size_t(il)];
    const int64_t n_keep = conv_cache->ne[1];
    ggml_tensor * hc = ggml_concat(ctx, conv_cache, h, 1);
    ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_view_2d(ctx, hc, d, n_keep, hc->nb[1], size_t(n_q) * hc->nb[1]),
                                           conv_cache));
    h = ggml_ssm_conv(ctx, ggml_cont(ctx, ggml_transpose(ctx, hc)), L.dw_w); // [d, n_q, 1]
    h = ggml_reshape_2d(ctx, h, d, n_q);
    if (L.dw_b != nullptr) h = ggml_add(ctx, h, L.dw_b);
    h = ggml_silu(ctx, layer_norm(ctx, h, L.conv_norm_w, L.conv_norm_b));
    x = ggml_add(ctx, x, linear(ctx, h, L.pw2_w, L.pw2_b));

    h = layer_norm(ctx, x, L.norm_ff2_w, L.norm_ff2_b);
    h = linear(ctx, ggml_silu(ctx, linear(ctx, h, L.ff2_w1, L.ff2_b1)), L.ff2_w2, L.ff2_b2);
    x = ggml_add(ctx, x, ggml_scale(ctx, h, 0.5f));

    return layer_norm(ctx, x, L.norm_out_w, L.norm_out_b);
}

void encoder::positions(int n_kv, int n_q, std::vector<float> & out) const {
    // NeMo's RelPositionalEncoding, in float32 as torch builds it: pe[p, 2i] = sin(p w_i),
    // pe[p, 2i + 1] = cos(p w_i), w_i = exp(2i * -(ln 10000 / d_model)).
    const int d = m_.hparams.d_model;
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

int encoder::run_chunk(const float * mel, int n_frames, int drop, encoder_cache & cache, std::vector<float> & out) {
    const nemotron_hparams & hp = m_.hparams;
    const int n_q = subsampled_length(hp, n_frames) - drop;
    if (n_q <= 0) return 0;
    const int left = int(cache.k[0]->ne[1]);
    const int n_kv = left + n_q;

    const projected_positions & projected = project_positions(n_kv, n_q);

    const size_t n_nodes = size_t(64 + 96 * hp.n_layers);
    const size_t meta = ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false);
    if (meta_.size() < meta) meta_.resize(meta);
    ggml_init_params ip = {meta_.size(), meta_.data(), true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, n_nodes, false);

    ggml_tensor * mel_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_mels, n_frames);
    ggml_set_input(mel_in);
    ggml_tensor * mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv, n_q);
    ggml_set_input(mask);

    ggml_tensor * x = subsampling(ctx, mel_in, drop);
    for (int il = 0; il < hp.n_layers; ++il) {
        x = conformer_layer(ctx, gf, il, x, projected.layers[size_t(il)], mask, cache);
    }
    ggml_set_output(x);
    ggml_build_forward_expand(gf, x);

    allocate(ctx, gf);
    ggml_backend_tensor_set(mel_in, mel, 0, ggml_nbytes(mel_in));
    std::vector<float> host;
    // Cached frames that do not exist yet (the stream's first frames) are masked out.
    host.assign(size_t(n_kv) * size_t(n_q), 0.0f);
    const int n_invalid = left - std::min(cache.n_valid, left);
    for (int i = 0; i < n_q; ++i) {
        for (int j = 0; j < n_invalid; ++j) host[size_t(i) * size_t(n_kv) + size_t(j)] = -std::numeric_limits<float>::infinity();
    }
    ggml_backend_tensor_set(mask, host.data(), 0, ggml_nbytes(mask));

    const ggml_status status = ggml_backend_graph_compute(backend_, gf);
    if (status != GGML_STATUS_SUCCESS) {
        ggml_free(ctx);
        fail(NEMOTRON_ERR_BACKEND, "the encoder graph failed (ggml status %d)", int(status));
    }
    const size_t offset = out.size();
    out.resize(offset + size_t(n_q) * size_t(hp.d_model));
    ggml_backend_tensor_get(x, out.data() + offset, 0, ggml_nbytes(x));
    ggml_free(ctx);
    cache.n_valid = std::min(cache.n_valid + n_q, left);
    return n_q;
}

} // namespace nemotron
