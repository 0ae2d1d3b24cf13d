// The streams' encoder caches (llama.cpp's KV cache, for this model): for each conformer layer, a
// stream's last `att_left_context` projected keys and values and the last kernel - 1 inputs of its
// causal depthwise convolution, on the device the model computes on.
//
// Every stream of a model keeps its caches in one slot of a shared pool: per layer one key, one value
// and one convolution tensor holding all slots as rows. A chunk graph then gathers the windows of any
// set of streams with one get_rows per tensor and writes their new frames back with one set_rows, so
// a batch of streams costs the same number of graph operations as one stream, however many there are.
// Keys and values are a ring of `capacity` frames per slot, so a window never moves.
#pragma once

#include "model.h"

#include "ggml-backend.h"

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace nemotron {

class cache_pool {
public:
    cache_pool(const model & m, ggml_backend_dev_t device);
    ~cache_pool();
    cache_pool(const cache_pool &) = delete;
    cache_pool & operator=(const cache_pool &) = delete;

    // A zeroed slot, the pool grown (its tensors replaced, `generation` advanced) when all are taken.
    int acquire();
    void release(int slot);
    // Zero caches are NeMo's initial state: zero convolution inputs are the causal padding, and the
    // attention masks cached frames that are not valid yet.
    void clear(int slot);

    // Held shared while a graph reads or writes the tensors, exclusively while they are replaced.
    std::shared_mutex & lock() const { return lock_; }

    // Per layer: keys and values [d_model, capacity * slots], convolution inputs [d_model, conv_frames * slots].
    std::vector<ggml_tensor *> k, v, conv;
    const int left;        // frames in the attention window
    const int capacity;    // frames of keys and values per slot: the window and a chunk as long as it
    const int conv_frames; // kernel - 1
    uint64_t generation = 0; // advances whenever the tensors are replaced

private:
    void grow();

    const model & m_;
    ggml_backend_dev_t device_;
    int n_slots_ = 0;
    std::vector<int> free_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buf_ = nullptr;
    const std::vector<uint8_t> zeros_; // a slot's largest region's worth, to clear slots with
    mutable std::shared_mutex lock_;
};

// One stream's place in the pool and the position of its window.
class encoder_cache {
public:
    explicit encoder_cache(cache_pool & pool) : pool(pool), slot(pool.acquire()) {}
    ~encoder_cache() { pool.release(slot); }
    encoder_cache(const encoder_cache &) = delete;
    encoder_cache & operator=(const encoder_cache &) = delete;

    void reset();

    cache_pool & pool;
    const int slot;
    int64_t end = 0;     // frames written so far: the window is frames [end - left, end), frame t at ring position t mod capacity
    int n_valid = 0;     // how many of the window's frames hold real frames
};

} // namespace nemotron
