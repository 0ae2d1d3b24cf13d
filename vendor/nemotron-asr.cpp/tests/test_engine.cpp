// C-level tests of the engine: the cgroup CPU quota reader on stand-in /proc and /sys trees, the
// thread count under load, the hyperparameter table, detokenization, the q8_0 product, log routing beside another
// ggml user, stream lifetimes, and tokens handed out once. `test_engine [MODEL.gguf]`: without a model the tests that load one are skipped.
#include "conformer.h"
#include "cpu_budget.h"
#include "f32_matmul.h"
#include "nemotron-asr.h"
#include "q8_0_matmul.h"
#include "subsampling.h"
#include "text.h"

#include "ggml.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" void ggml_log_internal(enum ggml_log_level level, const char * format, ...); // exported by ggml-base

namespace fs = std::filesystem;

static int g_failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++g_failures;                                                            \
        }                                                                            \
    } while (0)

static bool contains(const std::string & text, const char * part) { return text.find(part) != std::string::npos; }

static void write_file(const fs::path & path, const std::string & text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
}

// ---- cgroup CPU quota ---------------------------------------------------------------------

static void test_cgroup_v2() {
    const fs::path root = fs::temp_directory_path() / "nemotron-test-cgroup-v2";
    fs::remove_all(root);
    write_file(root / "proc/self/cgroup", "0::/user.slice/app.service\n");
    write_file(root / "proc/self/mountinfo",
               "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
               "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n");
    write_file(root / "sys/fs/cgroup/user.slice/app.service/cpu.max", "150000 100000\n");
    write_file(root / "sys/fs/cgroup/user.slice/cpu.max", "max 100000\n");
    CHECK(nemotron::cgroup_cpu_limit(root.string()) == 1.5);
    write_file(root / "sys/fs/cgroup/user.slice/cpu.max", "50000 100000\n"); // a tighter parent wins
    CHECK(nemotron::cgroup_cpu_limit(root.string()) == 0.5);
    write_file(root / "sys/fs/cgroup/user.slice/cpu.max", "max 100000\n");
    write_file(root / "sys/fs/cgroup/user.slice/app.service/cpu.max", "max 100000\n");
    CHECK(nemotron::cgroup_cpu_limit(root.string()) == 0.0);
    fs::remove_all(root);
}

static void test_cgroup_v1_container() {
    // A container sees its own cgroup as the root of the mount, at a path with an escaped space.
    const fs::path root = fs::temp_directory_path() / "nemotron-test-cgroup-v1";
    fs::remove_all(root);
    write_file(root / "proc/self/cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n");
    write_file(root / "proc/self/mountinfo",
               "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu\\040acct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
               "41 30 0:36 /docker/abc /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n");
    write_file(root / "sys/fs/cgroup/cpu acct/cpu.cfs_quota_us", "250000\n");
    write_file(root / "sys/fs/cgroup/cpu acct/cpu.cfs_period_us", "100000\n");
    write_file(root / "sys/fs/cgroup/memory/cpu.cfs_quota_us", "100000\n"); // not the cpu controller
    write_file(root / "sys/fs/cgroup/memory/cpu.cfs_period_us", "100000\n");
    CHECK(nemotron::cgroup_cpu_limit(root.string()) == 2.5);
    write_file(root / "sys/fs/cgroup/cpu acct/cpu.cfs_quota_us", "-1\n");
    CHECK(nemotron::cgroup_cpu_limit(root.string()) == 0.0);
    fs::remove_all(root);
    CHECK(nemotron::cgroup_cpu_limit(root.string()) == 0.0); // nothing readable: no limit
}

