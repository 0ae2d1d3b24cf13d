#include "encoder_cache.h"

#include "error.h"

#include <algorithm>

namespace nemotron {

cache_pool::cache_pool(const model & m, ggml_backend_dev_t device)
    : left(std::max(m.hparams.att_left_context, 1)),
      // Room for a chunk as long as the window (right contexts go up to the left one) after it, so that
      // a chunk's new frames never land on the window it reads.
      capacity(2 * left + 1),
      conv_frames(std::max(m.hparams.conv_kernel_size - 1, 1)),
      m_(m),
      device_(device),
      zeros_(size_t(std::max(capacity, conv_frames)) * size_t(m.hparams.d_model) * sizeof(float)) {}

cache_pool::~cache_pool() {
    if (buf_) ggml_backend_buffer_free(buf_);
    if (ctx_) ggml_free(ctx_);
}

void cache_pool::grow() {
    const nemotron_hparams & hp = m_.hparams;
    const int n_slots = std::max(1, 2 * n_slots_);
    ggml_init_params ip = {ggml_tensor_overhead() * size_t(6 * hp.n_layers), nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    if (ctx == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "out of memory");
    std::vector<ggml_tensor *> k2, v2, conv2;
    for (int il = 0; il < hp.n_layers; ++il) {
        k2.push_back(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.d_model, int64_t(capacity) * n_slots));
        v2.push_back(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.d_model, int64_t(capacity) * n_slots));
        conv2.push_back(ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.d_model, int64_t(conv_frames) * n_slots));
    }
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, ggml_backend_dev_buffer_type(device_));
    if (buf == nullptr) {
        ggml_free(ctx);
        fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate the encoder caches of %d streams", n_slots);
    }
    ggml_backend_buffer_clear(buf, 0); // new slots start zeroed
    if (ctx_ != nullptr) {
        // The old slots, on the device: views of the new tensors' first rows, of the old tensors' shapes.
        ip.mem_size = ggml_tensor_overhead() * size_t(3 * hp.n_layers);
        ggml_context * views = ggml_init(ip);
        auto move = [&](const std::vector<ggml_tensor *> & from, const std::vector<ggml_tensor *> & to) {
            for (size_t i = 0; i < from.size(); ++i) {
                ggml_tensor * head = ggml_view_2d(views, to[i], from[i]->ne[0], from[i]->ne[1], to[i]->nb[1], 0);
                if (ggml_backend_view_init(head) != GGML_STATUS_SUCCESS) fail(NEMOTRON_ERR_BACKEND, "cannot grow the encoder caches");
                ggml_backend_tensor_copy(from[i], head);
            }
        };
        move(k, k2);
        move(v, v2);
        move(conv, conv2);
        ggml_free(views);
        ggml_backend_buffer_free(buf_);
        ggml_free(ctx_);
    }
    ctx_ = ctx;
    buf_ = buf;
    k.swap(k2);
    v.swap(v2);
    conv.swap(conv2);
    for (int s = n_slots - 1; s >= n_slots_; --s) free_.push_back(s);
    n_slots_ = n_slots;
    ++generation;
}

int cache_pool::acquire() {
    std::unique_lock<std::shared_mutex> exclusive(lock_);
    if (free_.empty()) {
        grow();
        const int slot = free_.back();
        free_.pop_back();
        return slot; // zeroed with the new buffer
    }
    const int slot = free_.back();
    free_.pop_back();
    exclusive.unlock();
    clear(slot);
    return slot;
}

void cache_pool::release(int slot) {
    std::unique_lock<std::shared_mutex> exclusive(lock_);
    free_.push_back(slot);
}

void cache_pool::clear(int slot) {
    std::shared_lock<std::shared_mutex> shared(lock_);
    // Through the host: not every backend's buffers can be set to a value in place (ggml's RPC buffers cannot).
    const size_t row = k[0]->nb[1];
    for (size_t il = 0; il < k.size(); ++il) {
        ggml_backend_tensor_set(k[il], zeros_.data(), size_t(slot) * size_t(capacity) * row, size_t(capacity) * row);
        ggml_backend_tensor_set(v[il], zeros_.data(), size_t(slot) * size_t(capacity) * row, size_t(capacity) * row);
        ggml_backend_tensor_set(conv[il], zeros_.data(), size_t(slot) * size_t(conv_frames) * row, size_t(conv_frames) * row);
    }
}

void encoder_cache::reset() {
    pool.clear(slot);
    end = 0;
    n_valid = 0;
}

} // namespace nemotron
