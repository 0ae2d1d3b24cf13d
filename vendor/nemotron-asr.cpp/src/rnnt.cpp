#include "rnnt.h"

#include "error.h"
#include "f32_matmul.h"

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

// PyTorch's rows of the four gates (input, forget, cell, output, each [hidden][width]) reordered
// unit by unit: row 4 j + gate is the gate's row j. A row's dot product does not depend on where the
// row lies, so the gates keep their values; the four of a unit then come from one block of four rows.
static std::vector<float> by_unit(const std::vector<float> & rows, int n_hidden) {
    const size_t H = size_t(n_hidden), width = rows.size() / (4 * H);
    std::vector<float> out(rows.size());
    for (size_t gate = 0; gate < 4; ++gate) {
        for (size_t j = 0; j < H; ++j) {
            std::copy_n(rows.begin() + std::ptrdiff_t((gate * H + j) * width), width, out.begin() + std::ptrdiff_t((4 * j + gate) * width));
        }
    }
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
        w_ih.push_back(by_unit(to_f32(l.w_ih), n_hidden));
        w_hh.push_back(by_unit(to_f32(l.w_hh), n_hidden));
        std::vector<float> b = to_f32(l.b_ih);
        const std::vector<float> b_hh = to_f32(l.b_hh);
        for (size_t i = 0; i < b.size(); ++i) b[i] += b_hh[i];
        bias.push_back(by_unit(b, n_hidden));
    }
    enc_w = to_f32(m.joint.enc_w);
    enc_b = to_f32(m.joint.enc_b);
    pred_w = to_f32(m.joint.pred_w);
    pred_b = to_f32(m.joint.pred_b);
    out_w = to_f32(m.joint.out_w);
    out_b = to_f32(m.joint.out_b);
    // Not value-initialized: the pages of rows never used are never touched.
    input_gates_.reset(new float[size_t(n_vocab + 1) * 4 * size_t(n_hidden)]);
    input_ready_.reset(new std::atomic<bool>[size_t(n_vocab + 1)]);
    for (int i = 0; i <= n_vocab; ++i) input_ready_[size_t(i)].store(false, std::memory_order_relaxed);
}

static float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

const float * rnnt_weights::input_gates(int32_t label) const {
    const size_t row = label < 0 ? size_t(n_vocab) : size_t(label), width = 4 * size_t(n_hidden);
    float * gates = input_gates_.get() + row * width;
    if (!input_ready_[row].load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> lock(input_mutex_);
        if (!input_ready_[row].load(std::memory_order_relaxed)) {
            // The start of sequence feeds a zero vector (NeMo's blank-as-pad SOS).
            std::vector<float> input(size_t(n_embed), 0.0f);
            if (label >= 0) std::copy_n(embed.begin() + std::ptrdiff_t(size_t(label) * size_t(n_embed)), n_embed, input.begin());
            row_team alone(1);
            const float * x = input.data();
            affine_rows(alone, w_ih[0].data(), bias[0].data(), &x, 1, 4 * n_hidden, n_embed, &gates);
            input_ready_[row].store(true, std::memory_order_release);
        }
    }
    return gates;
}

rnnt_scratch::rnnt_scratch(const rnnt_weights & w) { fit(w, 1); }

void rnnt_scratch::fit(const rnnt_weights & w, int n) {
    gates.resize(size_t(n) * 4 * size_t(w.n_hidden));
    gates_hh.resize(gates.size());
    hidden.resize(size_t(n) * size_t(w.n_joint));
}

namespace {

// One LSTM layer of a predictor step, for n inputs: each thread of the team takes a share of the
// hidden units, computes their four gates' rows (input and recurrent products) and then their cells,
// so the layer is one parallel region and its element-wise work is shared too.
struct lstm_layer_step {
    const rnnt_weights * w;
    int layer, n;
    const float * const * x;     // the layer's inputs [n][hidden] (layer > 0)
    const float * const * in;    // layer 0: each input's gates from the label table [n][4 hidden]
    const float * const * h, * const * c; // the state [n][hidden]
    float * const * gates, * const * gates_hh, * const * h_out, * const * c_out;
};

void lstm_units(int begin, int end, const void * context) {
    const lstm_layer_step & s = *static_cast<const lstm_layer_step *>(context);
    const rnnt_weights & w = *s.w;
    const int H = w.n_hidden;
    if (s.layer > 0) affine_rows_part(w.w_ih[size_t(s.layer)].data(), w.bias[size_t(s.layer)].data(), s.x, s.n, 4 * begin, 4 * end, H, s.gates);
    affine_rows_part(w.w_hh[size_t(s.layer)].data(), nullptr, s.h, s.n, 4 * begin, 4 * end, H, s.gates_hh);
    for (int i = 0; i < s.n; ++i) {
        const float * in = s.layer == 0 ? s.in[i] : s.gates[i];
        const float * hh = s.gates_hh[i];
        for (int j = begin; j < end; ++j) {
            // PyTorch's gates: input, forget, cell, output (rows by unit, see by_unit).
            const float ig = sigmoid(in[4 * j] + hh[4 * j]);
            const float f = sigmoid(in[4 * j + 1] + hh[4 * j + 1]);
            const float g = std::tanh(in[4 * j + 2] + hh[4 * j + 2]);
            const float o = sigmoid(in[4 * j + 3] + hh[4 * j + 3]);
            s.c_out[i][j] = f * s.c[i][j] + ig * g;
            s.h_out[i][j] = o * std::tanh(s.c_out[i][j]);
        }
    }
}

} // namespace

