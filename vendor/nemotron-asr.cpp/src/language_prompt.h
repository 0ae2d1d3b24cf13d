// Multilingual models' language prompt as a ggml graph (NeMo's EncDecHybridRNNTCTCBPEModelWithPrompt):
// each encoder frame is joined with the one-hot vector of its stream's language and projected back
// to d_model, so the joint sees speech conditioned on the language.
#pragma once

#include "conformer.h"
#include "model.h"

#include "ggml.h"

namespace nemotron {

// x: encoder frames [d_model, frames]; one_hot: [num_prompts, frames], each column its frame's
// stream's language. Returns Linear(d_model + num_prompts -> 2 d_model), ReLU, Linear(-> d_model)
// of their concatenation, [d_model, frames].
ggml_tensor * language_prompt(ggml_context * ctx, const prompt_weights & P, const linear_op & linear, ggml_tensor * x,
                              ggml_tensor * one_hot);

} // namespace nemotron
