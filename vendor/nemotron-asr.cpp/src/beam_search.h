// RNN-T beam search: NeMo's batched modified alignment-length synchronous decoding (malsd_batch,
// ModifiedALSDBatchedRNNTComputer), for one stream, carried across chunks.
//
// A beam of `beam_size` hypotheses, each at its own encoder frame. Each step extends every hypothesis
// with its beam_size best labels (the blank included: a blank moves it to its next frame), keeps the
// beam_size best of the beam_size^2 candidates, merges hypotheses of the same labels (their
// probabilities summed), and advances the prediction network of those that took a label. A hypothesis
// that took max_symbols labels on one frame may only take the blank. A hypothesis past the last
// frame keeps its score and stops. The final order is by score / (labels + 1).
//
// In a stream, a step runs only once the frames of all its hypotheses are here, so the steps are
// those of one search over the whole stream; the labels every hypothesis shares are handed out as they
// come (no later step can change them), the best hypothesis's rest at the end.
//
// Boosting (NeMo's fusion with pruning_mode "late" and blank_lm_score_mode "lm_weighted_full", its
// RNN-T beam defaults): before the top labels are chosen, every label's log-probability gains
// alpha x (the tree's score + log(1 - p(blank))) and the blank's is scaled by 1 + alpha.
#pragma once

#include "boosting_tree.h"
#include "rnnt.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace nemotron {

struct hypothesis {
    token_sequence tokens;
    float score; // total log-probability (with boosting, the boosted one)
};

class beam_decoder {
public:
    beam_decoder(const rnnt_weights & w, int beam_size);

    void reset();
    // See greedy_decoder::set_boosting.
    void set_boosting(std::shared_ptr<const boosting_tree> tree, float alpha);

    // Encoder frames [n][d_enc] numbered from first_frame: runs every step whose frames are here and
    // appends the tokens that every hypothesis holds to `out`.
    void decode(const float * frames, int n, int32_t first_frame, token_sequence & out, const row_team & team);
    // The end of the frames: runs the remaining steps, appends the rest of the best hypothesis's
    // tokens to `out` and keeps the N-best list.
    void finish(token_sequence & out, const row_team & team);
    // After finish: the hypotheses, best first.
    const std::vector<hypothesis> & nbest() const { return nbest_; }

private:
    struct node { // a label of a hypothesis; hypotheses that share a prefix share its nodes
        int32_t label, frame, parent, depth;
        float confidence;
    };
    struct slot {
        float score;
        int32_t time;       // the encoder frame the hypothesis is at
        int32_t lasts;      // labels it took on that frame
        int32_t last_label; // -1: none yet
        int32_t n_labels;
        uint64_t hash;      // of its labels, as NeMo hashes them
        int32_t node;       // its last label, -1: none
        int32_t boosting_state;
    };

    bool step(bool final, const row_team & team);     // one search step; false where a frame is missing
    // Slot k's next labels' log-probabilities from its joint logits (boosted, and as the joint gave them).
    void scores(int k, const float * logits, std::vector<float> & log_probs, std::vector<float> & raw);
    void commit(int32_t to, token_sequence & out); // hands out the labels from committed_ to node `to`
    const float * frame(int32_t t) const { return enc_.data() + size_t(t - enc_first_) * size_t(w_.n_joint); }

    const rnnt_weights & w_;
    const int beam_;
    rnnt_scratch scratch_;
    std::shared_ptr<const boosting_tree> boosting_;
    float boosting_alpha_ = 0.0f;

    std::vector<slot> slots_, next_;
    std::vector<float> h_, c_, pred_, h_next_, c_next_, pred_next_; // per slot [layers][hidden], [joint]
    std::vector<node> nodes_;
    std::vector<float> enc_; // projected frames [enc_first_, n_frames_)
    int32_t enc_first_ = 0, n_frames_ = 0;
    int32_t committed_ = -1; // the last node handed out
    std::vector<hypothesis> nbest_;
    std::vector<float> logits_, log_probs_, raw_, boost_, candidates_, row_; // logits_: [beam][vocab]
    std::vector<int32_t> labels_;
};

} // namespace nemotron
