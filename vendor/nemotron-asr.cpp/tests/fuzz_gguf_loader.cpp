// A structure-aware fuzzer of the GGUF loader: it parses seed model files into their fields
// (header counts, metadata keys, value types, string and array lengths, scalar values, tensor
// names, dimensions, types and offsets), writes mutated copies and loads each through the C API
// in this one process; a file that loads is also run on a second of audio. Built with
// AddressSanitizer it finds memory errors and (at exit) leaks; an alarm catches hangs.
//
//   fuzz_gguf_loader [--cases N] [--seed S] [--keep DIR] [--list] SEED.gguf...
//
// Prints how many mutated files were refused with each status and how many loaded; exits
// non-zero on a hang, and (under the sanitizers) on any memory error or leak.
#include "nemotron-asr.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

// A field of a GGUF file the mutator knows how to change.
struct field {
    enum kind { count, length, type, value, n_dims, dim, tensor_type, offset } what;
    size_t pos;  // byte offset in the file
    size_t size; // bytes
};

struct seed_file {
    std::string path;
    std::vector<uint8_t> bytes;
    std::vector<field> fields;
    std::vector<size_t> boundaries; // where fields start: good places to cut the file
    size_t header_end = 0;          // the end of the tensor table
};

class parser {
public:
    explicit parser(seed_file & f) : f_(f) {}

    bool run() {
        if (f_.bytes.size() < 24 || std::memcmp(f_.bytes.data(), "GGUF", 4) != 0) return false;
        pos_ = 8;
        const uint64_t n_tensors = read(field::count, 8), n_kv = read(field::count, 8);
        for (uint64_t i = 0; i < n_kv && ok_; ++i) {
            string(field::length);
            value(uint32_t(read(field::type, 4)));
        }
        for (uint64_t i = 0; i < n_tensors && ok_; ++i) {
            string(field::length);
            const uint32_t n = uint32_t(read(field::n_dims, 4));
            for (uint32_t d = 0; d < n && ok_; ++d) read(field::dim, 8);
            read(field::tensor_type, 4);
            read(field::offset, 8);
        }
        f_.header_end = pos_;
        return ok_;
    }

private:
    uint64_t read(field::kind what, size_t size) {
        if (pos_ + size > f_.bytes.size()) {
            ok_ = false;
            return 0;
        }
        uint64_t v = 0;
        std::memcpy(&v, f_.bytes.data() + pos_, size);
        f_.fields.push_back({what, pos_, size});
        f_.boundaries.push_back(pos_);
        pos_ += size;
        return v;
    }

    void string(field::kind what) {
        const uint64_t n = read(what, 8);
        if (pos_ + n > f_.bytes.size()) ok_ = false;
        pos_ += size_t(n);
    }

    static size_t scalar_size(uint32_t type) {
        static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        return type < 13 ? sizes[type] : 0;
    }

    void value(uint32_t type) {
        if (type == 8) {
            string(field::length);
        } else if (type == 9) {
            const uint32_t elem = uint32_t(read(field::type, 4));
            const uint64_t n = read(field::length, 8);
            for (uint64_t i = 0; i < n && ok_; ++i) {
                if (elem == 8) {
                    string(field::length);
                } else if (scalar_size(elem) > 0) {
                    pos_ += scalar_size(elem); // array elements: too many to list one by one
                } else {
                    ok_ = false;
                }
            }
        } else if (scalar_size(type) > 0) {
            read(field::value, scalar_size(type));
        } else {
            ok_ = false;
        }
    }

    seed_file & f_;
    size_t pos_ = 0;
    bool ok_ = true;
};

// Values that sit on the edges of the checks a loader makes.
uint64_t interesting(std::mt19937_64 & rng, uint64_t original, size_t size) {
    static const uint64_t edges[] = {0, 1, 2, 3, 4, 7, 8, 13, 16, 31, 32, 64, 127, 128, 255, 256, 1023, 1024, 4096,
                                     65535, 65536, 0x7fffffffULL, 0x80000000ULL, 0xffffffffULL, 0x100000000ULL,
                                     1ULL << 40, 0x7fffffffffffffffULL, 0x8000000000000000ULL, ~0ULL};
    uint64_t v;
    switch (rng() % 6) {
        case 0: v = original + 1; break;
        case 1: v = original - 1; break;
        case 2: v = original * 2 + rng() % 3; break;
        case 3: v = original ^ (1ULL << (rng() % (8 * size))); break;
        case 4: v = rng(); break;
        default: v = edges[rng() % (sizeof(edges) / sizeof(edges[0]))]; break;
    }
    return size == 8 ? v : v & ((1ULL << (8 * size)) - 1);
}

