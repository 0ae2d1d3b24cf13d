// RNN-T greedy decoding on the host: the LSTM prediction network, the joint and NeMo's
// greedy_batch rule (at most max_symbols labels per encoder frame; the prediction network
// advances only on a label; the start of sequence is a zero input with a zero state).
#pragma once

#include "model.h"

#include <cstdint>
#include <vector>

namespace nemotron {

// Float32 copies of the prediction network and joint, made once per model.
struct rnnt_weights {
    explicit rnnt_weights(const model & m);

    int d_enc = 0, n_embed = 0, n_hidden = 0, n_layers = 0, n_joint = 0, n_vocab = 0, blank = 0, max_symbols = 0;
    std::vector<float> embed;                  // [vocab][embed]
    std::vector<std::vector<float>> w_ih, w_hh; // per layer [4 hidden][in]
    std::vector<std::vector<float>> bias;       // per layer b_ih + b_hh [4 hidden]
    std::vector<float> enc_w, enc_b, pred_w, pred_b, out_w, out_b;
};

struct joint_step {
    int32_t frame;  // encoder frame
    int32_t token;  // argmax, the blank included
    float   margin; // top-1 minus top-2 logit
    float   confidence; // softmax probability of the argmax over the vocabulary and the blank
};

// What greedy decoding emits, in parallel arrays.
struct token_sequence {
    std::vector<int32_t> ids, frames;
    std::vector<float>   confidences; // softmax probability of each token at its joint step

    void clear() { ids.clear(); frames.clear(); confidences.clear(); }
};

class greedy_decoder {
public:
    explicit greedy_decoder(const rnnt_weights & w);

    void reset();

    // The endpoint reset: once `silence_frames` frames pass with no token after an utterance
    // (the tokens since the last reset) spanning at least `min_utterance_frames` frames, the
    // prediction network starts over as at the start of the stream. silence_frames 0: never.
    void set_endpoint_reset(int silence_frames, int min_utterance_frames);

    // Decodes encoder frames ([n][d_enc]) numbered from first_frame; appends the emitted
    // tokens, and every joint step to `trace` when it is not null.
    void decode(const float * frames, int n, int32_t first_frame, token_sequence & out, std::vector<joint_step> * trace);

private:
    void predict(); // runs the LSTM on last_ from (h_, c_) into (h_next_, c_next_), pred_

    const rnnt_weights & w_;
    std::vector<float> h_, c_, h_next_, c_next_; // [layers][hidden]
    std::vector<float> pred_, enc_, hidden_, logits_, gates_, gates_hh_, input_;
    int32_t last_ = -1; // -1: start of sequence
    bool pred_valid_ = false;
    int reset_silence_ = 0, reset_min_utterance_ = 0;
    int32_t utterance_first_ = -1, utterance_last_ = -1; // frames of the utterance's first and last tokens
};

} // namespace nemotron