void predict(const rnnt_weights & w, int n, const int32_t * labels, const float * const * h_in, const float * const * c_in,
             float * const * h_next, float * const * c_next, float * const * pred, rnnt_scratch & s, const row_team & team) {
    const size_t H = size_t(w.n_hidden), N = size_t(n);
    s.fit(w, n);
    std::vector<const float *> x(N), in(N), h(N), c(N);
    std::vector<float *> gates(N), gates_hh(N), h_out(N), c_out(N);
    for (size_t i = 0; i < N; ++i) {
        gates[i] = s.gates.data() + i * 4 * H;
        gates_hh[i] = s.gates_hh.data() + i * 4 * H;
        in[i] = w.input_gates(labels[i]);
    }
    for (int l = 0; l < w.n_layers; ++l) {
        for (size_t i = 0; i < N; ++i) {
            h[i] = h_in[i] + size_t(l) * H;
            c[i] = c_in[i] + size_t(l) * H;
            h_out[i] = h_next[i] + size_t(l) * H;
            c_out[i] = c_next[i] + size_t(l) * H;
        }
        const lstm_layer_step step{&w, l, n, x.data(), in.data(), h.data(), c.data(), gates.data(), gates_hh.data(), h_out.data(), c_out.data()};
        team.run(int(H), 1, lstm_units, &step);
        for (size_t i = 0; i < N; ++i) x[i] = h_out[i]; // the next layer's input
    }
    affine_rows(team, w.pred_w.data(), w.pred_b.data(), x.data(), n, w.n_joint, int(H), pred);
}

void project_frames(const rnnt_weights & w, int n, const float * const * frames, float * const * enc, const row_team & team) {
    affine_rows(team, w.enc_w.data(), w.enc_b.data(), frames, n, w.n_joint, w.d_enc, enc);
}

void joint(const rnnt_weights & w, int n, const float * const * enc, const float * const * pred, rnnt_scratch & s,
           float * const * logits, const row_team & team) {
    s.fit(w, n);
    std::vector<const float *> hidden(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        float * x = s.hidden.data() + size_t(i) * size_t(w.n_joint);
        for (int j = 0; j < w.n_joint; ++j) x[j] = std::max(0.0f, enc[i][j] + pred[i][j]);
        hidden[size_t(i)] = x;
    }
    affine_rows(team, w.out_w.data(), w.out_b.data(), hidden.data(), n, w.n_vocab, w.n_joint, logits);
}

greedy_decoder::greedy_decoder(const rnnt_weights & w) : w_(w), scratch_(w) {
    const size_t state = size_t(w.n_layers) * size_t(w.n_hidden);
    h_.resize(state);
    c_.resize(state);
    h_next_.resize(state);
    c_next_.resize(state);
    pred_.resize(size_t(w.n_joint));
    enc_.resize(size_t(w.n_joint));
    logits_.resize(size_t(w.n_vocab));
    reset();
}

void greedy_decoder::reset() {
    std::fill(h_.begin(), h_.end(), 0.0f);
    std::fill(c_.begin(), c_.end(), 0.0f);
    last_ = -1;
    pred_valid_ = false;
    utterance_first_ = utterance_last_ = -1;
    boosting_state_ = boosting_tree::start;
}

void greedy_decoder::set_boosting(std::shared_ptr<const boosting_tree> tree, float alpha) {
    // NeMo's trees score the labels before the blank, which is the last id in blank-as-pad models.
    if (tree != nullptr && (w_.blank != w_.n_vocab - 1 || tree->n_tokens() != w_.blank)) {
        fail(NEMOTRON_ERR_UNSUPPORTED, "phrase boosting needs the blank as the last id");
    }
    boosting_ = std::move(tree);
    boosting_alpha_ = alpha;
    boosting_state_ = boosting_tree::start;
    boosting_scores_.resize(boosting_ != nullptr ? size_t(w_.n_vocab) : 0);
}

void greedy_decoder::set_endpoint_reset(int silence_frames, int min_utterance_frames) {
    reset_silence_ = silence_frames;
    reset_min_utterance_ = min_utterance_frames;
}

