#include "encoder.h"

#include "conformer.h"
#include "error.h"
#include "language_prompt.h"
#include "log.h"
#include "subsampling.h"
#include "system_info.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <shared_mutex>
#include <string>

namespace nemotron {

encoder::encoder(const model & m, ggml_backend_dev_t device, int n_threads)
    : m_(m),
      backend_(start_backend(device, n_threads)),
      set_n_threads_(reinterpret_cast<ggml_backend_set_n_threads_t>(
          ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(device), "ggml_backend_set_n_threads"))),
      threads_(set_n_threads_ != nullptr ? n_threads : 1), // a backend without threads is left alone
      threads_now_(n_threads),
      host_(ggml_backend_dev_type(device) == GGML_BACKEND_DEVICE_TYPE_CPU) {
    alloc_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
    if (alloc_ == nullptr) {
        ggml_backend_free(backend_);
        fail(NEMOTRON_ERR_NO_MEMORY, "cannot create the graph allocator");
    }
}

encoder::~encoder() {
    for (auto & entry : projected_) {
        ggml_backend_buffer_free(entry.second.buf);
        ggml_free(entry.second.ctx);
    }
    if (graph_.ctx) ggml_free(graph_.ctx);
    ggml_gallocr_free(alloc_);
    ggml_backend_free(backend_);
}

void encoder::allocate(ggml_context * ctx, ggml_cgraph * gf) {
    // A device that lacks an operation (or a weight type for it) is named here, at the first chunk,
    // rather than failing inside the backend.
    std::set<std::string> missing;
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
        const ggml_tensor * node = ggml_graph_node(gf, i);
        if (!ggml_backend_supports_op(backend_, node)) {
            missing.insert(std::string(ggml_op_desc(node)) + (node->src[0] ? std::string(" of ") + ggml_type_name(node->src[0]->type) : ""));
        }
    }
    if (!missing.empty()) {
        std::string list;
        for (const std::string & op : missing) list += (list.empty() ? "" : ", ") + op;
        ggml_free(ctx);
        if (ctx == graph_.ctx) graph_ = chunk_graph();
        fail(NEMOTRON_ERR_BACKEND, "the %s device cannot compute what the encoder needs: %s", ggml_backend_name(backend_), list.c_str());
    }
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
    // Per layer a product and its copy into the kept tensor, and the positions' input: 2 + 2 per layer.
    const size_t n_nodes = size_t(8 + 4 * hp.n_layers);
    std::vector<uint8_t> meta(ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false));
    ggml_init_params ip = {meta.size(), meta.data(), true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, n_nodes, false);
    ggml_tensor * pos = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.d_model, n_pos);
    ggml_set_input(pos);
    const linear_op linear{m_.q8_0_packed, host_};
    for (int il = 0; il < hp.n_layers; ++il) {
        ggml_build_forward_expand(gf, ggml_cpy(ctx, linear(ctx, pos, m_.layers[size_t(il)].pos_w, nullptr), out.layers[size_t(il)]));
    }
    allocate(ctx, gf);
    std::vector<float> host;
    relative_positions(hp.d_model, n_kv, n_q, host);
    ggml_backend_tensor_set(pos, host.data(), 0, ggml_nbytes(pos));
    const ggml_status status = ggml_backend_graph_compute(backend_, gf);
    ggml_free(ctx);
    if (status != GGML_STATUS_SUCCESS) fail(NEMOTRON_ERR_BACKEND, "the position graph failed (ggml status %d)", int(status));
    return projected_.emplace(n_q, std::move(out)).first->second;
}

