#include "rnnt.h"

#include "error.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <cmath>

namespace nemotron {

static std::vector<float> to_f32(const ggml_tensor * t) {
    const size_t n = size_t(ggml_nelements(t));
    std::vector<float> out(n);
    if (t->type == GGML_TYPE_F32) {
        ggml_backend_tensor_get(t, out.data(), 0, n * sizeof(float));
        return out;
    }
    std::vector<uint8_t> raw(ggml_nbytes(t));
    ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
    const ggml_type_traits * traits = ggml_get_type_traits(t->type);
    if (traits->to_float == nullptr) fail(NEMOTRON_ERR_INTERNAL, "no conversion from %s to f32", ggml_type_name(t->type));
    traits->to_float(raw.data(), out.data(), int64_t(n));
    return out;
}

rnnt_weights::rnnt_weights(const model & m) {
    ggml_cpu_init(); // the SIMD dot products below need the CPU backend's tables
    const nemotron_hparams & hp = m.hparams;
    d_enc = hp.d_model;
    n_embed = hp.pred_embed_dim;
    n_hidden = hp.pred_hidden;
    n_layers = hp.pred_num_layers;
    n_joint = hp.joint_dim;
    n_vocab = hp.vocab_size;
    blank = hp.blank_id;
    max_symbols = hp.max_symbols_per_step;
    embed = to_f32(m.predictor.embed);
    for (const lstm_layer_weights & l : m.predictor.lstm) {
        w_ih.push_back(to_f32(l.w_ih));
        w_hh.push_back(to_f32(l.w_hh));
        std::vector<float> b = to_f32(l.b_ih);
        const std::vector<float> b_hh = to_f32(l.b_hh);
        for (size_t i = 0; i < b.size(); ++i) b[i] += b_hh[i];
        bias.push_back(std::move(b));
    }
    enc_w = to_f32(m.joint.enc_w);
    enc_b = to_f32(m.joint.enc_b);
    pred_w = to_f32(m.joint.pred_w);
    pred_b = to_f32(m.joint.pred_b);
    out_w = to_f32(m.joint.out_w);
    out_b = to_f32(m.joint.out_b);
}

// y = W x + b for W row-major [rows][cols], with ggml's SIMD dot product: one decoding
// step is a few matrix-vector products, too small for a graph.
static void affine(const float * w, const float * b, const float * x, int rows, int cols, float * y) {
    static const ggml_vec_dot_t dot = ggml_get_type_traits_cpu(GGML_TYPE_F32)->vec_dot;
    for (int r = 0; r < rows; ++r) {
        float acc = 0.0f;
        dot(cols, &acc, 0, w + size_t(r) * size_t(cols), 0, x, 0, 1);
        y[r] = acc + (b != nullptr ? b[r] : 0.0f);
    }
}

static float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

greedy_decoder::greedy_decoder(const rnnt_weights & w) : w_(w) {
    const size_t state = size_t(w.n_layers) * size_t(w.n_hidden);
    h_.resize(state);
    c_.resize(state);
    h_next_.resize(state);
    c_next_.resize(state);
    pred_.resize(size_t(w.n_joint));
    enc_.resize(size_t(w.n_joint));
    hidden_.resize(size_t(w.n_joint));
    logits_.resize(size_t(w.n_vocab));
    gates_.resize(4 * size_t(w.n_hidden));
    gates_hh_.resize(4 * size_t(w.n_hidden));
    input_.resize(size_t(std::max(w.n_embed, w.n_hidden)));
    reset();
}

void greedy_decoder::reset() {
    std::fill(h_.begin(), h_.end(), 0.0f);
    std::fill(c_.begin(), c_.end(), 0.0f);
    last_ = -1;
    pred_valid_ = false;
    utterance_first_ = utterance_last_ = -1;
}

void greedy_decoder::set_endpoint_reset(int silence_frames, int min_utterance_frames) {
    reset_silence_ = silence_frames;
    reset_min_utterance_ = min_utterance_frames;
}

void greedy_decoder::predict() {
    const int H = w_.n_hidden;
    // The start of sequence feeds a zero vector (NeMo's blank-as-pad SOS).
    if (last_ < 0) {
        std::fill(input_.begin(), input_.begin() + w_.n_embed, 0.0f);
    } else {
        std::copy_n(w_.embed.begin() + size_t(last_) * size_t(w_.n_embed), w_.n_embed, input_.begin());
    }
    int n_in = w_.n_embed;
    for (int l = 0; l < w_.n_layers; ++l) {
        const float * h = h_.data() + size_t(l) * size_t(H);
        const float * c = c_.data() + size_t(l) * size_t(H);
        affine(w_.w_ih[size_t(l)].data(), w_.bias[size_t(l)].data(), input_.data(), 4 * H, n_in, gates_.data());
        affine(w_.w_hh[size_t(l)].data(), nullptr, h, 4 * H, H, gates_hh_.data());
        float * h_out = h_next_.data() + size_t(l) * size_t(H);
        float * c_out = c_next_.data() + size_t(l) * size_t(H);
        for (int j = 0; j < H; ++j) {
            // PyTorch's gate order: input, forget, cell, output.
            const float i = sigmoid(gates_[size_t(j)] + gates_hh_[size_t(j)]);
            const float f = sigmoid(gates_[size_t(H + j)] + gates_hh_[size_t(H + j)]);
            const float g = std::tanh(gates_[size_t(2 * H + j)] + gates_hh_[size_t(2 * H + j)]);
            const float o = sigmoid(gates_[size_t(3 * H + j)] + gates_hh_[size_t(3 * H + j)]);
            c_out[j] = f * c[j] + i * g;
            h_out[j] = o * std::tanh(c_out[j]);
        }
        std::copy_n(h_out, H, input_.begin());
        n_in = H;
    }
    affine(w_.pred_w.data(), w_.pred_b.data(), input_.data(), w_.n_joint, H, pred_.data());
    pred_valid_ = true;
}

void greedy_decoder::decode(const float * frames, int n, int32_t first_frame, token_sequence & out,
                            std::vector<joint_step> * trace) {
    for (int t = 0; t < n; ++t) {
        const int32_t frame = first_frame + t;
        // The rule of the Python segmenter's endpoints, in frames, so that every utterance after an
        // endpoint is decoded from the start state whatever the chunking.
        if (reset_silence_ > 0 && utterance_last_ >= 0 && frame - utterance_last_ - 1 >= reset_silence_ &&
            utterance_last_ + 1 - utterance_first_ >= reset_min_utterance_) {
            reset();
        }
        affine(w_.enc_w.data(), w_.enc_b.data(), frames + size_t(t) * size_t(w_.d_enc), w_.n_joint, w_.d_enc, enc_.data());
        for (int emitted = 0; emitted < w_.max_symbols;) {
            if (!pred_valid_) predict();
            for (int j = 0; j < w_.n_joint; ++j) hidden_[size_t(j)] = std::max(0.0f, enc_[size_t(j)] + pred_[size_t(j)]);
            affine(w_.out_w.data(), w_.out_b.data(), hidden_.data(), w_.n_vocab, w_.n_joint, logits_.data());
            int best = 0;
            float top1 = logits_[0], top2 = -INFINITY;
            for (int k = 1; k < w_.n_vocab; ++k) {
                const float v = logits_[size_t(k)];
                if (v > top1) {
                    top2 = top1;
                    top1 = v;
                    best = k;
                } else if (v > top2) {
                    top2 = v;
                }
            }
            // Shifted by the maximum, so no term overflows; the argmax's own term is exactly 1.
            float denom = 0.0f;
            for (int k = 0; k < w_.n_vocab; ++k) denom += std::exp(logits_[size_t(k)] - top1);
            const float confidence = 1.0f / denom;
            if (trace != nullptr) trace->push_back({frame, best, top1 - top2, confidence});
            if (best == w_.blank) break;
            out.ids.push_back(best);
            out.frames.push_back(frame);
            if (utterance_first_ < 0) utterance_first_ = frame;
            utterance_last_ = frame;
            out.confidences.push_back(confidence);
            h_.swap(h_next_);
            c_.swap(c_next_);
            last_ = best;
            pred_valid_ = false;
            ++emitted;
        }
    }
}

} // namespace nemotron
