#include "encoder.h"

#include "cpu_budget.h"
#include "error.h"
#include "log.h"
#include "q8_0_matmul.h"

#include "ggml-cpu.h"

#include <algorithm>
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
    left = std::max(hp.att_left_context, 1);
    // Room for a chunk as long as the window (right contexts go up to the left one): the
    // window moves once per (left + 1) / chunk chunks.
    const int capacity = 2 * left + 1;
    for (int il = 0; il < hp.n_layers; ++il) {
        k.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, capacity));
        v.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, capacity));
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
    end = left;
    n_valid = 0;
}

void encoder_cache::make_room(int n) {
    if (end + n <= int(k[0]->ne[1])) return;
    if (left + n > int(k[0]->ne[1])) fail(NEMOTRON_ERR_INVALID_ARG, "a chunk of %d frames exceeds the cache", n);
    std::vector<uint8_t> window(size_t(left) * k[0]->nb[1]);
    for (std::vector<ggml_tensor *> * kind : {&k, &v}) {
        for (ggml_tensor * t : *kind) {
            ggml_backend_tensor_get(t, window.data(), size_t(end - left) * t->nb[1], window.size());
            ggml_backend_tensor_set(t, window.data(), 0, window.size());
        }
    }
    end = left;
}

// ---- graph ------------------------------------------------------------------------------

encoder::encoder(const model & m, ggml_backend_t backend, int n_threads)
    : m_(m),
      backend_(backend),
      set_n_threads_(reinterpret_cast<ggml_backend_set_n_threads_t>(ggml_backend_reg_get_proc_address(
          ggml_backend_dev_backend_reg(ggml_backend_get_device(backend)), "ggml_backend_set_n_threads"))),
      threads_(set_n_threads_ != nullptr ? n_threads : 1), // a backend without threads is left alone
      threads_now_(n_threads),
      q8_0_kernel_(q8_0_matmul_available() && ggml_backend_is_cpu(backend)) {
    alloc_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    if (alloc_ == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "cannot create the graph allocator");
}

encoder::~encoder() {
    for (auto & entry : projected_) {
        ggml_backend_buffer_free(entry.second.buf);
        ggml_free(entry.second.ctx);
    }
    if (graph_.ctx) ggml_free(graph_.ctx);
    ggml_gallocr_free(alloc_);
}

void encoder::allocate(ggml_context * ctx, ggml_cgraph * gf) {
    if (!ggml_gallocr_alloc_graph(alloc_, gf)) {
        ggml_free(ctx);
        if (ctx == graph_.ctx) graph_ = chunk_graph();
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

    // This graph takes the allocator's buffer: the kept chunk graph cannot run again.
    graph_.n_batch = -1;
    const size_t n_nodes = size_t(8 + 4 * hp.n_layers);
    std::vector<uint8_t> meta(ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false));
    ggml_init_params ip = {meta.size(), meta.data(), true};
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

ggml_tensor * encoder::linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) const {
    const bool own_q8_0 = q8_0_now_ && w->type == GGML_TYPE_Q8_0 && w->ne[0] % 64 == 0 && x->type == GGML_TYPE_F32 &&
                          ggml_is_contiguous(x) && x->ne[2] == 1 && x->ne[3] == 1;
    ggml_tensor * y = own_q8_0 ? q8_0_matmul(ctx, w, x) : ggml_mul_mat(ctx, w, x);
    return b != nullptr ? ggml_add(ctx, y, b) : y;
}

// A causal 2-D convolution stage: pad (kernel-1) before and (stride-1) after on both axes.
static ggml_tensor * causal_pad(ggml_context * ctx, ggml_tensor * x) {
    return ggml_pad_ext(ctx, x, 2, 1, 2, 1, 0, 0, 0, 0);
}