void encoder::build_chunk_graph(const cache_pool & pool, int n_batch, int n_chunks, int n_frames, int drop, int n_q) {
    const nemotron_hparams & hp = m_.hparams;
    const int n_kv = pool.left + n_q;
    const int64_t n_slots = int64_t(n_batch) * n_chunks; // every chunk of every stream, stream by stream
    const projected_positions & projected = project_positions(n_kv, n_q);
    if (graph_.ctx) ggml_free(graph_.ctx);
    graph_ = chunk_graph();

    // Measured: 46 operations for the inputs and the subsampling and 82 per layer, whatever the batch
    // size; the budget leaves room above that.
    const size_t n_nodes = size_t(64 + 96 * hp.n_layers);
    const size_t meta = ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false);
    if (meta_.size() < meta) meta_.resize(meta);
    ggml_init_params ip = {meta_.size(), meta_.data(), true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, n_nodes, false);

    ggml_tensor * mel_in = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, hp.n_mels, n_frames, 1, n_slots);
    ggml_set_input(mel_in);
    ggml_tensor * mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, n_kv, n_q, 1, n_slots);
    ggml_set_input(mask);
    ggml_tensor * one_hot = nullptr;
    if (hp.num_prompts > 0) {
        one_hot = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.num_prompts, int64_t(n_q) * n_slots);
        ggml_set_input(one_hot);
    }
    layer_caches caches;
    caches.left = pool.left;
    caches.conv_frames = pool.conv_frames;
    caches.n_chunks = n_chunks;
    caches.window = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, int64_t(n_kv) * n_slots);
    caches.fresh = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, int64_t(n_q) * n_slots);
    caches.conv_rows = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, int64_t(pool.conv_frames) * n_batch);
    caches.conv_rows_out = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, int64_t(pool.conv_frames) * n_batch);
    for (ggml_tensor * t : {caches.window, caches.fresh, caches.conv_rows, caches.conv_rows_out}) ggml_set_input(t);

    const linear_op linear{m_.q8_0_packed, host_};
    ggml_tensor * x = subsampling::build(ctx, m_.subsampling, linear, mel_in, drop);
    if (hp.xscaling) {
        // NeMo's RelPositionalEncoding scales its input by sqrt(d_model) when xscaling is set.
        x = ggml_scale(ctx, x, std::sqrt(float(hp.d_model)));
    }
    for (int il = 0; il < hp.n_layers; ++il) {
        caches.k = pool.k[size_t(il)];
        caches.v = pool.v[size_t(il)];
        caches.conv = pool.conv[size_t(il)];
        x = conformer_layer(ctx, gf, m_.layers[size_t(il)], linear, x, projected.layers[size_t(il)], mask, caches);
    }
    if (one_hot != nullptr) x = language_prompt(ctx, m_.prompt, linear, x, one_hot);
    ggml_set_output(x);
    ggml_build_forward_expand(gf, x);

    graph_.ctx = ctx;
    graph_.gf = gf;
    graph_.mel = mel_in;
    graph_.mask = mask;
    graph_.one_hot = one_hot;
    graph_.out = x;
    graph_.window = caches.window;
    graph_.fresh = caches.fresh;
    graph_.conv_rows = caches.conv_rows;
    graph_.conv_rows_out = caches.conv_rows_out;
    allocate(ctx, gf);
    log(NEMOTRON_LOG_DEBUG, "chunk graph of %d stream%s x %d chunk%s, %d mel frames: %d operations", n_batch,
        n_batch == 1 ? "" : "s", n_chunks, n_chunks == 1 ? "" : "s", n_frames, ggml_graph_n_nodes(gf));
    graph_.n_frames = n_frames;
    graph_.drop = drop;
    graph_.n_batch = n_batch;
    graph_.n_chunks = n_chunks;
    graph_.pool_generation = pool.generation;
}

void encoder::set_cache_rows(const std::vector<encoder_job> & jobs, int n_chunks, int n_q) {
    const cache_pool & pool = jobs[0].cache->pool;
    const int64_t cap = pool.capacity;
    // Frame t of a stream is row t mod capacity of its slot; frames before its first are masked rows.
    auto ring_row = [&](const encoder_cache & c, int64_t t) { return int64_t(c.slot) * cap + ((t % cap) + cap) % cap; };
    rows_.clear();     // I32, for get_rows: each chunk's window and new frames; then the convolution inputs
    rows_out_.clear(); // I64, for set_rows: the new frames; then the convolution inputs
    for (const encoder_job & job : jobs) {
        const int64_t end = job.cache->end;
        for (int c = 0; c < n_chunks; ++c) {
            const int64_t chunk_end = end + int64_t(c + 1) * n_q;
            for (int64_t t = chunk_end - n_q - pool.left; t < chunk_end; ++t) rows_.push_back(int32_t(ring_row(*job.cache, t)));
        }
        for (int64_t t = end; t < end + int64_t(n_chunks) * n_q; ++t) rows_out_.push_back(ring_row(*job.cache, t));
    }
    const size_t n_window = rows_.size(), n_fresh = rows_out_.size();
    for (const encoder_job & job : jobs) {
        for (int i = 0; i < pool.conv_frames; ++i) {
            rows_out_.push_back(int64_t(job.cache->slot) * pool.conv_frames + i);
            rows_.push_back(int32_t(rows_out_.back()));
        }
    }
    ggml_backend_tensor_set(graph_.window, rows_.data(), 0, n_window * sizeof(int32_t));
    ggml_backend_tensor_set(graph_.fresh, rows_out_.data(), 0, n_fresh * sizeof(int64_t));
    ggml_backend_tensor_set(graph_.conv_rows, rows_.data() + n_window, 0, (rows_.size() - n_window) * sizeof(int32_t));
    ggml_backend_tensor_set(graph_.conv_rows_out, rows_out_.data() + n_fresh, 0, (rows_out_.size() - n_fresh) * sizeof(int64_t));
}

