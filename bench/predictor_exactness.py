"""What a quantized RNN-T decoder would cost in exactness: the prediction network and joint computed
through quantized products instead of float32, judged along the float32 decoding path.

The engine keeps the decoder (LSTM predictor and joint, ~24 MB at full size) in float32 and computes
each step with float32 dot products, whatever the file stores: NVIDIA's q8_0 files hold those weights
as q8_0, and the engine computes exactly on their dequantized values, as NeMo would. A quantized step
would read a quarter of the bytes, but ggml's quantized products also round the other operand (the
embedding, the LSTM state, the joint's hidden vector) to the weight's vector type, per 32-value block
for q8_0. This script measures what those roundings change.

It takes the encoder output and the joint trace of the engine's own decoding of a recording (offline
chunking), then decodes the same frames again in NumPy along the engine's path (teacher-forced: each
step starts from the engine's previous labels, and the LSTM state is the variant's own), with the
products of each variant:

- float32: the engine's arithmetic in another summation order (a check of the script: its decisions
  should agree with the engine's but for near-ties);
- q8_0 weights: weights rounded to q8_0, inputs float32 (what the engine computes on NVIDIA's files
  and on any file whose decoder is q8_0, compared with a float32 decoder);
- q8_0 product: weights and inputs rounded to q8_0, as ggml's q8_0 dot product computes;
- f16 / bf16 product: weights and inputs rounded to float16 / bfloat16.

Per variant: the share of joint decisions (argmax over the vocabulary and the blank) equal to the
engine's, the largest logit difference from the engine's float32 step, and the median logit
difference set against the median margin of the engine's decisions (top-1 minus top-2 logit).

A random-weight model decodes in near-ties, so its decisions flip far more easily than a trained
model's: the figures bound what a quantized decoder would change, they do not predict the word error
rate on real speech.

    python bench/predictor_exactness.py                       # the bench model, 60 s of speech
    python bench/predictor_exactness.py --model my.gguf --audio call.wav
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  # bench/run.py: the default model and speech

Rounding = Callable[[np.ndarray], np.ndarray]


def q8_0(x: np.ndarray) -> np.ndarray:
    """x rounded as ggml stores it in q8_0: blocks of 32 along the last axis, a float16 scale
    amax / 127 each, values round(x / scale) in [-127, 127]."""
    blocks = x.astype(np.float32).reshape(*x.shape[:-1], -1, 32)
    scale = (np.abs(blocks).max(axis=-1, keepdims=True) / 127).astype(np.float16).astype(np.float32)
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    return (np.round(blocks * inverse) * scale).reshape(x.shape).astype(np.float32)


def f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even on the top 16 bits, as ggml converts float32 to bfloat16."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def same(x: np.ndarray) -> np.ndarray:
    return x


# name: (weights' rounding, inputs' rounding)
VARIANTS: Dict[str, tuple] = {
    "float32": (same, same),
    "q8_0 weights, float32 inputs": (q8_0, same),
    "q8_0 product": (q8_0, q8_0),
    "f16 product": (f16, f16),
    "bf16 product": (bf16, bf16),
}


class Decoder:
    """The prediction network and joint of a nemo-layout GGUF file, with every product's operands
    rounded as a variant says."""

    def __init__(self, tensors: Dict[str, np.ndarray], layers: int, weights: Rounding, inputs: Rounding) -> None:
        def t(name: str) -> np.ndarray:
            return tensors[name].astype(np.float32)

        self.inputs = inputs
        prefix = "decoder.prediction.dec_rnn.lstm."
        self.embed = t("decoder.prediction.embed.weight")
        self.w_ih = [weights(t(f"{prefix}weight_ih_l{i}")) for i in range(layers)]
        self.w_hh = [weights(t(f"{prefix}weight_hh_l{i}")) for i in range(layers)]
        self.bias = [t(f"{prefix}bias_ih_l{i}") + t(f"{prefix}bias_hh_l{i}") for i in range(layers)]
        self.pred_w, self.pred_b = weights(t("joint.pred.weight")), t("joint.pred.bias")
        self.enc_w, self.enc_b = weights(t("joint.enc.weight")), t("joint.enc.bias")
        self.out_w, self.out_b = weights(t("joint.joint_net.2.weight")), t("joint.joint_net.2.bias")
        self.hidden = self.w_hh[0].shape[1]

    def affine(self, w: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        return w @ self.inputs(x) + b

    def predict(self, label: int, h: np.ndarray, c: np.ndarray):
        """One LSTM step on `label` (-1: the start of sequence, a zero input) from (h, c) [layers][hidden]."""
        x = self.embed[label] if label >= 0 else np.zeros(self.embed.shape[1], np.float32)
        h_next, c_next = np.empty_like(h), np.empty_like(c)
        for layer in range(len(self.w_ih)):
            gates = self.affine(self.w_ih[layer], x, self.bias[layer]) + self.w_hh[layer] @ self.inputs(h[layer])
            i, f, g, o = np.split(gates, 4)
            c_next[layer] = sigmoid(f) * c[layer] + sigmoid(i) * np.tanh(g)
            h_next[layer] = sigmoid(o) * np.tanh(c_next[layer])
            x = h_next[layer]
        return self.affine(self.pred_w, x, self.pred_b), h_next, c_next

    def logits(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return self.affine(self.out_w, np.maximum(enc + pred, 0), self.out_b)


def follow(decoder: Decoder, frames: np.ndarray, trace: np.ndarray, blank: int) -> np.ndarray:
    """The variant's logits at every joint step of the engine's trace, from the engine's labels."""
    layers = len(decoder.w_ih)
    h = np.zeros((layers, decoder.hidden), np.float32)
    c = np.zeros_like(h)
    pred, h_next, c_next = decoder.predict(-1, h, c)
    out = np.empty((len(trace), decoder.out_b.shape[0]), np.float32)
    projected, projected_frame = None, -1
    for k, step in enumerate(trace):
        if step["frame"] != projected_frame:
            projected_frame = int(step["frame"])
            projected = decoder.affine(decoder.enc_w, frames[projected_frame], decoder.enc_b)
        out[k] = decoder.logits(projected, pred)
        if int(step["token"]) != blank:
            h, c = h_next, c_next
            pred, h_next, c_next = decoder.predict(int(step["token"]), h, c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a nemo-layout GGUF file (default: bench/run.py's q8_0 model)")
    parser.add_argument("--audio", type=Path, help="a recording (default: 60 s of bench/run.py's speech)")
    parser.add_argument("--cache", type=Path, default=run.CACHE)
    args = parser.parse_args()

    from gguf import GGUFReader

    from nemotron_cpp import NemotronModel

    args.cache.mkdir(parents=True, exist_ok=True)
    model_path = args.model or run.default_models(args.cache, ["q8_0"])["q8_0"]
    audio = args.audio or run.speech(args.cache, 60.0)
    with NemotronModel(model_path) as model, \
            model.stream(chunking="offline", keep_encoder_output=True, keep_trace=True, endpointing=False) as stream:
        stream.feed(soundfile.read(str(audio), dtype="float32")[0])
        stream.finalize()
        frames, trace = stream.encoder_output, stream.trace
        blank, layers = model.hparams.blank_id, model.hparams.pred_num_layers

    reader = GGUFReader(model_path)
    names = ("decoder.", "joint.")
    tensors = {t.name: np.array(t.data).reshape(tuple(reversed([int(d) for d in t.shape])))
               for t in reader.tensors if t.name.startswith(names)}
    if any(str(t.tensor_type.name) != "F32" for t in reader.tensors if t.name.startswith(names)):
        raise SystemExit(f"{model_path}: the decoder's weights are not float32 (this script rounds float32 weights)")

    engine = np.array([int(s["token"]) for s in trace])
    reference = follow(Decoder(tensors, layers, same, same), frames, trace, blank)
    margins = trace["margin"]
    print(f"{model_path.name}, {audio.name}: {len(frames)} encoder frames, {len(trace)} joint steps "
          f"({int((engine != blank).sum())} labels); the engine's margins: median {np.median(margins):.3g}, "
          f"{(margins < 0.01).mean():.1%} under 0.01\n")
    print("| decoder products | decisions equal to the engine's | max logit difference from float32 | median |")
    print("|---|---|---|---|")
    for name, (weights, inputs) in VARIANTS.items():
        logits = reference if name == "float32" else follow(Decoder(tensors, layers, weights, inputs), frames, trace, blank)
        agree = (logits.argmax(axis=1) == engine).mean()
        difference = np.abs(logits - reference)
        print(f"| {name} | {agree:.2%} | {difference.max():.3g} | {np.median(difference):.3g} |")


if __name__ == "__main__":
    main()
