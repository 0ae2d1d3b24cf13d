/* nemotron-transcribe: prints the text of a WAV file, through the C API alone.
 *
 * The WAV file holds 16-bit PCM or 32-bit float samples at the model's sample rate (16 kHz for
 * this model family), in any number of channels (they are averaged). The recording is recognized
 * as NeMo's transcribe() does: the full-utterance encoder under the chunked attention mask of the
 * chosen latency, computed chunk by chunk. */
#include "nemotron-asr.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char * argv0) {
    fprintf(stderr, "usage: %s [--latency MS] [--threads N] MODEL.gguf AUDIO.wav\n", argv0);
    return 2;
}

static uint32_t u32(const unsigned char * p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24; }
static uint16_t u16(const unsigned char * p) { return (uint16_t) (p[0] | p[1] << 8); }

/* Reads a WAV file into mono float samples; on failure returns NULL with a message in `why`. */
static float * read_wav(const char * path, int * rate, size_t * n_samples, char * why, size_t why_size) {
    FILE * f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(why, why_size, "cannot open %s", path);
        return NULL;
    }
    unsigned char * data = NULL;
    size_t size = 0, capacity = 0, got;
    do {
        if (size == capacity) {
            capacity = capacity ? 2 * capacity : 1 << 16;
            unsigned char * bigger = realloc(data, capacity);
            if (bigger == NULL) {
                free(data);
                fclose(f);
                snprintf(why, why_size, "out of memory");
                return NULL;
            }
            data = bigger;
        }
        got = fread(data + size, 1, capacity - size, f);
        size += got;
    } while (got > 0);
    fclose(f);

    float * out = NULL;
    int format = 0, channels = 0, bits = 0;
    if (size < 12 || memcmp(data, "RIFF", 4) != 0 || memcmp(data + 8, "WAVE", 4) != 0) {
        snprintf(why, why_size, "%s is not a WAV file", path);
        goto done;
    }
    for (size_t pos = 12; pos + 8 <= size;) {
        const uint32_t chunk = u32(data + pos + 4);
        const unsigned char * body = data + pos + 8;
        const size_t available = size - pos - 8 < chunk ? size - pos - 8 : chunk;
        if (memcmp(data + pos, "fmt ", 4) == 0 && available >= 16) {
            format = u16(body);
            channels = u16(body + 2);
            *rate = (int) u32(body + 4);
            bits = u16(body + 14);
            if (format == 0xFFFE && available >= 26) format = u16(body + 24); /* WAVE_FORMAT_EXTENSIBLE */
        } else if (memcmp(data + pos, "data", 4) == 0) {
            const int pcm16 = format == 1 && bits == 16, float32 = format == 3 && bits == 32;
            if (!pcm16 && !float32) {
                snprintf(why, why_size, "%s: only 16-bit PCM and 32-bit float WAV files are read (format %d, %d bits)",
                         path, format, bits);
                goto done;
            }
            if (channels < 1) {
                snprintf(why, why_size, "%s: the format chunk is missing or has no channels", path);
                goto done;
            }
            const size_t frame_bytes = (size_t) channels * (size_t) (bits / 8);
            *n_samples = available / frame_bytes;
            out = malloc((*n_samples ? *n_samples : 1) * sizeof(float));
            if (out == NULL) {
                snprintf(why, why_size, "out of memory");
                goto done;
            }
            for (size_t i = 0; i < *n_samples; ++i) {
                double sum = 0;
                for (int c = 0; c < channels; ++c) {
                    const unsigned char * p = body + i * frame_bytes + (size_t) c * (size_t) (bits / 8);
                    if (pcm16) {
                        sum += (int16_t) u16(p) / 32768.0;
                    } else {
                        float v;
                        memcpy(&v, p, sizeof v);
                        sum += v;
                    }
                }
                out[i] = (float) (sum / channels);
            }
            goto done;
        }
        pos += 8 + (size_t) chunk + (chunk & 1);
    }
    snprintf(why, why_size, "%s has no data chunk", path);
done:
    free(data);
    return out;
}

int main(int argc, char ** argv) {
    struct nemotron_context_params params = nemotron_context_default_params();
    const char * model_path = NULL, * audio_path = NULL;
    int latency_ms = 0;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--latency") == 0 && i + 1 < argc) {
            latency_ms = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            params.n_threads = atoi(argv[++i]);
        } else if (argv[i][0] == '-' || audio_path != NULL) {
            return usage(argv[0]);
        } else if (model_path == NULL) {
            model_path = argv[i];
        } else {
            audio_path = argv[i];
        }
    }
    if (audio_path == NULL) return usage(argv[0]);

    struct nemotron_context * ctx = NULL;
    if (nemotron_context_init_from_file(model_path, &params, &ctx) != NEMOTRON_OK) {
        fprintf(stderr, "%s: %s\n", model_path, nemotron_last_error());
        return 1;
    }
    struct nemotron_hparams hp;
    hp.struct_size = sizeof hp;
    nemotron_context_get_hparams(ctx, &hp);

    char why[512];
    int rate = 0;
    size_t n_samples = 0;
    float * samples = read_wav(audio_path, &rate, &n_samples, why, sizeof why);
    if (samples == NULL) {
        fprintf(stderr, "%s\n", why);
        nemotron_context_free(ctx);
        return 1;
    }
    if (rate != hp.sample_rate) {
        fprintf(stderr, "%s is %d Hz; the model takes %d Hz audio (resample it first, e.g. sox in.wav -r %d out.wav)\n",
                audio_path, rate, hp.sample_rate, hp.sample_rate);
        free(samples);
        nemotron_context_free(ctx);
        return 1;
    }

    struct nemotron_stream_params sp = nemotron_stream_default_params();
    sp.chunking = NEMOTRON_CHUNKING_OFFLINE;
    if (latency_ms != 0) { /* a chunk is right context + 1 encoder frames */
        const int frame_ms = 1000 * hp.subsampling_factor * hp.hop_length / hp.sample_rate;
        if (latency_ms < frame_ms || latency_ms % frame_ms != 0) {
            fprintf(stderr, "--latency must be a positive multiple of %d ms, not %d\n", frame_ms, latency_ms);
            free(samples);
            nemotron_context_free(ctx);
            return 2;
        }
        sp.att_right_context = latency_ms / frame_ms - 1;
    }
    struct nemotron_stream * stream = NULL;
    nemotron_status status = nemotron_stream_init(ctx, &sp, &stream);
    for (size_t done = 0; status == NEMOTRON_OK && done < n_samples;) { /* one second at a time, as audio arrives */
        const size_t piece = n_samples - done < (size_t) rate ? n_samples - done : (size_t) rate;
        status = nemotron_stream_feed(stream, samples + done, piece);
        done += piece;
    }
    if (status == NEMOTRON_OK) status = nemotron_stream_finish(stream);
    if (status != NEMOTRON_OK) {
        fprintf(stderr, "%s: %s\n", audio_path, nemotron_last_error());
    } else {
        const int32_t * tokens = nemotron_stream_tokens(stream);
        const int n_tokens = nemotron_stream_n_tokens(stream);
        const size_t length = nemotron_context_detokenize(ctx, tokens, n_tokens, NULL, 0);
        char * text = malloc(length + 1);
        if (text != NULL) {
            nemotron_context_detokenize(ctx, tokens, n_tokens, text, length + 1);
            printf("%s\n", text);
            free(text);
        }
    }
    nemotron_stream_free(stream);
    nemotron_context_free(ctx);
    free(samples);
    return status == NEMOTRON_OK ? 0 : 1;
}
