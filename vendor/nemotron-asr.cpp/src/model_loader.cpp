// Reads both published GGUF layouts into the one internal model (model.h).
//
// The nemo layout (general.architecture "nemo") carries few hyperparameters, so the rest are
// inferred from tensor shapes or taken from the model family's documented defaults;
// the asr layout ("asr") carries nearly all of them. Either way every tensor is then checked
// against the hyperparameters (presence, shape, type) before ggml sees it.
#include "model.h"

#include "cpu_budget.h"
#include "error.h"
#include "frontend_tables.h"
#include "gguf_file.h"
#include "hparams_check.h"
#include "q8_0_matmul.h"
#include "subsampling.h"

#include "ggml-alloc.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

namespace nemotron {

model::~model() {
    if (buf_packed) ggml_backend_buffer_free(buf_packed);
    if (ctx_packed) ggml_free(ctx_packed);
    if (buf_repacked) ggml_backend_buffer_free(buf_repacked);
    if (ctx_repacked) ggml_free(ctx_repacked);
    if (buf_file) ggml_backend_buffer_free(buf_file);
    if (buf_derived) ggml_backend_buffer_free(buf_derived);
    if (ctx_file) ggml_free(ctx_file);
    if (ctx_derived) ggml_free(ctx_derived);
}

namespace {

// Model-family defaults (nemotron-speech-streaming-en-0.6b's NeMo config), used only where a
// file has neither a key nor a tensor to infer the value from.
const int64_t kDefaultLeftContext = 70;
const int64_t kDefaultRightContexts[] = {13, 6, 1, 0};
const int64_t kDefaultMaxSymbols = 10;
const int64_t kDefaultPosEmbMaxLen = 5000;
const int64_t kDefaultSampleRate = 16000;
const float   kDefaultWindowSeconds = 0.025f;
const float   kDefaultStrideSeconds = 0.01f;
const int64_t kDefaultNFft = 512;
const float   kDefaultPreemph = 0.97f;
const float   kDefaultLogGuard = 5.960464477539063e-08f; // 2^-24, NeMo's log_zero_guard_value
const float   kDefaultMagPower = 2.0f;
const int64_t kMaxSize = int64_t(1) << 24;

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) {
        s += (i ? ", " : "") + std::to_string(ne[i]);
    }
    return s + "]";
}

// A tensor's shape without trailing unit dimensions, so [257, 128, 1] matches [257, 128].
std::vector<int64_t> effective_shape(const gguf_tensor & t) {
    std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
    return ne;
}

enum class dtype_rule { matrix, kernel, vector };

bool dtype_allowed(dtype_rule rule, ggml_type t) {
    switch (rule) {
        case dtype_rule::vector: return t == GGML_TYPE_F32;
        case dtype_rule::kernel: return t == GGML_TYPE_F32 || t == GGML_TYPE_F16;
        case dtype_rule::matrix:
            switch (t) {
                case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
                case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
                case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
                    return true;
                default: return false;
            }
    }
    return false;
}

const char * dtype_rule_text(dtype_rule rule) {
    switch (rule) {
        case dtype_rule::vector: return "f32";
        case dtype_rule::kernel: return "f32 or f16";
        case dtype_rule::matrix: return "f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0 or a k-quant";
    }
    return "";
}

class loader {
public:
    loader(const std::string & path, model & m) : m_(m), file_(new mapped_file(path)), g_(*file_) {
        m_.file_size = file_->size();
    }

    void run(ggml_backend_dev_t device, bool use_mmap, int n_threads) {
        read_architecture();
        read_hparams();
        check_hparams(m_.hparams);
        read_vocabulary();
        read_languages();
        check_layer_counts();
        bind_tensors();
        read_frontend_tables();
        place_weights(device, use_mmap);
        if (m_.weights_mapped) repack_weights(device);
        pack_q8_0_weights(device, n_threads);
        summarize();
    }

private:
    bool is_a() const { return m_.layout == NEMOTRON_LAYOUT_NEMO; }

    const gguf_tensor * tensor(const std::string & name) const { return g_.find_tensor(name); }

    // ---- hyperparameters ------------------------------------------------------------------