static void test_threads_for_load() {
    // 2 CPUs: the caller alone, or with its idle worker, computes with both.
    CHECK(nemotron::threads_for_load(2, 2, 1, 1) == 2);
    CHECK(nemotron::threads_for_load(2, 2, 2, 2) == 2);
    // One or two busy processes beside it leave it one thread; never fewer than one.
    CHECK(nemotron::threads_for_load(2, 2, 2, 1) == 1);
    CHECK(nemotron::threads_for_load(2, 2, 4, 2) == 1);
    // Another of this process's computations (beyond the caller and its one worker) is load too.
    CHECK(nemotron::threads_for_load(2, 2, 4, 4) == 1);
    // 16 CPUs, 5 busy elsewhere: 11 are free.
    CHECK(nemotron::threads_for_load(16, 16, 6, 1) == 11);
    CHECK(nemotron::threads_for_load(8, 16, 6, 1) == 8);
    nemotron::thread_budget one(1), four(4);
    CHECK(one.threads() == 1);
    CHECK(four.threads() >= 1 && four.threads() <= 4);
}

// ---- hyperparameters ----------------------------------------------------------------------

static nemotron_hparams valid_hparams() {
    nemotron_hparams hp = {};
    hp.struct_size = sizeof(hp);
    hp.n_mels = 128, hp.d_model = 1024, hp.n_heads = 8, hp.d_head = 128, hp.d_ff = 4096, hp.n_layers = 24;
    hp.conv_kernel_size = 9, hp.subsampling_factor = 8, hp.subsampling_conv_channels = 256;
    hp.att_left_context = 70, hp.n_att_right_contexts = 4;
    const int32_t right[] = {13, 6, 1, 0};
    std::memcpy(hp.att_right_contexts, right, sizeof(right));
    hp.vocab_size = 1025, hp.blank_id = 1024, hp.pred_embed_dim = 640, hp.pred_hidden = 640, hp.pred_num_layers = 2;
    hp.joint_dim = 640, hp.max_symbols_per_step = 10;
    hp.sample_rate = 16000, hp.n_fft = 512, hp.win_length = 400, hp.hop_length = 160;
    return hp;
}

static void test_check_hparams() {
    nemotron_hparams hp = valid_hparams();
    CHECK(nemotron_hparams_check(&hp) == NEMOTRON_OK);
    hp.num_prompts = 128; // multilingual models run
    CHECK(nemotron_hparams_check(&hp) == NEMOTRON_OK);
    hp.normalize = NEMOTRON_NORMALIZE_PER_FEATURE;
    hp.d_head = 64; // every problem is named, the unsupported ones first
    CHECK(nemotron_hparams_check(&hp) == NEMOTRON_ERR_UNSUPPORTED);
    const std::string all = nemotron_last_error();
    CHECK(contains(all.c_str(), "feature normalisation 'per_feature'") &&
          contains(all.c_str(), "n_heads 8 x d_head 64 != d_model 1024"));
    hp = valid_hparams();
    hp.hop_length = 1024;
    CHECK(nemotron_hparams_check(&hp) == NEMOTRON_ERR_INVALID_MODEL);
    CHECK(contains(nemotron_last_error(), "hop 1024"));
    hp = valid_hparams();
    hp.struct_size = 0;
    CHECK(nemotron_hparams_check(&hp) == NEMOTRON_ERR_INVALID_ARG);
}

// ---- text -----------------------------------------------------------------------------------

static void test_detokenize() {
    const std::vector<std::string> pieces = {"<unk>", "\xE2\x96\x81he", "llo", "\xE2\x96\x81w", "orld", "<0x21>", "<0xE2>",
                                             "<0x82>", "<0xAC>", "<0xzz>"};
    auto text = [&](std::vector<int32_t> ids) { return nemotron::detokenize(pieces, ids.data(), ids.size()); };
    CHECK(text({1, 2, 3, 4, 5}) == "hello world!");
    CHECK(text({1, 128, -1, 2}) == "hello");                      // the blank and other ids are skipped
    CHECK(text({0, 1}) == "\xE2\x81\x87  he");                    // <unk>, its leading space dropped
    CHECK(text({3, 6, 7, 8}) == "w\xE2\x82\xAC");                 // bytes that make one character
    CHECK(text({9}) == "<0xzz>");                                 // not a byte piece
    CHECK(text({}).empty());
}

// ---- logging --------------------------------------------------------------------------------

struct captured {
    std::vector<std::pair<int, std::string>> lines;
};

static void capture_engine(nemotron_log_level level, const char * text, void * user_data) {
    static_cast<captured *>(user_data)->lines.emplace_back(int(level), text);
}

