#include "boosting_tree.h"

#include "error.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <memory>

namespace nemotron {

namespace {

// A node of NeMo's ContextGraph trie. Scores are doubles, as Python computes them; they become
// float32 only in the automaton, where NeMo stores them.
struct trie_node {
    double token_score = 0.0, node_score = 0.0;
    bool is_end = false;
    int32_t id = 0;
    trie_node * fail = nullptr;
    std::map<int32_t, std::unique_ptr<trie_node>> next;
};

} // namespace

boosting_tree::boosting_tree(const std::vector<std::vector<int32_t>> & phrases, const std::vector<double> & scores,
                             const boosting_params & params, int n_tokens)
    : n_tokens_(n_tokens) {
    if (scores.size() != phrases.size()) fail(NEMOTRON_ERR_INTERNAL, "boosting: a score per phrase");
    trie_node root;
    int32_t n_nodes = 1;
    for (size_t p = 0; p < phrases.size(); ++p) {
        const std::vector<int32_t> & tokens = phrases[p];
        const double context_score = scores[p] != 0.0 ? scores[p] : params.context_score;
        trie_node * node = &root;
        for (size_t i = 0; i < tokens.size(); ++i) {
            const bool last = i + 1 == tokens.size();
            auto found = node->next.find(tokens[i]);
            if (found == node->next.end()) {
                auto child = std::make_unique<trie_node>();
                // Later tokens of a phrase weigh more, so that a partial match pulls towards its end.
                child->token_score = i > 0 ? context_score * params.depth_scaling + std::log(double(i + 1))
                                           : context_score;
                child->node_score = node->node_score + child->token_score;
                child->is_end = last;
                child->id = n_nodes++;
                found = node->next.emplace(tokens[i], std::move(child)).first;
            } else {
                // A node that phrases share keeps the larger score (NeMo compares with the phrase's plain
                // context score, also at depth); its descendants keep the sums they had.
                trie_node & child = *found->second;
                child.token_score = std::max(context_score, child.token_score);
                child.node_score = node->node_score + child.token_score;
                child.is_end = child.is_end || last;
            }
            node = found->second.get();
        }
    }

    // Failure arcs, breadth first: the longest proper suffix of a node's path that is a trie path.
    std::vector<trie_node *> order; // breadth-first, the root excluded
    root.fail = &root;
    std::deque<trie_node *> queue{&root};
    while (!queue.empty()) {
        trie_node * current = queue.front();
        queue.pop_front();
        for (auto & [token, child] : current->next) {
            trie_node * f = current == &root ? &root : current->fail;
            while (current != &root && f != &root && f->next.count(token) == 0) f = f->fail;
            auto hit = f->next.find(token);
            child->fail = current != &root && hit != f->next.end() ? hit->second.get() : &root;
            order.push_back(child.get());
            queue.push_back(child.get());
        }
    }

    // The automaton: state i is trie node i.
    states_.resize(size_t(n_nodes));
    start_arcs_.resize(size_t(n_tokens));
    for (int32_t t = 0; t < n_tokens; ++t) start_arcs_[size_t(t)] = {t, start, float(params.unk_score)};
    for (const trie_node * node : order) {
        state & s = states_[size_t(node->id)];
        s.backoff_to = node->fail->id;
        s.backoff_weight = node->is_end ? 0.0f : float(node->fail->node_score - node->node_score);
    }
    auto add_arcs = [&](const trie_node & from) {
        for (const auto & [token, child] : from.next) {
            const arc a{token, child->id, float(child->token_score)};
            if (&from == &root) {
                start_arcs_[size_t(token)] = a;
            } else {
                states_[size_t(from.id)].arcs.push_back(a); // std::map: in token order
            }
        }
    };
    add_arcs(root);
    for (const trie_node * node : order) add_arcs(*node);
}

const boosting_tree::arc * boosting_tree::find(int32_t s, int32_t token) const {
    const std::vector<arc> & arcs = states_[size_t(s)].arcs;
    auto it = std::lower_bound(arcs.begin(), arcs.end(), token, [](const arc & a, int32_t t) { return a.token < t; });
    return it != arcs.end() && it->token == token ? &*it : nullptr;
}

void boosting_tree::scores(int32_t s, float * out) const {
    // The chain of backoffs from `s` to the start state, with the backoff weight summed before each.
    std::vector<std::pair<int32_t, float>> chain; // (state, backoff weight summed before it)
    float acc = 0.0f;
    for (; s != start; s = states_[size_t(s)].backoff_to) {
        chain.emplace_back(s, acc);
        acc += states_[size_t(s)].backoff_weight;
    }
    for (int t = 0; t < n_tokens_; ++t) out[t] = acc + start_arcs_[size_t(t)].weight;
    // The first state of the chain with an arc for a token decides it: apply from the start state's end.
    for (auto link = chain.rbegin(); link != chain.rend(); ++link) {
        for (const arc & a : states_[size_t(link->first)].arcs) out[a.token] = link->second + a.weight;
    }
}

int32_t boosting_tree::next(int32_t s, int32_t token) const {
    for (; s != start; s = states_[size_t(s)].backoff_to) {
        if (const arc * a = find(s, token)) return a->to;
    }
    return start_arcs_[size_t(token)].to;
}

} // namespace nemotron