static ggml_tensor * channel_bias(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b) {
    return ggml_add(ctx, x, ggml_reshape_3d(ctx, b, 1, 1, b->ne[0]));
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

ggml_tensor * encoder::subsampling(ggml_context * ctx, ggml_tensor * mel, int drop) {
    const subsampling_weights & sw = m_.subsampling;
    // mel ne [n_mels, T, 1, batch] is an image of width n_mels (frequency) and height T (time)
    // per stream, as NeMo's (batch, 1, time, frequency) input.
    ggml_tensor * x = mel;
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
    // [freq, time, channels, batch] -> per time step the features channel-major, as NeMo's
    // transpose(1, 2).reshape(b, t, c * f).
    const int64_t n_freq = x->ne[0], n_time = x->ne[1], n_ch = x->ne[2], n_batch = x->ne[3];
    x = ggml_cont(ctx, ggml_permute(ctx, x, 0, 2, 1, 3));
    x = ggml_reshape_3d(ctx, x, n_freq * n_ch, n_time, n_batch);
    if (drop > 0) {
        x = ggml_view_3d(ctx, x, x->ne[0], n_time - drop, n_batch, x->nb[1], x->nb[2], size_t(drop) * x->nb[1]);
    }
    x = linear(ctx, x, sw.out_w, sw.out_b); // [d, n_q, batch]
    return ggml_reshape_2d(ctx, x, x->ne[0], x->ne[1] * n_batch);
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

ggml_tensor * encoder::conformer_layer(ggml_context * ctx, ggml_cgraph * gf, int il, ggml_tensor * x, ggml_tensor * pos,
                                       ggml_tensor * mask, const std::vector<encoder_job> & jobs) {
    const nemotron_hparams & hp = m_.hparams;
    const conformer_layer_weights & L = m_.layers[size_t(il)];
    const int64_t d = hp.d_model;
    const int64_t n_batch = int64_t(jobs.size());
    const int64_t n_q = x->ne[1] / n_batch; // x is [d, n_q * batch], each stream's frames together
    std::vector<ggml_tensor *> k_caches, v_caches, conv_caches;
    for (const encoder_job & job : jobs) {
        k_caches.push_back(job.cache->k[size_t(il)]);
        v_caches.push_back(job.cache->v[size_t(il)]);
        conv_caches.push_back(job.cache->conv[size_t(il)]);
    }
    const int64_t n_kv = jobs[0].cache->left + n_q;

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
        const encoder_cache & cache = *jobs[size_t(b)].cache;
        // The chunk's keys and values go after the window; the attention reads both in place.
        // The copies are in the graph before the reads, and ggml runs a graph in order.
        auto window = [&](ggml_tensor * kind, ggml_tensor * fresh) {
            ggml_build_forward_expand(gf, ggml_cpy(ctx, columns(fresh),
                                                   ggml_view_2d(ctx, kind, d, n_q, kind->nb[1], size_t(cache.end) * kind->nb[1])));
            return ggml_view_2d(ctx, kind, d, n_kv, kind->nb[1], size_t(cache.end - cache.left) * kind->nb[1]);
        };
        ggml_tensor * k = window(k_caches[size_t(b)], k_all); // [d, n_kv]
        ggml_tensor * v = window(v_caches[size_t(b)], v_all);
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

void encoder::build_chunk_graph(const std::vector<encoder_job> & jobs, int n_frames, int drop, int n_q) {
    const nemotron_hparams & hp = m_.hparams;
    const int n_batch = int(jobs.size());
    const int n_kv = jobs[0].cache->left + n_q;
    const projected_positions & projected = project_positions(n_kv, n_q);
    if (graph_.ctx) ggml_free(graph_.ctx);
    graph_ = chunk_graph();

    const size_t n_nodes = size_t(64 + (96 + 40 * n_batch) * hp.n_layers);
    const size_t meta = ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false);
    if (meta_.size() < meta) meta_.resize(meta);
    ggml_init_params ip = {meta_.size(), meta_.data(), true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, n_nodes, false);

    ggml_tensor * mel_in = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, hp.n_mels, n_frames, 1, n_batch);
    ggml_set_input(mel_in);
    ggml_tensor * mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, n_kv, n_q, 1, n_batch);
    ggml_set_input(mask);

    ggml_tensor * x = subsampling(ctx, mel_in, drop);
    if (hp.xscaling) {
        // NeMo's RelPositionalEncoding scales its input by sqrt(d_model) when xscaling is set.
        x = ggml_scale(ctx, x, std::sqrt(float(hp.d_model)));
    }
    for (int il = 0; il < hp.n_layers; ++il) {
        x = conformer_layer(ctx, gf, il, x, projected.layers[size_t(il)], mask, jobs);
    }
    ggml_set_output(x);
    ggml_build_forward_expand(gf, x);

    // Where the graph touches a stream's caches: views into them and nodes reading them.
    std::map<const ggml_tensor *, chunk_graph::cache_ref> caches;
    for (int b = 0; b < n_batch; ++b) {
        const encoder_cache & cache = *jobs[size_t(b)].cache;
        for (int il = 0; il < hp.n_layers; ++il) {
            caches[cache.k[size_t(il)]] = {b, il, chunk_graph::key};
            caches[cache.v[size_t(il)]] = {b, il, chunk_graph::value};
            caches[cache.conv[size_t(il)]] = {b, il, chunk_graph::conv};
        }
    }
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
        ggml_tensor * node = ggml_graph_node(gf, i);
        auto viewed = node->view_src ? caches.find(node->view_src) : caches.end();
        if (viewed != caches.end()) {
            const chunk_graph::cache_ref & ref = viewed->second;
            const size_t base = ref.kind == chunk_graph::conv ? 0 : size_t(jobs[size_t(ref.slot)].cache->end) * node->view_src->nb[1];
            graph_.views.push_back({node, ref, node->view_offs - base});
        }
        for (int j = 0; j < GGML_MAX_SRC; ++j) {
            auto read = node->src[j] ? caches.find(node->src[j]) : caches.end();
            if (read != caches.end()) graph_.srcs.push_back({node, j, read->second});
        }
    }

    graph_.ctx = ctx;
    graph_.gf = gf;
    graph_.mel = mel_in;
    graph_.mask = mask;
    graph_.out = x;
    allocate(ctx, gf);
    graph_.n_frames = n_frames;
    graph_.drop = drop;
    graph_.n_batch = n_batch;
}

