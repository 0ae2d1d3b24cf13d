// A recognition stream: audio in pieces -> log-mel frames -> encoder chunks -> greedy tokens.
//
// The chunking follows NeMo's CacheAwareStreamingAudioBuffer. For right context R and
// subsampling factor S: the first chunk is 1 + S R mel frames with no pre-encode cache;
// every later chunk is S (R + 1) new frames behind S + 1 cached ones, of which the first
// two subsampled frames are dropped; each gives R + 1 encoder frames. With
// pad_and_drop_preencoded the first chunk too gets S + 1 (zero) cached frames. At the end
// of the audio NeMo runs a last, shorter chunk if it has at least S new frames (1 before
// the first chunk) and drops the rest. Offline chunking is the same grid with the
// full-utterance path's ending: the final (zero) mel frame is padding, and every remaining
// frame is encoded.
#pragma once

#include "beam_search.h"
#include "cpu_budget.h"
#include "encoder.h"
#include "encoder_cache.h"
#include "mel.h"
#include "rnnt.h"

#include <deque>
#include <memory>
#include <vector>

namespace nemotron {

enum class chunking { stream, stream_padded, offline };

// Where a stream's next chunk lies in its mel frames.
struct chunk_plan {
    int64_t start = 0, n_new = 0; // the new frames
    int cache_frames = 0;         // pre-encode cache frames before them
    int drop = 0;                 // subsampled frames to drop (those of the cache frames)
    int n_frames() const { return cache_frames + int(n_new); }
};

class stream {
public:
    // The stream's caches take a slot of `pool`, which must outlive it.
    // beam_size > 1: beam search (see beam_decoder), else greedy decoding.
    stream(const model & m, ggml_backend_dev_t device, int n_threads, cache_pool & pool, const rnnt_weights & weights,
           int att_right_context, chunking mode, bool keep_encoder_output, bool keep_trace, int beam_size);
    ~stream();
    stream(const stream &) = delete;
    stream & operator=(const stream &) = delete;

    void push(const float * samples, size_t n); // audio in, nothing computed yet
    void end();                                 // the end of the audio, nothing computed yet
    void feed(const float * samples, size_t n) { push(samples, n); run_streams({this}, nullptr); }
    void finish() { end(); run_streams({this}, nullptr); }
    void reset();
    // See greedy_decoder::set_endpoint_reset; kept across reset().
    void set_endpoint_reset(int silence_frames, int min_utterance_frames);
    // The language prompt of a multilingual model's frames (an index into its one-hot prompts);
    // kept across reset().
    void set_prompt(int32_t prompt) { prompt_ = prompt; }
    // See greedy_decoder::set_boosting; kept across reset().
    void set_boosting(std::shared_ptr<const boosting_tree> tree, float alpha);
    // Beam search's hypotheses, best first, once the stream has finished (else none).
    const std::vector<hypothesis> & nbest() const;
    // Copies the first min(n, capacity) tokens held into the arrays (any may be null) and forgets
    // them; the audio, caches and decoder state carry on. Returns how many.
    size_t take_tokens(int32_t * ids, int32_t * frames, float * confidences, size_t capacity);

    bool finished() const { return finished_; }
    int right_context() const { return right_; }
    const model & owner() const { return m_; }

    // Runs every chunk that is ready in these streams (of one model): a stream's chunk alone on its
    // own encoder (made when first needed), the chunks of equal geometry of several streams together
    // on `batch` (which only one thread may use at a time).
    static void run_streams(const std::vector<stream *> & streams, encoder * batch);

    token_sequence tokens;
    std::vector<joint_step> trace;
    std::vector<float> encoder_output; // [frames][d_model], when kept
    std::vector<int32_t> chunk_ends;   // encoder frame count after each chunk, when kept
    int32_t n_encoder_frames = 0;

private:
    // The chunk that starts at mel frame `at` (the stream's next frame or one after it), if its frames are in.
    bool chunk_at(int64_t at, chunk_plan & plan) const;
    // The chunks ready to run, up to `most`, all of the first one's geometry.
    void ready_chunks(std::vector<chunk_plan> & plans, int most) const;
    void chunk_input(const chunk_plan & plan, std::vector<float> & input) const;
    // Decodes n encoder frames of each stream (of one model) from frames[i]: greedy decoders in lockstep.
    static void decode(const std::vector<stream *> & streams, const std::vector<const float *> & frames, int n);
    // Takes a decoded chunk's n encoder frames.
    void accept_chunk(const chunk_plan & plan, const float * frames, int n);

    const model & m_;
    int32_t prompt_ = 0;
    int right_, subsampling_, pre_cache_, drop_;
    chunking mode_;
    bool keep_encoder_output_, keep_trace_;
    mel_frontend frontend_;
    ggml_backend_dev_t device_;
    int n_threads_;
    thread_budget decode_threads_; // of the decoding that follows each chunk (the encoder has its own)
    // On a backend of its own, so that streams may run on different threads; streams that only ever
    // run in batches never make one.
    std::unique_ptr<encoder> encoder_;
    encoder_cache cache_;
    greedy_decoder decoder_;
    std::unique_ptr<beam_decoder> beam_; // instead of decoder_ where there is one

    std::deque<float> mel_;     // frames [mel_offset_, ...) of the stream
    int64_t mel_offset_ = 0;
    int64_t n_mel_ = 0;         // mel frames produced so far
    int64_t next_ = 0;          // first mel frame of the next chunk
    bool ending_ = false;       // end() was called: the remaining frames make the last chunks
    bool finished_ = false;     // ... and they have run
    std::vector<float> frames_, input_, out_;
};

} // namespace nemotron
