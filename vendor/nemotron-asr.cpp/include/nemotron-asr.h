/*
 * nemotron-asr: a ggml engine for cache-aware FastConformer RNN-T speech recognizers
 * (NVIDIA nemotron-speech-streaming and its family), reading GGUF files of either
 * published layout.
 *
 * Usage (tools/nemotron-transcribe.c is a whole program):
 *
 *     struct nemotron_context * ctx;
 *     if (nemotron_context_init_from_file("model.gguf", NULL, &ctx) != NEMOTRON_OK) {
 *         fprintf(stderr, "%s\n", nemotron_last_error());
 *         return 1;
 *     }
 *     struct nemotron_stream * stream;
 *     nemotron_stream_init(ctx, NULL, &stream);            // NULL: the default parameters
 *     nemotron_stream_feed(stream, samples, n_samples);     // 16 kHz mono float, any piece size
 *     nemotron_stream_finish(stream);                        // the end of the audio
 *     char text[4096];
 *     nemotron_context_detokenize(ctx, nemotron_stream_tokens(stream), nemotron_stream_n_tokens(stream),
 *                                 text, sizeof text);
 *     printf("%s\n", text);
 *     nemotron_stream_free(stream);
 *     nemotron_context_free(ctx);
 *
 * Conventions (after whisper.h):
 *   - names are nemotron_<object>_<verb>, for the objects context (a loaded model), stream,
 *     hparams, device, backend and log; the library's own facts are nemotron_<noun>
 *     (nemotron_version, nemotron_last_error);
 *   - opaque handles, created by nemotron_<object>_init* and released by nemotron_<object>_free;
 *   - every fallible call returns an nemotron_status; on failure a readable message is
 *     available from nemotron_last_error() on the same thread;
 *   - parameter and info structs start with `struct_size` and only ever grow at the end,
 *     so a caller built against an older header keeps working;
 *   - nothing throws, aborts or exits across this boundary on bad input.
 *
 * Lifetimes: a stream keeps its context alive. nemotron_context_free may come before the context's
 * streams are freed: the model's memory is released with the last of them, and until then
 * every call that would compute on such a stream fails with NEMOTRON_ERR_INVALID_ARG (its
 * results so far stay readable). Free each handle exactly once.
 *
 * Threads: one context may serve streams on many threads at once; one stream is used by
 * one thread at a time.
 */
#ifndef NEMOTRON_ASR_H
#define NEMOTRON_ASR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(NEMOTRON_ASR_BUILD)
#    define NEMOTRON_API __declspec(dllexport)
#  else
#    define NEMOTRON_API __declspec(dllimport)
#  endif
#else
#  define NEMOTRON_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define NEMOTRON_MAX_RIGHT_CONTEXTS 8

typedef enum nemotron_status {
    NEMOTRON_OK                = 0,
    NEMOTRON_ERR_INVALID_ARG   = 1, /* a bad argument from the caller                        */
    NEMOTRON_ERR_NOT_FOUND     = 2, /* the model file does not exist                          */
    NEMOTRON_ERR_IO            = 3, /* the file exists but cannot be opened, read or mapped   */
    NEMOTRON_ERR_INVALID_MODEL = 4, /* not a valid model file: corrupt, truncated, inconsistent */
    NEMOTRON_ERR_UNSUPPORTED   = 5, /* a valid file of a model or variant this engine cannot run */
    NEMOTRON_ERR_BACKEND       = 6, /* no such device, or the backend failed                  */
    NEMOTRON_ERR_NO_MEMORY     = 7,
    NEMOTRON_ERR_INTERNAL      = 8,
} nemotron_status;

typedef enum nemotron_backend {
    NEMOTRON_BACKEND_AUTO = 0, /* the best GPU if one was compiled in and found, else the CPU */
    NEMOTRON_BACKEND_CPU  = 1,
    NEMOTRON_BACKEND_GPU  = 2, /* the GPU numbered gpu_device                              */
    NEMOTRON_BACKEND_RPC  = 3, /* device gpu_device of the ggml RPC server at rpc_endpoint    */
} nemotron_backend;

typedef enum nemotron_layout {
    NEMOTRON_LAYOUT_NEMO = 0, /* general.architecture "nemo": the nemotron-asr.cpp port's files */
    NEMOTRON_LAYOUT_ASR  = 1, /* general.architecture "asr": NVIDIA's NeMo-Speech.cpp files    */
} nemotron_layout;

