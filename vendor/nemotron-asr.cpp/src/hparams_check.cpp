#include "hparams_check.h"

#include "error.h"

#include <string>
#include <vector>

namespace nemotron {

namespace {

bool power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

const char * normalize_name(nemotron_normalize n) {
    return n == NEMOTRON_NORMALIZE_PER_FEATURE ? "per_feature" : n == NEMOTRON_NORMALIZE_ALL ? "all_features" : "NA";
}

struct rule {
    nemotron_status status;
    // The problem with these hyperparameters, or "" when there is none.
    std::string (*problem)(const nemotron_hparams & hp);
};

const rule kRules[] = {
    // Features the engine does not run (yet).
    {NEMOTRON_ERR_UNSUPPORTED, [](const nemotron_hparams & hp) {
         // Per-utterance normalisation needs the whole signal before the first frame.
         return hp.normalize == NEMOTRON_NORMALIZE_NONE ? std::string()
             : format("feature normalisation '%s' (streaming models use none)", normalize_name(hp.normalize));
     }},
    {NEMOTRON_ERR_UNSUPPORTED, [](const nemotron_hparams & hp) {
         return hp.blank_id == hp.vocab_size - 1 ? std::string()
             : format("blank_id %d (the engine expects the blank to be the last id, %d)", hp.blank_id, hp.vocab_size - 1);
     }},
    {NEMOTRON_ERR_UNSUPPORTED, [](const nemotron_hparams & hp) {
         const int f = hp.subsampling_factor;
         return f >= 2 && f <= 64 && power_of_two(f) ? std::string()
             : format("subsampling_factor %d (a power of two from 2 to 64)", f);
     }},
    {NEMOTRON_ERR_UNSUPPORTED, [](const nemotron_hparams & hp) {
         // A chunk's keys and values go after the left context in one cache of 2 * left + 1 frames.
         for (int i = 0; i < hp.n_att_right_contexts && i < NEMOTRON_MAX_RIGHT_CONTEXTS; ++i) {
             if (hp.att_right_contexts[i] > hp.att_left_context) {
                 return format("right context %d beyond the left context %d", hp.att_right_contexts[i],
                               hp.att_left_context);
             }
         }
         return std::string();
     }},
    // Values that contradict each other.
    {NEMOTRON_ERR_INVALID_MODEL, [](const nemotron_hparams & hp) {
         return int64_t(hp.n_heads) * hp.d_head == hp.d_model ? std::string()
             : format("n_heads %d x d_head %d != d_model %d", hp.n_heads, hp.d_head, hp.d_model);
     }},
    {NEMOTRON_ERR_INVALID_MODEL, [](const nemotron_hparams & hp) {
         return hp.n_att_right_contexts >= 1 && hp.n_att_right_contexts <= NEMOTRON_MAX_RIGHT_CONTEXTS ? std::string()
             : format("%d right contexts (1 to %d are valid)", hp.n_att_right_contexts, NEMOTRON_MAX_RIGHT_CONTEXTS);
     }},
    {NEMOTRON_ERR_INVALID_MODEL, [](const nemotron_hparams & hp) {
         return hp.win_length >= 1 && hp.hop_length >= 1 && hp.win_length <= hp.n_fft && hp.hop_length <= hp.n_fft
             ? std::string()
             : format("a preprocessor window of %d samples, hop %d, n_fft %d", hp.win_length, hp.hop_length, hp.n_fft);
     }},
    {NEMOTRON_ERR_INVALID_MODEL, [](const nemotron_hparams & hp) {
         return hp.d_model >= 1 && hp.n_layers >= 1 && hp.n_mels >= 1 && hp.vocab_size >= 2 && hp.pred_num_layers >= 1
             ? std::string()
             : format("d_model %d, n_layers %d, n_mels %d, vocab_size %d, pred_num_layers %d (all must be positive, "
                      "the vocabulary at least a token and the blank)",
                      hp.d_model, hp.n_layers, hp.n_mels, hp.vocab_size, hp.pred_num_layers);
     }},
};

} // namespace

void check_hparams(const nemotron_hparams & hp) {
    std::string unsupported, invalid;
    for (const rule & r : kRules) {
        const std::string problem = r.problem(hp);
        if (problem.empty()) continue;
        std::string & list = r.status == NEMOTRON_ERR_UNSUPPORTED ? unsupported : invalid;
        list += (list.empty() ? "" : "; ") + problem;
    }
    if (!unsupported.empty()) {
        fail(NEMOTRON_ERR_UNSUPPORTED, "the model cannot run on this engine: %s%s%s", unsupported.c_str(),
             invalid.empty() ? "" : "; and its hyperparameters are inconsistent: ", invalid.c_str());
    }
    if (!invalid.empty()) fail(NEMOTRON_ERR_INVALID_MODEL, "inconsistent hyperparameters: %s", invalid.c_str());
}

} // namespace nemotron