static void capture_ggml(ggml_log_level level, const char * text, void * user_data) {
    static_cast<captured *>(user_data)->lines.emplace_back(int(level), text);
}

static bool any_line(const captured & c, const char * part) {
    for (const auto & line : c.lines) {
        if (contains(line.second, part)) return true;
    }
    return false;
}

static void test_logging(const char * model) {
    // Another ggml user of this process installs its logger first, as ggml-python users do.
    captured other, engine;
    ggml_log_set(capture_ggml, &other);
    nemotron_log_set(capture_engine, &engine);
    struct nemotron_context * ctx = nullptr;
    CHECK(nemotron_context_init_from_file(model, nullptr, &ctx) == NEMOTRON_OK);
    ggml_log_internal(GGML_LOG_LEVEL_WARN, "a message of the other user\n");
    nemotron_context_free(ctx);

    CHECK(any_line(other, "a message of the other user"));
    CHECK(!any_line(engine, "a message of the other user"));
    // The engine's own message, and ggml's (each repacked matrix) during the load, are the engine's.
    CHECK(any_line(engine, "loaded "));
    CHECK(any_line(engine, "repack"));
    CHECK(!any_line(other, "repack") && !any_line(other, "loaded "));
    for (const auto & line : engine.lines) CHECK(line.second.find('\n') == std::string::npos);

    nemotron_log_set(nullptr, nullptr);
    ggml_log_set(nullptr, nullptr);
}

// ---- lifetimes ------------------------------------------------------------------------------

static void test_stream_outlives_context(const char * model) {
    struct nemotron_context * ctx = nullptr;
    CHECK(nemotron_context_init_from_file(model, nullptr, &ctx) == NEMOTRON_OK);
    struct nemotron_stream * a = nullptr, * b = nullptr;
    CHECK(nemotron_stream_init(ctx, nullptr, &a) == NEMOTRON_OK);
    CHECK(nemotron_stream_init(ctx, nullptr, &b) == NEMOTRON_OK);
    std::vector<float> audio(32000, 0.0f); // two seconds: more than the first 1120 ms chunk
    for (size_t i = 0; i < audio.size(); ++i) audio[i] = 0.1f * float((i * 7919) % 200) / 200.0f - 0.05f;
    CHECK(nemotron_stream_feed(a, audio.data(), audio.size()) == NEMOTRON_OK);
    const int n_frames = nemotron_stream_n_frames(a);
    CHECK(n_frames > 0);

    nemotron_context_free(ctx); // before its streams: they keep the model's memory
    CHECK(nemotron_stream_feed(a, audio.data(), audio.size()) == NEMOTRON_ERR_INVALID_ARG);
    CHECK(contains(nemotron_last_error(), "model has been freed"));
    CHECK(nemotron_stream_finish(b) == NEMOTRON_ERR_INVALID_ARG);
    CHECK(nemotron_stream_reset(b) == NEMOTRON_ERR_INVALID_ARG);
    CHECK(nemotron_stream_n_frames(a) == n_frames); // results so far stay readable
    nemotron_stream_free(a);
    nemotron_stream_free(b); // the last one releases the model (LeakSanitizer checks it)
}