typedef enum nemotron_normalize {
    NEMOTRON_NORMALIZE_NONE        = 0, /* NeMo "NA" */
    NEMOTRON_NORMALIZE_PER_FEATURE = 1,
    NEMOTRON_NORMALIZE_ALL         = 2,
} nemotron_normalize;

struct nemotron_context; /* a loaded model */

/* ---- library and system ------------------------------------------------------------ */

NEMOTRON_API const char * nemotron_version(void);
NEMOTRON_API const char * nemotron_ggml_version(void);

/* The message of the last failed call on this thread ("" if none). */
NEMOTRON_API const char * nemotron_last_error(void);

/* ggml backends compiled in ("CPU", "CUDA", "Metal", ...). */
NEMOTRON_API int          nemotron_backend_count(void);
NEMOTRON_API const char * nemotron_backend_name(int index);

typedef enum nemotron_device_type {
    NEMOTRON_DEVICE_CPU   = 0,
    NEMOTRON_DEVICE_GPU   = 1,
    NEMOTRON_DEVICE_IGPU  = 2,
    NEMOTRON_DEVICE_ACCEL = 3,
} nemotron_device_type;

struct nemotron_device_info {
    size_t               struct_size;
    const char *         name;        /* "CPU", "CUDA0", ... (valid for the life of the process) */
    const char *         description;
    nemotron_device_type type;
    size_t               memory_free;
    size_t               memory_total;
};

/* Devices found at run time, in ggml's registry order. */
NEMOTRON_API int             nemotron_device_count(void);
NEMOTRON_API nemotron_status nemotron_device_get_info(int index, struct nemotron_device_info * info);

/* CPU features the ggml CPU backend was built with, "AVX2 = 1 | FMA = 1 | ...". */
NEMOTRON_API const char * nemotron_cpu_features(void);

/* One line saying what was built and what was found (versions, backends, devices, CPU). */
NEMOTRON_API const char * nemotron_print_system_info(void);

/* ---- logging ------------------------------------------------------------------------ */

typedef enum nemotron_log_level {
    NEMOTRON_LOG_DEBUG = 1,
    NEMOTRON_LOG_INFO  = 2,
    NEMOTRON_LOG_WARN  = 3,
    NEMOTRON_LOG_ERROR = 4,
} nemotron_log_level;

/* Receives one line at a time, without its newline. */
typedef void (*nemotron_log_callback)(nemotron_log_level level, const char * text, void * user_data);

/* Where the engine's messages go, and ggml's messages made during an engine call on the same
 * thread (its matrix repacking, backend errors). NULL restores the default: warnings and errors
 * to stderr, the rest dropped. ggml's own process-wide logger is left to its other users: the
 * engine's messages never reach it, and their messages never reach this callback. The callback
 * may be called from any thread that calls the engine, and must not call the engine. */
NEMOTRON_API void nemotron_log_set(nemotron_log_callback callback, void * user_data);

/* ---- loading ------------------------------------------------------------------------ */

struct nemotron_context_params {
    size_t           struct_size;
    nemotron_backend backend;
    int              gpu_device; /* with NEMOTRON_BACKEND_GPU: index among GPU devices */
    int              n_threads;  /* the most threads a chunk computes with; 0: the physical cores
                                    this process may use (its CPU affinity and its cgroup's CPU
                                    quota both count). Fewer while other processes keep CPUs
                                    busy: ggml's threads wait for each other at every operation */
    bool             use_mmap;   /* map the file and use the weights in place where the device allows */
    const char *     rpc_endpoint; /* with NEMOTRON_BACKEND_RPC: "host:port" of a server started by
                                      nemotron_rpc_serve (or ggml's rpc-server); copied at load */
};

NEMOTRON_API struct nemotron_context_params nemotron_context_default_params(void);

/* Loads a GGUF model of either layout. On success *out holds a context to free with
 * nemotron_context_free; on failure *out is NULL and nemotron_last_error() says why: a valid file of a
 * model the engine cannot run gives NEMOTRON_ERR_UNSUPPORTED naming the feature (the checks of
 * nemotron_hparams_check, and a few that only the file can show). */
NEMOTRON_API nemotron_status nemotron_context_init_from_file(
        const char * path,
        const struct nemotron_context_params * params,
        struct nemotron_context ** out);

