// The C API: every entry point catches what the engine throws and turns it into a status
// and a thread-local message.
#include "nemotron-asr.h"

#include "cpu_budget.h"
#include "error.h"
#include "hparams_check.h"
#include "log.h"
#include "mel.h"
#include "model.h"
#include "q8_0_matmul.h"
#include "stream.h"
#include "system_info.h"
#include "text.h"

#include "ggml-backend.h"
#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

struct nemotron_context {
    nemotron::model    model;
    ggml_backend_dev_t device = nullptr;
    int                n_threads = 1;

    // The decoder's float32 weights, made when the first stream needs them.
    std::once_flag                         rnnt_once;
    std::unique_ptr<nemotron::rnnt_weights> rnnt;

    // Every stream's encoder caches, in slots of one pool so that a batch of streams reads them together.
    std::unique_ptr<nemotron::cache_pool> caches;

    // Runs the chunks of several streams together (nemotron_context_run_streams), made when first needed;
    // one call at a time uses it.
    std::mutex                         batch_mutex;
    std::unique_ptr<nemotron::encoder> batch;

    // The caller's handle and one per stream: streams read the model, so it lives as long as
    // the last of them (see "Lifetimes" in the header).
    std::atomic<int>  refs{1};
    std::atomic<bool> freed{false}; // nemotron_context_free was called
};

struct nemotron_stream {
    nemotron_context *                ctx = nullptr;
    std::unique_ptr<nemotron::stream> impl;
};

namespace {

thread_local std::string g_last_error;

void release(nemotron_context * ctx) {
    if (ctx->refs.fetch_sub(1) == 1) delete ctx;
}

template <class F>
nemotron_status guarded(F && body) {
    nemotron::log_scope scope;
    try {
        body();
        g_last_error.clear();
        return NEMOTRON_OK;
    } catch (const nemotron::error & e) {
        g_last_error = e.what();
        return e.status();
    } catch (const std::bad_alloc &) {
        g_last_error = "out of memory";
        return NEMOTRON_ERR_NO_MEMORY;
    } catch (const std::exception & e) {
        g_last_error = std::string("internal error: ") + e.what();
        return NEMOTRON_ERR_INTERNAL;
    } catch (...) {
        g_last_error = "internal error";
        return NEMOTRON_ERR_INTERNAL;
    }
}

// Info structs may come from a caller built against an older, smaller header: fill only
// the fields it has room for.
template <class T>
nemotron_status copy_out(const T & full, T * out) {
    if (out == nullptr || out->struct_size == 0) {
        nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "the output struct is NULL or its struct_size is not set");
    }
    const size_t n = std::min(out->struct_size, sizeof(T));
    std::memcpy(static_cast<void *>(out), &full, n);
    out->struct_size = n;
    return NEMOTRON_OK;
}

// The stream, checked to be one a computation may run on.
nemotron::stream & live(nemotron_stream * s) {
    if (s == nullptr) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "stream must not be NULL");
    if (s->ctx->freed) {
        nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "the stream's model has been freed (nemotron_context_free); free the stream too");
    }
    return *s->impl;
}

} // namespace

extern "C" {

const char * nemotron_version(void) { return NEMOTRON_ASR_VERSION; }

const char * nemotron_ggml_version(void) { return ggml_version(); }

const char * nemotron_last_error(void) { return g_last_error.c_str(); }

int nemotron_backend_count(void) { return int(ggml_backend_reg_count()); }

const char * nemotron_backend_name(int index) {
    if (index < 0 || size_t(index) >= ggml_backend_reg_count()) return nullptr;
    return ggml_backend_reg_name(ggml_backend_reg_get(size_t(index)));
}

int nemotron_device_count(void) { return int(ggml_backend_dev_count()); }

nemotron_status nemotron_device_get_info(int index, struct nemotron_device_info * info) {
    return guarded([&] {
        if (index < 0 || size_t(index) >= ggml_backend_dev_count()) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "device index %d is out of range (0 to %zu)", index,
                           ggml_backend_dev_count() - 1);
        }
        ggml_backend_dev_t dev = ggml_backend_dev_get(size_t(index));
        ggml_backend_dev_props props;
        ggml_backend_dev_get_props(dev, &props);
        nemotron_device_info full = {};
        full.struct_size = sizeof(full);
        full.name = ggml_backend_dev_name(dev);
        full.description = ggml_backend_dev_description(dev);
        switch (props.type) {
            case GGML_BACKEND_DEVICE_TYPE_GPU:   full.type = NEMOTRON_DEVICE_GPU; break;
            case GGML_BACKEND_DEVICE_TYPE_IGPU:  full.type = NEMOTRON_DEVICE_IGPU; break;
            case GGML_BACKEND_DEVICE_TYPE_CPU:   full.type = NEMOTRON_DEVICE_CPU; break;
            default:                             full.type = NEMOTRON_DEVICE_ACCEL; break;
        }
        full.memory_free = props.memory_free;
        full.memory_total = props.memory_total;
        copy_out(full, info);
    });
}