static void test_take_tokens(const char * model) {
    struct nemotron_context * ctx = nullptr;
    CHECK(nemotron_context_init_from_file(model, nullptr, &ctx) == NEMOTRON_OK);
    struct nemotron_stream * s = nullptr;
    CHECK(nemotron_stream_init(ctx, nullptr, &s) == NEMOTRON_OK);
    std::vector<float> audio(32000);
    for (size_t i = 0; i < audio.size(); ++i) audio[i] = 0.1f * float((i * 7919) % 200) / 200.0f - 0.05f;
    CHECK(nemotron_stream_feed(s, audio.data(), audio.size()) == NEMOTRON_OK);
    const int n = nemotron_stream_n_tokens(s);
    CHECK(n >= 3); // the random model emits tokens on anything
    const std::vector<int32_t> held(nemotron_stream_tokens(s), nemotron_stream_tokens(s) + n);
    const std::vector<int32_t> frames(nemotron_stream_token_frames(s), nemotron_stream_token_frames(s) + n);
    int32_t ids[2] = {-1, -1}, at[2] = {-1, -1};
    CHECK(nemotron_stream_take_tokens(s, ids, at, nullptr, 0) == 0);
    CHECK(nemotron_stream_take_tokens(s, ids, at, nullptr, 2) == 2); // the first two, handed out once
    CHECK(ids[0] == held[0] && ids[1] == held[1] && at[0] == frames[0] && at[1] == frames[1]);
    CHECK(nemotron_stream_n_tokens(s) == n - 2 && nemotron_stream_tokens(s)[0] == held[2]);
    std::vector<int32_t> rest(size_t(n), -1);
    CHECK(nemotron_stream_take_tokens(s, rest.data(), nullptr, nullptr, n) == n - 2);
    CHECK(std::equal(rest.begin(), rest.begin() + (n - 2), held.begin() + 2));
    CHECK(nemotron_stream_n_tokens(s) == 0 && nemotron_stream_take_tokens(s, rest.data(), nullptr, nullptr, n) == 0);
    const int frames_before = nemotron_stream_n_frames(s);
    CHECK(nemotron_stream_finish(s) == NEMOTRON_OK); // carries on: only new tokens, frames counted from the start
    CHECK(nemotron_stream_n_frames(s) > frames_before);
    for (int i = 0; i < nemotron_stream_n_tokens(s); ++i) CHECK(nemotron_stream_token_frames(s)[i] >= frames[size_t(n - 1)]);
    nemotron_stream_free(s);
    nemotron_context_free(ctx);
}

// ---- the q8_0 product ----------------------------------------------------------------------

// w [k, n] q8_0 times x [k, m] by the engine's product of the packed weights (or ggml's product
// of the weights as they are, with `own` false).
static std::vector<float> q8_0_product(const std::vector<uint8_t> & w, const std::vector<float> & x, int k, int n, int m,
                                       bool own, int n_threads) {
    ggml_init_params ip = {size_t(64) << 20, nullptr, false};
    ggml_context * ctx = ggml_init(ip);
    ggml_tensor * wt = ggml_new_tensor_2d(ctx, GGML_TYPE_Q8_0, k, n);
    ggml_tensor * xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    if (own) {
        nemotron::q8_0_pack(wt, w.data(), wt->data);
    } else {
        std::memcpy(wt->data, w.data(), ggml_nbytes(wt));
    }
    std::memcpy(xt->data, x.data(), ggml_nbytes(xt));
    ggml_tensor * y = own ? nemotron::q8_0_matmul(ctx, wt, xt) : ggml_mul_mat(ctx, wt, xt);
    ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_graph_compute_with_ctx(ctx, gf, n_threads);
    std::vector<float> out(size_t(n) * size_t(m));
    std::memcpy(out.data(), y->data, out.size() * sizeof(float));
    ggml_free(ctx);
    return out;
}

