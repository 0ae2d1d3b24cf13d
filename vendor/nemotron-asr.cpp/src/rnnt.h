// RNN-T greedy decoding on the host: the LSTM prediction network, the joint and NeMo's
// greedy_batch rule (at most max_symbols labels per encoder frame; the prediction network
// advances only on a label; the start of sequence is a zero input with a zero state).
#pragma once

#include "boosting_tree.h"
#include "model.h"
#include "row_team.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace nemotron {

// Float32 copies of the prediction network and joint, made once per model.
struct rnnt_weights {
    explicit rnnt_weights(const model & m);

    int d_enc = 0, n_embed = 0, n_hidden = 0, n_layers = 0, n_joint = 0, n_vocab = 0, blank = 0, max_symbols = 0;
    std::vector<float> embed;                  // [vocab][embed]
    std::vector<std::vector<float>> w_ih, w_hh; // per layer [4 hidden][in], the gates' rows unit by unit
    std::vector<std::vector<float>> bias;       // per layer b_ih + b_hh [4 hidden], the same order
    std::vector<float> enc_w, enc_b, pred_w, pred_b, out_w, out_b;

    // The first layer's input gates for a label (-1: the start of sequence's zero input): W_ih x embed + the
    // biases [4 hidden]. They are the same at every step that follows the label, so each label's are
    // computed once, when first needed (by any stream, on any thread), and read from then on: a step
    // reads a row instead of the first layer's input matrix.
    const float * input_gates(int32_t label) const;

private:
    mutable std::unique_ptr<float[]> input_gates_;            // [vocab + 1][4 hidden]; the last row: -1
    mutable std::unique_ptr<std::atomic<bool>[]> input_ready_; // [vocab + 1]
    mutable std::mutex input_mutex_;
};

// Scratch space of the prediction network and the joint, one per decoder.
struct rnnt_scratch {
    explicit rnnt_scratch(const rnnt_weights & w);
    void fit(const rnnt_weights & w, int n); // room for n at once
    std::vector<float> gates, gates_hh, hidden;
};

// The products below share their rows over `team`; each result is what it would be alone and on
// one thread (see f32_matmul.h).

// The prediction network on labels[i] (-1: the start of sequence, a zero input) from the states (h[i],
// c[i]), each [layers][hidden], into (h_next[i], c_next[i]), with its output through the joint's
// projection in pred[i] [joint], for n at once: each weight matrix is read once for all of them.
void predict(const rnnt_weights & w, int n, const int32_t * labels, const float * const * h, const float * const * c,
             float * const * h_next, float * const * c_next, float * const * pred, rnnt_scratch & s, const row_team & team);
// The joint's projections of n encoder frames [d_enc] into enc[i] [joint].
void project_frames(const rnnt_weights & w, int n, const float * const * frames, float * const * enc, const row_team & team);
// The joint's logits [vocab] of projected frames and predictions, n at once (see predict).
void joint(const rnnt_weights & w, int n, const float * const * enc, const float * const * pred, rnnt_scratch & s,
           float * const * logits, const row_team & team);

struct joint_step {
    int32_t frame;  // encoder frame
    int32_t token;  // the decision: the argmax, the blank included (with boosting, the boosted label)
    float   margin; // how far the scores were from another decision: top-1 minus top-2 logit; with
                    // boosting, also the boosted top-1 minus top-2 among the labels where it chose one
    float   confidence; // softmax probability of the token over the vocabulary and the blank
};

// What greedy decoding emits, in parallel arrays.
struct token_sequence {
    std::vector<int32_t> ids, frames;
    std::vector<float>   confidences; // softmax probability of each token at its joint step

    void clear() { ids.clear(); frames.clear(); confidences.clear(); }
};

class greedy_decoder;

// One decoder's share of greedy_decoder::decode_together.
struct greedy_job {
    greedy_decoder * decoder;
    const float * frames;            // [n][d_enc]
    int32_t first_frame;             // the number of the first
    token_sequence * out;            // the emitted tokens are appended here
    std::vector<joint_step> * trace; // every joint step, when not null
};

class greedy_decoder {
public:
    explicit greedy_decoder(const rnnt_weights & w);

    void reset();

    // The endpoint reset: once `silence_frames` frames pass with no token after an utterance
    // (the tokens since the last reset) spanning at least `min_utterance_frames` frames, the
    // prediction network starts over as at the start of the stream. silence_frames 0: never.
    void set_endpoint_reset(int silence_frames, int min_utterance_frames);

    // Phrase boosting as NeMo's greedy_batch applies a boosting tree: whether a step emits a label is
    // the plain argmax's choice (blank or not); which label, the argmax of the labels' log-probabilities
    // plus alpha x the tree's scores from the state the emitted labels led to. nullptr: none. The tree
    // state starts over here and wherever the prediction network does.
    void set_boosting(std::shared_ptr<const boosting_tree> tree, float alpha);

    // Decodes n encoder frames of every job (decoders of one model) in lockstep: frame by frame, the
    // decoders still emitting on a frame run each prediction network and joint step together, so each
    // weight is read once per step for all of them. Each decoder's decisions are those it would make alone.
    static void decode_together(const std::vector<greedy_job> & jobs, int n, const row_team & team);

private:
    // The decision of a joint step on frame `frame` from logits_; true where it emitted a label.
    bool decide(int32_t frame, token_sequence & out, std::vector<joint_step> * trace);
    // The boosted label among the labels (the blank excluded), from logits_ with their maximum and
    // log(sum(exp(logit - maximum))); `margin`: its lead over the next.
    int32_t boost(float top1, float log_denom, float & margin);
    const rnnt_weights & w_;
    rnnt_scratch scratch_;
    std::vector<float> h_, c_, h_next_, c_next_; // [layers][hidden]; next: after last_
    std::vector<float> pred_, enc_, logits_;
    int32_t last_ = -1; // -1: start of sequence
    bool pred_valid_ = false;
    int reset_silence_ = 0, reset_min_utterance_ = 0;
    int32_t utterance_first_ = -1, utterance_last_ = -1; // frames of the utterance's first and last tokens
    std::shared_ptr<const boosting_tree> boosting_;
    float boosting_alpha_ = 0.0f;
    int32_t boosting_state_ = boosting_tree::start;
    std::vector<float> boosting_scores_;
};

} // namespace nemotron
