#include "stream.h"

#include "error.h"
#include "subsampling.h"

#include <algorithm>

namespace nemotron {

stream::stream(const model & m, ggml_backend_dev_t device, int n_threads, cache_pool & pool, const rnnt_weights & weights,
               int att_right_context, chunking mode, bool keep_encoder_output, bool keep_trace, int beam_size)
    : m_(m),
      right_(att_right_context),
      subsampling_(m.hparams.subsampling_factor),
      pre_cache_(subsampling::cache_frames(m.hparams.subsampling_factor)),
      drop_(subsampling::dropped_frames(m.hparams.subsampling_factor)),
      mode_(mode),
      keep_encoder_output_(keep_encoder_output),
      keep_trace_(keep_trace),
      frontend_(m),
      device_(device),
      n_threads_(n_threads),
      decode_threads_(n_threads),
      cache_(pool),
      decoder_(weights),
      beam_(beam_size > 1 ? new beam_decoder(weights, beam_size) : nullptr) {}

stream::~stream() = default;

void stream::set_endpoint_reset(int silence_frames, int min_utterance_frames) {
    if (beam_ != nullptr && silence_frames > 0) {
        fail(NEMOTRON_ERR_INVALID_ARG, "the endpoint reset works with greedy decoding only, not with beam search");
    }
    decoder_.set_endpoint_reset(silence_frames, min_utterance_frames);
}

void stream::set_boosting(std::shared_ptr<const boosting_tree> tree, float alpha) {
    if (beam_ != nullptr) {
        beam_->set_boosting(std::move(tree), alpha);
    } else {
        decoder_.set_boosting(std::move(tree), alpha);
    }
}

const std::vector<hypothesis> & stream::nbest() const {
    static const std::vector<hypothesis> none;
    return beam_ != nullptr ? beam_->nbest() : none;
}

void stream::reset() {
    frontend_.reset();
    cache_.reset();
    decoder_.reset();
    if (beam_ != nullptr) beam_->reset();
    tokens.clear();
    trace.clear();
    encoder_output.clear();
    chunk_ends.clear();
    n_encoder_frames = 0;
    mel_.clear();
    mel_offset_ = 0;
    n_mel_ = 0;
    next_ = 0;
    ending_ = false;
    finished_ = false;
}

size_t stream::take_tokens(int32_t * ids, int32_t * frames, float * confidences, size_t capacity) {
    const size_t n = std::min(capacity, tokens.ids.size());
    if (ids != nullptr) std::copy_n(tokens.ids.begin(), n, ids);
    if (frames != nullptr) std::copy_n(tokens.frames.begin(), n, frames);
    if (confidences != nullptr) std::copy_n(tokens.confidences.begin(), n, confidences);
    tokens.ids.erase(tokens.ids.begin(), tokens.ids.begin() + std::ptrdiff_t(n));
    tokens.frames.erase(tokens.frames.begin(), tokens.frames.begin() + std::ptrdiff_t(n));
    tokens.confidences.erase(tokens.confidences.begin(), tokens.confidences.begin() + std::ptrdiff_t(n));
    return n;
}

void stream::push(const float * samples, size_t n) {
    if (ending_) fail(NEMOTRON_ERR_INVALID_ARG, "the stream has been finished; reset it to start another");
    frames_.clear();
    frontend_.push(samples, n, frames_);
    mel_.insert(mel_.end(), frames_.begin(), frames_.end());
    n_mel_ += int64_t(frames_.size()) / m_.hparams.n_mels;
}

void stream::end() {
    if (ending_) return;
    frames_.clear();
    frontend_.finish(frames_);
    // The full-utterance path treats NeMo's final (zero) frame as padding; streaming encodes it.
    if (mode_ == chunking::offline) frames_.resize(frames_.size() - size_t(m_.hparams.n_mels));
    mel_.insert(mel_.end(), frames_.begin(), frames_.end());
    n_mel_ += int64_t(frames_.size()) / m_.hparams.n_mels;
    ending_ = true;
}

bool stream::chunk_at(int64_t at, chunk_plan & plan) const {
    const int64_t S = subsampling_, R = right_;
    const bool first = at == 0;
    const bool padded_first = first && mode_ == chunking::stream_padded;
    const int64_t chunk = first && !padded_first ? 1 + S * R : S * (R + 1);
    const int64_t available = n_mel_ - at;
    plan.start = at;
    plan.n_new = chunk;
    if (available < chunk) {
        // NeMo's streaming buffer needs enough new frames for one subsampled frame; after a
        // shorter last chunk nothing is left.
        const int64_t least = mode_ == chunking::offline || first ? 1 : S;
        if (!ending_ || available < least) return false;
        plan.n_new = available;
    }
    plan.cache_frames = first && !padded_first ? 0 : pre_cache_;
    plan.drop = first && !padded_first ? 0 : drop_;
    if (mode_ == chunking::offline && at > 0 && at < pre_cache_) {
        // The full-utterance path never sees zero frames before the signal: subsample
        // from its start and drop the frames already encoded.
        plan.cache_frames = int(at);
        plan.drop = subsampling::output_length(subsampling_, int(at));
    }
    return true;
}

void stream::ready_chunks(std::vector<chunk_plan> & plans, int most) const {
    plans.clear();
    chunk_plan plan;
    int64_t at = next_;
    while (int(plans.size()) < most && chunk_at(at, plan)) {
        if (!plans.empty() && (plan.n_frames() != plans[0].n_frames() || plan.drop != plans[0].drop)) break;
        plans.push_back(plan);
        at += plan.n_new;
    }
}

void stream::chunk_input(const chunk_plan & plan, std::vector<float> & input) const {
    // Appended to `input`, after the chunks before it.
    const size_t n_mels = size_t(m_.hparams.n_mels);
    const size_t offset = input.size();
    input.resize(offset + size_t(plan.n_frames()) * n_mels, 0.0f);
    // Cache frames before the start of the stream are zeros, as NeMo pads them.
    const int64_t first = plan.start - plan.cache_frames;
    for (int64_t f = std::max<int64_t>(first, 0); f < plan.start + plan.n_new; ++f) {
        const size_t src = size_t(f - mel_offset_) * n_mels;
        std::copy(mel_.begin() + std::ptrdiff_t(src), mel_.begin() + std::ptrdiff_t(src + n_mels),
                  input.begin() + std::ptrdiff_t(offset + size_t(f - first) * n_mels));
    }
}

void stream::decode(const std::vector<stream *> & streams, const std::vector<const float *> & frames, int n) {
    row_team team(streams[0]->decode_threads_.threads());
    std::vector<greedy_job> greedy;
    for (size_t i = 0; i < streams.size(); ++i) {
        stream & s = *streams[i];
        if (s.beam_ != nullptr) {
            s.beam_->decode(frames[i], n, s.n_encoder_frames, s.tokens, team);
        } else {
            greedy.push_back({&s.decoder_, frames[i], s.n_encoder_frames, &s.tokens, s.keep_trace_ ? &s.trace : nullptr});
        }
    }
    greedy_decoder::decode_together(greedy, n, team);
}

void stream::accept_chunk(const chunk_plan & plan, const float * frames, int n) {
    if (keep_encoder_output_) {
        encoder_output.insert(encoder_output.end(), frames, frames + size_t(n) * size_t(m_.hparams.d_model));
        chunk_ends.push_back(n_encoder_frames + n);
    }
    n_encoder_frames += n;
    next_ += plan.n_new;
    // Keep the frames the next chunk's pre-encode cache needs.
    const int64_t keep_from = std::max<int64_t>(0, next_ - pre_cache_);
    if (keep_from > mel_offset_) {
        mel_.erase(mel_.begin(), mel_.begin() + std::ptrdiff_t((keep_from - mel_offset_) * m_.hparams.n_mels));
        mel_offset_ = keep_from;
    }
}

void stream::run_streams(const std::vector<stream *> & streams, encoder * batch) {
    struct pending {
        stream * s;
        std::vector<chunk_plan> plans;
    };
    std::vector<pending> ready;
    while (true) {
        // Per stream and round its ready chunks of one geometry, as many as the cache lets one graph
        // hold; streams whose chunks have the same shape share a graph, as many chunks each as the
        // one with the fewest.
        ready.clear();
        for (stream * s : streams) {
            pending p{s, {}};
            const cache_pool & pool = s->cache_.pool;
            // A chunk gives at most right context + 1 frames.
            s->ready_chunks(p.plans, std::max(1, (pool.capacity - pool.left) / (s->right_ + 1)));
            if (!p.plans.empty()) ready.push_back(std::move(p));
        }
        if (ready.empty()) break;
        while (!ready.empty()) {
            const chunk_plan & shape = ready[0].plans[0];
            const int n_frames = shape.n_frames(), drop = shape.drop;
            std::vector<pending> group, rest;
            size_t n_chunks = ready[0].plans.size();
            for (pending & p : ready) {
                const bool same = p.plans[0].n_frames() == n_frames && p.plans[0].drop == drop;
                if (same) n_chunks = std::min(n_chunks, p.plans.size());
                (same ? group : rest).push_back(std::move(p));
            }
            std::vector<encoder_job> jobs;
            for (pending & p : group) {
                p.plans.resize(n_chunks);
                p.s->input_.clear();
                for (const chunk_plan & plan : p.plans) p.s->chunk_input(plan, p.s->input_);
                p.s->out_.clear();
                jobs.push_back({p.s->input_.data(), &p.s->cache_, &p.s->out_, p.s->prompt_});
            }
            if (group.size() > 1 && batch == nullptr) fail(NEMOTRON_ERR_INTERNAL, "several streams need a batch encoder");
            stream & first = *group[0].s;
            if (group.size() == 1 && first.encoder_ == nullptr) first.encoder_.reset(new encoder(first.m_, first.device_, first.n_threads_));
            encoder & runner = group.size() == 1 ? *first.encoder_ : *batch;
            const int n = runner.run_chunks(jobs, int(n_chunks), n_frames, drop);
            if (n > 0) {
                std::vector<stream *> decoded;
                std::vector<const float *> frames;
                for (const pending & p : group) {
                    decoded.push_back(p.s);
                    frames.push_back(p.s->out_.data());
                }
                decode(decoded, frames, int(n_chunks) * n);
            }
            for (const pending & p : group) {
                for (size_t c = 0; c < n_chunks; ++c) {
                    p.s->accept_chunk(p.plans[c], p.s->out_.data() + c * size_t(n) * size_t(p.s->m_.hparams.d_model), n);
                }
            }
            ready.swap(rest);
        }
    }
    for (stream * s : streams) {
        // Beam search holds its last hypotheses open until the frames end.
        if (s->ending_ && !s->finished_ && s->beam_ != nullptr) {
            row_team team(s->decode_threads_.threads());
            s->beam_->finish(s->tokens, team);
        }
        s->finished_ = s->ending_;
    }
}

} // namespace nemotron