void encoder::bind_caches(const std::vector<encoder_job> & jobs) {
    auto tensor_of = [&](const chunk_graph::cache_ref & ref) {
        const encoder_cache & cache = *jobs[size_t(ref.slot)].cache;
        const std::vector<ggml_tensor *> & kind = ref.kind == chunk_graph::key ? cache.k : ref.kind == chunk_graph::value ? cache.v : cache.conv;
        return kind[size_t(ref.layer)];
    };
    for (const chunk_graph::view_ref & view : graph_.views) {
        ggml_tensor * cache = tensor_of(view.cache);
        const size_t base = view.cache.kind == chunk_graph::conv ? 0 : size_t(jobs[size_t(view.cache.slot)].cache->end) * cache->nb[1];
        view.t->view_src = cache;
        view.t->view_offs = base + view.offset;
        view.t->buffer = nullptr;
        if (ggml_backend_view_init(view.t) != GGML_STATUS_SUCCESS) fail(NEMOTRON_ERR_BACKEND, "cannot bind a stream's caches");
    }
    for (const chunk_graph::src_ref & src : graph_.srcs) src.node->src[src.src] = tensor_of(src.cache);
}

int encoder::run_chunks(const std::vector<encoder_job> & jobs, int n_frames, int drop) {
    const nemotron_hparams & hp = m_.hparams;
    const int n_q = subsampled_length(hp, n_frames) - drop;
    if (n_q <= 0 || jobs.empty()) return 0;
    const int n_batch = int(jobs.size());
    const int left = jobs[0].cache->left;
    const int n_kv = left + n_q;
    for (const encoder_job & job : jobs) job.cache->make_room(n_q);

    // Chosen before any graph of this chunk runs (a new geometry's positions are projected first).
    const int n_threads = threads_.threads();
    if (set_n_threads_ != nullptr && n_threads != threads_now_) {
        log(NEMOTRON_LOG_DEBUG, n_threads < threads_.max() ? "other tasks are using the CPUs: computing with %d of %d threads"
                                                           : "the CPUs are free again: computing with %d of %d threads",
            n_threads, threads_.max());
        threads_now_ = n_threads;
        set_n_threads_(backend_, n_threads);
    }

    // With one frame per stream the products are bound by reading the weights, where ggml's
    // one-column kernel is the faster; choosing by the stream's frames, not the batch size,
    // keeps a batched stream's results those of the stream alone.
    q8_0_now_ = q8_0_kernel_ && n_q >= 2;
    if (graph_.n_frames == n_frames && graph_.drop == drop && graph_.n_batch == n_batch) {
        bind_caches(jobs);
    } else {
        build_chunk_graph(jobs, n_frames, drop, n_q);
    }
    ggml_tensor * mel_in = graph_.mel, * mask = graph_.mask, * x = graph_.out;

    const size_t mel_bytes = size_t(n_frames) * size_t(hp.n_mels) * sizeof(float);
    std::vector<float> & host = mask_;
    host.assign(size_t(n_kv) * size_t(n_q) * size_t(n_batch), 0.0f);
    for (int b = 0; b < n_batch; ++b) {
        ggml_backend_tensor_set(mel_in, jobs[size_t(b)].mel, size_t(b) * mel_bytes, mel_bytes);
        // Cached frames that do not exist yet (a stream's first frames) are masked out.
        const int n_invalid = left - std::min(jobs[size_t(b)].cache->n_valid, left);
        float * m = host.data() + size_t(b) * size_t(n_kv) * size_t(n_q);
        for (int i = 0; i < n_q; ++i) {
            std::fill_n(m + size_t(i) * size_t(n_kv), n_invalid, -std::numeric_limits<float>::infinity());
        }
    }
    ggml_backend_tensor_set(mask, host.data(), 0, ggml_nbytes(mask));

    const ggml_status status = ggml_backend_graph_compute(backend_, graph_.gf);
    if (status != GGML_STATUS_SUCCESS) {
        fail(NEMOTRON_ERR_BACKEND, "the encoder graph failed (ggml status %d)", int(status));
    }
    const size_t frame_floats = size_t(n_q) * size_t(hp.d_model);
    for (int b = 0; b < n_batch; ++b) {
        std::vector<float> & out = *jobs[size_t(b)].out;
        const size_t offset = out.size();
        out.resize(offset + frame_floats);
        ggml_backend_tensor_get(x, out.data() + offset, size_t(b) * frame_floats * sizeof(float), frame_floats * sizeof(float));
        encoder_cache & cache = *jobs[size_t(b)].cache;
        cache.n_valid = std::min(cache.n_valid + n_q, left);
        cache.end += n_q;
    }
    return n_q;
}

} // namespace nemotron