// The packed product against ggml's own q8_0 product (the same quantized activations, another
// summing order) for partial groups of columns; each column as it would be alone; packing undone.
static void test_q8_0_matmul() {
    if (!nemotron::q8_0_matmul_available()) {
        std::printf("no AVX-512 VNNI: the q8_0 product test is skipped\n");
        return;
    }
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const ggml_from_float_t quantize = ggml_get_type_traits_cpu(GGML_TYPE_Q8_0)->from_float;
    for (const auto & shape : std::vector<std::vector<int>>{{160, 48, 11}, {1024, 64, 70}, {4352, 16, 1}, {32, 16, 9}}) {
        const int k = shape[0], n = shape[1], m = shape[2];
        std::vector<float> wf(size_t(k) * size_t(n)), x(size_t(k) * size_t(m));
        for (float & v : wf) v = normal(rng) / std::sqrt(float(k));
        for (float & v : x) v = normal(rng) * 3.0f;
        std::vector<uint8_t> w(ggml_row_size(GGML_TYPE_Q8_0, k) * size_t(n));
        quantize(wf.data(), w.data(), int64_t(wf.size()));
        const std::vector<float> own = q8_0_product(w, x, k, n, m, true, 2);
        const std::vector<float> ggml = q8_0_product(w, x, k, n, m, false, 1);
        float worst = 0.0f, scale = 0.0f;
        for (size_t i = 0; i < own.size(); ++i) {
            worst = std::max(worst, std::fabs(own[i] - ggml[i]));
            scale = std::max(scale, std::fabs(ggml[i]));
        }
        CHECK(worst <= 2e-6f * scale);
        for (int c = 0; c < m; c += 5) {
            const std::vector<float> column(x.begin() + ptrdiff_t(c) * k, x.begin() + ptrdiff_t(c + 1) * k);
            const std::vector<float> alone = q8_0_product(w, column, k, n, 1, true, 1);
            CHECK(std::memcmp(alone.data(), own.data() + size_t(c) * size_t(n), alone.size() * sizeof(float)) == 0);
        }
        ggml_init_params ip = {ggml_tensor_overhead(), nullptr, true};
        ggml_context * ctx = ggml_init(ip);
        const ggml_tensor * wt = ggml_new_tensor_2d(ctx, GGML_TYPE_Q8_0, k, n);
        std::vector<uint8_t> packed(w.size()), unpacked(w.size());
        nemotron::q8_0_pack(wt, w.data(), packed.data());
        nemotron::q8_0_unpack(wt, packed.data(), unpacked.data());
        CHECK(packed != w && unpacked == w);
        ggml_free(ctx);
    }
}

