/* nemotron-info: prints what the engine was built with and what a model file holds. */
#include "nemotron-asr.h"

#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static const char * layout_name(nemotron_layout layout) {
    return layout == NEMOTRON_LAYOUT_NEMO ? "nemo (nemotron-asr.cpp)" : "asr (NVIDIA NeMo-Speech.cpp)";
}

static int usage(const char * argv0) {
    fprintf(stderr,
            "usage: %s [--cpu | --gpu N] [--threads N] [--no-mmap] [--vocab] MODEL.gguf\n"
            "       %s --system\n",
            argv0, argv0);
    return 2;
}

int main(int argc, char ** argv) {
    struct nemotron_context_params params = nemotron_context_default_params();
    const char * path = NULL;
    int show_vocab = 0;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--system") == 0) {
            printf("%s\n", nemotron_print_system_info());
            return 0;
        } else if (strcmp(argv[i], "--cpu") == 0) {
            params.backend = NEMOTRON_BACKEND_CPU;
        } else if (strcmp(argv[i], "--gpu") == 0 && i + 1 < argc) {
            params.backend = NEMOTRON_BACKEND_GPU;
            params.gpu_device = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            params.n_threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--no-mmap") == 0) {
            params.use_mmap = false;
        } else if (strcmp(argv[i], "--vocab") == 0) {
            show_vocab = 1;
        } else if (argv[i][0] == '-' || path != NULL) {
            return usage(argv[0]);
        } else {
            path = argv[i];
        }
    }
    if (path == NULL) {
        return usage(argv[0]);
    }

    struct nemotron_context * ctx = NULL;
    nemotron_status status = nemotron_context_init_from_file(path, &params, &ctx);
    if (status != NEMOTRON_OK) {
        fprintf(stderr, "%s: error %d: %s\n", path, (int) status, nemotron_last_error());
        return 1;
    }

    struct nemotron_hparams hp;
    hp.struct_size = sizeof(hp);
    nemotron_context_get_hparams(ctx, &hp);

    printf("file          %s (%llu bytes)\n", path, (unsigned long long) nemotron_context_file_size(ctx));
    printf("name          %s\n", nemotron_context_name(ctx));
    printf("layout        %s\n", layout_name(nemotron_context_layout(ctx)));
    printf("weight type   %s (%llu bytes of weights, %s)\n", nemotron_context_weight_type(ctx),
           (unsigned long long) nemotron_context_weight_bytes(ctx),
           nemotron_context_uses_mmap(ctx) ? "used in place from the mapped file" : "copied to the device");
    printf("backend       %s, %d threads\n", nemotron_context_backend(ctx), nemotron_context_n_threads(ctx));
    printf("encoder       %d layers, d_model %d, %d heads x %d, d_ff %d, conv kernel %d, xscaling %d, bias %d\n",
           hp.n_layers, hp.d_model, hp.n_heads, hp.d_head, hp.d_ff, hp.conv_kernel_size, hp.xscaling, hp.use_bias);
    printf("subsampling   x%d, %d channels, %d mels\n", hp.subsampling_factor, hp.subsampling_conv_channels, hp.n_mels);
    printf("attention     left context %d, right contexts", hp.att_left_context);
    for (int i = 0; i < hp.n_att_right_contexts; ++i) {
        printf(" %d", hp.att_right_contexts[i]);
    }
    printf("\n");
    printf("predictor     %d-layer LSTM, embed %d, hidden %d; joint %d; vocab %d (blank %d); max %d symbols/frame\n",
           hp.pred_num_layers, hp.pred_embed_dim, hp.pred_hidden, hp.joint_dim, hp.vocab_size, hp.blank_id,
           hp.max_symbols_per_step);
    printf("frontend      %d Hz, window %d, hop %d, n_fft %d, preemph %.3g, log guard %.6g, power %.3g, normalize %d\n",
           hp.sample_rate, hp.win_length, hp.hop_length, hp.n_fft, hp.preemph, hp.log_zero_guard, hp.mag_power,
           (int) hp.normalize);
    printf("tensor groups\n");
    for (int i = 0; i < nemotron_context_n_tensor_groups(ctx); ++i) {
        struct nemotron_tensor_group g;
        g.struct_size = sizeof(g);
        nemotron_context_get_tensor_group(ctx, i, &g);
        printf("  %-13s %-5s %4d tensors %12llu params %12llu bytes\n", g.name, g.type, g.n_tensors,
               (unsigned long long) g.n_params, (unsigned long long) g.n_bytes);
    }
    if (show_vocab) {
        for (int id = 0; id < nemotron_context_n_pieces(ctx); ++id) {
            size_t len = 0;
            const char * piece = nemotron_context_piece(ctx, id, &len);
            printf("%d\t%.*s\n", id, (int) len, piece);
        }
    }
    nemotron_context_free(ctx);
    return 0;
}