const char * nemotron_cpu_features(void) { return nemotron::cpu_features_text().c_str(); }

const char * nemotron_print_system_info(void) { return nemotron::system_info_text().c_str(); }

struct nemotron_context_params nemotron_context_default_params(void) {
    nemotron_context_params p = {};
    p.struct_size = sizeof(p);
    p.backend = NEMOTRON_BACKEND_AUTO;
    p.gpu_device = 0;
    p.n_threads = 0;
    p.use_mmap = true;
    return p;
}

nemotron_status nemotron_rpc_serve(const char * endpoint, nemotron_backend backend, int gpu_device, int n_threads) {
    return guarded([&] {
        if (backend == NEMOTRON_BACKEND_RPC) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "an RPC server serves a device of its own machine");
        if (n_threads < 0) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "n_threads must be 0 (all physical cores) or positive, not %d", n_threads);
        nemotron::serve_rpc(endpoint, nemotron::select_device(backend, gpu_device, nullptr),
                            n_threads > 0 ? n_threads : nemotron::usable_core_count());
    });
}

nemotron_status nemotron_context_init_from_file(const char * path, const struct nemotron_context_params * params,
                                        struct nemotron_context ** out) {
    if (out != nullptr) *out = nullptr;
    return guarded([&] {
        if (path == nullptr || out == nullptr) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "path and out must not be NULL");
        }
        nemotron_context_params p = nemotron_context_default_params();
        if (params != nullptr) {
            if (params->struct_size == 0 || params->struct_size > sizeof(p)) {
                nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "params->struct_size is %zu; expected at most %zu",
                               params->struct_size, sizeof(p));
            }
            std::memcpy(static_cast<void *>(&p), params, params->struct_size);
        }
        if (p.n_threads < 0) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "n_threads must be 0 (all physical cores) or positive, not %d", p.n_threads);
        }
        std::unique_ptr<nemotron_context> ctx(new nemotron_context());
        ctx->device = nemotron::select_device(p.backend, p.gpu_device, p.rpc_endpoint);
        ctx->n_threads = p.n_threads > 0 ? p.n_threads : nemotron::usable_core_count();
        nemotron::load_model(path, ctx->device, p.use_mmap, ctx->n_threads, ctx->model);
        ctx->caches.reset(new nemotron::cache_pool(ctx->model, ctx->device));
        ggml_backend_free(nemotron::start_backend(ctx->device, ctx->n_threads)); // fail at load, not at the first stream
        const nemotron_hparams & hp = ctx->model.hparams;
        nemotron::log(NEMOTRON_LOG_INFO, "loaded %s: layout %s, %s, %d layers x d_model %d; %s, %d thread%s%s", path,
                      ctx->model.layout == NEMOTRON_LAYOUT_NEMO ? "nemo" : "asr", ctx->model.weight_type.c_str(), hp.n_layers,
                      hp.d_model, ggml_backend_dev_name(ctx->device), ctx->n_threads, ctx->n_threads == 1 ? "" : "s",
                      p.n_threads > 0 ? "" : " (the cores this process may use)");
        *out = ctx.release();
    });
}

void nemotron_context_free(struct nemotron_context * ctx) {
    if (ctx == nullptr) return;
    ctx->freed = true;
    release(ctx);
}