// One to three structure-aware changes, sometimes a cut.
std::vector<uint8_t> mutate(const seed_file & seed, std::mt19937_64 & rng, std::string & what) {
    std::vector<uint8_t> out = seed.bytes;
    const int n = 1 + int(rng() % 3);
    static const char * names[] = {"count", "length", "type", "value", "n_dims", "dim", "tensor_type", "offset"};
    for (int i = 0; i < n; ++i) {
        const int choice = int(rng() % 10);
        if (choice < 7) {
            const field & f = seed.fields[rng() % seed.fields.size()];
            uint64_t original = 0;
            std::memcpy(&original, out.data() + f.pos, f.size);
            const uint64_t v = f.what == field::type || f.what == field::tensor_type ? (rng() % 4 ? rng() % 48 : rng())
                                                                                      : interesting(rng, original, f.size);
            std::memcpy(out.data() + f.pos, &v, f.size);
            what += std::string(what.empty() ? "" : ", ") + names[f.what] + "@" + std::to_string(f.pos);
        } else if (choice < 9) {
            const size_t at = rng() % seed.header_end; // a byte of the header, metadata or tensor table
            out[at] ^= uint8_t(1 + rng() % 255);
            what += std::string(what.empty() ? "" : ", ") + "byte@" + std::to_string(at);
        } else {
            // Cut at a field boundary (or a few bytes off it), or inside the data.
            size_t at = rng() % 2 ? seed.boundaries[rng() % seed.boundaries.size()] + rng() % 5
                                  : seed.header_end + rng() % (seed.bytes.size() - seed.header_end);
            at = std::min(at, out.size());
            out.resize(at);
            what += std::string(what.empty() ? "" : ", ") + "cut@" + std::to_string(at);
            break;
        }
    }
    return out;
}

std::string g_case_file; // for the alarm handler

void on_hang(int) {
    const char msg[] = "fuzz_gguf_loader: a case took too long (a hang); the file is kept at ";
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    ignored = write(2, g_case_file.c_str(), g_case_file.size());
    ignored = write(2, "\n", 1);
    (void) ignored;
    _exit(3);
}

void quiet(nemotron_log_level, const char *, void *) {}

} // namespace

int main(int argc, char ** argv) {
    long n_cases = 1000;
    uint64_t rng_seed = 1;
    std::string keep;
    bool list = false; // print every case: what was changed and the status
    std::vector<seed_file> seeds;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--cases" && i + 1 < argc) {
            n_cases = std::atol(argv[++i]);
        } else if (arg == "--seed" && i + 1 < argc) {
            rng_seed = std::strtoull(argv[++i], nullptr, 10);
        } else if (arg == "--keep" && i + 1 < argc) {
            keep = argv[++i];
        } else if (arg == "--list") {
            list = true;
        } else {
            seed_file f;
            f.path = arg;
            std::ifstream in(arg, std::ios::binary);
            f.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
            if (!parser(f).run()) {
                std::fprintf(stderr, "fuzz_gguf_loader: %s is not a GGUF file it can parse\n", arg.c_str());
                return 2;
            }
            seeds.push_back(std::move(f));
        }
    }
    if (seeds.empty()) {
        std::fprintf(stderr, "usage: fuzz_gguf_loader [--cases N] [--seed S] [--keep DIR] [--list] SEED.gguf...\n");
        return 2;
    }
    nemotron_log_set(quiet, nullptr); // refused files are the point; their messages are not
    g_case_file = (keep.empty() ? std::string("/tmp") : keep) + "/fuzz-case-" + std::to_string(getpid()) + ".gguf";
    std::signal(SIGALRM, on_hang);

    std::mt19937_64 rng(rng_seed);
    std::map<int, long> by_status;
    long loaded = 0, ran = 0;
    double slowest = 0;
    std::vector<float> audio(16000);
    for (size_t i = 0; i < audio.size(); ++i) audio[i] = 0.3f * std::sin(0.05f * float(i)) * float((i / 800) % 2);
    const auto start = std::chrono::steady_clock::now();
    for (long c = 0; c < n_cases; ++c) {
        const seed_file & seed = seeds[size_t(c) % seeds.size()];
        std::string what;
        const std::vector<uint8_t> bytes = mutate(seed, rng, what);
        {
            std::ofstream out(g_case_file, std::ios::binary | std::ios::trunc);
            out.write(reinterpret_cast<const char *>(bytes.data()), std::streamsize(bytes.size()));
        }
        const auto t0 = std::chrono::steady_clock::now();
        alarm(30);
        struct nemotron_context_params params = nemotron_context_default_params();
        params.n_threads = 1;
        struct nemotron_context * ctx = nullptr;
        const nemotron_status status = nemotron_context_init_from_file(g_case_file.c_str(), &params, &ctx);
        by_status[int(status)]++;
        if (status == NEMOTRON_OK) {
            ++loaded;
            struct nemotron_stream * stream = nullptr;
            if (nemotron_stream_init(ctx, nullptr, &stream) == NEMOTRON_OK) {
                if (nemotron_stream_feed(stream, audio.data(), audio.size()) == NEMOTRON_OK &&
                    nemotron_stream_finish(stream) == NEMOTRON_OK) {
                    ++ran;
                }
                nemotron_stream_free(stream);
            }
            nemotron_context_free(ctx);
        }
        alarm(0);
        slowest = std::max(slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (list) std::printf("case %ld (%s): %s: %d\n", c, seed.path.c_str(), what.c_str(), status);
    }
    std::remove(g_case_file.c_str());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%ld cases from %zu seed files in %.1f s (slowest %.2f s): %ld loaded (%ld of them ran a second of audio)",
                n_cases, seeds.size(), seconds, slowest, loaded, ran);
    for (const auto & s : by_status) {
        if (s.first != NEMOTRON_OK) std::printf(", %ld refused with status %d", s.second, s.first);
    }
    std::printf("\n");
    return 0;
}
