#!/usr/bin/env python3
"""Records NVIDIA NeMo's outputs for the cache-aware FastConformer RNN-T, as ground truth for tests.

Not part of the installed package. It runs in a NeMo environment (see ``scripts/README.md``):

    python3 -m venv /tmp/nemo-venv
    /tmp/nemo-venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    /tmp/nemo-venv/bin/pip install -c scripts/nemo-constraints.txt -r scripts/nemo-requirements.txt
    /tmp/nemo-venv/bin/pip install ".[convert]"  # only to build models (--size): it tunes and converts them
    apt-get install -y espeak-ng sox          # only to synthesise new audio

The model is either a ``.nemo`` file (``--nemo PATH``) or built here with seeded random weights
(``--size tiny|full --seed N``: a BPE tokenizer trained on seeded pseudo-English, N(0, 1/fan_in)
weights, LayerNorm near 1, blank embedding row 0, and a joint shaped by ``nemotron_cpp.testing.tune_joint``
to emit a mix of blanks and varied tokens at a target median rate, so this environment needs the
package too: scripts/README.md). A built model is saved as ``OUT/model.nemo`` (+ ``model_meta.json``) and converted with
this project's converter (``python -m nemotron_cpp convert ... --layout nemo --type f32``, run by
``--nemotron-python``; skipped with a message when no interpreter with ``nemotron_cpp`` is available).

For every clip (espeak-ng speech, speech in noise, white noise, digital silence; 16 kHz mono int16 WAV)
it records, with dither off:

* the log-mel features as NeMo's preprocessor returns them, and ``mel_len``;
* for every att_context_size: the offline encoder output (whole utterance, the context chosen with
  ``encoder.set_default_att_context_size``, as ``transcribe()`` computes it), its greedy tokens and text;
* for every att_context_size and both streaming modes (``stream``: NeMo's default;
  ``stream_pad``: ``pad_and_drop_preencoded=True``): the encoder output of each chunk of NeMo's own
  cache-aware streaming loop (``CacheAwareStreamingAudioBuffer`` + ``model.conformer_stream_step``, as in
  NeMo's ``examples/asr/asr_cache_aware_streaming/speech_to_text_cache_aware_streaming_infer.py``), the
  chunk geometry, the tokens after each chunk, the final tokens and text;
* for every case, the greedy trace: one row per joint evaluation with the encoder frame, the argmax id
  the top-1 minus top-2 margin of the joint logits (before log-softmax) and the argmax's softmax
  probability (what the engine reports as a token's confidence). The trace is computed here
  on NeMo's decoder and joint modules and must reproduce NeMo's own tokens exactly, or the run fails.

Output (``--out DIR``): ``CLIP.wav``, ``CLIP.npz`` and ``manifest.json``; the manifest describes every
array, the model and its config, NeMo and torch versions, per-case token counts, timings and the command.

Examples:

    # the committed tiny set (tests/reference/tiny), from the committed tiny model, reusing its audio
    /tmp/nemo-venv/bin/python scripts/make_reference.py --nemo tests/fixtures/tiny-random.nemo \\
        --preset tiny --out tests/reference/tiny --reuse-audio

    # the same model with xscaling on (tests/reference/tiny-xscaling)
    /tmp/nemo-venv/bin/python scripts/make_reference.py --nemo tests/fixtures/tiny-random.nemo \\
        --set encoder.xscaling=true --preset tiny-xscaling --out tests/reference/tiny-xscaling --reuse-audio

    # full size (24 layers, d_model 1024) on demand, into a cache directory
    /tmp/nemo-venv/bin/python scripts/make_reference.py --size full --seed 0 --preset full \\
        --out ~/.cache/nemotron-cpp/reference/full --nemotron-python .venv/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

SAMPLE_RATE = 16000
FORMAT_VERSION = 1
ALL_ATT_CONTEXTS: Tuple[Tuple[int, int], ...] = ((70, 0), (70, 1), (70, 6), (70, 13))
# streaming mode name -> CacheAwareStreamingAudioBuffer(pad_and_drop_preencoded=...)
STREAM_MODES = {"stream": False, "stream_pad": True}
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Audio


@dataclass(frozen=True)
class Clip:
    name: str
    kind: str  # "speech", "noise" or "silence"
    text: str = ""
    voice: str = ""  # espeak-ng voice (+variant)
    speed: int = 175  # espeak-ng words per minute
    pitch: int = 50  # espeak-ng pitch 0..99
    snr_db: Optional[float] = None  # white noise mixed into speech at this SNR
    seconds: float = 0.0  # length of a noise / silence clip
    seed: int = 0  # noise generator seed


_SPEECH_A = Clip(
    "speech_a", "speech",
    text="The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.",
    voice="en-us", speed=185,
)
_SPEECH_B = Clip(
    "speech_b", "speech",
    text="She sells sea shells by the sea shore, and twelve quick jumps lead over the fence.",
    voice="en-gb+f3", speed=210, pitch=70,
)
_SPEECH_NOISY = Clip(
    "speech_noisy", "speech",
    text="Please call Stella and ask her to bring these things with her from the store.",
    voice="en-us+m3", speed=165, pitch=35, snr_db=10.0, seed=3,
)
_NOISE = Clip("noise", "noise", seconds=3.0, seed=1)
_SILENCE = Clip("silence", "silence", seconds=2.0)
_SPEECH_LONG = Clip(
    "speech_long", "speech",
    text=(
        "It was a bright cold day in April, and the clocks were striking thirteen. "
        "The old lighthouse keeper climbed the spiral stairs every evening at dusk, counting each of the "
        "two hundred and seventeen steps aloud, as his father had done before him. "
        "From the gallery he could see the fishing boats coming home across the grey water, their lamps "
        "swinging, and the gulls wheeling over the harbour wall. "
        "Nobody in the village could remember a night when the light had failed, although the winter "
        "storms had broken windows, torn away the railings and once carried the whole boathouse out to sea. "
        "He kept a logbook in careful handwriting: the wind, the weather, the ships that passed, and now "
        "and then a line about the birds that rested on the lantern glass. "
        "When the engineers finally arrived with their automatic lamp and their electric cables, he "
        "showed them every brass fitting, polished the lens one last time, and walked down the hill "
        "without looking back. "
        "The children say that on stormy nights you can still hear someone counting on the stairs."
    ),
    voice="en-gb-scotland", speed=165,
)

PRESETS: Dict[str, Dict[str, Any]] = {
    # Committed under tests/reference/tiny (budget about 3 MB in all): every context, both modes.
    "tiny": {
        "clips": [_SPEECH_A, _SPEECH_B, _SPEECH_NOISY, _NOISE, _SILENCE],
        "att_contexts": ALL_ATT_CONTEXTS,
        "modes": tuple(STREAM_MODES),
    },
    # The tiny model with encoder.xscaling=true (committed under tests/reference/tiny-xscaling): two
    # clips, the outermost contexts, both modes. Its joint was tuned without the scaling, so it emits
    # max_symbols tokens on every frame and no blank: these references check the encoder, where the
    # scaling acts, and the joint's choice among the tokens; the unscaled set checks the blanks.
    "tiny-xscaling": {
        "clips": [_SPEECH_A, _NOISE],
        "att_contexts": ((70, 0), (70, 13)),
        "modes": tuple(STREAM_MODES),
        "blanks_expected": False,
    },
    # Full size is slow on a CPU: fewer contexts by default, plus a long clip.
    "full": {
        "clips": [_SPEECH_A, _SPEECH_B, _SPEECH_NOISY, _NOISE, _SILENCE, _SPEECH_LONG],
        "att_contexts": ((70, 0), (70, 13)),
        "modes": tuple(STREAM_MODES),
    },
}
# The joint's blank bias is tuned on these, whatever clips the run records.
TUNING_CLIPS = [_SPEECH_A, _SPEECH_B, _SPEECH_NOISY]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_wav_int16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: expected 16 kHz mono int16, got {w.getparams()}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def write_wav_int16(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def _run(cmd: Sequence[object]) -> None:
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)


def tool_version(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "missing"
    return (out.stdout or out.stderr).strip().splitlines()[0]


def synthesize(clip: Clip, dst: Path) -> None:
    """Writes the clip as 16 kHz mono int16: espeak-ng (resampled by sox without dither, peak -3 dBFS), noise or zeros."""
    if clip.kind == "speech":
        with tempfile.TemporaryDirectory() as tmp:
            raw, resampled = Path(tmp) / "espeak.wav", Path(tmp) / "16k.wav"
            _run(["espeak-ng", "-v", clip.voice, "-s", clip.speed, "-p", clip.pitch, "-w", raw, clip.text])
            _run(["sox", "-D", raw, "-r", SAMPLE_RATE, "-c", "1", "-b", "16", resampled, "gain", "-n", "-3"])
            samples = read_wav_int16(resampled).astype(np.float64)
        if clip.snr_db is not None:
            rng = np.random.default_rng(clip.seed)
            speech_power = np.mean(samples**2)
            noise = rng.standard_normal(samples.size) * np.sqrt(speech_power / 10 ** (clip.snr_db / 10))
            samples = samples + noise
    elif clip.kind == "noise":
        rng = np.random.default_rng(clip.seed)
        samples = rng.standard_normal(int(clip.seconds * SAMPLE_RATE)) * 0.05 * 32768
    elif clip.kind == "silence":
        samples = np.zeros(int(clip.seconds * SAMPLE_RATE))
    else:
        raise ValueError(f"unknown clip kind {clip.kind!r}")
    write_wav_int16(dst, np.clip(np.round(samples), -32768, 32767).astype(np.int16))


def prepare_audio(clips: Sequence[Clip], out: Path, reuse: Dict[str, str]) -> Dict[str, Path]:
    """Synthesises each clip into OUT/NAME.wav, or keeps the file there when --reuse-audio vouches for it."""
    paths = {}
    for clip in clips:
        path = out / f"{clip.name}.wav"
        if clip.name in reuse:
            if not path.exists() or sha256_file(path) != reuse[clip.name]:
                raise SystemExit(f"--reuse-audio: {path} is missing or differs from the manifest's sha256")
            print(f"audio: reusing {path}")
        else:
            synthesize(clip, path)
            print(f"audio: wrote {path} ({read_wav_int16(path).size / SAMPLE_RATE:.2f} s)")
        paths[clip.name] = path
    return paths


# --------------------------------------------------------------------------------------------------
# Building a random-weight model


@dataclass(frozen=True)
class Size:
    n_layers: int
    d_model: int
    n_heads: int
    subsampling_channels: int
    pred_hidden: int
    joint_hidden: int
    vocab: int
    tokens_per_frame: float  # target median over the tuning decodes


SIZES = {
    "tiny": Size(2, 128, 4, 32, 128, 128, 128, 1.5),
    "full": Size(24, 1024, 8, 256, 640, 640, 1024, 0.5),
}

_FUNCTION_WORDS = (
    "the a an and or but of to in on at by for with from as is are was were be been it this that "
    "these those he she we they you i me him her us them my your his our their not no yes so if then "
    "when where what who how why all some any each every one two three four five six seven eight nine ten"
).split()
_ONSETS = "b c d f g h j k l m n p r s t v w y z th sh ch st br tr pl gr cl sp fl wh qu".split() + [""]
_VOWELS = "a e i o u ee ou ai ea oo ie oa".split()
_CODAS = "n r s t l d m ng st ck nd ll rt sh".split() + ["", "", ""]


def pseudo_english(seed: int, n_sentences: int = 20000) -> List[str]:
    """Seeded pseudo-English sentences (real function words + random syllable words) for BPE training."""
    rng = np.random.default_rng(seed)
    lexicon = []
    for _ in range(4000):
        n_syl = int(rng.choice([1, 1, 2, 2, 2, 3, 4]))
        lexicon.append("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syl)))
    lexicon = list(dict.fromkeys(lexicon))
    zipf = 1.0 / np.arange(1, len(lexicon) + 1)
    zipf /= zipf.sum()
    lines = []
    for _ in range(n_sentences):
        words = [
            str(rng.choice(_FUNCTION_WORDS)) if rng.random() < 0.4 else str(rng.choice(lexicon, p=zipf))
            for _ in range(int(rng.integers(4, 14)))
        ]
        lines.append(" ".join(words))
    return lines


def train_tokenizer(directory: Path, vocab_size: int, seed: int) -> None:
    """SentencePiece BPE with NeMo's flags (unk 0, no bos/eos/pad, coverage 1.0), single-threaded."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(pseudo_english(seed)), model_prefix=str(directory / "tokenizer"),
        vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0,
        hard_vocab_limit=True, remove_extra_whitespaces=False, shuffle_input_sentence=False,
        num_threads=1, minloglevel=2,
    )
    pieces = [line.split("\t")[0] for line in (directory / "tokenizer.vocab").read_text(encoding="utf-8").splitlines()]
    # vocab.txt as NeMo's tokenizer script writes it: word-initial pieces without the marker, others "##".
    vocab = [p[1:] or p if p.startswith("\u2581") else f"##{p}" for p in pieces if p != "<unk>"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def model_config(size: Size, tokenizer_dir: Path) -> Dict[str, Any]:
    """The architecture of nemotron-speech-streaming-en-0.6b at the given size."""
    return {
        "sample_rate": SAMPLE_RATE,
        "compute_eval_loss": False,
        "log_prediction": False,
        "model_defaults": {"enc_hidden": size.d_model, "pred_hidden": size.pred_hidden, "joint_hidden": size.joint_hidden},
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": SAMPLE_RATE, "normalize": "NA", "window_size": 0.025, "window_stride": 0.01,
            "window": "hann", "features": 128, "n_fft": 512, "log": True, "frame_splicing": 1,
            "dither": 0.0, "pad_to": 0, "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 128, "feat_out": -1, "n_layers": size.n_layers, "d_model": size.d_model,
            "use_bias": False, "subsampling": "dw_striding", "subsampling_factor": 8,
            "subsampling_conv_channels": size.subsampling_channels, "causal_downsampling": True,
            "ff_expansion_factor": 4, "self_attention_model": "rel_pos", "n_heads": size.n_heads,
            "att_context_size": [list(c) for c in reversed(ALL_ATT_CONTEXTS)],
            "att_context_style": "chunked_limited", "xscaling": False, "untie_biases": True,
            "pos_emb_max_len": 5000, "conv_kernel_size": 9, "conv_norm_type": "layer_norm",
            "conv_context_size": "causal", "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0,
            "dropout_att": 0.1,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None, "random_state_sampling": False, "blank_as_pad": True,
            "prednet": {"pred_hidden": size.pred_hidden, "pred_rnn_layers": 2, "t_max": None, "dropout": 0.2},
            "vocab_size": size.vocab,  # replaced from the tokenizer by the model
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None, "preserve_memory": False, "fuse_loss_wer": False, "fused_batch_size": 4,
            "jointnet": {
                "joint_hidden": size.joint_hidden, "activation": "relu", "dropout": 0.2,
                "encoder_hidden": size.d_model, "pred_hidden": size.pred_hidden,
            },
            "num_classes": size.vocab,
        },
        "decoding": {
            "strategy": "greedy_batch",
            "greedy": {"max_symbols": 10, "loop_labels": True, "use_cuda_graph_decoder": False},
        },
        "loss": {"loss_name": "default"},
        "optim": None,
    }