nemotron_status nemotron_context_get_hparams(const struct nemotron_context * ctx, struct nemotron_hparams * out) {
    return guarded([&] {
        if (ctx == nullptr) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "ctx is NULL");
        copy_out(ctx->model.hparams, out);
    });
}

nemotron_status nemotron_hparams_check(const struct nemotron_hparams * hp) {
    return guarded([&] {
        if (hp == nullptr || hp->struct_size == 0 || hp->struct_size > sizeof(nemotron_hparams)) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "hp is NULL or its struct_size is not set");
        }
        nemotron_hparams full = {};
        std::memcpy(static_cast<void *>(&full), hp, hp->struct_size);
        nemotron::check_hparams(full);
    });
}

nemotron_layout nemotron_context_layout(const struct nemotron_context * ctx) { return ctx->model.layout; }
const char * nemotron_context_name(const struct nemotron_context * ctx) { return ctx->model.name.c_str(); }
const char * nemotron_context_weight_type(const struct nemotron_context * ctx) { return ctx->model.weight_type.c_str(); }
uint64_t nemotron_context_file_size(const struct nemotron_context * ctx) { return ctx->model.file_size; }
uint64_t nemotron_context_weight_bytes(const struct nemotron_context * ctx) { return ctx->model.weight_bytes; }
const char * nemotron_context_backend(const struct nemotron_context * ctx) { return ggml_backend_dev_name(ctx->device); }
int nemotron_context_n_threads(const struct nemotron_context * ctx) { return ctx->n_threads; }
bool nemotron_context_uses_mmap(const struct nemotron_context * ctx) { return ctx->model.weights_mapped; }

uint64_t nemotron_context_repacked_bytes(const struct nemotron_context * ctx) { return ctx->model.repacked_bytes; }

int nemotron_context_n_pieces(const struct nemotron_context * ctx) { return int(ctx->model.pieces.size()); }

int nemotron_context_n_languages(const struct nemotron_context * ctx) { return int(ctx->model.languages.size()); }

const char * nemotron_context_language(const struct nemotron_context * ctx, int index, int32_t * prompt) {
    if (index < 0 || size_t(index) >= ctx->model.languages.size()) return nullptr;
    const nemotron::language & l = ctx->model.languages[size_t(index)];
    if (prompt != nullptr) *prompt = l.prompt;
    return l.code.c_str();
}

const char * nemotron_context_default_language(const struct nemotron_context * ctx) {
    const std::vector<nemotron::language> & all = ctx->model.languages;
    if (all.empty()) return nullptr;
    for (const char * wanted : {"auto", "en-US"}) {
        for (const nemotron::language & l : all) {
            if (l.code == wanted) return l.code.c_str();
        }
    }
    return all[0].code.c_str();
}

const char * nemotron_context_piece(const struct nemotron_context * ctx, int id, size_t * len) {
    if (id < 0 || size_t(id) >= ctx->model.pieces.size()) {
        if (len) *len = 0;
        return nullptr;
    }
    const std::string & s = ctx->model.pieces[size_t(id)];
    if (len) *len = s.size();
    return s.c_str();
}

size_t nemotron_context_detokenize(const struct nemotron_context * ctx, const int32_t * ids, int n_ids, char * out,
                           size_t capacity) {
    const std::string text = nemotron::detokenize(ctx->model.pieces, ids, n_ids < 0 ? 0 : size_t(n_ids));
    if (capacity > 0) {
        const size_t n = std::min(text.size(), capacity - 1);
        std::memcpy(out, text.data(), n);
        out[n] = '\0';
    }
    return text.size();
}

const float * nemotron_context_window(const struct nemotron_context * ctx, size_t * n) {
    if (n) *n = ctx->model.window.size();
    return ctx->model.window.data();
}

const float * nemotron_context_mel_filterbank(const struct nemotron_context * ctx, size_t * n) {
    if (n) *n = ctx->model.mel_filterbank.size();
    return ctx->model.mel_filterbank.data();
}

