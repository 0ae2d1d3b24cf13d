#include "encoder_cache.h"

#include "error.h"

#include <algorithm>

namespace nemotron {

encoder_cache::encoder_cache(const model & m, ggml_backend_dev_t device) {
    const nemotron_hparams & hp = m.hparams;
    ggml_init_params ip = {ggml_tensor_overhead() * size_t(3 * hp.n_layers + 1), nullptr, true};
    ctx_ = ggml_init(ip);
    if (ctx_ == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "out of memory");
    left = std::max(hp.att_left_context, 1);
    // Room for a chunk as long as the window (right contexts go up to the left one): the
    // window moves once per (left + 1) / chunk chunks.
    const int capacity = 2 * left + 1;
    for (int il = 0; il < hp.n_layers; ++il) {
        k.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, capacity));
        v.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, capacity));
        conv.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp.d_model, std::max(hp.conv_kernel_size - 1, 1)));
    }
    buf_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, ggml_backend_dev_buffer_type(device));
    if (buf_ == nullptr) fail(NEMOTRON_ERR_NO_MEMORY, "cannot allocate the encoder caches");
    reset();
}

encoder_cache::~encoder_cache() {
    if (buf_) ggml_backend_buffer_free(buf_);
    if (ctx_) ggml_free(ctx_);
}

void encoder_cache::reset() {
    // Zero caches are NeMo's initial state: zero conv inputs are the causal padding, and
    // the attention never looks at cached frames that are not valid yet.
    ggml_backend_buffer_clear(buf_, 0);
    end = left;
    n_valid = 0;
}

void encoder_cache::make_room(int n) {
    if (end + n <= int(k[0]->ne[1])) return;
    if (left + n > int(k[0]->ne[1])) fail(NEMOTRON_ERR_INVALID_ARG, "a chunk of %d frames exceeds the cache", n);
    std::vector<uint8_t> window(size_t(left) * k[0]->nb[1]);
    for (std::vector<ggml_tensor *> * kind : {&k, &v}) {
        for (ggml_tensor * t : *kind) {
            ggml_backend_tensor_get(t, window.data(), size_t(end - left) * t->nb[1], window.size());
            ggml_backend_tensor_set(t, window.data(), 0, window.size());
        }
    }
    end = left;
}

} // namespace nemotron