/* Releases the caller's handle; the memory goes now, or with the context's last stream. */
NEMOTRON_API void nemotron_context_free(struct nemotron_context * ctx);

/* Serves a device of this machine (chosen as a load chooses it: backend, gpu_device; n_threads 0:
 * the usable cores) to other processes and machines through ggml's RPC protocol on endpoint
 * "host:port", for them to load with NEMOTRON_BACKEND_RPC. It serves until the process ends, one
 * client at a time; the protocol has no authentication, so listen on a trusted network only. Returns
 * only on failure: NEMOTRON_ERR_BACKEND when this build has no RPC backend or cannot listen there. */
NEMOTRON_API nemotron_status nemotron_rpc_serve(const char * endpoint, nemotron_backend backend, int gpu_device,
                                                int n_threads);

/* ---- model information -------------------------------------------------------------- */

struct nemotron_hparams {
    size_t struct_size;

    /* encoder */
    int32_t n_mels;
    int32_t d_model;
    int32_t n_heads;
    int32_t d_head;
    int32_t d_ff;
    int32_t n_layers;
    int32_t conv_kernel_size;
    int32_t subsampling_factor;
    int32_t subsampling_conv_channels;
    int32_t pos_emb_max_len; /* NeMo's position table size; the engine computes positions as needed */
    bool    xscaling;                                        /* the subsampled input scaled by sqrt(d_model) */
    bool    use_bias;
    int32_t att_left_context;
    int32_t n_att_right_contexts;                           /* the first is the default */
    int32_t att_right_contexts[NEMOTRON_MAX_RIGHT_CONTEXTS];

    /* prediction network and joint */
    int32_t vocab_size; /* including the blank */
    int32_t blank_id;
    int32_t pred_embed_dim;
    int32_t pred_hidden;
    int32_t pred_num_layers;
    int32_t joint_dim;
    int32_t max_symbols_per_step;
    int32_t num_prompts; /* language prompts of multilingual models (one-hot inputs of the prompt kernel); 0: none */

    /* log-mel frontend */
    int32_t            sample_rate;
    int32_t            n_fft;
    int32_t            win_length;
    int32_t            hop_length;
    float              preemph;
    float              log_zero_guard;
    float              mag_power;
    float              dither; /* a training-time augmentation: NeMo applies none at inference, nor does the engine */
    nemotron_normalize normalize;
};

NEMOTRON_API nemotron_status nemotron_context_get_hparams(const struct nemotron_context * ctx, struct nemotron_hparams * out);

/* Whether the engine runs a model with these hyperparameters: NEMOTRON_OK, or
 * NEMOTRON_ERR_UNSUPPORTED (a feature the engine does not run, such as language prompts) or
 * NEMOTRON_ERR_INVALID_MODEL (values that contradict each other), with a message naming every
 * problem. The loader refuses files by the same table; converters ask before they write one. */
NEMOTRON_API nemotron_status nemotron_hparams_check(const struct nemotron_hparams * hp);

NEMOTRON_API nemotron_layout nemotron_context_layout(const struct nemotron_context * ctx);
NEMOTRON_API const char *    nemotron_context_name(const struct nemotron_context * ctx);     /* general.name, "" if absent */
NEMOTRON_API const char *    nemotron_context_weight_type(const struct nemotron_context * ctx); /* of the encoder layer matrices, "q8_0" */
NEMOTRON_API uint64_t        nemotron_context_file_size(const struct nemotron_context * ctx);
NEMOTRON_API uint64_t        nemotron_context_weight_bytes(const struct nemotron_context * ctx);
NEMOTRON_API const char *    nemotron_context_backend(const struct nemotron_context * ctx);  /* device name, "CPU", "CUDA0" */
NEMOTRON_API int             nemotron_context_n_threads(const struct nemotron_context * ctx);
NEMOTRON_API bool            nemotron_context_uses_mmap(const struct nemotron_context * ctx); /* weights used in place from the mapped file */
NEMOTRON_API uint64_t        nemotron_context_repacked_bytes(const struct nemotron_context * ctx); /* of them, copied into the CPU
                                                                                                   backend's faster layouts */

/* Vocabulary pieces in id order, the blank excluded (ids 0 .. n_pieces-1). The bytes are
 * UTF-8, may be of any length and are owned by the context. */