nemotron_status nemotron_context_compute_mel(const struct nemotron_context * ctx, const float * samples, size_t n_samples,
                                     float * out, size_t capacity, int64_t * n_frames) {
    return guarded([&] {
        if (ctx == nullptr || n_frames == nullptr || (samples == nullptr && n_samples > 0)) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "ctx, samples and n_frames must not be NULL");
        }
        nemotron::mel_frontend frontend(ctx->model);
        *n_frames = frontend.frame_count(n_samples);
        if (out == nullptr) return;
        const size_t needed = size_t(*n_frames) * size_t(frontend.n_mels());
        if (capacity < needed) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "the output holds %zu floats; %zu are needed", capacity, needed);
        }
        std::vector<float> frames;
        frames.reserve(needed);
        frontend.push(samples, n_samples, frames);
        frontend.finish(frames);
        std::copy(frames.begin(), frames.end(), out);
    });
}

int nemotron_context_n_tensors(const struct nemotron_context * ctx) { return int(ctx->model.tensors.size()); }

nemotron_status nemotron_context_get_tensor_info(const struct nemotron_context * ctx, int index, struct nemotron_tensor_info * out) {
    return guarded([&] {
        if (ctx == nullptr || index < 0 || size_t(index) >= ctx->model.tensors.size()) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "tensor index %d is out of range", index);
        }
        const nemotron::tensor_record & r = ctx->model.tensors[size_t(index)];
        nemotron_tensor_info full = {};
        full.struct_size = sizeof(full);
        full.name = r.name.c_str();
        full.group = r.group.c_str();
        full.type = ggml_type_name(r.type);
        full.n_dims = r.n_dims;
        std::copy(r.ne, r.ne + 4, full.ne);
        full.n_bytes = r.n_bytes;
        copy_out(full, out);
    });
}

nemotron_status nemotron_context_get_tensor_data(const struct nemotron_context * ctx, int index, float * out, size_t capacity) {
    return guarded([&] {
        if (ctx == nullptr || index < 0 || size_t(index) >= ctx->model.tensors.size()) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "tensor index %d is out of range", index);
        }
        const nemotron::tensor_record & r = ctx->model.tensors[size_t(index)];
        size_t n = 1;
        for (int i = 0; i < r.n_dims; ++i) n *= size_t(r.ne[i]);
        if (out == nullptr || capacity < n) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "tensor '%s' has %zu elements; the output holds %zu", r.name.c_str(), n,
                           out == nullptr ? size_t(0) : capacity);
        }
        if (r.tensor == nullptr) { // a host-side frontend table
            const std::vector<float> & table = r.name == "preprocessor.featurizer.window" ? ctx->model.window
                                                                                          : ctx->model.mel_filterbank;
            std::copy(table.begin(), table.end(), out);
            return;
        }
        if (r.type == GGML_TYPE_F32) {
            ggml_backend_tensor_get(r.tensor, out, 0, n * sizeof(float));
            return;
        }
        std::vector<uint8_t> raw(ggml_nbytes(r.tensor));
        ggml_backend_tensor_get(r.tensor, raw.data(), 0, raw.size());
        if (ctx->model.q8_0_packed.count(r.tensor)) { // packed where it was loaded
            std::vector<uint8_t> packed(raw);
            nemotron::q8_0_unpack(r.tensor, packed.data(), raw.data());
        }
        const ggml_type_traits * traits = ggml_get_type_traits(r.type);
        if (traits->to_float == nullptr) {
            nemotron::fail(NEMOTRON_ERR_INTERNAL, "no conversion from %s to f32", ggml_type_name(r.type));
        }
        traits->to_float(raw.data(), out, int64_t(n));
    });
}

int nemotron_context_n_tensor_groups(const struct nemotron_context * ctx) { return int(ctx->model.groups.size()); }

nemotron_status nemotron_context_get_tensor_group(const struct nemotron_context * ctx, int index, struct nemotron_tensor_group * out) {
    return guarded([&] {
        if (ctx == nullptr || index < 0 || size_t(index) >= ctx->model.groups.size()) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "tensor group index %d is out of range", index);
        }
        const nemotron::group_record & g = ctx->model.groups[size_t(index)];
        nemotron_tensor_group full = {};
        full.struct_size = sizeof(full);
        full.name = g.name.c_str();
        full.type = g.type.c_str();
        full.n_tensors = g.n_tensors;
        full.n_params = g.n_params;
        full.n_bytes = g.n_bytes;
        copy_out(full, out);
    });
}