int32_t greedy_decoder::boost(float top1, float log_denom, float & margin) {
    // NeMo adds the scores to the joint's log-softmax (the joint applies it on the CPU), computed as
    // torch does: (logit - max) - log(sum(exp(logit - max))).
    boosting_->scores(boosting_state_, boosting_scores_.data());
    int32_t best = -1;
    float first = -INFINITY, second = -INFINITY;
    for (int k = 0; k < w_.n_vocab; ++k) {
        if (k == w_.blank) continue;
        const float v = ((logits_[size_t(k)] - top1) - log_denom) + boosting_alpha_ * boosting_scores_[size_t(k)];
        if (v > first) {
            second = first;
            first = v;
            best = k;
        } else if (v > second) {
            second = v;
        }
    }
    margin = first - second;
    return best;
}

bool greedy_decoder::decide(int32_t frame, token_sequence & out, std::vector<joint_step> * trace) {
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
    float margin = top1 - top2;
    if (best != w_.blank && boosting_ != nullptr) {
        // Two decisions: a label rather than the blank (the plain scores), and which (the boosted).
        float boosted_margin = 0.0f;
        const float label_margin = top1 - logits_[size_t(w_.blank)];
        best = boost(top1, std::log(denom), boosted_margin);
        margin = std::min(label_margin, boosted_margin);
    }
    const float confidence = std::exp(logits_[size_t(best)] - top1) / denom;
    if (trace != nullptr) trace->push_back({frame, best, margin, confidence});
    if (best == w_.blank) return false;
    out.ids.push_back(best);
    out.frames.push_back(frame);
    if (utterance_first_ < 0) utterance_first_ = frame;
    utterance_last_ = frame;
    out.confidences.push_back(confidence);
    h_.swap(h_next_);
    c_.swap(c_next_);
    last_ = best;
    pred_valid_ = false;
    if (boosting_ != nullptr) boosting_state_ = boosting_->next(boosting_state_, best);
    return true;
}

void greedy_decoder::decode_together(const std::vector<greedy_job> & jobs, int n, const row_team & team) {
    if (jobs.empty()) return;
    const rnnt_weights & w = jobs[0].decoder->w_;
    rnnt_scratch & scratch = jobs[0].decoder->scratch_; // scratch space only: any decoder's serves
    const size_t n_jobs = jobs.size();
    std::vector<const float *> frames(n_jobs);
    std::vector<float *> enc(n_jobs);
    std::vector<int> emitted(n_jobs);
    std::vector<size_t> active, still;
    // The arguments of one product, for the decoders that take part in it.
    std::vector<int32_t> labels;
    std::vector<const float *> h, c, enc_of, pred_of;
    std::vector<float *> h_next, c_next, pred, logits;
    for (int t = 0; t < n; ++t) {
        active.clear();
        for (size_t j = 0; j < n_jobs; ++j) {
            greedy_decoder & d = *jobs[j].decoder;
            const int32_t frame = jobs[j].first_frame + t;
            // The rule of the Python segmenter's endpoints, in frames, so that every utterance after an
            // endpoint is decoded from the start state whatever the chunking.
            if (d.reset_silence_ > 0 && d.utterance_last_ >= 0 && frame - d.utterance_last_ - 1 >= d.reset_silence_ &&
                d.utterance_last_ + 1 - d.utterance_first_ >= d.reset_min_utterance_) {
                d.reset();
            }
            frames[j] = jobs[j].frames + size_t(t) * size_t(w.d_enc);
            enc[j] = d.enc_.data();
            emitted[j] = 0;
            if (w.max_symbols > 0) active.push_back(j);
        }
        project_frames(w, int(n_jobs), frames.data(), enc.data(), team);
        while (!active.empty()) {
            labels.clear(), h.clear(), c.clear(), h_next.clear(), c_next.clear(), pred.clear();
            enc_of.clear(), pred_of.clear(), logits.clear();
            for (size_t j : active) {
                greedy_decoder & d = *jobs[j].decoder;
                if (!d.pred_valid_) {
                    labels.push_back(d.last_);
                    h.push_back(d.h_.data());
                    c.push_back(d.c_.data());
                    h_next.push_back(d.h_next_.data());
                    c_next.push_back(d.c_next_.data());
                    pred.push_back(d.pred_.data());
                    d.pred_valid_ = true;
                }
                enc_of.push_back(d.enc_.data());
                pred_of.push_back(d.pred_.data());
                logits.push_back(d.logits_.data());
            }
            if (!labels.empty()) {
                predict(w, int(labels.size()), labels.data(), h.data(), c.data(), h_next.data(), c_next.data(), pred.data(),
                        scratch, team);
            }
            joint(w, int(active.size()), enc_of.data(), pred_of.data(), scratch, logits.data(), team);
            still.clear();
            for (size_t j : active) {
                const greedy_job & job = jobs[j];
                if (job.decoder->decide(job.first_frame + t, *job.out, job.trace) && ++emitted[j] < w.max_symbols) {
                    still.push_back(j);
                }
            }
            active.swap(still);
        }
    }
}

} // namespace nemotron