NEMOTRON_API int          nemotron_context_n_pieces(const struct nemotron_context * ctx);

/* Multilingual models' languages, from their prompt dictionaries, in the file's order: the code
 * (e.g. "de-DE"; owned by the context) and, in *prompt when not NULL, its one-hot prompt index.
 * 0 languages and NULL for models without language prompts. */
NEMOTRON_API int          nemotron_context_n_languages(const struct nemotron_context * ctx);
NEMOTRON_API const char * nemotron_context_language(const struct nemotron_context * ctx, int index, int32_t * prompt);
/* The language of streams that name none: "auto" where the dictionary has it (the model detects
 * the language), else "en-US" where it has that, else its first entry; NULL without prompts. */
NEMOTRON_API const char * nemotron_context_default_language(const struct nemotron_context * ctx);
NEMOTRON_API const char * nemotron_context_piece(const struct nemotron_context * ctx, int id, size_t * len);

/* The text of token ids as NeMo's SentencePiece tokenizer decodes it: a word-start piece's "\u2581"
 * becomes a space, byte pieces ("<0x41>") their byte, <unk> " \u2047 ", the text's leading space is
 * dropped and ids outside the vocabulary (the blank) are skipped. Writes at most `capacity` bytes,
 * NUL included, to `out` (which may be NULL when capacity is 0) and returns the text's length in
 * bytes without the NUL: a larger return than capacity - 1 means the text was cut. The bytes are
 * UTF-8 unless byte pieces split a character. */
NEMOTRON_API size_t nemotron_context_detokenize(const struct nemotron_context * ctx, const int32_t * ids, int n_ids, char * out,
                                        size_t capacity);

/* The log-mel frontend's tables as the engine uses them, from the file or, where the file
 * has none, rebuilt from the preprocessor settings: the window [win_length] and the mel
 * filterbank, row-major [n_mels][n_fft/2 + 1]. Owned by the context. */
NEMOTRON_API const float * nemotron_context_window(const struct nemotron_context * ctx, size_t * n);
NEMOTRON_API const float * nemotron_context_mel_filterbank(const struct nemotron_context * ctx, size_t * n);

/* ---- log-mel features ------------------------------------------------------------------ */

/* The log-mel features of a whole signal (16-bit range scaled to [-1, 1), at the model's
 * sample rate), as NeMo's preprocessor computes them: 1 + n_samples / hop frames, the last
 * one zero (NeMo masks it). Writes row-major [n_frames][n_mels] to `out`, which holds
 * `capacity` floats; *n_frames receives the frame count. With out == NULL only the count is
 * returned. */
NEMOTRON_API nemotron_status nemotron_context_compute_mel(const struct nemotron_context * ctx, const float * samples,
                                                  size_t n_samples, float * out, size_t capacity, int64_t * n_frames);

/* Weights as the engine holds them (after mapping both layouts to one form). */
struct nemotron_tensor_info {
    size_t       struct_size;
    const char * name;       /* the NeMo state-dict name */
    const char * group;      /* "subsampling", "attention", "feed_forward", "convolution", "norm", "predictor", "joint", ... */
    const char * type;       /* ggml type name: "f32", "q8_0", ... */
    int32_t      n_dims;
    int64_t      ne[4];
    uint64_t     n_bytes;
};

NEMOTRON_API int             nemotron_context_n_tensors(const struct nemotron_context * ctx);
NEMOTRON_API nemotron_status nemotron_context_get_tensor_info(const struct nemotron_context * ctx, int index, struct nemotron_tensor_info * out);

/* Copies tensor `index`'s values, dequantized to float32, in ggml order (ne[0] varies
 * fastest); `capacity` is the size of `out` in floats and must hold every element. */
NEMOTRON_API nemotron_status nemotron_context_get_tensor_data(const struct nemotron_context * ctx, int index, float * out, size_t capacity);

struct nemotron_tensor_group {
    size_t       struct_size;
    const char * name;
    const char * type;      /* the type most of the group's parameters are stored in */
    int32_t      n_tensors;
    uint64_t     n_params;
    uint64_t     n_bytes;
};

NEMOTRON_API int             nemotron_context_n_tensor_groups(const struct nemotron_context * ctx);
NEMOTRON_API nemotron_status nemotron_context_get_tensor_group(const struct nemotron_context * ctx, int index, struct nemotron_tensor_group * out);