struct nemotron_stream_params nemotron_stream_default_params(void) {
    nemotron_stream_params p = {};
    p.struct_size = sizeof(p);
    p.att_right_context = -1;
    p.chunking = NEMOTRON_CHUNKING_STREAM;
    p.keep_encoder_output = false;
    p.keep_trace = false;
    p.endpoint_reset_silence_frames = 0;
    p.endpoint_reset_min_utterance_frames = 0;
    return p;
}

namespace {

// The prompt index of a stream's language (see nemotron_stream_params.language).
int32_t prompt_of(const nemotron_context * ctx, const char * language) {
    const std::vector<nemotron::language> & all = ctx->model.languages;
    if (all.empty()) {
        if (language != nullptr) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "language '%s' was given, but this model has no language prompts", language);
        }
        return 0;
    }
    const char * code = language != nullptr ? language : nemotron_context_default_language(ctx);
    std::string known;
    for (const nemotron::language & l : all) {
        if (l.code == code) return l.prompt;
        known += (known.empty() ? "" : ", ") + l.code;
    }
    nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "unknown language '%s'; this model knows %s", code, known.c_str());
}

} // namespace

nemotron_status nemotron_stream_init(struct nemotron_context * ctx, const struct nemotron_stream_params * params,
                                     struct nemotron_stream ** out) {
    if (out != nullptr) *out = nullptr;
    return guarded([&] {
        if (ctx == nullptr || out == nullptr) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "ctx and out must not be NULL");
        if (ctx->freed) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "the model has been freed (nemotron_context_free)");
        nemotron_stream_params p = nemotron_stream_default_params();
        if (params != nullptr) {
            if (params->struct_size == 0 || params->struct_size > sizeof(p)) {
                nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "params->struct_size is %zu; expected at most %zu",
                               params->struct_size, sizeof(p));
            }
            std::memcpy(static_cast<void *>(&p), params, params->struct_size);
        }
        const nemotron_hparams & hp = ctx->model.hparams;
        int right = p.att_right_context < 0 ? hp.att_right_contexts[0] : p.att_right_context;
        if (right > hp.att_left_context) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "att_right_context %d exceeds the left context %d", right,
                           hp.att_left_context);
        }
        if (p.endpoint_reset_silence_frames < 0 || p.endpoint_reset_min_utterance_frames < 0) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "endpoint_reset_silence_frames (%d) and "
                           "endpoint_reset_min_utterance_frames (%d) must be >= 0",
                           int(p.endpoint_reset_silence_frames), int(p.endpoint_reset_min_utterance_frames));
        }
        nemotron::chunking mode;
        switch (p.chunking) {
            case NEMOTRON_CHUNKING_STREAM:        mode = nemotron::chunking::stream; break;
            case NEMOTRON_CHUNKING_STREAM_PADDED: mode = nemotron::chunking::stream_padded; break;
            case NEMOTRON_CHUNKING_OFFLINE:       mode = nemotron::chunking::offline; break;
            default: nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "unknown chunking %d", int(p.chunking));
        }
        std::call_once(ctx->rnnt_once, [ctx] { ctx->rnnt.reset(new nemotron::rnnt_weights(ctx->model)); });
        std::unique_ptr<nemotron_stream> s(new nemotron_stream());
        if (p.beam_size < 0 || p.beam_size > hp.vocab_size) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "beam_size %d: it must be from 1 to the vocabulary size %d "
                           "(0: greedy)", int(p.beam_size), int(hp.vocab_size));
        }
        s->impl.reset(new nemotron::stream(ctx->model, ctx->device, ctx->n_threads, *ctx->caches, *ctx->rnnt, right, mode,
                                           p.keep_encoder_output, p.keep_trace, p.beam_size));
        s->impl->set_endpoint_reset(p.endpoint_reset_silence_frames, p.endpoint_reset_min_utterance_frames);
        s->impl->set_prompt(prompt_of(ctx, p.language));
        s->ctx = ctx;
        ++ctx->refs;
        *out = s.release();
    });
}

