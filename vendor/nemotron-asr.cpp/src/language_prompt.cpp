#include "language_prompt.h"

namespace nemotron {

ggml_tensor * language_prompt(ggml_context * ctx, const prompt_weights & P, const linear_op & linear, ggml_tensor * x,
                              ggml_tensor * one_hot) {
    // The concatenation, as NeMo computes it, rather than adding the language's column of the first
    // matrix: the products then sum in NeMo's order.
    ggml_tensor * joined = ggml_concat(ctx, x, one_hot, 0);
    ggml_tensor * h = ggml_relu(ctx, linear(ctx, joined, P.w1, P.b1));
    return linear(ctx, h, P.w2, P.b2);
}

} // namespace nemotron