// The decoder's products against ggml's own dot product, row by row: equal bit for bit for any
// team size, row count (partial blocks of four) and number of inputs, with and without a bias.
static void test_affine_rows() {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const ggml_vec_dot_t dot = ggml_get_type_traits_cpu(GGML_TYPE_F32)->vec_dot;
    for (const auto & shape : std::vector<std::vector<int>>{{2560, 640, 1}, {1025, 640, 3}, {7, 128, 2}, {5, 100, 4}}) {
        const int rows = shape[0], cols = shape[1], n = shape[2];
        std::vector<float> w(size_t(rows) * size_t(cols)), b(static_cast<size_t>(rows)), x(size_t(n) * size_t(cols));
        for (float & v : w) v = normal(rng) / std::sqrt(float(cols));
        for (float & v : b) v = normal(rng);
        for (float & v : x) v = normal(rng);
        std::vector<const float *> inputs;
        for (int i = 0; i < n; ++i) inputs.push_back(x.data() + size_t(i) * size_t(cols));
        for (const bool bias : {false, true}) {
            std::vector<float> expected(size_t(n) * size_t(rows));
            for (int i = 0; i < n; ++i) {
                for (int r = 0; r < rows; ++r) {
                    float acc = 0.0f;
                    dot(cols, &acc, 0, w.data() + size_t(r) * size_t(cols), 0, inputs[size_t(i)], 0, 1);
                    expected[size_t(i) * size_t(rows) + size_t(r)] = acc + (bias ? b[size_t(r)] : 0.0f);
                }
            }
            for (const int threads : {1, 2, 3}) {
                nemotron::row_team team(threads);
                std::vector<float> out(expected.size(), NAN);
                std::vector<float *> outputs;
                for (int i = 0; i < n; ++i) outputs.push_back(out.data() + size_t(i) * size_t(rows));
                for (int round = 0; round < 2; ++round) { // a team serves one product after another
                    nemotron::affine_rows(team, w.data(), bias ? b.data() : nullptr, inputs.data(), n, rows, cols, outputs.data());
                    CHECK(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
                }
            }
        }
    }
    std::printf("decoder products: %s kernel\n", nemotron::f32_rows_kernel_available(640) ? "the AVX-512" : "ggml's");
}

// ---- the float32 graph products and the subsampling's kernels -----------------------------

static void fill_normal(ggml_tensor * t, std::mt19937 & rng, float scale) {
    std::normal_distribution<float> normal(0.0f, scale);
    float * d = static_cast<float *>(t->data);
    for (int64_t i = 0; i < ggml_nelements(t); ++i) d[i] = normal(rng);
}

// f32_matmul against ggml's mul_mat (then its bias add and ReLU) bit for bit: lengths with every
// kind of remainder, partial tiles, strided columns, and the grouped layout against ggml's permute.
static void test_f32_matmul() {
    if (!nemotron::f32_matmul_available()) {
        std::printf("ggml's float32 dot product is not the AVX-512 one: the float32 product test is skipped\n");
        return;
    }
    std::mt19937 rng(5);
    for (const auto & shape : std::vector<std::vector<int>>{{9, 5, 7}, {256, 256, 36}, {4352, 16, 13}, {352, 22, 6}, {157, 3, 50}}) {
        const int k = shape[0], n = shape[1], m = shape[2];
        for (const int threads : {1, 3}) {
            ggml_init_params ip = {size_t(64) << 20, nullptr, false};
            ggml_context * ctx = ggml_init(ip);
            ggml_tensor * w = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n);
            ggml_tensor * b = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n);
            ggml_tensor * wide = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k + 3, m); // columns with a stride
            fill_normal(w, rng, 1.0f / std::sqrt(float(k)));
            fill_normal(b, rng, 1.0f);
            fill_normal(wide, rng, 1.0f);
            ggml_tensor * x = ggml_view_2d(ctx, wide, k, m, wide->nb[1], 0);
            ggml_tensor * plain = nemotron::f32_matmul(ctx, w, x, nullptr);
            ggml_tensor * plain_ref = ggml_mul_mat(ctx, w, x);
            ggml_tensor * relu = nemotron::f32_matmul(ctx, w, x, b, true);
            ggml_tensor * relu_ref = ggml_relu(ctx, ggml_add(ctx, ggml_mul_mat(ctx, w, x), b));
            // Groups of g columns: [g, n, m / g], as the reference's [n, g, m / g] permuted.
            const int g = m % 3 == 0 ? 3 : m % 2 == 0 ? 2 : 1;
            ggml_tensor * grouped = nemotron::f32_matmul(ctx, w, x, b, false, g);
            ggml_tensor * grouped_ref = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, ggml_add(ctx, ggml_mul_mat(ctx, w, x), b), n, g, m / g), 1, 0, 2, 3));
            ggml_cgraph * gf = ggml_new_graph(ctx);
            for (ggml_tensor * t : {plain, plain_ref, relu, relu_ref, grouped, grouped_ref}) ggml_build_forward_expand(gf, t);
            CHECK(ggml_graph_compute_with_ctx(ctx, gf, threads) == GGML_STATUS_SUCCESS);
            CHECK(std::memcmp(plain->data, plain_ref->data, ggml_nbytes(plain)) == 0);
            CHECK(std::memcmp(relu->data, relu_ref->data, ggml_nbytes(relu)) == 0);
            CHECK(ggml_nelements(grouped) == ggml_nelements(grouped_ref) &&
                  std::memcmp(grouped->data, grouped_ref->data, ggml_nbytes(grouped)) == 0);
            ggml_free(ctx);
        }
    }
}

// f32_matmul of batched, permuted views (the attention's products: heads and streams, w shared by
// every stream) against ggml's mul_mat, bit for bit.
static void test_f32_matmul_batched() {
    if (!nemotron::f32_matmul_available()) return;
    std::mt19937 rng(6);
    for (const auto & shape : std::vector<std::vector<int>>{{128, 84, 14, 8, 3}, {84, 128, 14, 8, 2}, {32, 7, 5, 2, 1}}) {
        const int k = shape[0], n = shape[1], m = shape[2], heads = shape[3], streams = shape[4];
        ggml_init_params ip = {size_t(64) << 20, nullptr, false};
        ggml_context * ctx = ggml_init(ip);
        // Stored [k, heads, n] and [k, heads, m, streams] as a layer's keys and queries are.
        ggml_tensor * ws = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, k, heads, n);
        ggml_tensor * xs = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, k, heads, m, streams);
        fill_normal(ws, rng, 1.0f);
        fill_normal(xs, rng, 1.0f);
        ggml_tensor * w = ggml_permute(ctx, ws, 0, 2, 1, 3), * x = ggml_permute(ctx, xs, 0, 2, 1, 3);
        ggml_tensor * ours = nemotron::f32_matmul(ctx, w, x, nullptr), * theirs = ggml_mul_mat(ctx, w, x);
        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, ours);
        ggml_build_forward_expand(gf, theirs);
        CHECK(ggml_graph_compute_with_ctx(ctx, gf, 2) == GGML_STATUS_SUCCESS);
        CHECK(ggml_are_same_shape(ours, theirs) && std::memcmp(ours->data, theirs->data, ggml_nbytes(ours)) == 0);
        ggml_free(ctx);
    }
}

