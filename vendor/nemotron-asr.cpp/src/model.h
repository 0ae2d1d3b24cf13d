// The one internal form of a model, whichever GGUF layout it was read from: hyperparameters,
// ggml tensors under their NeMo state-dict names (PyTorch LSTM names, 2-D pointwise convs,
// depthwise conv as F32 ne [kernel, channels]) and the host-side frontend tables.
#pragma once

#include "gguf_file.h"
#include "nemotron-asr.h"

#include "ggml-backend.h"
#include "ggml.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace nemotron {


struct subsampling_weights {
    struct stage {
        ggml_tensor * dw_w = nullptr; // conv.{3s-1}: depthwise 3x3, stride 2 (absent in stage 0)
        ggml_tensor * dw_b = nullptr;
        ggml_tensor * pw_w = nullptr; // conv.0 in stage 0 (full 3x3 from 1 channel), else conv.{3s} pointwise
        ggml_tensor * pw_b = nullptr;
    };
    std::vector<stage> stages;
    ggml_tensor * out_w = nullptr; // ne [channels * freq, d_model]
    ggml_tensor * out_b = nullptr;
};

struct conformer_layer_weights {
    ggml_tensor * norm_ff1_w = nullptr, * norm_ff1_b = nullptr;
    ggml_tensor * ff1_w1 = nullptr, * ff1_b1 = nullptr, * ff1_w2 = nullptr, * ff1_b2 = nullptr;

    ggml_tensor * norm_att_w = nullptr, * norm_att_b = nullptr;
    ggml_tensor * q_w = nullptr, * q_b = nullptr;
    ggml_tensor * k_w = nullptr, * k_b = nullptr;
    ggml_tensor * v_w = nullptr, * v_b = nullptr;
    ggml_tensor * out_w = nullptr, * out_b = nullptr;
    ggml_tensor * pos_w = nullptr;
    ggml_tensor * pos_bias_u = nullptr, * pos_bias_v = nullptr; // ne [d_head, n_heads]

    ggml_tensor * norm_conv_w = nullptr, * norm_conv_b = nullptr;
    ggml_tensor * pw1_w = nullptr, * pw1_b = nullptr; // ne [d_model, 2 d_model]
    ggml_tensor * dw_w = nullptr, * dw_b = nullptr;   // ne [kernel, d_model], F32
    ggml_tensor * conv_norm_w = nullptr, * conv_norm_b = nullptr;
    ggml_tensor * pw2_w = nullptr, * pw2_b = nullptr;

    ggml_tensor * norm_ff2_w = nullptr, * norm_ff2_b = nullptr;
    ggml_tensor * ff2_w1 = nullptr, * ff2_b1 = nullptr, * ff2_w2 = nullptr, * ff2_b2 = nullptr;

    ggml_tensor * norm_out_w = nullptr, * norm_out_b = nullptr;
};

struct lstm_layer_weights {
    ggml_tensor * w_ih = nullptr, * w_hh = nullptr; // ne [in, 4 hidden], gates i, f, g, o
    ggml_tensor * b_ih = nullptr, * b_hh = nullptr;
};

struct predictor_weights {
    ggml_tensor * embed = nullptr; // ne [embed_dim, vocab_size], the blank row last
    std::vector<lstm_layer_weights> lstm;
};

struct joint_weights {
    ggml_tensor * enc_w = nullptr, * enc_b = nullptr;
    ggml_tensor * pred_w = nullptr, * pred_b = nullptr;
    ggml_tensor * out_w = nullptr, * out_b = nullptr;
};

// Multilingual models' language prompt (NeMo's prompt_kernel): every encoder frame, joined with
// the one-hot vector of its stream's language, goes through Linear, ReLU, Linear before the joint.
struct prompt_weights {
    ggml_tensor * w1 = nullptr, * b1 = nullptr; // ne [d_model + num_prompts, 2 d_model]
    ggml_tensor * w2 = nullptr, * b2 = nullptr; // ne [2 d_model, d_model]
};

// A language of a multilingual model and the index of its one-hot prompt.
struct language {
    std::string code; // as the model's prompt dictionary writes it, e.g. "de-DE"
    int32_t     prompt = 0;
};

// What nemotron_context_get_tensor_info reports, one per tensor the engine holds.
struct tensor_record {
    std::string   name;
    std::string   group;
    ggml_tensor * tensor = nullptr; // null for host-side frontend tables
    ggml_type     type = GGML_TYPE_F32;
    int32_t       n_dims = 1;
    int64_t       ne[4] = {1, 1, 1, 1};
    uint64_t      n_bytes = 0;
};

struct group_record {
    std::string name;
    std::string type;
    int32_t     n_tensors = 0;
    uint64_t    n_params = 0;
    uint64_t    n_bytes = 0;
};

struct model {
    nemotron_hparams hparams = {};
    nemotron_layout  layout = NEMOTRON_LAYOUT_NEMO;
    std::string      name;
    std::vector<std::string> pieces; // the vocabulary without the blank

    subsampling_weights subsampling;
    std::vector<conformer_layer_weights> layers;
    predictor_weights predictor;
    joint_weights     joint;
    prompt_weights    prompt;              // null tensors when hparams.num_prompts is 0
    std::vector<language> languages;       // the prompt dictionary, in the file's order

    // Frontend tables, kept on the host where the frontend runs.
    std::vector<float> mel_filterbank; // [n_mels][n_fft/2 + 1]
    std::vector<float> window;         // [win_length]

    std::vector<tensor_record> tensors;
    std::vector<group_record>  groups;
    std::string weight_type;
    uint64_t    file_size = 0;
    uint64_t    weight_bytes = 0;

    // Weights: file-backed tensors in ctx_file (in place in the mapping when weights_mapped),
    // derived ones (converted at load) in ctx_derived.
    ggml_context *        ctx_file = nullptr;
    ggml_context *        ctx_derived = nullptr;
    ggml_backend_buffer_t buf_file = nullptr;
    ggml_backend_buffer_t buf_derived = nullptr;
    std::unique_ptr<mapped_file> mapping; // kept only while weights are used in place
    bool weights_mapped = false;
    // Matrices copied at load into a layout of the CPU backend's own (see repack_weights).
    ggml_context *        ctx_repacked = nullptr;
    ggml_backend_buffer_t buf_repacked = nullptr;
    uint64_t              repacked_bytes = 0;
    // The encoder's q8_0 matrices in our product's layout (see q8_0_matmul.h): copies in ctx_packed
    // when the file is mapped, else packed where they were loaded. Only that product reads them.
    ggml_context *        ctx_packed = nullptr;
    ggml_backend_buffer_t buf_packed = nullptr;
    std::set<const ggml_tensor *> q8_0_packed;

    model() = default;
    model(const model &) = delete;
    model & operator=(const model &) = delete;
    ~model();
};

// Reads a GGUF file of either layout into `m`, placing the weights on `device`; work that can be
// split (packing weights) runs on up to n_threads threads.
void load_model(const std::string & path, ggml_backend_dev_t device, bool use_mmap, int n_threads, model & m);

} // namespace nemotron