/* ---- recognition ----------------------------------------------------------------------- */

typedef enum nemotron_chunking {
    NEMOTRON_CHUNKING_STREAM        = 0, /* NeMo's cache-aware streaming (pad_and_drop_preencoded=False)     */
    NEMOTRON_CHUNKING_STREAM_PADDED = 1, /* NeMo's pad_and_drop_preencoded=True, as the C++ ports stream      */
    NEMOTRON_CHUNKING_OFFLINE       = 2, /* NeMo's full-utterance path (transcribe()), computed chunk by chunk */
} nemotron_chunking;

struct nemotron_stream_params {
    size_t            struct_size;
    int               att_right_context;   /* -1: the model's default (its first trained right context)  */
    nemotron_chunking chunking;
    bool              keep_encoder_output; /* keep every encoder frame, for inspection                   */
    bool              keep_trace;          /* keep every joint step (frame, argmax, top-1 - top-2 margin) */
    /* The endpoint reset (0: never, NeMo's decoding, which carries the prediction network's state
       through the whole stream, across endpoints too). Once this many encoder frames pass with no
       token after an utterance (the tokens since the last reset) that spans at least
       endpoint_reset_min_utterance_frames frames, the prediction network starts over as at the
       start of the stream, so that each utterance is decoded on its own. */
    int32_t           endpoint_reset_silence_frames;
    int32_t           endpoint_reset_min_utterance_frames;
    /* Multilingual models: the language of the audio, a code of the model's prompt dictionary
       (nemotron_context_language), e.g. "de-DE"; NULL: the model's default language
       (nemotron_context_default_language). Models without language prompts take only NULL. */
    const char *      language;
    /* Beam search (NeMo's malsd_batch) with this many hypotheses; 0 or 1: greedy decoding. At most the
       vocabulary size. The tokens every hypothesis shares are handed out as they come, the best
       hypothesis's rest at the end; nemotron_stream_hypothesis then gives the N-best list. Not with
       the endpoint reset, nor keep_trace (the trace stays empty). */
    int32_t           beam_size;
};

struct nemotron_joint_step {
    int32_t frame;
    int32_t token;
    float   margin; /* top-1 minus top-2 logit                                          */
    float   confidence; /* softmax probability of the argmax over the vocabulary and the blank */
};

struct nemotron_stream; /* one utterance or live feed; it owns its caches and decoder state */

NEMOTRON_API struct nemotron_stream_params nemotron_stream_default_params(void);

/* A stream on a loaded model. Streams are independent: each may run on its own thread. */
NEMOTRON_API nemotron_status nemotron_stream_init(struct nemotron_context * ctx, const struct nemotron_stream_params * params,
                                                  struct nemotron_stream ** out);

/* Audio at the model's sample rate, mono, in [-1, 1), in pieces of any size. Runs every
 * chunk that is complete. */
NEMOTRON_API nemotron_status nemotron_stream_feed(struct nemotron_stream * stream, const float * samples, size_t n_samples);

/* Batched decoding: push audio to many streams, then run them together. Chunks of equal
 * geometry (same latency, past their first chunk) are computed in one graph, reading each
 * weight once for all of them; the results are those of running each stream alone. */
NEMOTRON_API nemotron_status nemotron_stream_push(struct nemotron_stream * stream, const float * samples, size_t n_samples);
NEMOTRON_API nemotron_status nemotron_stream_end(struct nemotron_stream * stream); /* the end of the audio */

/* Runs every ready chunk of these streams (all of ctx, each given once), on the first stream's
 * backend and threads. The streams must not be used on other threads meanwhile. */
NEMOTRON_API nemotron_status nemotron_context_run_streams(struct nemotron_context * ctx, struct nemotron_stream * const * streams,
                                                  int n_streams);

/* Ends the audio: runs what remains as NeMo does at the end of a stream. */
NEMOTRON_API nemotron_status nemotron_stream_finish(struct nemotron_stream * stream);

/* Starts over: caches, decoder state and results cleared. */
NEMOTRON_API nemotron_status nemotron_stream_reset(struct nemotron_stream * stream);