int nemotron_stream_n_hypotheses(const struct nemotron_stream * s) {
    return s != nullptr && s->impl != nullptr ? int(s->impl->nbest().size()) : 0;
}

const int32_t * nemotron_stream_hypothesis(const struct nemotron_stream * s, int index, int * n_tokens, float * score) {
    if (n_tokens != nullptr) *n_tokens = 0;
    if (s == nullptr || s->impl == nullptr || index < 0 || size_t(index) >= s->impl->nbest().size()) return nullptr;
    const nemotron::hypothesis & h = s->impl->nbest()[size_t(index)];
    if (n_tokens != nullptr) *n_tokens = int(h.tokens.ids.size());
    if (score != nullptr) *score = h.score;
    return h.tokens.ids.data();
}

struct nemotron_boosting_params nemotron_boosting_default_params(void) {
    nemotron_boosting_params p{};
    p.struct_size = sizeof(p);
    const nemotron::boosting_params tree;
    p.alpha = 1.0f;
    p.context_score = tree.context_score;
    p.depth_scaling = tree.depth_scaling;
    p.unk_score = tree.unk_score;
    return p;
}

nemotron_status nemotron_stream_set_phrases(struct nemotron_stream * s, const int32_t * tokens, const int32_t * n_tokens,
                                            const double * scores, int n_phrases,
                                            const struct nemotron_boosting_params * params) {
    return guarded([&] {
        nemotron::stream & stream = live(s);
        if (n_phrases < 0) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "n_phrases is %d", n_phrases);
        if (n_phrases == 0) {
            stream.set_boosting(nullptr, 0.0f);
            return;
        }
        if (tokens == nullptr || n_tokens == nullptr) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "tokens and n_tokens must not be NULL");
        nemotron_boosting_params p = nemotron_boosting_default_params();
        if (params != nullptr) {
            if (params->struct_size == 0 || params->struct_size > sizeof(p)) {
                nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "params->struct_size is %zu; expected at most %zu",
                               params->struct_size, sizeof(p));
            }
            std::memcpy(static_cast<void *>(&p), params, params->struct_size);
        }
        if (!std::isfinite(p.alpha) || p.alpha <= 0.0f || !std::isfinite(p.context_score) ||
            !std::isfinite(p.depth_scaling) || !std::isfinite(p.unk_score)) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "boosting params must be finite and alpha > 0 (alpha %g, "
                           "context_score %g, depth_scaling %g, unk_score %g)", double(p.alpha), p.context_score,
                           p.depth_scaling, p.unk_score);
        }
        const int n_labels = s->ctx->model.hparams.vocab_size - 1;
        std::vector<std::vector<int32_t>> phrases(static_cast<size_t>(n_phrases));
        std::vector<double> own(static_cast<size_t>(n_phrases), 0.0);
        const int32_t * next = tokens;
        for (int i = 0; i < n_phrases; ++i) {
            if (n_tokens[i] <= 0) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "phrase %d has %d tokens", i, int(n_tokens[i]));
            for (int32_t k = 0; k < n_tokens[i]; ++k) {
                if (next[k] < 0 || next[k] >= n_labels) {
                    nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "phrase %d: token %d is not a label of this model (0..%d)", i,
                                   int(next[k]), n_labels - 1);
                }
            }
            phrases[size_t(i)].assign(next, next + n_tokens[i]);
            next += n_tokens[i];
            if (scores != nullptr) {
                if (!std::isfinite(scores[i])) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "phrase %d: score %g", i, scores[i]);
                own[size_t(i)] = scores[i];
            }
        }
        nemotron::boosting_params tree;
        tree.context_score = p.context_score;
        tree.depth_scaling = p.depth_scaling;
        tree.unk_score = p.unk_score;
        stream.set_boosting(std::make_shared<const nemotron::boosting_tree>(phrases, own, tree, n_labels), p.alpha);
    });
}

nemotron_status nemotron_stream_feed(struct nemotron_stream * s, const float * samples, size_t n_samples) {
    return guarded([&] {
        if (samples == nullptr && n_samples > 0) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "samples must not be NULL");
        live(s).feed(samples, n_samples);
    });
}