int encoder::run_chunks(const std::vector<encoder_job> & jobs, int n_chunks, int n_frames, int drop) {
    const nemotron_hparams & hp = m_.hparams;
    const int n_q = subsampling::output_length(hp.subsampling_factor, n_frames) - drop;
    if (n_q <= 0 || jobs.empty() || n_chunks <= 0) return 0;
    const int n_batch = int(jobs.size());
    const size_t n_slots = size_t(n_batch) * size_t(n_chunks);
    const cache_pool & pool = jobs[0].cache->pool;
    const int left = pool.left;
    const int n_kv = left + n_q;
    // Every chunk's new frames are written before any window is read, so they must all fit beside the window.
    if (left + n_chunks * n_q > pool.capacity) fail(NEMOTRON_ERR_INVALID_ARG, "%d chunks of %d frames exceed the cache", n_chunks, n_q);
    // The pool's tensors stay in place while this chunk reads and writes them.
    std::shared_lock<std::shared_mutex> pool_lock(pool.lock());

    // Chosen before any graph of this chunk runs (a new geometry's positions are projected first).
    const int n_threads = threads_.threads();
    if (set_n_threads_ != nullptr && n_threads != threads_now_) {
        log(NEMOTRON_LOG_DEBUG, n_threads < threads_.max() ? "other tasks are using the CPUs: computing with %d of %d threads"
                                                           : "the CPUs are free again: computing with %d of %d threads",
            n_threads, threads_.max());
        threads_now_ = n_threads;
        set_n_threads_(backend_, n_threads);
    }

    if (graph_.n_frames != n_frames || graph_.drop != drop || graph_.n_batch != n_batch || graph_.n_chunks != n_chunks ||
        graph_.pool_generation != pool.generation) {
        build_chunk_graph(pool, n_batch, n_chunks, n_frames, drop, n_q);
    }
    ggml_tensor * mel_in = graph_.mel, * mask = graph_.mask, * x = graph_.out;
    set_cache_rows(jobs, n_chunks, n_q);

    const size_t mel_bytes = size_t(n_chunks) * size_t(n_frames) * size_t(hp.n_mels) * sizeof(float);
    std::vector<float> & host = mask_;
    host.assign(size_t(n_kv) * size_t(n_q) * n_slots, 0.0f);
    for (int b = 0; b < n_batch; ++b) {
        ggml_backend_tensor_set(mel_in, jobs[size_t(b)].mel, size_t(b) * mel_bytes, mel_bytes);
        for (int c = 0; c < n_chunks; ++c) {
            // Cached frames that do not exist yet (a stream's first frames) are masked out.
            const int n_valid = std::min(jobs[size_t(b)].cache->n_valid + c * n_q, left);
            float * m = host.data() + (size_t(b) * size_t(n_chunks) + size_t(c)) * size_t(n_kv) * size_t(n_q);
            for (int i = 0; i < n_q; ++i) std::fill_n(m + size_t(i) * size_t(n_kv), left - n_valid, -std::numeric_limits<float>::infinity());
        }
    }
    ggml_backend_tensor_set(mask, host.data(), 0, ggml_nbytes(mask));
    const size_t stream_frames = size_t(n_chunks) * size_t(n_q);
    if (graph_.one_hot != nullptr) {
        // Every frame of a stream carries its language.
        host.assign(size_t(hp.num_prompts) * stream_frames * size_t(n_batch), 0.0f);
        for (int b = 0; b < n_batch; ++b) {
            for (size_t i = 0; i < stream_frames; ++i) host[(size_t(b) * stream_frames + i) * size_t(hp.num_prompts) + size_t(jobs[size_t(b)].prompt)] = 1.0f;
        }
        ggml_backend_tensor_set(graph_.one_hot, host.data(), 0, ggml_nbytes(graph_.one_hot));
    }

    const ggml_status status = ggml_backend_graph_compute(backend_, graph_.gf);
    if (status != GGML_STATUS_SUCCESS) {
        fail(NEMOTRON_ERR_BACKEND, "the encoder graph failed (ggml status %d)", int(status));
    }
    const size_t stream_floats = stream_frames * size_t(hp.d_model);
    for (int b = 0; b < n_batch; ++b) {
        std::vector<float> & out = *jobs[size_t(b)].out;
        const size_t offset = out.size();
        out.resize(offset + stream_floats);
        ggml_backend_tensor_get(x, out.data() + offset, size_t(b) * stream_floats * sizeof(float), stream_floats * sizeof(float));
        encoder_cache & cache = *jobs[size_t(b)].cache;
        cache.n_valid = std::min(cache.n_valid + int(stream_frames), left);
        cache.end += int64_t(stream_frames);
    }
    return n_q;
}

} // namespace nemotron