/* Hands out tokens once: copies the first `capacity` tokens the stream holds (all of them when
 * capacity >= nemotron_stream_n_tokens) into the arrays given (ids, their encoder frames and
 * confidences; any may be NULL) and forgets them, so a live feed that takes its tokens as they
 * come holds only what is new. The audio, caches and decoder state carry on, and encoder frames
 * keep their numbers from the start of the stream. Returns how many it took. */
NEMOTRON_API int nemotron_stream_take_tokens(struct nemotron_stream * stream, int32_t * ids, int32_t * frames, float * confidences,
                                             int capacity);

/* ---- phrase boosting ------------------------------------------------------------------ */

/* NeMo's boosting tree (BoostingTreeModelConfig and boosting_tree_alpha of its greedy_batch decoding):
 * whether a step emits a label stays the joint's plain choice; which label is the argmax of the
 * labels' log-probabilities plus alpha x the tree's score, which rewards each token that continues
 * a phrase and takes the reward back when a partial match breaks off. */
struct nemotron_boosting_params {
    size_t struct_size;
    float  alpha;         /* weight of the tree's scores (NeMo's boosting_tree_alpha); > 0             */
    double context_score; /* a phrase's first token's score, unless the phrase has its own (1.0)        */
    double depth_scaling; /* later token i (from 0) of a phrase: context_score x this + ln(i + 1) (2.0) */
    double unk_score;     /* tokens that start no phrase (0.0)                                          */
};

NEMOTRON_API struct nemotron_boosting_params nemotron_boosting_default_params(void);

/* Sets the phrases a stream boosts, replacing any it had; n_phrases 0 turns boosting off. Phrase i is
 * n_tokens[i] token ids (the model's, the blank excluded) taken in turn from `tokens`, tokenized as
 * NeMo's tokenizer encodes the text; scores[i] is its own context score (scores NULL, or 0: the
 * params' context_score). params NULL: the defaults. Takes effect from the stream's next decoding step,
 * with the phrases' progress starting over; kept across nemotron_stream_reset. */
NEMOTRON_API nemotron_status nemotron_stream_set_phrases(struct nemotron_stream * stream, const int32_t * tokens,
                                                         const int32_t * n_tokens, const double * scores, int n_phrases,
                                                         const struct nemotron_boosting_params * params);

/* Beam search's N-best list once the audio has ended (nemotron_stream_finish, or nemotron_stream_end and
 * a run): how many hypotheses (0 before the end and for greedy streams), and hypothesis `index` (0:
 * the best, ranked as NeMo ranks them, by score / (tokens + 1)): its token ids, *n_tokens of them, and
 * in *score its total log-probability (with boosting, the boosted one). NULL for an index out of
 * range. Valid until the next feed, finish or reset. */
NEMOTRON_API int             nemotron_stream_n_hypotheses(const struct nemotron_stream * stream);
NEMOTRON_API const int32_t * nemotron_stream_hypothesis(const struct nemotron_stream * stream, int index, int * n_tokens,
                                                        float * score);

NEMOTRON_API void nemotron_stream_free(struct nemotron_stream * stream);

NEMOTRON_API int nemotron_stream_att_right_context(const struct nemotron_stream * stream);

/* Results so far: the tokens the stream holds (emitted and not taken), the encoder frames since
 * it began. Pointers stay valid until the next feed, finish, reset or take. */
NEMOTRON_API int             nemotron_stream_n_tokens(const struct nemotron_stream * stream);
NEMOTRON_API const int32_t * nemotron_stream_tokens(const struct nemotron_stream * stream);
NEMOTRON_API const int32_t * nemotron_stream_token_frames(const struct nemotron_stream * stream); /* encoder frame of each token */
NEMOTRON_API const float *   nemotron_stream_token_confidences(const struct nemotron_stream * stream);  /* each token's softmax probability
                                                                                                   at the joint step that emitted it */
NEMOTRON_API int             nemotron_stream_n_frames(const struct nemotron_stream * stream);     /* encoder frames so far      */
NEMOTRON_API const float *   nemotron_stream_encoder_output(const struct nemotron_stream * stream, size_t * n_floats); /* [frames][d_model] */
NEMOTRON_API const int32_t * nemotron_stream_chunk_ends(const struct nemotron_stream * stream, int * n_chunks);
NEMOTRON_API const struct nemotron_joint_step * nemotron_stream_trace(const struct nemotron_stream * stream, int * n_steps);

#ifdef __cplusplus
}
#endif

#endif /* NEMOTRON_ASR_H */
