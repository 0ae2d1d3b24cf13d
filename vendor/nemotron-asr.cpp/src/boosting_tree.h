// Phrase boosting: NeMo's boosting tree (context_biasing/boosting_graph_batched.py), a token-level
// Aho-Corasick automaton over the phrases whose arcs carry a bonus and whose failure arcs take the
// bonus of an abandoned partial match back.
//
// The trie is NeMo's ContextGraph: the first token of a phrase scores context_score (the phrase's own
// score where it has one), each later token i (from 0) context_score x depth_scaling + ln(i + 1); a
// node that phrases share keeps the larger score. Each node becomes a state whose arc into it weighs
// its token score and whose backoff goes to its failure node, weighing (failure node's score from the
// root) - (its own), or 0 at the end of a phrase, so a finished phrase keeps its bonus. The start
// state has an arc for every token: into a first-level node, else back to itself with unk_score.
// A token's score from a state is the first arc for it along the backoff chain plus the backoffs
// taken to reach it, in float32 as NeMo sums them.
#pragma once

#include <cstdint>
#include <vector>

namespace nemotron {

// Doubles, as NeMo's Python computes the trie's scores.
struct boosting_params {
    double context_score = 1.0; // NeMo BoostingTreeModelConfig.context_score
    double depth_scaling = 2.0; // .depth_scaling (NeMo's value for RNN-T)
    double unk_score = 0.0;     // .unk_score: tokens that start no phrase
};

class boosting_tree {
public:
    // phrases[i] is a token sequence (ids below n_tokens, none empty) with its own context score
    // (0: params.context_score), as ContextGraph.build takes them.
    boosting_tree(const std::vector<std::vector<int32_t>> & phrases, const std::vector<double> & scores,
                  const boosting_params & params, int n_tokens);

    static constexpr int32_t start = 0;

    // Every token's score from `state` into scores[0 .. n_tokens).
    void scores(int32_t state, float * scores) const;
    // The state after `token`.
    int32_t next(int32_t state, int32_t token) const;

    int n_states() const { return int(states_.size()); }
    int n_tokens() const { return n_tokens_; }

private:
    struct arc {
        int32_t token, to;
        float weight;
    };
    struct state {
        int32_t backoff_to = start;
        float backoff_weight = 0.0f;
        std::vector<arc> arcs; // by token; the start state's arcs live in start_arcs_
    };
    const arc * find(int32_t state, int32_t token) const;

    int n_tokens_;
    std::vector<state> states_;
    std::vector<arc> start_arcs_; // [n_tokens], indexed by token
};

} // namespace nemotron