    void read_architecture() {
        std::string arch;
        if (!g_.get_string("general.architecture", arch)) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "'%s' has no general.architecture key, so it is not a model file of either layout",
                 file_->path().c_str());
        }
        if (arch == "nemo") {
            m_.layout = NEMOTRON_LAYOUT_NEMO;
        } else if (arch == "asr") {
            m_.layout = NEMOTRON_LAYOUT_ASR;
        } else if (arch == "parakeet-ctc") {
            fail(NEMOTRON_ERR_UNSUPPORTED, "'%s' is a CTC model (general.architecture 'parakeet-ctc'); this engine runs RNN-T models",
                 file_->path().c_str());
        } else {
            fail(NEMOTRON_ERR_UNSUPPORTED,
                 "general.architecture is '%s'; this engine reads cache-aware FastConformer RNN-T models in the 'nemo' "
                 "(nemotron-asr.cpp) and 'asr' (NVIDIA NeMo-Speech.cpp) layouts",
                 arch.c_str());
        }
        g_.get_string("general.name", m_.name);
        // NeMo's batch-norm conv module (offline Parakeet models) carries running statistics.
        if (tensor("encoder.layers.0.conv.batch_norm.running_mean") != nullptr) {
            fail(NEMOTRON_ERR_UNSUPPORTED, "the convolution modules use batch norm (an offline Parakeet-style model); "
                 "only layer-norm (cache-aware) models are supported");
        }
        if (!is_a()) {
            std::string head = "rnnt";
            g_.get_string("asr.head_type", head);
            if (head != "rnnt") {
                fail(NEMOTRON_ERR_UNSUPPORTED, "asr.head_type is '%s'; this engine runs RNN-T ('rnnt') models only", head.c_str());
            }
            for (const char * key : {"asr.encoder.q8_layout", "asr.encoder.qkv_q8_layout"}) {
                std::string q8 = "block_q8_0";
                g_.get_string(key, q8);
                if (q8 == "tensor_planar_v1") {
                    fail(NEMOTRON_ERR_UNSUPPORTED,
                         "%s is 'tensor_planar_v1': this file stores its q8_0 matrices in the planar byte layout that only "
                         "NeMo-Speech.cpp's CUDA backend reads; convert the model again with the default block_q8_0 layout",
                         key);
                } else if (q8 != "block_q8_0") {
                    fail(NEMOTRON_ERR_UNSUPPORTED, "%s is '%s'; only 'block_q8_0' is supported", key, q8.c_str());
                }
            }
            expect_string("asr.encoder.att_context_style", "chunked_limited",
                          "only cache-aware models (chunked_limited attention) are supported");
            expect_string("asr.encoder.conv_norm", "layer_norm",
                          "batch-norm convolution modules (offline Parakeet models) are not supported");
            expect_string("asr.encoder.conv_context", "causal", "only causal convolutions are supported");
            bool cache_supported = true;
            if (g_.get_bool("asr.encoder.cache_supported", cache_supported) && !cache_supported) {
                fail(NEMOTRON_ERR_UNSUPPORTED, "asr.encoder.cache_supported is false: the model is not cache-aware");
            }
        }
    }

    void expect_string(const char * key, const char * expected, const char * why) {
        std::string v;
        if (g_.get_string(key, v) && v != expected) {
            fail(NEMOTRON_ERR_UNSUPPORTED, "%s is '%s': %s", key, v.c_str(), why);
        }
    }

    // A size from metadata, else from a tensor's shape.
    int32_t size_key(const std::string & key, const std::string & from_tensor, int dim, int64_t min = 1) {
        int64_t v = 0;
        if (g_.get_int(key, min, kMaxSize, v)) return int32_t(v);
        if (tensor(from_tensor) == nullptr) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' is missing, and so is tensor '%s' to infer it from",
                 key.c_str(), from_tensor.c_str());
        }
        return size_from_tensor(from_tensor, dim);
    }

    int32_t size_from_tensor(const std::string & name, int dim) {
        const gguf_tensor * t = tensor(name);
        if (t == nullptr) fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' is missing", name.c_str());
        if (t->ne[dim] > kMaxSize) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' has an implausible size %lld", name.c_str(), (long long) t->ne[dim]);
        }
        return int32_t(t->ne[dim]);
    }

    int32_t int_key(const std::string & key, int64_t min, int64_t max, int64_t fallback) {
        int64_t v = fallback;
        g_.get_int(key, min, max, v);
        return int32_t(v);
    }

    float float_key(const std::string & key, float fallback) {
        float v = fallback;
        g_.get_float(key, v);
        return v;
    }

    bool bool_key(const std::string & key, bool fallback) {
        bool v = fallback;
        g_.get_bool(key, v);
        return v;
    }

    std::string lstm_name(int layer, const char * which /* "ih" or "hh" */, bool weight) const {
        if (is_a()) {
            return format("decoder.prediction.dec_rnn.lstm.%s_%s_l%d", weight ? "weight" : "bias", which, layer);
        }
        return format("decoder.prediction.dec_rnn.lstm.%s_l%d.%s", which, layer, weight ? "weight" : "bias");
    }

    int count_layers(const char * fmt) const {
        int n = 0;
        while (tensor(format(fmt, n)) != nullptr) ++n;
        return n;
    }

    void read_hparams() {
        nemotron_hparams & hp = m_.hparams;
        hp.struct_size = sizeof(hp);
        const std::string p = is_a() ? "nemo." : "asr.encoder.";
        const std::string pr = is_a() ? "nemo." : "asr.rnnt.";
        const std::string pp = is_a() ? "nemo.preprocessor." : "asr.preprocessor.";

        hp.d_model = size_key(p + "d_model", "encoder.pre_encode.out.weight", 1);
        hp.n_heads = size_key(p + "n_heads", "encoder.layers.0.self_attn.pos_bias_u", 1);
        int64_t d_head = 0;
        hp.d_head = is_a() && g_.get_int("nemo.d_head", 1, kMaxSize, d_head) ? int32_t(d_head) : hp.d_model / hp.n_heads;
        hp.d_ff = size_key(p + "d_ff", "encoder.layers.0.feed_forward1.linear1.weight", 1);
        int64_t n_layers = 0;
        hp.n_layers = g_.get_int(p + "n_layers", 1, 4096, n_layers) ? int32_t(n_layers)
                                                                     : count_layers("encoder.layers.%d.norm_out.weight");
        if (hp.n_layers == 0) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "the file has no encoder layers (no tensor 'encoder.layers.0.norm_out.weight')");
        }
        hp.conv_kernel_size = size_key(is_a() ? "nemo.kernel_size" : "asr.encoder.conv_kernel_size",
                                       "encoder.layers.0.conv.depthwise_conv.weight", is_a() ? 1 : 0);
        int64_t factor = 0;
        if (!g_.get_int(p + "subsampling_factor", 1, 1024, factor)) {
            factor = int64_t(1) << (1 + count_layers_from(1, "encoder.pre_encode.conv.%d.weight"));
        }
        hp.subsampling_factor = int32_t(factor);
        hp.subsampling_conv_channels = size_key(is_a() ? "nemo.subsampling_conv_channels" : "asr.encoder.subsampling_conv_channels",
                                                "encoder.pre_encode.conv.0.weight", 3);
        hp.n_mels = is_a() ? size_key("nemo.n_mels", fb_name(), 1) : size_key("asr.encoder.feat_in", "preprocessor.fb", 1);
        hp.xscaling = bool_key(p + "xscaling", !is_a()); // NeMo-Speech.cpp assumes true when the key is missing
        const bool has_biases = tensor("encoder.layers.0.self_attn.linear_q.bias") != nullptr;
        hp.use_bias = is_a() ? has_biases : bool_key("asr.encoder.use_bias", has_biases);
        hp.pos_emb_max_len = is_a() ? int32_t(kDefaultPosEmbMaxLen)
                                    : int_key("asr.encoder.pos_emb_max_len", 1, kMaxSize, kDefaultPosEmbMaxLen);

        hp.att_left_context = int_key(is_a() ? "nemo.att_left_context" : "asr.encoder.train_left_ctx", 0, kMaxSize,
                                      kDefaultLeftContext);
        std::vector<int64_t> right;
        if (!g_.get_int_array(p + "att_context_right", 0, kMaxSize, right)) {
            right.assign(std::begin(kDefaultRightContexts), std::end(kDefaultRightContexts));
            int64_t first = 0;
            if (!is_a() && g_.get_int("asr.encoder.train_right_ctx", 0, kMaxSize, first)) {
                right.erase(std::remove(right.begin(), right.end(), first), right.end());
                right.insert(right.begin(), first);
            }
        }
        if (right.empty() || right.size() > NEMOTRON_MAX_RIGHT_CONTEXTS) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%satt_context_right' has %zu entries (1 to %d are valid)", p.c_str(),
                 right.size(), NEMOTRON_MAX_RIGHT_CONTEXTS);
        }
        hp.n_att_right_contexts = int32_t(right.size());
        for (size_t i = 0; i < right.size(); ++i) hp.att_right_contexts[i] = int32_t(right[i]);

        hp.vocab_size = size_key(pr + "vocab_size", "joint.joint_net.2.weight", 1, 2);
        hp.blank_id = is_a() ? hp.vocab_size - 1 : int_key("asr.rnnt.blank_id", 0, kMaxSize, hp.vocab_size - 1);
        hp.pred_embed_dim = is_a() ? size_from_tensor("decoder.prediction.embed.weight", 0)
                                   : size_key("asr.rnnt.pred_embed_dim", "decoder.prediction.embed.weight", 0);
        hp.pred_hidden = size_key(is_a() ? "nemo.decoder_dim" : "asr.rnnt.pred_hidden", lstm_name(0, "hh", true), 0);
        int64_t pred_layers = 0;
        hp.pred_num_layers = g_.get_int(pr + "pred_num_layers", 1, 64, pred_layers) ? int32_t(pred_layers) : count_lstm_layers();
        hp.joint_dim = size_key(pr + "joint_dim", "joint.enc.weight", 1);
        hp.max_symbols_per_step = int_key(pr + "max_symbols_per_step", 1, 1000, kDefaultMaxSymbols);
        hp.num_prompts = int_key(pr + "num_prompts", 0, kMaxSize, 0);
        const gguf_tensor * prompt = tensor("prompt_kernel.0.weight");
        if (hp.num_prompts == 0 && prompt != nullptr && prompt->ne[0] > hp.d_model) {
            hp.num_prompts = int32_t(std::min<int64_t>(prompt->ne[0] - hp.d_model, kMaxSize)); // its one-hot inputs
        }

        hp.sample_rate = int_key(pp + "sample_rate", 1000, 1000000, kDefaultSampleRate);
        const float window_s = float_key(pp + "window_size", kDefaultWindowSeconds);
        const float stride_s = float_key(pp + "window_stride", kDefaultStrideSeconds);
        hp.win_length = int32_t(std::lround(double(window_s) * hp.sample_rate));
        hp.hop_length = int32_t(std::lround(double(stride_s) * hp.sample_rate));
        hp.n_fft = int_key(pp + "n_fft", 2, 1 << 16, kDefaultNFft);
        hp.preemph = float_key(pp + "preemph", kDefaultPreemph);
        hp.log_zero_guard = float_key(pp + "log_zero_guard_value", kDefaultLogGuard);
        hp.mag_power = float_key(pp + "mag_power", kDefaultMagPower);
        // Dither is a training-time augmentation; NeMo applies none at inference.
        hp.dither = float_key(pp + "dither", 0.0f);
        std::string normalize = "NA";
        g_.get_string(pp + "normalize", normalize);
        if (normalize == "NA" || normalize == "None" || normalize.empty()) {
            hp.normalize = NEMOTRON_NORMALIZE_NONE;
        } else if (normalize == "per_feature") {
            hp.normalize = NEMOTRON_NORMALIZE_PER_FEATURE;
        } else if (normalize == "all_features") {
            hp.normalize = NEMOTRON_NORMALIZE_ALL;
        } else {
            fail(NEMOTRON_ERR_UNSUPPORTED, "%snormalize is '%s' (expected NA, per_feature or all_features)", pp.c_str(),
                 normalize.c_str());
        }
        if (!is_a()) {
            int64_t features = 0;
            if (g_.get_int("asr.preprocessor.features", 1, kMaxSize, features) && features != hp.n_mels) {
                fail(NEMOTRON_ERR_INVALID_MODEL, "asr.preprocessor.features = %lld but asr.encoder.feat_in = %d",
                     (long long) features, hp.n_mels);
            }
            bool center = true;
            if (g_.get_bool("asr.preprocessor.stft_center_window", center) && !center) {
                fail(NEMOTRON_ERR_UNSUPPORTED, "asr.preprocessor.stft_center_window is false; only centred STFT frames are supported");
            }
        }
    }

    int count_layers_from(int first_stage, const char * fmt) const {
        int n = 0;
        while (tensor(format(fmt, 3 * (first_stage + n))) != nullptr) ++n;
        return n;
    }

    int count_lstm_layers() const {
        int n = 0;
        while (tensor(lstm_name(n, "ih", true)) != nullptr) ++n;
        return n;
    }

    std::string fb_name() const {
        return tensor("preprocessor.featurizer.fb") != nullptr ? "preprocessor.featurizer.fb" : "preprocessor.fb";
    }

    // The prompt dictionary of a multilingual model: the C++ port's parallel arrays of codes and
    // indexes, or NVIDIA's "code:index" strings.
    void read_languages() {
        const int32_t n_prompts = m_.hparams.num_prompts;
        if (n_prompts == 0) return;
        std::vector<std::string> codes;
        std::vector<int64_t> ids;
        if (is_a()) {
            if (!g_.get_string_array("nemo.prompt_langs", codes) || !g_.get_int_array("nemo.prompt_ids", 0, n_prompts - 1, ids) ||
                codes.size() != ids.size()) {
                fail(NEMOTRON_ERR_INVALID_MODEL, "a model with %d language prompts needs nemo.prompt_langs and nemo.prompt_ids "
                     "of equal length, with indexes below %d", n_prompts, n_prompts);
            }
        } else {
            std::vector<std::string> entries;
            if (!g_.get_string_array("asr.rnnt.prompt_dictionary", entries)) {
                fail(NEMOTRON_ERR_INVALID_MODEL, "a model with %d language prompts needs asr.rnnt.prompt_dictionary", n_prompts);
            }
            for (const std::string & entry : entries) {
                const size_t colon = entry.rfind(':');
                char * end = nullptr;
                const long id = colon == std::string::npos ? -1 : std::strtol(entry.c_str() + colon + 1, &end, 10);
                if (colon == 0 || colon == std::string::npos || end == nullptr || *end != '\0' || id < 0 || id >= n_prompts) {
                    fail(NEMOTRON_ERR_INVALID_MODEL, "asr.rnnt.prompt_dictionary entry '%s' is not 'code:index' with an index "
                         "below %d", entry.c_str(), n_prompts);
                }
                codes.push_back(entry.substr(0, colon));
                ids.push_back(id);
            }
        }
        if (codes.empty()) fail(NEMOTRON_ERR_INVALID_MODEL, "the prompt dictionary of a model with %d prompts is empty", n_prompts);
        for (size_t i = 0; i < codes.size(); ++i) {
            for (size_t j = 0; j < i; ++j) {
                if (codes[j] == codes[i]) fail(NEMOTRON_ERR_INVALID_MODEL, "the prompt dictionary names '%s' twice", codes[i].c_str());
            }
            m_.languages.push_back({codes[i], int32_t(ids[i])});
        }
    }

    void read_vocabulary() {
        const int n_expected = m_.hparams.vocab_size - 1;
        if (is_a()) {
            if (!g_.get_string_array("tokenizer.vocab_list", m_.pieces)) {
                std::string blob;
                if (!g_.get_string("tokenizer.vocab", blob)) {
                    fail(NEMOTRON_ERR_INVALID_MODEL, "the file has no vocabulary (neither tokenizer.vocab_list nor tokenizer.vocab)");
                }
                // The legacy encoding: one 8-byte NUL-padded record per piece.
                if (blob.size() < size_t(n_expected) * 8) {
                    fail(NEMOTRON_ERR_INVALID_MODEL, "tokenizer.vocab holds %zu bytes, but %d pieces of 8 bytes need %zu",
                         blob.size(), n_expected, size_t(n_expected) * 8);
                }
                m_.pieces.clear();
                for (int i = 0; i < n_expected; ++i) {
                    const char * rec = blob.data() + size_t(i) * 8;
                    m_.pieces.emplace_back(rec, strnlen(rec, 8));
                }
            }
        } else if (!g_.get_string_array("asr.tokenizer.vocab", m_.pieces)) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "the file has no vocabulary (asr.tokenizer.vocab)");
        }
        if (int64_t(m_.pieces.size()) != n_expected) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "the vocabulary has %zu pieces, but vocab_size %d (with the blank) needs %d",
                 m_.pieces.size(), m_.hparams.vocab_size, n_expected);
        }
    }

    // The hyperparameters against the layers the file holds.
    void check_layer_counts() {
        const nemotron_hparams & hp = m_.hparams;
        if (tensor(format("encoder.layers.%d.norm_out.weight", hp.n_layers)) != nullptr) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "inconsistent hyperparameters: n_layers is %d but the file holds layer %d too",
                 hp.n_layers, hp.n_layers);
        }
        if (tensor(lstm_name(hp.pred_num_layers, "ih", true)) != nullptr) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "inconsistent hyperparameters: pred_num_layers is %d but the file holds LSTM layer %d too",
                 hp.pred_num_layers, hp.pred_num_layers);
        }
    }

    // ---- tensors ----------------------------------------------------------------------------

    struct pending { ggml_tensor * t; const gguf_tensor * src; };

    const gguf_tensor * check_tensor(const std::string & name, std::vector<int64_t> expected, dtype_rule rule, bool required) {
        const gguf_tensor * t = tensor(name);
        if (t == nullptr) {
            if (required) fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' is missing", name.c_str());
            return nullptr;
        }
        while (expected.size() > 1 && expected.back() == 1) expected.pop_back();
        if (effective_shape(*t) != expected) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' has shape ne %s, expected ne %s from the model's hyperparameters",
                 name.c_str(), shape_str(t->ne, int(t->n_dims)).c_str(),
                 shape_str(expected.data(), int(expected.size())).c_str());
        }
        if (!dtype_allowed(rule, t->type)) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' has type %s, expected %s", name.c_str(), ggml_type_name(t->type),
                 dtype_rule_text(rule));
        }
        return t;
    }

    // Checks a file tensor and creates its engine tensor under the canonical (NeMo) name.
    ggml_tensor * bind(const std::string & name, std::vector<int64_t> expected, dtype_rule rule, const char * group,
                       bool required = true, const std::string & canonical = std::string()) {
        const gguf_tensor * src = check_tensor(name, expected, rule, required);
        if (src == nullptr) return nullptr;
        const std::string & engine_name = canonical.empty() ? name : canonical;
        ggml_tensor * t = ggml_new_tensor(m_.ctx_file, src->type, int(src->n_dims), src->ne);
        ggml_set_name(t, engine_name.c_str());
        pending_.push_back({t, src});
        record(engine_name, group, t);
        return t;
    }

    void record(const std::string & name, const char * group, ggml_tensor * t) {
        tensor_record r;
        r.name = name;
        r.group = group;
        r.tensor = t;
        r.type = t->type;
        r.n_dims = ggml_n_dims(t);
        std::copy(t->ne, t->ne + 4, r.ne);
        r.n_bytes = ggml_nbytes(t);
        m_.tensors.push_back(r);
    }

    void bind_tensors() {
        const nemotron_hparams & hp = m_.hparams;
        const int64_t d = hp.d_model, C = hp.subsampling_conv_channels;
        const int n_stages = subsampling::n_stages(hp.subsampling_factor);
        const size_t n_derived = size_t(hp.n_layers) + 3 * size_t(n_stages);
        ggml_init_params ip = {ggml_tensor_overhead() * (g_.tensors().size() + 8), nullptr, true};
        m_.ctx_file = ggml_init(ip);
        ggml_init_params dp = {ggml_tensor_overhead() * (n_derived + 8), nullptr, true};
        m_.ctx_derived = ggml_init(dp);
        if (m_.ctx_file == nullptr || m_.ctx_derived == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "out of memory");

        const auto bias = [&](const std::string & name, int64_t n, const char * group, bool present = true) {
            return present ? bind(name, {n}, dtype_rule::vector, group) : nullptr;
        };
        subsampling_weights & sub = m_.subsampling;
        sub.stages.resize(size_t(n_stages));
        for (int s = 0; s < n_stages; ++s) {
            subsampling_weights::stage & st = sub.stages[size_t(s)];
            const std::string pre = "encoder.pre_encode.conv.";
            if (s == 0) {
                st.pw_w = bind_kernel(pre + "0.weight", {subsampling::kernel, subsampling::kernel, 1, C});
                st.pw_b = bias(pre + "0.bias", C, "subsampling");
            } else {
                st.dw_w = bind_kernel(pre + std::to_string(3 * s - 1) + ".weight", {subsampling::kernel, subsampling::kernel, 1, C});
                st.dw_b = bias(pre + std::to_string(3 * s - 1) + ".bias", C, "subsampling");
                st.pw_w = bind_kernel(pre + std::to_string(3 * s) + ".weight", {1, 1, C, C});
                st.pw_b = bias(pre + std::to_string(3 * s) + ".bias", C, "subsampling");
            }
        }
        // The projection takes the frequency bins left after the stages, times the channels.
        const int64_t freq = subsampling::output_length(hp.subsampling_factor, hp.n_mels);
        const int64_t freq_symmetric = subsampling::symmetric_output_length(hp.subsampling_factor, hp.n_mels);
        const gguf_tensor * out = tensor("encoder.pre_encode.out.weight");
        if (out != nullptr && freq_symmetric != freq && out->ne[0] == C * freq_symmetric) {
            fail(NEMOTRON_ERR_UNSUPPORTED, "the subsampling is not causal (its projection takes %lld features): "
                 "only causal (cache-aware) models are supported", (long long) out->ne[0]);
        }
        sub.out_w = bind("encoder.pre_encode.out.weight", {C * freq, d}, dtype_rule::matrix, "subsampling");
        sub.out_b = bias("encoder.pre_encode.out.bias", d, "subsampling");

        m_.layers.resize(size_t(hp.n_layers));
        for (int il = 0; il < hp.n_layers; ++il) {
            conformer_layer_weights & L = m_.layers[size_t(il)];
            const std::string pre = format("encoder.layers.%d.", il);
            const auto norm = [&](const std::string & n, ggml_tensor *& w, ggml_tensor *& b) {
                w = bind(pre + n + ".weight", {d}, dtype_rule::vector, "norm");
                b = bind(pre + n + ".bias", {d}, dtype_rule::vector, "norm");
            };
            const auto linear = [&](const std::string & n, int64_t in, int64_t outn, const char * group, ggml_tensor *& w,
                                    ggml_tensor ** b) {
                w = bind(pre + n + ".weight", {in, outn}, dtype_rule::matrix, group);
                if (b) *b = bias(pre + n + ".bias", outn, group, hp.use_bias);
            };
            norm("norm_feed_forward1", L.norm_ff1_w, L.norm_ff1_b);
            linear("feed_forward1.linear1", d, hp.d_ff, "feed_forward", L.ff1_w1, &L.ff1_b1);
            linear("feed_forward1.linear2", hp.d_ff, d, "feed_forward", L.ff1_w2, &L.ff1_b2);
            norm("norm_self_att", L.norm_att_w, L.norm_att_b);
            linear("self_attn.linear_q", d, d, "attention", L.q_w, &L.q_b);
            linear("self_attn.linear_k", d, d, "attention", L.k_w, &L.k_b);
            linear("self_attn.linear_v", d, d, "attention", L.v_w, &L.v_b);
            linear("self_attn.linear_out", d, d, "attention", L.out_w, &L.out_b);
            linear("self_attn.linear_pos", d, d, "attention", L.pos_w, nullptr);
            L.pos_bias_u = bind(pre + "self_attn.pos_bias_u", {hp.d_head, hp.n_heads}, dtype_rule::kernel, "attention");
            L.pos_bias_v = bind(pre + "self_attn.pos_bias_v", {hp.d_head, hp.n_heads}, dtype_rule::kernel, "attention");
            norm("norm_conv", L.norm_conv_w, L.norm_conv_b);
            linear("conv.pointwise_conv1", d, 2 * d, "convolution", L.pw1_w, &L.pw1_b);
            L.dw_w = bind_depthwise(pre + "conv.depthwise_conv.weight");
            L.dw_b = bias(pre + "conv.depthwise_conv.bias", d, "convolution", hp.use_bias);
            norm("conv.batch_norm", L.conv_norm_w, L.conv_norm_b);
            linear("conv.pointwise_conv2", d, d, "convolution", L.pw2_w, &L.pw2_b);
            norm("norm_feed_forward2", L.norm_ff2_w, L.norm_ff2_b);
            linear("feed_forward2.linear1", d, hp.d_ff, "feed_forward", L.ff2_w1, &L.ff2_b1);
            linear("feed_forward2.linear2", hp.d_ff, d, "feed_forward", L.ff2_w2, &L.ff2_b2);
            norm("norm_out", L.norm_out_w, L.norm_out_b);
        }

        const int64_t V = hp.vocab_size, H = hp.pred_hidden, J = hp.joint_dim;
        predictor_weights & P = m_.predictor;
        P.embed = bind("decoder.prediction.embed.weight", {hp.pred_embed_dim, V}, dtype_rule::matrix, "predictor");
        P.lstm.resize(size_t(hp.pred_num_layers));
        for (int l = 0; l < hp.pred_num_layers; ++l) {
            const int64_t in = l == 0 ? hp.pred_embed_dim : H;
            // PyTorch's names (the nemo layout's) are canonical; the asr layout renames them.
            const auto pt = [l](const char * kind, const char * which) {
                return format("decoder.prediction.dec_rnn.lstm.%s_%s_l%d", kind, which, l);
            };
            lstm_layer_weights & lw = P.lstm[size_t(l)];
            lw.w_ih = bind(lstm_name(l, "ih", true), {in, 4 * H}, dtype_rule::matrix, "predictor", true, pt("weight", "ih"));
            lw.w_hh = bind(lstm_name(l, "hh", true), {H, 4 * H}, dtype_rule::matrix, "predictor", true, pt("weight", "hh"));
            lw.b_ih = bind(lstm_name(l, "ih", false), {4 * H}, dtype_rule::vector, "predictor", true, pt("bias", "ih"));
            lw.b_hh = bind(lstm_name(l, "hh", false), {4 * H}, dtype_rule::vector, "predictor", true, pt("bias", "hh"));
        }
        joint_weights & Jw = m_.joint;
        Jw.pred_w = bind("joint.pred.weight", {H, J}, dtype_rule::matrix, "joint");
        Jw.pred_b = bind("joint.pred.bias", {J}, dtype_rule::vector, "joint");
        Jw.enc_w = bind("joint.enc.weight", {d, J}, dtype_rule::matrix, "joint");
        Jw.enc_b = bind("joint.enc.bias", {J}, dtype_rule::vector, "joint");
        Jw.out_w = bind("joint.joint_net.2.weight", {J, V}, dtype_rule::matrix, "joint");
        Jw.out_b = bind("joint.joint_net.2.bias", {V}, dtype_rule::vector, "joint");

        if (hp.num_prompts > 0) {
            prompt_weights & pw = m_.prompt;
            pw.w1 = bind("prompt_kernel.0.weight", {d + hp.num_prompts, 2 * d}, dtype_rule::matrix, "prompt");
            pw.b1 = bind("prompt_kernel.0.bias", {2 * d}, dtype_rule::vector, "prompt");
            pw.w2 = bind("prompt_kernel.2.weight", {2 * d, d}, dtype_rule::matrix, "prompt");
            pw.b2 = bind("prompt_kernel.2.bias", {d}, dtype_rule::vector, "prompt");
        }

        // The asr layout's precomputed position table (encoder.pos_enc.pe) is not read: the engine
        // computes the few positions a chunk needs as NeMo does.
    }

    // Convolution kernels are held as F32 (ggml's im2col and direct convolutions compute in
    // the kernel's type, and NeMo convolves in float32): F16 ones are converted at load.
    ggml_tensor * bind_kernel(const std::string & name, std::vector<int64_t> expected) {
        const gguf_tensor * src = check_tensor(name, expected, dtype_rule::kernel, true);
        if (src->type == GGML_TYPE_F32) {
            return bind(name, expected, dtype_rule::kernel, "subsampling");
        }
        std::vector<float> data = read_f32(*src);
        ggml_tensor * t = ggml_new_tensor(m_.ctx_derived, GGML_TYPE_F32, int(src->n_dims), src->ne);
        return derive(name, "subsampling", t, std::move(data));
    }

    // The depthwise conv is held as F32 ne [kernel, d_model] whatever the file stores:
    // the nemo layout writes F32 ne [d_model, kernel], the asr layout F16 ne [kernel, 1, d_model].
    ggml_tensor * bind_depthwise(const std::string & name) {
        const int64_t d = m_.hparams.d_model, k = m_.hparams.conv_kernel_size;
        const gguf_tensor * src = is_a() ? check_tensor(name, {d, k}, dtype_rule::kernel, true)
                                         : check_tensor(name, {k, 1, d}, dtype_rule::kernel, true);
        const std::vector<float> stored = read_f32(*src);
        std::vector<float> data(size_t(d * k));
        for (int64_t c = 0; c < d; ++c) {
            for (int64_t j = 0; j < k; ++j) {
                data[size_t(j + c * k)] = is_a() ? stored[size_t(c + j * d)] : stored[size_t(j + c * k)];
            }
        }
        return derive(name, "convolution", ggml_new_tensor_2d(m_.ctx_derived, GGML_TYPE_F32, k, d), std::move(data));
    }

    std::vector<float> read_f32(const gguf_tensor & src) const {
        const size_t n = size_t(src.n_bytes / ggml_type_size(src.type));
        std::vector<float> out(n);
        const uint8_t * p = file_->data() + g_.data_offset() + src.offset;
        if (src.type == GGML_TYPE_F16) {
            ggml_fp16_to_fp32_row(reinterpret_cast<const ggml_fp16_t *>(p), out.data(), int64_t(n));
        } else {
            std::memcpy(out.data(), p, n * sizeof(float));
        }
        return out;
    }

    ggml_tensor * derive(const std::string & name, const char * group, ggml_tensor * t, std::vector<float> data) {
        ggml_set_name(t, name.c_str());
        derived_.push_back({t, std::move(data)});
        record(name, group, t);
        return t;
    }

    void read_frontend_tables() {
        const nemotron_hparams & hp = m_.hparams;
        const int64_t n_bins = hp.n_fft / 2 + 1;
        const std::string fb = fb_name();
        const gguf_tensor * t = check_tensor(fb, {n_bins, hp.n_mels}, dtype_rule::vector, false);
        if (t != nullptr) {
            const float * p = reinterpret_cast<const float *>(file_->data() + g_.data_offset() + t->offset);
            m_.mel_filterbank.assign(p, p + n_bins * hp.n_mels);
        } else {
            m_.mel_filterbank = slaney_mel_filterbank(hp.sample_rate, hp.n_fft, hp.n_mels, 0.0, hp.sample_rate / 2.0);
        }
        record_host("preprocessor.featurizer.fb", {n_bins, hp.n_mels}, m_.mel_filterbank.size());
        const gguf_tensor * w = check_tensor("preprocessor.featurizer.window", {hp.win_length}, dtype_rule::vector, false);
        if (w != nullptr) {
            const float * p = reinterpret_cast<const float *>(file_->data() + g_.data_offset() + w->offset);
            m_.window.assign(p, p + hp.win_length);
        } else {
            m_.window = hann_window(hp.win_length, bool_key("asr.preprocessor.hann_periodic", false));
        }
        record_host("preprocessor.featurizer.window", {hp.win_length}, m_.window.size());
    }

    void record_host(const std::string & name, std::vector<int64_t> ne, size_t n) {
        tensor_record r;
        r.name = name;
        r.group = "frontend";
        r.n_dims = int32_t(ne.size());
        std::copy(ne.begin(), ne.end(), r.ne);
        r.n_bytes = n * sizeof(float);
        m_.tensors.push_back(r);
    }

    // ---- placement --------------------------------------------------------------------------

    void place_weights(ggml_backend_dev_t device, bool use_mmap) {
        ggml_backend_dev_props props;
        ggml_backend_dev_get_props(device, &props);
        const uint8_t * base = file_->data() + g_.data_offset();
        size_t data_size = file_->size() - size_t(g_.data_offset());
        size_t max_tensor = 0;
        for (const pending & p : pending_) max_tensor = std::max(max_tensor, size_t(p.src->n_bytes));

        // ggml's host buffers need 32-byte aligned tensors; GGUF's default alignment gives that.
        const bool aligned = reinterpret_cast<uintptr_t>(base) % 32 == 0 && g_.alignment() % 32 == 0;
        if (use_mmap && props.caps.buffer_from_host_ptr && aligned && data_size > 0) {
            m_.buf_file = ggml_backend_dev_buffer_from_host_ptr(device, const_cast<uint8_t *>(base), data_size, max_tensor);
            if (m_.buf_file == nullptr) fail(NEMOTRON_ERR_BACKEND, "the %s backend cannot use the mapped file", props.name);
            for (const pending & p : pending_) {
                if (ggml_backend_tensor_alloc(m_.buf_file, p.t, const_cast<uint8_t *>(base) + p.src->offset) != GGML_STATUS_SUCCESS) {
                    fail(NEMOTRON_ERR_BACKEND, "cannot place tensor '%s' in the mapped file", p.src->name.c_str());
                }
            }
            m_.weights_mapped = true;
        } else {
            m_.buf_file = ggml_backend_alloc_ctx_tensors_from_buft(m_.ctx_file, ggml_backend_dev_buffer_type(device));
            if (m_.buf_file == nullptr) {
                fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate %zu bytes of weights on %s", data_size, props.name);
            }
            for (const pending & p : pending_) {
                ggml_backend_tensor_set(p.t, base + p.src->offset, 0, size_t(p.src->n_bytes));
                file_->release(size_t(g_.data_offset() + p.src->offset), size_t(p.src->n_bytes));
            }
        }
        ggml_backend_buffer_set_usage(m_.buf_file, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

        m_.buf_derived = ggml_backend_alloc_ctx_tensors_from_buft(m_.ctx_derived, ggml_backend_dev_buffer_type(device));
        if (m_.buf_derived == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate derived weights on %s", props.name);
        ggml_backend_buffer_set_usage(m_.buf_derived, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        for (const derived & dv : derived_) {
            ggml_backend_tensor_set(dv.t, dv.data.data(), 0, dv.data.size() * sizeof(float));
        }
        if (m_.weights_mapped) {
            m_.mapping = std::move(file_);
        }
    }

    // The encoder's matrices, as the slots the graphs read them from.
    std::vector<ggml_tensor **> matrix_slots() {
        std::vector<ggml_tensor **> out = {&m_.subsampling.out_w};
        for (conformer_layer_weights & L : m_.layers) {
            for (ggml_tensor ** w : {&L.ff1_w1, &L.ff1_w2, &L.q_w, &L.k_w, &L.v_w, &L.out_w, &L.pos_w, &L.pw1_w, &L.pw2_w,
                                     &L.ff2_w1, &L.ff2_w2}) {
                out.push_back(w);
            }
        }
        return out;
    }

    // Whether the device's matrix product takes `w` from a buffer of type `buft`: asked of the
    // backend with a stand-in tensor, so ggml's own rules decide (types, shapes, CPU features).
    static bool multiplies_from(ggml_backend_dev_t device, ggml_backend_buffer_type_t buft, const ggml_tensor * w) {
        ggml_init_params ip = {ggml_tensor_overhead() * 4, nullptr, true};
        ggml_context * ctx = ggml_init(ip);
        ggml_tensor * stand_in = ggml_new_tensor_2d(ctx, w->type, w->ne[0], w->ne[1]);
        ggml_tensor * op = ggml_mul_mat(ctx, stand_in, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], 8));
        ggml_backend_buffer_t empty = ggml_backend_buft_alloc_buffer(buft, 0);
        stand_in->buffer = empty;
        const bool ok = empty != nullptr && ggml_backend_dev_supports_op(device, op);
        if (empty) ggml_backend_buffer_free(empty);
        ggml_free(ctx);
        return ok;
    }

    // The CPU backend's repacked layouts (q4_0 and the k-quants interleaved several rows at a
    // time) let its matrix kernels work on many rows per vector instruction: on x86 q4_0 runs
    // about twice as fast. The matrices it takes are copied into them at load, and their pages
    // of the mapped file are given back, so memory stays about the file's size.
    void repack_weights(ggml_backend_dev_t device) {
        if (ggml_backend_dev_type(device) != GGML_BACKEND_DEVICE_TYPE_CPU) return;
        auto get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
            ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(device), "ggml_backend_dev_get_extra_bufts"));
        if (get_extra == nullptr) return;
        std::map<const ggml_tensor *, const gguf_tensor *> source;
        for (const pending & p : pending_) source[p.t] = p.src;
        for (ggml_backend_buffer_type_t * buft = get_extra(device); buft != nullptr && *buft != nullptr; ++buft) {
            std::vector<ggml_tensor **> chosen;
            for (ggml_tensor ** slot : matrix_slots()) {
                if (*slot != nullptr && source.count(*slot) && multiplies_from(device, *buft, *slot)) chosen.push_back(slot);
            }
            if (chosen.empty()) continue;
            ggml_init_params ip = {ggml_tensor_overhead() * chosen.size(), nullptr, true};
            m_.ctx_repacked = ggml_init(ip);
            std::vector<ggml_tensor *> copies;
            for (ggml_tensor ** slot : chosen) {
                ggml_tensor * copy = ggml_dup_tensor(m_.ctx_repacked, *slot);
                ggml_set_name(copy, (*slot)->name);
                copies.push_back(copy);
            }
            m_.buf_repacked = ggml_backend_alloc_ctx_tensors_from_buft(m_.ctx_repacked, *buft);
            if (m_.buf_repacked == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate the repacked weights");
            ggml_backend_buffer_set_usage(m_.buf_repacked, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
            for (size_t i = 0; i < chosen.size(); ++i) {
                const gguf_tensor * src = source[*chosen[i]];
                ggml_backend_tensor_set(copies[i], (*chosen[i])->data, 0, ggml_nbytes(copies[i]));
                m_.mapping->release(size_t(g_.data_offset() + src->offset), size_t(src->n_bytes));
                m_.repacked_bytes += ggml_nbytes(copies[i]);
                *chosen[i] = copies[i];
            }
            return; // one layout is enough
        }
    }

    // Our q8_0 product's layout (see q8_0_matmul.h) for the encoder's q8_0 matrices on a CPU that
    // runs it. From a mapped file they are copied and their pages given back, as above; weights
    // loaded into memory are packed where they lie. Packing is mostly the page faults of the new
    // copy, so the matrices are shared out among the threads the model computes with (those free now).
    void pack_q8_0_weights(ggml_backend_dev_t device, int n_threads) {
        if (ggml_backend_dev_type(device) != GGML_BACKEND_DEVICE_TYPE_CPU) return;
        std::map<const ggml_tensor *, const gguf_tensor *> source;
        for (const pending & p : pending_) source[p.t] = p.src;
        std::vector<ggml_tensor **> chosen;
        for (ggml_tensor ** slot : matrix_slots()) {
            if (*slot != nullptr && source.count(*slot) && q8_0_packable(*slot)) chosen.push_back(slot);
        }
        if (chosen.empty()) return;
        std::vector<ggml_tensor *> packed;
        if (m_.weights_mapped) {
            ggml_init_params ip = {ggml_tensor_overhead() * chosen.size(), nullptr, true};
            m_.ctx_packed = ggml_init(ip);
            for (ggml_tensor ** slot : chosen) {
                packed.push_back(ggml_dup_tensor(m_.ctx_packed, *slot));
                ggml_set_name(packed.back(), (*slot)->name);
            }
            m_.buf_packed = ggml_backend_alloc_ctx_tensors_from_buft(m_.ctx_packed, ggml_backend_dev_buffer_type(device));
            if (m_.buf_packed == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate the packed q8_0 weights");
            ggml_backend_buffer_set_usage(m_.buf_packed, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        } else {
            for (ggml_tensor ** slot : chosen) packed.push_back(*slot);
        }
        std::atomic<size_t> next{0};
        auto work = [&] {
            std::vector<uint8_t> original;
            for (size_t i = next++; i < chosen.size(); i = next++) {
                const ggml_tensor * w = *chosen[i];
                if (m_.weights_mapped) {
                    q8_0_pack(w, w->data, packed[i]->data);
                    const gguf_tensor * src = source[w];
                    m_.mapping->release(size_t(g_.data_offset() + src->offset), size_t(src->n_bytes));
                } else {
                    const uint8_t * data = static_cast<const uint8_t *>(w->data);
                    original.assign(data, data + ggml_nbytes(w));
                    q8_0_pack(w, original.data(), packed[i]->data);
                }
            }
        };
        thread_budget budget(n_threads);
        std::vector<std::thread> workers;
        for (int t = 1; t < std::min(budget.threads(), int(chosen.size())); ++t) workers.emplace_back(work);
        work();
        for (std::thread & t : workers) t.join();
        for (size_t i = 0; i < chosen.size(); ++i) {
            if (m_.weights_mapped) m_.repacked_bytes += ggml_nbytes(packed[i]);
            m_.q8_0_packed.insert(packed[i]);
            *chosen[i] = packed[i];
        }
    }

    void summarize() {
        std::map<std::string, std::map<ggml_type, uint64_t>> params_by_type;
        static const char * order[] = {"subsampling", "attention", "feed_forward", "convolution", "norm", "predictor",
                                       "joint", "prompt", "frontend"};
        for (const tensor_record & r : m_.tensors) {
            uint64_t n = 1;
            for (int i = 0; i < r.n_dims; ++i) n *= uint64_t(r.ne[i]);
            params_by_type[r.group][r.type] += n;
            m_.weight_bytes += r.n_bytes;
        }
        for (const char * name : order) {
            auto it = params_by_type.find(name);
            if (it == params_by_type.end()) continue;
            group_record g;
            g.name = name;
            ggml_type dominant = GGML_TYPE_F32;
            uint64_t most = 0;
            for (const auto & tp : it->second) {
                g.n_params += tp.second;
                if (tp.second > most) { most = tp.second; dominant = tp.first; }
            }
            g.type = ggml_type_name(dominant);
            for (const tensor_record & r : m_.tensors) {
                if (r.group == name) { g.n_tensors++; g.n_bytes += r.n_bytes; }
            }
            m_.groups.push_back(g);
        }
        for (const group_record & g : m_.groups) {
            if (g.name == "feed_forward") m_.weight_type = g.type;
        }
    }

    struct derived { ggml_tensor * t; std::vector<float> data; };

    model & m_;
    std::unique_ptr<mapped_file> file_;
    gguf_file g_;
    std::vector<pending> pending_;
    std::vector<derived> derived_;
};

} // namespace

void load_model(const std::string & path, ggml_backend_dev_t device, bool use_mmap, int n_threads, model & m) {
    loader(path, m).run(device, use_mmap, n_threads);
}

} // namespace nemotron