nemotron_status nemotron_stream_push(struct nemotron_stream * s, const float * samples, size_t n_samples) {
    return guarded([&] {
        if (samples == nullptr && n_samples > 0) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "samples must not be NULL");
        live(s).push(samples, n_samples);
    });
}

nemotron_status nemotron_stream_end(struct nemotron_stream * s) {
    return guarded([&] {
        live(s).end();
    });
}

nemotron_status nemotron_context_run_streams(struct nemotron_context * ctx, struct nemotron_stream * const * streams, int n_streams) {
    return guarded([&] {
        if (ctx == nullptr || n_streams < 0 || (streams == nullptr && n_streams > 0)) {
            nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "ctx and streams must not be NULL");
        }
        if (ctx->freed) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "the model has been freed (nemotron_context_free)");
        std::vector<nemotron::stream *> impls;
        for (int i = 0; i < n_streams; ++i) {
            if (streams[i] == nullptr) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "streams[%d] is NULL", i);
            nemotron::stream * s = streams[i]->impl.get();
            if (&s->owner() != &ctx->model) nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "streams[%d] belongs to another model", i);
            if (std::find(impls.begin(), impls.end(), s) != impls.end()) {
                nemotron::fail(NEMOTRON_ERR_INVALID_ARG, "streams[%d] is given twice", i);
            }
            impls.push_back(s);
        }
        std::lock_guard<std::mutex> lock(ctx->batch_mutex);
        if (impls.size() > 1 && ctx->batch == nullptr) {
            ctx->batch.reset(new nemotron::encoder(ctx->model, ctx->device, ctx->n_threads));
        }
        nemotron::stream::run_streams(impls, ctx->batch.get());
    });
}

nemotron_status nemotron_stream_finish(struct nemotron_stream * s) {
    return guarded([&] {
        live(s).finish();
    });
}

nemotron_status nemotron_stream_reset(struct nemotron_stream * s) {
    return guarded([&] {
        live(s).reset();
    });
}

int nemotron_stream_take_tokens(struct nemotron_stream * s, int32_t * ids, int32_t * frames, float * confidences,
                                int capacity) {
    return s == nullptr || capacity <= 0 ? 0 : int(s->impl->take_tokens(ids, frames, confidences, size_t(capacity)));
}

void nemotron_stream_free(struct nemotron_stream * s) {
    if (s == nullptr) return;
    nemotron_context * ctx = s->ctx;
    delete s; // before the model it reads
    release(ctx);
}

int nemotron_stream_att_right_context(const struct nemotron_stream * s) { return s->impl->right_context(); }

int nemotron_stream_n_tokens(const struct nemotron_stream * s) { return int(s->impl->tokens.ids.size()); }

const int32_t * nemotron_stream_tokens(const struct nemotron_stream * s) { return s->impl->tokens.ids.data(); }

const int32_t * nemotron_stream_token_frames(const struct nemotron_stream * s) { return s->impl->tokens.frames.data(); }

const float * nemotron_stream_token_confidences(const struct nemotron_stream * s) { return s->impl->tokens.confidences.data(); }

int nemotron_stream_n_frames(const struct nemotron_stream * s) { return int(s->impl->n_encoder_frames); }

const float * nemotron_stream_encoder_output(const struct nemotron_stream * s, size_t * n_floats) {
    if (n_floats) *n_floats = s->impl->encoder_output.size();
    return s->impl->encoder_output.data();
}

const int32_t * nemotron_stream_chunk_ends(const struct nemotron_stream * s, int * n_chunks) {
    if (n_chunks) *n_chunks = int(s->impl->chunk_ends.size());
    return s->impl->chunk_ends.data();
}

const struct nemotron_joint_step * nemotron_stream_trace(const struct nemotron_stream * s, int * n_steps) {
    static_assert(sizeof(nemotron_joint_step) == sizeof(nemotron::joint_step), "joint step layouts differ");
    if (n_steps) *n_steps = int(s->impl->trace.size());
    return reinterpret_cast<const nemotron_joint_step *>(s->impl->trace.data());
}

} // extern "C"
