#include "beam_search.h"

#include "error.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace nemotron {

namespace {

// NeMo's transcript hash (batched_beam_decoding_utils.hash_text), in int64 arithmetic that wraps.
constexpr uint64_t hash_multiplier = 6364136223846793005ull;
constexpr float inactive = -INFINITY;
// NeMo clamps p(blank) below 1 - eps before log(1 - p(blank)).
constexpr float blank_clamp = float(1.0 - 1e-2);

// As torch computes it: (x - max) - log(sum(exp(x - max))).
void log_softmax(const float * x, int n, float * out) {
    const float top = *std::max_element(x, x + n);
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) sum += std::exp(x[i] - top);
    const float log_sum = std::log(sum);
    for (int i = 0; i < n; ++i) out[i] = (x[i] - top) - log_sum;
}

// The indices of the k largest of v[0, n), largest first; of equal values, the lower index first.
void top_k(const float * v, int n, int k, std::vector<int32_t> & out) {
    out.resize(size_t(n));
    std::iota(out.begin(), out.end(), 0);
    std::partial_sort(out.begin(), out.begin() + k, out.end(),
                      [v](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
    out.resize(size_t(k));
}

} // namespace

beam_decoder::beam_decoder(const rnnt_weights & w, int beam_size) : w_(w), beam_(beam_size), scratch_(w) {
    const size_t state = size_t(beam_) * size_t(w.n_layers) * size_t(w.n_hidden);
    h_.resize(state);
    c_.resize(state);
    h_next_.resize(state);
    c_next_.resize(state);
    pred_.resize(size_t(beam_) * size_t(w.n_joint));
    pred_next_.resize(pred_.size());
    logits_.resize(size_t(w.n_vocab));
    raw_.resize(size_t(w.n_vocab));
    candidates_.resize(size_t(beam_) * size_t(beam_));
    reset();
}

void beam_decoder::reset() {
    slots_.assign(size_t(beam_), slot{inactive, 0, 0, -1, 0, 0, -1, boosting_tree::start});
    slots_[0].score = 0.0f; // one hypothesis to start from
    // Every slot starts from the start of sequence: a zero input and a zero state.
    const size_t state = size_t(w_.n_layers) * size_t(w_.n_hidden), joint = size_t(w_.n_joint);
    std::vector<float> zero(state, 0.0f);
    const int32_t start = -1;
    const float * zero_state = zero.data();
    float * h = h_.data(), * c = c_.data(), * pred = pred_.data();
    row_team alone(1);
    predict(w_, 1, &start, &zero_state, &zero_state, &h, &c, &pred, scratch_, alone);
    for (int k = 1; k < beam_; ++k) {
        std::copy_n(h_.begin(), state, h_.begin() + std::ptrdiff_t(k * state));
        std::copy_n(c_.begin(), state, c_.begin() + std::ptrdiff_t(k * state));
        std::copy_n(pred_.begin(), joint, pred_.begin() + std::ptrdiff_t(k * joint));
    }
    nodes_.clear();
    enc_.clear();
    enc_first_ = n_frames_ = 0;
    committed_ = -1;
    nbest_.clear();
}

void beam_decoder::set_boosting(std::shared_ptr<const boosting_tree> tree, float alpha) {
    if (tree != nullptr && (w_.blank != w_.n_vocab - 1 || tree->n_tokens() != w_.blank)) {
        fail(NEMOTRON_ERR_UNSUPPORTED, "phrase boosting needs the blank as the last id");
    }
    boosting_ = std::move(tree);
    boosting_alpha_ = alpha;
    boost_.resize(boosting_ != nullptr ? size_t(w_.n_vocab) : 0);
    for (slot & s : slots_) s.boosting_state = boosting_tree::start;
}

void beam_decoder::scores(int k, const float * logits, std::vector<float> & log_probs, std::vector<float> & raw) {
    const slot & s = slots_[size_t(k)];
    // NeMo's joint applies log-softmax on the CPU, and the beam search applies it again.
    log_softmax(logits, w_.n_vocab, raw.data());
    log_probs.resize(size_t(w_.n_vocab));
    log_softmax(raw.data(), w_.n_vocab, log_probs.data());
    std::copy(log_probs.begin(), log_probs.end(), raw.begin());
    if (boosting_ == nullptr) return;
    boosting_->scores(s.boosting_state, boost_.data());
    const float blank = log_probs[size_t(w_.blank)];
    const float non_blank = std::log1p(-std::min(std::exp(blank), blank_clamp));
    const float shift = non_blank * boosting_alpha_;
    for (int v = 0; v < w_.blank; ++v) log_probs[size_t(v)] += shift + boost_[size_t(v)] * boosting_alpha_;
    log_probs[size_t(w_.blank)] *= float(1.0 + double(boosting_alpha_));
}

bool beam_decoder::step(bool final, const row_team & team) {
    const int K = beam_;
    bool any_active = false;
    for (const slot & s : slots_) {
        if (s.score == inactive) continue; // lost: it can never come back
        if (s.time >= n_frames_) {
            if (!final) return false; // its frame is still to come
        } else {
            any_active = true;
        }
    }
    if (!any_active) return false;

    // The joint of every hypothesis still in the search, all at once (each weight read once).
    std::vector<const float *> enc, pred;
    std::vector<float *> out;
    logits_.resize(size_t(K) * size_t(w_.n_vocab));
    for (int k = 0; k < K; ++k) {
        const slot & s = slots_[size_t(k)];
        if (s.score == inactive || s.time >= n_frames_) continue;
        enc.push_back(frame(s.time));
        pred.push_back(pred_.data() + size_t(k) * size_t(w_.n_joint));
        out.push_back(logits_.data() + size_t(k) * size_t(w_.n_vocab));
    }
    joint(w_, int(enc.size()), enc.data(), pred.data(), scratch_, out.data(), team);

    // Candidates: each hypothesis's K best labels.
    std::fill(candidates_.begin(), candidates_.end(), inactive);
    labels_.assign(size_t(K) * size_t(K), -1);
    std::vector<float> confidence(size_t(K) * size_t(K), 0.0f);
    std::vector<int32_t> best;
    for (int k = 0; k < K; ++k) {
        const slot & s = slots_[size_t(k)];
        float * cand = candidates_.data() + size_t(k) * size_t(K);
        int32_t * label = labels_.data() + size_t(k) * size_t(K);
        if (s.score == inactive) continue;
        if (s.time >= n_frames_) { // past the end: kept as it is
            cand[0] = s.score;
            continue;
        }
        scores(k, logits_.data() + size_t(k) * size_t(w_.n_vocab), log_probs_, raw_);
        if (s.lasts >= w_.max_symbols) { // max_symbols labels on this frame: the blank only
            cand[0] = s.score + log_probs_[size_t(w_.blank)];
            std::fill(label, label + K, w_.blank);
            continue;
        }
        top_k(log_probs_.data(), w_.n_vocab, K, best);
        for (int j = 0; j < K; ++j) {
            cand[j] = s.score + log_probs_[size_t(best[size_t(j)])];
            label[j] = best[size_t(j)];
            confidence[size_t(k) * size_t(K) + size_t(j)] = std::exp(raw_[size_t(best[size_t(j)])]);
        }
    }

    // The K best candidates become the next hypotheses.
    top_k(candidates_.data(), K * K, K, best);
    next_.resize(size_t(K));
    for (int i = 0; i < K; ++i) {
        const int32_t pick = best[size_t(i)], label = labels_[size_t(pick)];
        const slot & from = slots_[size_t(pick / K)];
        slot & n = next_[size_t(i)];
        n = from;
        n.score = candidates_[size_t(pick)];
        const bool blank = label == w_.blank, emits = label >= 0 && !blank;
        n.time = from.time + (blank ? 1 : 0);
        n.lasts = blank ? 0 : from.lasts + (emits ? 1 : 0);
        if (emits) {
            n.n_labels = from.n_labels + 1;
            n.hash = from.hash * hash_multiplier + 1u + uint64_t(int64_t(label));
            n.last_label = label;
            const int32_t depth = from.node < 0 ? 1 : nodes_[size_t(from.node)].depth + 1;
            nodes_.push_back({label, from.time, from.node, depth, confidence[size_t(pick)]});
            n.node = int32_t(nodes_.size()) - 1;
            if (boosting_ != nullptr) n.boosting_state = boosting_->next(from.boosting_state, label);
        }
    }

    // Hypotheses of the same labels merge: the likeliest stays, with their probabilities summed.
    if (K > 1) {
        std::vector<float> merged(static_cast<size_t>(K));
        std::vector<bool> keep(static_cast<size_t>(K));
        for (int i = 0; i < K; ++i) {
            const slot & a = next_[size_t(i)];
            std::vector<float> & row = row_;
            row.resize(size_t(K));
            int first_max = 0;
            for (int j = 0; j < K; ++j) {
                const slot & b = next_[size_t(j)];
                const bool same = a.hash == b.hash && a.last_label == b.last_label && a.n_labels == b.n_labels;
                row[size_t(j)] = same ? b.score : inactive;
                if (row[size_t(j)] > row[size_t(first_max)]) first_max = j;
            }
            const float top = row[size_t(first_max)];
            const float shift = std::isinf(top) ? 0.0f : top; // as torch.logsumexp
            float sum = 0.0f;
            for (int j = 0; j < K; ++j) sum += std::exp(row[size_t(j)] - shift);
            merged[size_t(i)] = std::log(sum) + shift;
            keep[size_t(i)] = first_max == i;
        }
        for (int i = 0; i < K; ++i) next_[size_t(i)].score = keep[size_t(i)] ? merged[size_t(i)] : inactive;
    }

    // The prediction network of every hypothesis that took a label, all at once.
    const size_t state = size_t(w_.n_layers) * size_t(w_.n_hidden), joint_dim = size_t(w_.n_joint);
    std::vector<int32_t> labels;
    std::vector<const float *> h0, c0;
    std::vector<float *> h1, c1, p1;
    for (int i = 0; i < K; ++i) {
        const int32_t pick = best[size_t(i)], label = labels_[size_t(pick)], from = pick / K;
        float * h = h_next_.data() + size_t(i) * state;
        float * c = c_next_.data() + size_t(i) * state;
        float * p = pred_next_.data() + size_t(i) * joint_dim;
        if (next_[size_t(i)].score != inactive && label >= 0 && label != w_.blank) {
            labels.push_back(label);
            h0.push_back(h_.data() + size_t(from) * state);
            c0.push_back(c_.data() + size_t(from) * state);
            h1.push_back(h);
            c1.push_back(c);
            p1.push_back(p);
        } else {
            std::copy_n(h_.data() + size_t(from) * state, state, h);
            std::copy_n(c_.data() + size_t(from) * state, state, c);
            std::copy_n(pred_.data() + size_t(from) * joint_dim, joint_dim, p);
        }
    }
    if (!labels.empty()) {
        predict(w_, int(labels.size()), labels.data(), h0.data(), c0.data(), h1.data(), c1.data(), p1.data(), scratch_, team);
    }
    slots_.swap(next_);
    h_.swap(h_next_);
    c_.swap(c_next_);
    pred_.swap(pred_next_);
    return true;
}

void beam_decoder::commit(int32_t to, token_sequence & out) {
    std::vector<int32_t> path;
    for (int32_t n = to; n != committed_ && n >= 0; n = nodes_[size_t(n)].parent) path.push_back(n);
    for (auto n = path.rbegin(); n != path.rend(); ++n) {
        const node & x = nodes_[size_t(*n)];
        out.ids.push_back(x.label);
        out.frames.push_back(x.frame);
        out.confidences.push_back(x.confidence);
    }
    if (!path.empty()) committed_ = to;
}

void beam_decoder::decode(const float * frames, int n, int32_t first_frame, token_sequence & out, const row_team & team) {
    if (first_frame != n_frames_) fail(NEMOTRON_ERR_INTERNAL, "beam search: frame %d after %d", int(first_frame), int(n_frames_));
    const size_t joint_dim = size_t(w_.n_joint);
    enc_.resize(size_t(n_frames_ + n - enc_first_) * joint_dim);
    std::vector<const float *> in(static_cast<size_t>(n));
    std::vector<float *> projected(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) {
        in[size_t(t)] = frames + size_t(t) * size_t(w_.d_enc);
        projected[size_t(t)] = enc_.data() + size_t(n_frames_ + t - enc_first_) * joint_dim;
    }
    project_frames(w_, n, in.data(), projected.data(), team);
    n_frames_ += n;
    while (step(false, team)) {
    }
    // The labels every hypothesis holds: their deepest common node.
    auto depth = [this](int32_t x) { return x < 0 ? 0 : nodes_[size_t(x)].depth; };
    auto parent = [this](int32_t x) { return nodes_[size_t(x)].parent; };
    int32_t common = -2;
    int32_t earliest = n_frames_;
    for (const slot & s : slots_) {
        if (s.score == inactive) continue;
        earliest = std::min(earliest, s.time);
        int32_t a = s.node;
        if (common == -2) {
            common = a;
            continue;
        }
        while (depth(a) > depth(common)) a = parent(a);
        while (depth(common) > depth(a)) common = parent(common);
        while (a != common) {
            a = parent(a);
            common = parent(common);
        }
    }
    if (common >= 0 && depth(common) > depth(committed_)) commit(common, out);
    // Frames no hypothesis will read again.
    if (earliest > enc_first_) {
        enc_.erase(enc_.begin(), enc_.begin() + std::ptrdiff_t(size_t(earliest - enc_first_) * joint_dim));
        enc_first_ = earliest;
    }
}

void beam_decoder::finish(token_sequence & out, const row_team & team) {
    while (step(true, team)) {
    }
    // NeMo ranks by score / (labels + 1) and reports the scores themselves.
    std::vector<int> order;
    for (int k = 0; k < beam_; ++k) {
        if (slots_[size_t(k)].score != inactive) order.push_back(k);
    }
    auto normalized = [this](int k) { return slots_[size_t(k)].score / (float(slots_[size_t(k)].n_labels) + 1.0f); };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return normalized(a) > normalized(b); });
    nbest_.clear();
    for (int k : order) {
        hypothesis h;
        h.score = slots_[size_t(k)].score;
        std::vector<int32_t> path;
        for (int32_t n = slots_[size_t(k)].node; n >= 0; n = nodes_[size_t(n)].parent) path.push_back(n);
        for (auto n = path.rbegin(); n != path.rend(); ++n) {
            const node & x = nodes_[size_t(*n)];
            h.tokens.ids.push_back(x.label);
            h.tokens.frames.push_back(x.frame);
            h.tokens.confidences.push_back(x.confidence);
        }
        nbest_.push_back(std::move(h));
    }
    if (!order.empty()) commit(slots_[size_t(order[0])].node, out);
}

} // namespace nemotron
