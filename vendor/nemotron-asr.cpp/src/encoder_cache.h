// A stream's encoder caches (llama.cpp's KV cache, for this model): each conformer layer's last
// `att_left_context` projected keys and values, and the last kernel - 1 inputs of its causal
// depthwise convolution, on the device the stream computes on.
#pragma once

#include "model.h"

#include "ggml-backend.h"

#include <vector>

namespace nemotron {

// One stream's caches of one layer, as a chunk reads and writes them: keys and values are a
// sliding window of `left` frames ending at `end`; the chunk's own go right after it.
struct layer_caches {
    ggml_tensor * k = nullptr, * v = nullptr; // [d_model, capacity]
    ggml_tensor * conv = nullptr;             // [d_model, kernel - 1]: the depthwise convolution's last inputs
    int left = 0, end = 0;
};

class encoder_cache {
public:
    encoder_cache(const model & m, ggml_backend_dev_t device);
    ~encoder_cache();
    encoder_cache(const encoder_cache &) = delete;
    encoder_cache & operator=(const encoder_cache &) = delete;

    void reset();
    // Makes room for n new frames after the window, moving the window to the front if needed.
    void make_room(int n);
    // Layer il as a chunk's graph reads and writes it.
    layer_caches layer(int il) const { return {k[size_t(il)], v[size_t(il)], conv[size_t(il)], left, end}; }

    // Keys and values are a sliding window over a longer buffer: a chunk writes its frames
    // after the window and reads the window and them in place, and the window moves to the
    // front only when the buffer is full, instead of every cache being copied every chunk.
    std::vector<ggml_tensor *> k, v; // [d_model, left + slack] per layer: projected keys and values
    std::vector<ggml_tensor *> conv; // [d_model, kernel - 1] per layer: depthwise conv inputs
    int left = 0;                    // frames in the window
    int end = 0;                     // the window is frames [end - left, end) of k and v
    int n_valid = 0;                 // how many of the window's frames hold real frames

private:
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buf_ = nullptr;
};

} // namespace nemotron