// The subsampling through the CPU's kernels against ggml's operations, bit for bit, from the mel
// frames to the projection: the full model's geometry and a small one, several images, frames
// dropped.
static void test_subsampling_kernels() {
    std::mt19937 rng(9);
    for (const auto & shape : std::vector<std::vector<int>>{{256, 128, 121, 2, 2}, {32, 80, 37, 3, 1}, {16, 21, 9, 1, 0}}) {
        const int C = shape[0], n_mels = shape[1], frames = shape[2], batch = shape[3], drop = shape[4];
        ggml_init_params ip = {size_t(1) << 30, nullptr, false};
        ggml_context * ctx = ggml_init(ip);
        nemotron::subsampling_weights w;
        for (int s = 0; s < 3; ++s) {
            nemotron::subsampling_weights::stage st;
            if (s > 0) {
                st.dw_w = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 3, 3, 1, C);
                st.dw_b = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, C);
                st.pw_w = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 1, 1, C, C);
                fill_normal(st.dw_w, rng, 1.0f / 3.0f);
                fill_normal(st.dw_b, rng, 0.1f);
                fill_normal(st.pw_w, rng, 1.0f / std::sqrt(float(C)));
            } else {
                st.pw_w = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 3, 3, 1, C);
                fill_normal(st.pw_w, rng, 1.0f / 3.0f);
            }
            st.pw_b = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, C);
            fill_normal(st.pw_b, rng, 0.1f);
            w.stages.push_back(st);
        }
        const int freq = nemotron::subsampling::output_length(8, n_mels);
        w.out_w = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, int64_t(C) * freq, 64);
        w.out_b = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, 64);
        fill_normal(w.out_w, rng, 1.0f / std::sqrt(float(C * freq)));
        fill_normal(w.out_b, rng, 0.1f);
        ggml_tensor * mel = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, n_mels, frames, 1, batch);
        fill_normal(mel, rng, 2.0f);
        CHECK(nemotron::subsampling::cpu_kernels_serve(w) == nemotron::f32_matmul_available());
        const std::set<const ggml_tensor *> none;
        ggml_tensor * ours = nemotron::subsampling::build(ctx, w, nemotron::linear_op{none, true}, mel, drop);
        ggml_tensor * theirs = nemotron::subsampling::build(ctx, w, nemotron::linear_op{none, false}, mel, drop);
        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, ours);
        ggml_build_forward_expand(gf, theirs);
        CHECK(ggml_graph_compute_with_ctx(ctx, gf, 2) == GGML_STATUS_SUCCESS);
        CHECK(ggml_are_same_shape(ours, theirs) && std::memcmp(ours->data, theirs->data, ggml_nbytes(ours)) == 0);
        ggml_free(ctx);
    }
    std::printf("subsampling: %s\n", nemotron::f32_matmul_available() ? "the CPU's kernels" : "ggml's operations");
}

int main(int argc, char ** argv) {
    test_cgroup_v2();
    test_cgroup_v1_container();
    test_threads_for_load();
    test_check_hparams();
    test_detokenize();
    test_q8_0_matmul();
    test_affine_rows();
    test_f32_matmul();
    test_f32_matmul_batched();
    test_subsampling_kernels();
    if (argc > 1 && argv[1][0] != '\0') {
        test_logging(argv[1]);
        test_stream_outlives_context(argv[1]);
        test_take_tokens(argv[1]);
    } else {
        std::printf("no model given: the logging and lifetime tests are skipped\n");
    }
    std::printf("%s\n", g_failures == 0 ? "all passed" : "FAILED");
    return g_failures == 0 ? 0 : 1;
}