def init_weights(model: Any, seed: int) -> None:
    """Linear/conv N(0, 1/fan_in), other biases 0.05 N, LayerNorm 1 + 0.1 N / 0.05 N, pos_bias 0.1 N,
    LSTM weights N(0, 1/H), embedding N(0, 1) with the blank (padding) row 0. Every parameter is set."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    done = set()

    def fill(p: "torch.Tensor", std: float, mean: float = 0.0) -> None:
        p.copy_(mean + std * torch.randn(p.shape, generator=gen))
        done.add(id(p))

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
                fill(module.weight, module.weight[0].numel() ** -0.5)
                if module.bias is not None:
                    fill(module.bias, 0.05)
            elif isinstance(module, torch.nn.LayerNorm):
                fill(module.weight, 0.1, 1.0)
                fill(module.bias, 0.05)
            elif isinstance(module, torch.nn.LSTM):
                for name, p in module.named_parameters(recurse=False):
                    fill(p, module.hidden_size**-0.5 if name.startswith("weight") else 0.05)
            elif isinstance(module, torch.nn.Embedding):
                fill(module.weight, 1.0)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
        for name, p in model.named_parameters():
            if name.endswith(("pos_bias_u", "pos_bias_v")):
                fill(p, 0.1)
        missed = [name for name, p in model.named_parameters() if id(p) not in done]
        if missed:
            raise RuntimeError(f"init_weights does not cover: {missed}")


class GreedyTracer:
    """Greedy RNN-T decoding on NeMo's own decoder and joint modules, one joint evaluation at a time.

    As NeMo's greedy_batch: SOS is a zero input vector with zero LSTM state; the LSTM state and the last
    label advance only on a non-blank; at most ``max_symbols`` non-blanks per frame. Each evaluation is
    recorded as (frame, argmax, top1 - top2 margin of the logits before log-softmax, softmax probability
    of the argmax).
    """

    def __init__(self, model: Any):
        self.decoder = model.decoder
        self.joint = model.joint
        self.blank = int(model.decoder.blank_idx)
        self.max_symbols = int(model.cfg.decoding.greedy.max_symbols)

    def start(self) -> Dict[str, Any]:
        g, state = self.decoder.predict(None, None, add_sos=False, batch_size=1)
        return {"g": self.joint.project_prednet(g), "state": state}

    def run(self, enc: Any, carry: Optional[Dict[str, Any]] = None,
            frame0: int = 0) -> Tuple[List[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
        """Decodes enc [T, D]; returns tokens, trace arrays and the state to carry into the next chunk."""
        import torch

        # One step is a few small matrix products: on a shared CPU, OpenMP threads only add waiting, and
        # oneDNN's LSTM costs about 6x aten's for a single step (11 ms against 2 ms at 640 wide). The
        # traced tokens are checked against NeMo's own, which keep torch's default kernels.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.backends.mkldnn.flags(enabled=False):
                return self._run(enc, carry, frame0)
        finally:
            torch.set_num_threads(threads)

    def _run(self, enc: Any, carry: Optional[Dict[str, Any]],
             frame0: int) -> Tuple[List[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
        import torch

        carry = carry or self.start()
        f = self.joint.project_encoder(enc[None])[0]  # [T, H]
        tokens, frames, argmaxes, margins, probs = [], [], [], [], []
        for t in range(f.shape[0]):
            for _ in range(self.max_symbols):
                logits = self.joint.joint_net(f[t] + carry["g"][0, 0])
                top = torch.topk(logits, 2)
                k = int(torch.argmax(logits))
                frames.append(frame0 + t)
                argmaxes.append(k)
                margins.append(float(top.values[0] - top.values[1]))
                probs.append(float(torch.softmax(logits, -1)[k]))
                if k == self.blank:
                    break
                tokens.append(k)
                g, state = self.decoder.predict(torch.tensor([[k]]), carry["state"], add_sos=False, batch_size=1)
                carry = {"g": self.joint.project_prednet(g), "state": state}
        return (tokens, np.asarray(frames, np.int32), np.asarray(argmaxes, np.int32),
                np.asarray(margins, np.float32), np.asarray(probs, np.float32), carry)


def tune_joint(model: Any, tuning_audio: Sequence[np.ndarray], target: float) -> Dict[str, Any]:
    """Shapes the joint so that greedy decoding emits a mix of blanks and varied tokens on speech, by
    ``nemotron_cpp.testing.tune_joint`` (the one recipe, also the benchmark models'; see its comments)
    on NeMo's own tuning decodes: TUNING_CLIPS x all att_context_sizes, offline. Needs nemotron_cpp in
    this environment (scripts/README.md)."""
    import torch
    from nemotron_cpp import testing

    encs: List[np.ndarray] = []
    for samples in tuning_audio:
        mel, mel_len = preprocess(model, samples)
        encs.extend(offline_encode(model, mel, mel_len, ctx).numpy() for ctx in ALL_ATT_CONTEXTS)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if k.startswith(("decoder.", "joint."))}
    tracer, enc, prednet = GreedyTracer(model), model.cfg.encoder, model.cfg.decoder.prednet
    size = testing.ModelSize(n_layers=enc.n_layers, d_model=enc.d_model, n_heads=enc.n_heads,
                             d_ff=int(enc.d_model * enc.ff_expansion_factor),
                             subsampling_channels=enc.subsampling_conv_channels,
                             pred_hidden=prednet.pred_hidden, pred_layers=prednet.pred_rnn_layers,
                             joint_dim=model.cfg.joint.jointnet.joint_hidden, vocab=tracer.blank,
                             max_symbols=tracer.max_symbols)
    tuned = testing.tune_joint(state, size, encs, target)
    if abs(tuned.tokens_per_frame - target) > 0.25 * target:
        raise RuntimeError(f"blank-bias search: the closest median rate to {target} tokens per frame is "
                           f"{tuned.tokens_per_frame:.3f}")
    params = dict(model.named_parameters())
    for name, value in tuned.tensors.items():
        params[name].copy_(torch.from_numpy(value))
    per_decode = [len(tracer.run(torch.from_numpy(e))[0]) / len(e) for e in encs]  # NeMo's own decoding, tuned
    return {
        "blank_bias": tuned.blank_bias, "median_tokens_per_frame": round(tuned.tokens_per_frame, 3),
        "tokens_per_frame": [round(r, 3) for r in per_decode], "target_tokens_per_frame": target,
        "tuning_clips": [c.name for c in TUNING_CLIPS], "tuning_att_contexts": [list(c) for c in ALL_ATT_CONTEXTS],
    }


def build_model(size_name: str, seed: int, out: Path, tuning_audio: Sequence[np.ndarray]) -> Tuple[Path, Dict[str, Any]]:
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    size = SIZES[size_name]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        train_tokenizer(tok_dir, size.vocab, seed)
        torch.manual_seed(seed)
        model = EncDecRNNTBPEModel(cfg=OmegaConf.create(model_config(size, tok_dir)))
        if model.tokenizer.vocab_size != size.vocab:
            raise RuntimeError(f"tokenizer has {model.tokenizer.vocab_size} pieces, expected {size.vocab}")
        model.eval()
        with torch.inference_mode():
            init_weights(model, seed)
            tuning = tune_joint(model, tuning_audio, size.tokens_per_frame)
        nemo_path = out / "model.nemo"
        model.save_to(str(nemo_path))
    meta = {
        "size": size_name, "seed": seed, **asdict(size),
        "parameters": sum(p.numel() for p in model.parameters()), "joint_tuning": tuning,
        "build_seconds": round(time.time() - t0, 1), "sha256": sha256_file(nemo_path),
    }
    (out / "model_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"model: built {size_name} ({meta['parameters']} parameters) -> {nemo_path}; joint tuning {tuning}")
    return nemo_path, meta


# --------------------------------------------------------------------------------------------------
# NeMo's computations


def preprocess(model: Any, samples: np.ndarray) -> Tuple[Any, Any]:
    """The model's preprocessor on float samples (int16 / 32768); returns mel [1, 128, T], mel_len [1]."""
    import torch

    signal = torch.from_numpy(samples.astype(np.float32) / 32768.0)[None]
    return model.preprocessor(input_signal=signal, length=torch.tensor([signal.shape[1]]))


def offline_encode(model: Any, mel: Any, mel_len: Any, ctx: Tuple[int, int]) -> Any:
    """Whole-utterance encoder output [T, D] with the given att_context_size (the transcribe() path)."""
    model.encoder.set_default_att_context_size(list(ctx))
    enc, enc_len = model.encoder(audio_signal=mel, length=mel_len)
    return enc[0, :, : int(enc_len[0])].T.contiguous()


def hyp_tokens(hyp: Any) -> List[int]:
    seq = hyp.y_sequence
    return [int(x) for x in (seq.tolist() if hasattr(seq, "tolist") else seq)]


def first_hypothesis(result: Any) -> Any:
    while isinstance(result, (list, tuple)):
        result = result[0]
    return result


def summarize(tokens: List[int], frames: np.ndarray, argmax: np.ndarray, margins: np.ndarray,
              n_enc: int, blank: int, max_symbols: int) -> Dict[str, Any]:
    per_frame = np.bincount(frames[argmax != blank], minlength=n_enc) if n_enc else np.zeros(0, int)
    return {
        "enc_frames": n_enc,
        "tokens": len(tokens),
        "tokens_per_frame": round(len(tokens) / max(n_enc, 1), 3),
        "distinct_tokens": len(set(tokens)),
        "joint_steps": int(frames.size),
        "blank_steps": int(np.sum(argmax == blank)),
        "frames_at_max_symbols": int(np.sum(per_frame >= max_symbols)),
        "min_margin": round(float(margins.min()), 6) if margins.size else None,
    }


class Recorder:
    """Runs every case for one model, checks the greedy traces against NeMo, and collects arrays."""

    def __init__(self, model: Any, check_transcribe: bool):
        self.model = model
        self.tracer = GreedyTracer(model)
        self.blank = self.tracer.blank
        self.check_transcribe = check_transcribe

    def _trace_case(self, arrays: Dict[str, np.ndarray], key: str, enc: Any, nemo_tokens: List[int],
                    text: str, trace: Optional[Tuple[List[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = None
                    ) -> Dict[str, Any]:
        if any(m.training for m in self.model.modules()):
            raise RuntimeError(f"{key}: part of the model is in training mode")
        tokens, frames, argmax, margins, probs = trace or self.tracer.run(enc)[:5]
        if tokens != nemo_tokens:
            raise RuntimeError(f"{key}: the greedy trace's {len(tokens)} tokens differ from NeMo's {len(nemo_tokens)}")
        arrays[f"{key}__enc"] = enc.numpy().astype(np.float32)
        arrays[f"{key}__tokens"] = np.asarray(nemo_tokens, np.int32)
        arrays[f"{key}__trace_frame"] = frames
        arrays[f"{key}__trace_argmax"] = argmax
        arrays[f"{key}__trace_margin"] = margins
        arrays[f"{key}__trace_confidence"] = probs
        info = summarize(nemo_tokens, frames, argmax, margins, enc.shape[0], self.blank, self.tracer.max_symbols)
        info["text"] = text
        return info

    def clip(self, wav: Path, att_contexts: Sequence[Tuple[int, int]], modes: Sequence[str]) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        import torch
        from nemo.collections.asr.parts.preprocessing.segment import get_samples

        model = self.model
        samples_i16 = read_wav_int16(wav)
        samples = get_samples(str(wav))  # NeMo's own reader, as the streaming example and transcribe() use
        if not np.array_equal(samples, samples_i16.astype(np.float32) / 32768.0):
            raise RuntimeError(f"{wav}: NeMo reads different samples than int16 / 32768")
        arrays: Dict[str, np.ndarray] = {}
        cases: Dict[str, Any] = {}
        mel, mel_len = preprocess(model, samples_i16)
        arrays["mel"] = mel[0].numpy().astype(np.float32)
        info: Dict[str, Any] = {"samples": int(samples_i16.size), "mel_frames": int(mel.shape[-1]),
                                "mel_len": int(mel_len[0])}
        for ctx in att_contexts:
            key = f"offline_{ctx[0]}_{ctx[1]}"
            enc = offline_encode(model, mel, mel_len, ctx)
            hyp = first_hypothesis(model.decoding.rnnt_decoder_predictions_tensor(
                encoder_output=enc.T[None], encoded_lengths=torch.tensor([enc.shape[0]]), return_hypotheses=True))
            cases[key] = self._trace_case(arrays, key, enc, hyp_tokens(hyp), hyp.text)
            if self.check_transcribe:
                th = first_hypothesis(model.transcribe([samples], batch_size=1, return_hypotheses=True, verbose=False))
                # NeMo 2.7.3's RNNT transcribe() ends by unfreezing the encoder, decoder and joint, which
                # leaves them in training mode (dropout on).
                model.eval()
                if hyp_tokens(th) != hyp_tokens(hyp):
                    raise RuntimeError(f"{wav.name} {key}: transcribe() gives other tokens than encoder + decoding")
                cases[key]["transcribe_matches"] = True
            for mode in modes:
                skey = f"{mode}_{ctx[0]}_{ctx[1]}"
                cases[skey] = self._stream(arrays, skey, wav, ctx, STREAM_MODES[mode], mel)
        info["cases"] = cases
        return arrays, info

    def _stream(self, arrays: Dict[str, np.ndarray], key: str, wav: Path, ctx: Tuple[int, int],
                pad_and_drop_preencoded: bool, mel: Any) -> Dict[str, Any]:
        """NeMo's cache-aware streaming loop (the example script's perform_streaming, one stream).

        The model keeps its own decoding config (greedy_batch, max_symbols 10, loop_labels), which is
        what the example's default RNNTDecodingConfig selects too.
        """
        import torch
        from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

        model = self.model
        model.encoder.set_default_att_context_size(list(ctx))
        buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False,
                                                pad_and_drop_preencoded=pad_and_drop_preencoded)
        buffer.append_audio_file(str(wav), stream_id=-1)
        if not torch.equal(buffer.buffer, mel):
            raise RuntimeError(f"{key}: the streaming buffer's features differ from the preprocessor's")
        cache_last_channel, cache_last_time, cache_last_channel_len = model.encoder.get_initial_cache_state(
            batch_size=1, dtype=torch.float32)

        # Record each chunk's encoder output on its way from the encoder to the decoder.
        captured: List[Any] = []
        original_step = model.encoder.cache_aware_stream_step

        def capture(*args: Any, **kwargs: Any) -> Any:
            result = original_step(*args, **kwargs)
            captured.append(result[0][0, :, : int(result[1][0])].T.clone())
            return result

        starts: List[int] = []
        lengths: List[int] = []
        drops: List[int] = []
        token_counts: List[int] = []
        previous_hypotheses: Any = None
        pred_out = None
        chunks = iter(buffer)
        model.encoder.cache_aware_stream_step = capture
        try:
            while True:
                start = buffer.buffer_idx
                try:
                    chunk_audio, chunk_lengths = next(chunks)
                except StopIteration:
                    break
                step = len(starts)
                drop = 0 if step == 0 and not pad_and_drop_preencoded else model.encoder.streaming_cfg.drop_extra_pre_encoded
                (pred_out, _texts, cache_last_channel, cache_last_time, cache_last_channel_len,
                 previous_hypotheses) = model.conformer_stream_step(
                    processed_signal=chunk_audio, processed_signal_length=chunk_lengths,
                    cache_last_channel=cache_last_channel, cache_last_time=cache_last_time,
                    cache_last_channel_len=cache_last_channel_len, keep_all_outputs=buffer.is_buffer_empty(),
                    previous_hypotheses=previous_hypotheses, previous_pred_out=pred_out,
                    drop_extra_pre_encoded=drop, return_transcription=True)
                starts.append(start)
                lengths.append(int(chunk_lengths[0]))
                drops.append(int(drop))
                token_counts.append(len(hyp_tokens(previous_hypotheses[0])))
        finally:
            del model.encoder.cache_aware_stream_step  # back to the class's method
        hyp = previous_hypotheses[0]
        tokens = hyp_tokens(hyp)
        chunk_frames = [int(c.shape[0]) for c in captured]
        # The trace runs chunk by chunk too, carrying the decoder state as previous_hypotheses does;
        # after each chunk it must have emitted as many tokens as NeMo had.
        traced: List[int] = []
        frames, argmax, margins, probs = [], [], [], []
        carry, frame0 = None, 0
        for c, count in zip(captured, token_counts):
            emitted, step_frames, step_argmax, step_margins, step_probs, carry = self.tracer.run(c, carry, frame0)
            traced += emitted
            frames.append(step_frames)
            argmax.append(step_argmax)
            margins.append(step_margins)
            probs.append(step_probs)
            frame0 += c.shape[0]
            if len(traced) != count:
                raise RuntimeError(f"{key}: the greedy trace's per-chunk token counts differ from NeMo's")
        trace = (traced, np.concatenate(frames), np.concatenate(argmax), np.concatenate(margins), np.concatenate(probs))
        enc = torch.cat(captured)
        info = self._trace_case(arrays, key, enc, tokens, hyp.text, trace)
        arrays[f"{key}__chunk_mel_start"] = np.asarray(starts, np.int32)
        arrays[f"{key}__chunk_mel_len"] = np.asarray(lengths, np.int32)
        arrays[f"{key}__chunk_drop"] = np.asarray(drops, np.int32)
        arrays[f"{key}__chunk_enc_frames"] = np.asarray(chunk_frames, np.int32)
        arrays[f"{key}__chunk_tokens"] = np.diff(np.asarray([0] + token_counts, np.int32)).astype(np.int32)
        info["chunks"] = len(starts)
        return info


def streaming_geometry(model: Any, contexts: Sequence[Tuple[int, int]]) -> Dict[str, Any]:
    geometry = {}
    for ctx in contexts:
        model.encoder.set_default_att_context_size(list(ctx))
        cfg = model.encoder.streaming_cfg
        geometry[f"{ctx[0]}_{ctx[1]}"] = {
            name: getattr(cfg, name) for name in (
                "chunk_size", "shift_size", "pre_encode_cache_size", "drop_extra_pre_encoded",
                "cache_drop_size", "last_channel_cache_size", "valid_out_len")
        }
        geometry[f"{ctx[0]}_{ctx[1]}"]["sampling_frames"] = model.encoder.pre_encode.get_sampling_frames()
    return geometry


def plain(value: Any) -> Any:
    """JSON-safe copy of config values (OmegaConf containers, numpy and torch scalars)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def convert(nemo_path: Path, gguf_path: Path, python: Optional[str]) -> Optional[Dict[str, Any]]:
    """Converts with this project's converter in its own environment; skipped when none is available."""
    if python is None:
        try:
            import nemotron_cpp  # noqa: F401  (only to learn whether this interpreter has the package)
            python = sys.executable
        except ImportError:
            print("convert: skipped (nemotron_cpp is not importable here; pass --nemotron-python)")
            return None
    cmd = [python, "-m", "nemotron_cpp", "convert", str(nemo_path), str(gguf_path),
           "--layout", "nemo", "--type", "f32", "--force"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"convert failed ({shlex.join(cmd)}):\n{proc.stderr[-3000:]}")
    print(f"convert: wrote {gguf_path}")
    return {"command": shlex.join(cmd), "output": gguf_path.name, "seconds": round(time.time() - t0, 1)}


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), REPO)
    except ValueError:
        return str(path)


def parse_contexts(text: str) -> List[Tuple[int, int]]:
    out = []
    for item in text.split(";"):
        left, right = (int(x) for x in item.split(","))
        if (left, right) not in ALL_ATT_CONTEXTS:
            raise argparse.ArgumentTypeError(f"att_context_size {left},{right} is not one the model has")
        out.append((left, right))
    return out


def parse_override(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    import yaml

    return key, yaml.safe_load(value)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--nemo", type=Path, help="record this .nemo model")
    src.add_argument("--size", choices=sorted(SIZES), help="build a seeded random-weight model of this size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the built model (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], type=parse_override, metavar="KEY=VALUE",
                        help="change the model's config before recording, e.g. encoder.xscaling=true (a YAML value; "
                             "repeatable; recorded in the manifest as config_overrides)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="clips, contexts and modes (default: the size, else tiny)")
    parser.add_argument("--clips", help="comma-separated subset of the preset's clips")
    parser.add_argument("--att-context-sizes", type=parse_contexts,
                        help="e.g. '70,0;70,13' (default: the preset's)")
    parser.add_argument("--modes", help=f"comma-separated subset of {','.join(STREAM_MODES)} (default: the preset's)")
    parser.add_argument("--reuse-audio", action="store_true",
                        help="keep OUT's WAV files whose sha256 matches OUT/manifest.json instead of synthesising")
    parser.add_argument("--no-transcribe-check", action="store_true",
                        help="skip checking offline tokens against model.transcribe()")
    parser.add_argument("--nemotron-python", help="python with nemotron_cpp installed, for the conversion")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 for the tiny preset, where OpenMP only adds overhead; "
                             "else torch's default)")
    args = parser.parse_args(argv)

    t_start = time.time()
    preset = PRESETS[args.preset or args.size or "tiny"]
    clips = list(preset["clips"])
    if args.clips:
        wanted = args.clips.split(",")
        unknown = set(wanted) - {c.name for c in clips}
        if unknown:
            parser.error(f"unknown clips {sorted(unknown)}; the preset has {[c.name for c in clips]}")
        clips = [c for c in clips if c.name in wanted]
    contexts = args.att_context_sizes or list(preset["att_contexts"])
    modes = args.modes.split(",") if args.modes is not None else list(preset["modes"])
    if set(modes) - set(STREAM_MODES):
        parser.error(f"--modes: choose from {list(STREAM_MODES)}")
    args.out.mkdir(parents=True, exist_ok=True)

    reuse: Dict[str, str] = {}
    manifest_path = args.out / "manifest.json"
    if args.reuse_audio and manifest_path.exists():
        reuse = {c["name"]: c["sha256"] for c in json.loads(manifest_path.read_text())["clips"]}

    import torch
    import nemo
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    threads = args.threads or (1 if preset in (PRESETS["tiny"], PRESETS["tiny-xscaling"]) else None)
    if threads:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    t_import = time.time()

    audio = prepare_audio(clips, args.out, reuse)
    t_audio = time.time()

    model_meta: Dict[str, Any]
    if args.nemo is not None:
        nemo_path = args.nemo
        model_meta = {"source": display_path(nemo_path), "sha256": sha256_file(nemo_path)}
    else:
        tuning = {name: read_wav_int16(path) for name, path in audio.items()}
        missing = [c for c in TUNING_CLIPS if c.name not in tuning]
        if missing:
            with tempfile.TemporaryDirectory() as tmp:
                for name, path in prepare_audio(missing, Path(tmp), {}).items():
                    tuning[name] = read_wav_int16(path)
        nemo_path, model_meta = build_model(args.size, args.seed, args.out, [tuning[c.name] for c in TUNING_CLIPS])
        model_meta["source"] = "built by this script: " + nemo_path.name
    t_model = time.time()
    conversion = convert(nemo_path, args.out / "model.f32.gguf", args.nemotron_python) if args.size else None
    t_convert = time.time()

    # The references come from the saved file, so they describe exactly what a converter reads.
    overrides = dict(args.overrides)
    config = None
    if overrides:
        from omegaconf import OmegaConf

        config = EncDecRNNTBPEModel.restore_from(str(nemo_path), map_location="cpu", return_config=True)
        for key, value in overrides.items():
            OmegaConf.update(config, key, value)
    model = EncDecRNNTBPEModel.restore_from(str(nemo_path), map_location="cpu", override_config_path=config)
    model.eval()
    model.preprocessor.featurizer.dither = 0.0
    model.preprocessor.featurizer.pad_to = 0

    recorder = Recorder(model, check_transcribe=not args.no_transcribe_check)
    clip_entries = []
    t_ref = time.time()
    with torch.inference_mode():
        geometry = streaming_geometry(model, contexts)
        for clip in clips:
            t0 = time.time()
            arrays, info = recorder.clip(audio[clip.name], contexts, modes)
            npz = args.out / f"{clip.name}.npz"
            np.savez_compressed(npz, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
            entry = {"name": clip.name, "kind": clip.kind, "wav": audio[clip.name].name,
                     "sha256": sha256_file(audio[clip.name]), "npz": npz.name,
                     "synthesis": {k: v for k, v in asdict(clip).items() if k not in ("name", "kind") and v not in ("", None)},
                     **info, "seconds": round(time.time() - t0, 1)}
            clip_entries.append(entry)
            counts = ", ".join(f"{k} {v['tokens']}/{v['enc_frames']}" for k, v in info["cases"].items())
            print(f"{clip.name}: {info['samples'] / SAMPLE_RATE:.2f} s audio, {entry['seconds']} s; tokens/frames: {counts}")
            if clip.kind == "speech":
                silent = [k for k, v in info["cases"].items()
                          if v["tokens"] == 0 or (v["blank_steps"] == 0 and preset.get("blanks_expected", True))]
                if silent:
                    raise SystemExit(f"{clip.name}: cases {silent} emit no tokens or no blanks; the model proves nothing")
    t_end = time.time()

    from omegaconf import OmegaConf

    cfg = plain(OmegaConf.to_container(model.cfg, resolve=True))
    vocabulary = list(cfg["joint"].pop("vocabulary"))
    cfg.pop("labels", None)
    manifest = {
        "format": FORMAT_VERSION,
        "generator": "scripts/make_reference.py",
        "command": shlex.join(["python", "scripts/make_reference.py", *(sys.argv[1:] if argv is None else argv)]),
        "versions": {
            "nemo": nemo.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "espeak-ng": tool_version(["espeak-ng", "--version"]),
            "sox": tool_version(["sox", "--version"]),
        },
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "timing_seconds": {
            "import": round(t_import - t_start, 1), "audio": round(t_audio - t_import, 1),
            "build": round(t_model - t_audio, 1),
            "convert": round(t_convert - t_model, 1), "restore": round(t_ref - t_convert, 1),
            "references": round(t_end - t_ref, 1), "total": round(t_end - t_start, 1),
        },
        "model": {**model_meta, "blank_id": recorder.blank, "vocab_size": len(vocabulary),
                  "max_symbols": recorder.tracer.max_symbols, "n_layers": cfg["encoder"]["n_layers"],
                  "d_model": cfg["encoder"]["d_model"], "conversion": conversion, "config_overrides": overrides},
        "vocabulary": vocabulary,
        "config": cfg,
        "streaming": geometry,
        "att_contexts": [list(c) for c in contexts],
        "modes": {m: {"pad_and_drop_preencoded": STREAM_MODES[m]} for m in modes},
        "arrays": {
            "mel": "float32 [128, mel_frames]: the preprocessor's output; columns from mel_len on are pad (0.0)",
            "<case>__enc": "float32 [enc_frames, d_model]: encoder output, time-major; streaming: chunks concatenated",
            "<case>__tokens": "int32: NeMo's final token ids (the expected values)",
            "<case>__trace_frame / __trace_argmax / __trace_margin / __trace_confidence": (
                "one row per joint evaluation: encoder frame (int32), argmax id (int32, blank = blank_id), "
                "top-1 minus top-2 joint logit (float32, before log-softmax), softmax probability of the "
                "argmax (float32)"),
            "<stream case>__chunk_mel_start": "int32: buffer index (mel frame) where each chunk's new frames start",
            "<stream case>__chunk_mel_len": "int32: the chunk length NeMo passed (pre-encode cache frames included)",
            "<stream case>__chunk_drop": "int32: drop_extra_pre_encoded passed for each chunk",
            "<stream case>__chunk_enc_frames": "int32: encoder frames each chunk produced",
            "<stream case>__chunk_tokens": "int32: tokens NeMo emitted while decoding each chunk",
        },
        "cases": "offline_L_R: whole utterance; stream_L_R: NeMo's default streaming; "
                 "stream_pad_L_R: pad_and_drop_preencoded=True",
        "clips": clip_entries,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.suffix in (".wav", ".npz", ".json"))
    print(f"done in {t_end - t_start:.1f} s; {args.out}: {total / 1e6:.2f} MB of fixtures (wav, npz, json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
