#!/usr/bin/env python3
"""Trains the package's small demo model: a cache-aware FastConformer RNN-T, on the CPU, on espeak-ng speech.

Not part of the installed package. It runs in the NeMo environment of ``scripts/README.md``
(/tmp/nemo-venv) and needs ``espeak-ng``; nothing is downloaded.

Domain: smart-home voice commands (timers, alarms and clock times, lights/fans/heaters per room,
temperatures, volume, doors and blinds, phone numbers read digit by digit, a shopping list, a few
questions such as "what time is it"), produced by a seeded grammar over 170 words, so that
numbers and the command words recur constantly (mean 5.7 words, 11.2 BPE-128 tokens per utterance).

Audio: every utterance is spoken by espeak-ng with a random accent (8 English voices), voice variant,
speed (125-235 words per minute) and pitch (15-85), resampled to 16 kHz mono, scaled to a random peak
level (-20..-1 dBFS), padded with 0.05-0.5 s of leading and 0.1-0.6 s of trailing silence, and mixed
with light white or brown noise (SNR 12-45 dB, or a 60 dB floor). The held-out test set uses voice
variants that no training clip uses (``TEST_VARIANTS``).

Model: the architecture of nemotron-speech-streaming-en-0.6b (``make_reference.model_config``):
dw_striding x8 subsampling with causal downsampling, rel_pos attention with untied biases, no
xscaling, no biases, conv kernel 9, causal convolutions with layer norm, chunked_limited attention
with att_context_size [[70,13],[70,6],[70,1],[70,0]], 128-mel preprocessor with normalize "NA",
2-layer LSTM predictor, ReLU joint), reduced to ``--layers`` x ``--d-model`` (defaults 6 x 160,
4 heads, predictor/joint 160, 32 subsampling channels: 4.30 M parameters; d_model must be a multiple
of 32, or the converter leaves the weights in f16 instead of q8_0) and a SentencePiece BPE
vocabulary of ``--vocab`` pieces (default 128) trained on the grammar's text.

Training (a plain PyTorch loop over NeMo's modules, no Lightning): AdamW, linear warmup, a constant
learning rate, then a cosine decay over the last ``--decay-frac`` of ``--max-steps``; loss = RNN-T
(a vectorised log-space implementation, ``rnnt_loss``, which matches NeMo's numba RNN-T loss on a
random batch B=4, T=23, U=9, V=17: max |difference| 0 in the loss and 1.8e-5 in the gradient with
respect to the logits, see ``--check-loss``) +
``--ctc-weight`` x CTC of a linear head on the encoder output (the head helps alignment early and is
not exported). The first ``--ctx-mix-step`` steps use att_context_size [70,13] only; after that the
encoder draws one of the four contexts per batch (``--ctx-probs``), as NeMo does in training;
SpecAugment from ``--specaug-step``. Besides single commands, ``--multi-frac`` of the batches
(from ``--multi-step``) are clips of two or three commands by one speaker with pauses, and
``--long-frac`` (from ``--long-step``) long clips of LONG_COMMANDS commands, each by its own speaker,
so that the predictor learns to begin a new utterance after many tokens, as in a long live stream.
From ``--tel-step`` on, ``--tel-frac`` of all clips pass through a telephone channel (``telephone``:
8 kHz, optionally the 300-3400 Hz band and mu-law), so that 8 kHz audio, which reaches the model
with nothing above 4 kHz, is recognized too (the held-out clips through the same channel are
evaluated as ``tel_*``). Two changes of variables (``reparametrize``: standardised input
features and an xscaling-like gain on the subsampling output) make the model learn in minutes rather
than not at all; they are folded exactly into the weights of the exported model.

Output in ``--work`` (default /work/demo-train):

* ``data/``: ``train.jsonl`` + ``train.i16`` (all training audio, int16, one flat file),
  ``test/*.wav`` + ``test/manifest.jsonl`` (NeMo manifest: audio_filepath, duration, text + voice),
  ``tokenizer128/`` (SentencePiece model + vocab.txt as NeMo reads it; one per ``--vocab``),
  ``data.json`` (what was made);
* ``ckpt/last.pt`` (model, CTC head, optimiser, step, RNG states; written every ``--ckpt-minutes``)
  and ``ckpt/prev.pt``;
* ``log.jsonl``: one record per ``--log-every`` steps (wall time, step, epoch, losses, lr, grad norm,
  seconds per step) and eval records (greedy WER of NeMo's own decoding on the test set, offline,
  at att_context_size [70,13] and [70,1], every ``--eval-minutes``; all four at the end);
* ``model.nemo``: an ``EncDecRNNTBPEModel`` (plain RNN-T, dither 0), written at the end of a run
  and by ``--export``, with ``model_eval.json`` (WER per context and the hypotheses).

Usage:

    PY=/tmp/nemo-venv/bin/python
    $PY scripts/train_demo_model.py --check-loss             # RNN-T loss against NeMo's
    $PY scripts/train_demo_model.py --prepare                # data + tokenizer only
    setsid nohup nice -n 5 $PY scripts/train_demo_model.py \\
        > /work/demo-train/train.out 2>&1 &                  # train (prepares data first if needed)
    $PY scripts/train_demo_model.py --resume                 # continue (same schedule options)
    $PY scripts/train_demo_model.py --export                 # last checkpoint -> model.nemo + WER

Everything is seeded (``--seed``): the text, the voices, the noise, the tokenizer, the weights, the
batch order, dropout and the context draws; ``--resume`` restores the RNG states and the position in
the epoch, so a resumed run continues as an uninterrupted one would (up to floating point order).

Run time on the project's 2-core machine (two torch threads): data preparation (16000 training
clips, 10.9 h of audio; 4000 multi-command clips, 6.7 h; 1500 long clips, 9.7 h; 200 test clips)
about 9 minutes; training 0.31-0.35 s per step at batch 16 on a quiet machine, 0.6-1 s with
long clips (the default 10000 steps took about 124 minutes); an
evaluation of the test clips 10-30 s; the export (save, reload, WER at all four contexts, multi
and telephone) about a minute. In a 15-minute trial (6 x 144) the held-out greedy WER at
[70,13] went 90 % (3 min), 78 % (6), 70 % (9), 50 % (12), 45 % (14, 1940 steps).
See /work/demo-train/NOTES.md for the trials.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

SAMPLE_RATE = 16000
CONTEXTS: List[List[int]] = [[70, 13], [70, 6], [70, 1], [70, 0]]  # the encoder's order; [70,13] is its default
SCRIPTS = Path(__file__).resolve().parent

# --------------------------------------------------------------------------------------------------
# Text: a seeded grammar of smart-home commands

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "office", "hallway", "garage", "garden",
         "dining room", "basement"]
DEVICES = ["lights", "light", "lamp", "fan", "heater", "radio", "television", "speaker"]
OPENABLE = ["garage door", "front door", "back door", "blinds", "curtains", "window"]
LOCKABLE = ["front door", "back door", "garage door"]
ITEMS = ["milk", "eggs", "bread", "coffee", "apples", "butter", "cheese", "rice", "tea", "water"]
NAMES = ["mom", "dad", "anna", "peter", "grandma", "the office", "the doctor"]
DAYS = ["today", "tomorrow", "tonight", "this morning", "this evening", "on monday", "on friday", "on sunday"]


def say_number(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    rest = n % 100
    return ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + say_number(rest))


def say_time(rng: random.Random) -> str:
    hour = rng.randint(1, 12)
    kind = rng.random()
    if kind < 0.15:
        text = f"{rng.choice(['half past', 'quarter past', 'quarter to'])} {say_number(hour)}"
    else:
        minute = rng.choice([0, 0, 15, 30, 45, rng.randint(1, 59)])
        text = say_number(hour)
        if 1 <= minute <= 9:
            text += " oh " + ONES[minute]
        elif minute:
            text += " " + say_number(minute)
    r = rng.random()
    if r < 0.3:
        text += " " + rng.choice(["in the morning", "in the evening", "at night", "in the afternoon"])
    return text


def say_duration(rng: random.Random) -> str:
    unit = rng.choices(["minute", "second", "hour"], [6, 3, 1])[0]
    n = rng.choice([rng.randint(1, 10), rng.randint(1, 60), rng.randint(1, 99)] if unit != "hour" else [1, 2, 3, 4])
    text = f"{say_number(n)} {unit}{'' if n == 1 else 's'}"
    if unit == "minute" and rng.random() < 0.15:
        text += f" and {say_number(rng.randint(2, 59))} seconds"
    return text


def sentence(rng: random.Random) -> str:
    """One command of the domain."""
    room, device = rng.choice(ROOMS), rng.choice(DEVICES)
    on_off = rng.choice(["on", "off"])
    pct = say_number(rng.choice([rng.randint(1, 10) * 10, rng.randint(1, 100)]))
    kinds = [
        (10, lambda: f"set a timer for {say_duration(rng)}"),
        (3, lambda: f"set a {say_number(rng.randint(1, 60))} minute timer"),
        (3, lambda: rng.choice(["stop the timer", "cancel the timer", "how much time is left",
                                "how much time is left on the timer", "pause the timer"])),
        (5, lambda: f"set an alarm for {say_time(rng)}" + (f" {rng.choice(DAYS[1:2] + DAYS[5:])}" if rng.random() < 0.2 else "")),
        (5, lambda: f"wake me up at {say_time(rng)}"),
        (2, lambda: rng.choice(["cancel the alarm", "turn off the alarm", "snooze the alarm",
                                "snooze for " + say_duration(rng)])),
        (9, lambda: rng.choice([f"turn {on_off} the {room} {device}", f"switch {on_off} the {room} {device}",
                                f"turn the {room} {device} {on_off}", f"turn {on_off} the {device} in the {room}",
                                f"turn {on_off} all the lights", f"turn {on_off} the {device}"])),
        (4, lambda: rng.choice([f"dim the {room} lights to {pct} percent", f"set the {room} lights to {pct} percent",
                                f"make the {room} lights {rng.choice(['brighter', 'dimmer'])}",
                                f"set the brightness to {pct} percent"])),
        (5, lambda: rng.choice([f"set the temperature to {say_number(rng.randint(10, 30))} degrees",
                                f"set the {room} heater to {say_number(rng.randint(10, 30))} degrees",
                                f"make it {rng.choice(['warmer', 'cooler'])} in the {room}",
                                f"what is the temperature in the {room}",
                                f"what is the temperature {rng.choice(['outside', 'inside'])}"])),
        (6, lambda: rng.choice(["call number " + " ".join(ONES[rng.randint(0, 9)] for _ in range(rng.randint(3, 10))),
                                "dial " + " ".join(ONES[rng.randint(0, 9)] for _ in range(rng.randint(3, 7))),
                                f"call {rng.choice(NAMES)}", f"send a message to {rng.choice(NAMES)}"])),
        (4, lambda: rng.choice(["play some music", "play the next song", "play the last song", "pause the music",
                                "stop the music", "turn the volume up", "turn the volume down", "next song",
                                f"set the volume to {say_number(rng.randint(0, 10))}",
                                f"play music in the {room}", f"play the radio in the {room}"])),
        (4, lambda: rng.choice([f"{rng.choice(['open', 'close'])} the {rng.choice(OPENABLE)}",
                                f"{rng.choice(['lock', 'unlock'])} the {rng.choice(LOCKABLE)}",
                                f"is the {rng.choice(LOCKABLE)} locked", f"is the {rng.choice(OPENABLE)} open"])),
        (4, lambda: rng.choice(["what time is it", "what is the time", "what day is it today", "what is the date today",
                                f"what is the weather {rng.choice(DAYS)}", f"will it rain {rng.choice(DAYS)}",
                                "good morning", "good night", "thank you", "yes please", "no thank you", "stop",
                                "cancel that"])),
        (3, lambda: rng.choice([f"add {rng.choice(ITEMS)} to the shopping list",
                                f"add {rng.choice(ITEMS)} and {rng.choice(ITEMS)} to the shopping list",
                                f"remove {rng.choice(ITEMS)} from the shopping list", "what is on the shopping list",
                                f"remind me to buy {rng.choice(ITEMS)} in {say_duration(rng)}",
                                f"remind me to call {rng.choice(NAMES)} at {say_time(rng)}"])),
    ]
    weights = [w for w, _ in kinds]
    return rng.choices(kinds, weights)[0][1]()


def sentences(seed: int, n: int) -> List[str]:
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(n)]


# --------------------------------------------------------------------------------------------------
# Audio: espeak-ng voices

BASE_VOICES = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan",
               "en-gb-x-gbcwmd"]
# espeak-ng's voice variants (voices/!v) minus four that hardly sound like speech (whisper, whisperf,
# croak, Demonic) and one whose name has a space; TEST_VARIANTS are never used for training.
ALL_VARIANTS = (
    "Alex Alicia Andrea Andy Annie AnxiousAndy Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee Marco Mario "
    "Michael Mike Nguyen RicishayMax RicishayMax2 RicishayMax3 Storm Tweaky UniRobot adam anika anikaRobot "
    "announcer antonio aunty belinda benjamin boris caleb david ed edward edward2 f1 f2 f3 f4 f5 fast grandma "
    "grandpa gustave iven iven2 iven3 iven4 john kaukovalta klatt klatt2 klatt3 klatt4 klatt5 klatt6 linda m1 m2 "
    "m3 m4 m5 m6 m7 m8 marcelo max michel miguel norbert pablo paul pedro quincy rob robert robosoft robosoft2 "
    "robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 sandro shelby steph steph2 steph3 travis victor zac"
).split()
TEST_VARIANTS = ["m4", "f2", "klatt4", "Andy", "belinda", "david", "steph2", "iven3", "robosoft3", "Annie",
                 "grandpa", "michel"]
TRAIN_VARIANTS = [v for v in ALL_VARIANTS if v not in TEST_VARIANTS]
MULTI_PAUSE = (0.3, 1.6)  # seconds between the commands of a multi-command clip
LONG_COMMANDS = (4, 10)  # commands per long clip, each by its own speaker, as a live stream of many people hears them
N_TEST_MULTI = 50


def espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's speech as float64 samples at 16 kHz (polyphase resampling from its 22050 Hz)."""
    from scipy.signal import resample_poly

    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    rate = int.from_bytes(out[24:28], "little")
    data = out.index(b"data") + 8
    pcm = np.frombuffer(out[data:data + (len(out) - data) // 2 * 2], dtype="<i2").astype(np.float64)
    if rate != 22050:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected 22050")
    return resample_poly(pcm, 320, 441)  # 22050 * 320 / 441 = 16000


def speaker(rng: np.random.Generator, variants: Sequence[str]) -> Tuple[str, int, int]:
    """A random espeak-ng voice (accent + variant), speed and pitch."""
    voice = f"{BASE_VOICES[rng.integers(len(BASE_VOICES))]}+{variants[rng.integers(len(variants))]}"
    return voice, int(rng.integers(125, 236)), int(rng.integers(15, 86))


def finish(rng: np.random.Generator, speech: np.ndarray) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Level, leading and trailing silence and noise: the int16 clip."""
    peak_db = float(rng.uniform(-20, -1))
    speech = speech * (10 ** (peak_db / 20) * 32767 / max(np.abs(speech).max(), 1.0))
    lead, trail = int(rng.uniform(0.05, 0.5) * SAMPLE_RATE), int(rng.uniform(0.1, 0.6) * SAMPLE_RATE)
    x = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    snr = 60.0 if rng.random() < 0.15 else float(rng.uniform(12, 45))
    noise = rng.standard_normal(x.size)
    color = "white"
    if rng.random() < 0.4:  # brown-ish: leaky integration of white noise
        from scipy.signal import lfilter

        noise = lfilter([1.0], [1.0, -0.98], noise)
        color = "brown"
    power = np.mean(speech**2)
    x += noise * np.sqrt(power / 10 ** (snr / 10) / np.mean(noise**2))
    meta = {"peak_db": round(peak_db, 1), "snr_db": round(snr, 1), "noise": color}
    return np.clip(np.round(x), -32768, 32767).astype(np.int16), meta


def render(rng: np.random.Generator, text: str, variants: Sequence[str]) -> Tuple[np.ndarray, Dict[str, Any]]:
    """One command spoken by a random speaker."""
    voice, speed, pitch = speaker(rng, variants)
    clip, meta = finish(rng, espeak(text, voice, speed, pitch))
    return clip, {"voice": voice, "speed": speed, "pitch": pitch, **meta}


def render_multi(rng: np.random.Generator, texts: Sequence[str], variants: Sequence[str]) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Several commands by one speaker with pauses between them (MULTI_PAUSE seconds), as a live
    stream hears them: the model must go on recognizing after an utterance and a silence."""
    voice, speed, pitch = speaker(rng, variants)
    parts: List[np.ndarray] = []
    pauses = []
    for i, text in enumerate(texts):
        if i:
            pauses.append(round(float(rng.uniform(*MULTI_PAUSE)), 2))
            parts.append(np.zeros(int(pauses[-1] * SAMPLE_RATE)))
        parts.append(espeak(text, voice, speed, pitch))
    clip, meta = finish(rng, np.concatenate(parts))
    return clip, {"voice": voice, "speed": speed, "pitch": pitch, "pauses": pauses, **meta}


def write_wav(path: Path, samples: np.ndarray) -> None:
    make_reference().write_wav_int16(path, samples)


def read_wav(path: Path) -> np.ndarray:
    return make_reference().read_wav_int16(path)


def make_reference() -> Any:
    """scripts/make_reference.py (the architecture's config, WAV helpers), imported from beside this file."""
    sys.path.insert(0, str(SCRIPTS))
    import make_reference as module

    return module


def train_tokenizer(directory: Path, vocab_size: int, seed: int) -> None:
    """SentencePiece BPE on the grammar's text, with NeMo's flags (unk 0, no bos/eos/pad)."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences(seed + 7, 30000)), model_prefix=str(directory / "tokenizer"),
        vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0,
        hard_vocab_limit=True, shuffle_input_sentence=False, num_threads=1, minloglevel=2,
    )
    pieces = [line.split("\t")[0] for line in (directory / "tokenizer.vocab").read_text(encoding="utf-8").splitlines()]
    # vocab.txt as NeMo's tokenizer script writes it: word-initial pieces without the marker, others "##".
    vocab = [p[1:] or p if p.startswith("\u2581") else f"##{p}" for p in pieces if p != "<unk>"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def prepare(data: Path, seed: int, n_train: int, n_test: int, vocab: int) -> Path:
    """Makes the clips (once per data directory) and a tokenizer of ``vocab`` pieces; returns its directory."""
    spec = {"seed": seed, "n_train": n_train, "n_test": n_test, "format": 1}
    done = data / "data.json"
    tok_dir = data / f"tokenizer{vocab}"
    if not (tok_dir / "tokenizer.model").exists():
        train_tokenizer(tok_dir, vocab, seed)
    if done.exists():
        have = json.loads(done.read_text())
        if have["spec"] != spec:
            raise SystemExit(f"{data} was made with {have['spec']}, not {spec}: use another --data")
        return tok_dir
    t0 = time.time()
    (data / "test").mkdir(parents=True, exist_ok=True)
    # Test texts come from their own stream; a test sentence may also occur among the training texts
    # (short commands such as "what time is it" recur), the voice variant never does.
    texts = sentences(seed, n_train)
    rng = np.random.default_rng([seed, 1])
    with open(data / "train.i16", "wb") as audio, open(data / "train.jsonl", "w") as index:
        offset = 0
        for i, text in enumerate(texts):
            samples, meta = render(rng, text, TRAIN_VARIANTS)
            audio.write(samples.astype("<i2").tobytes())
            index.write(json.dumps({"offset": offset, "samples": int(samples.size), "text": text, **meta}) + "\n")
            offset += samples.size
            if (i + 1) % 1000 == 0:
                print(f"prepare: {i + 1}/{n_train} training clips, {time.time() - t0:.0f} s", flush=True)
    rng = np.random.default_rng([seed, 2])
    with open(data / "test" / "manifest.jsonl", "w") as manifest:
        for i, text in enumerate(sentences(seed + 1, n_test)):
            samples, meta = render(rng, text, TEST_VARIANTS)
            path = data / "test" / f"test_{i:04d}.wav"
            write_wav(path, samples)
            manifest.write(json.dumps({"audio_filepath": str(path), "duration": round(samples.size / SAMPLE_RATE, 4),
                                       "text": text, **meta}) + "\n")
    total = sum(json.loads(line)["samples"] for line in open(data / "train.jsonl")) / SAMPLE_RATE
    words = sorted({w for t in texts for w in t.split()})
    info = {"spec": spec, "train_hours": round(total / 3600, 2), "words": len(words), "vocabulary": words,
            "train_variants": TRAIN_VARIANTS, "test_variants": TEST_VARIANTS, "base_voices": BASE_VOICES,
            "seconds": round(time.time() - t0, 1),
            "espeak_ng": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()}
    done.write_text(json.dumps(info, indent=1) + "\n")
    print(f"prepare: {n_train} training clips ({info['train_hours']} h), {n_test} test clips, {len(words)} words, "
          f"{info['seconds']} s", flush=True)
    return tok_dir


def prepare_multi(data: Path, seed: int, n_clips: int, kind: str = "multi") -> None:
    """Makes ``n_clips`` clips of several commands (once per data directory): ``{kind}.i16`` + ``{kind}.jsonl``.

    "multi": two or three commands by one speaker with MULTI_PAUSE pauses between them; "long":
    LONG_COMMANDS commands, each spoken by its own speaker with its own level, noise and silences
    around it (as the held-out long stream is made), with the same pauses between them. Long clips
    teach the predictor to start a new utterance after many tokens of earlier ones."""
    spec = {"seed": seed, f"n_{kind}": n_clips, "pause": list(MULTI_PAUSE), "format": 1}
    if kind == "long":
        spec["commands"] = list(LONG_COMMANDS)
    done = data / f"{kind}.json"
    if done.exists():
        have = json.loads(done.read_text())
        if have["spec"] != spec:
            raise SystemExit(f"{data} has {kind} clips made with {have['spec']}, not {spec}")
        return
    t0 = time.time()
    salt = {"multi": 3, "long": 11}[kind]
    text_rng = random.Random(seed + salt)
    rng = np.random.default_rng([seed, salt])
    with open(data / f"{kind}.i16", "wb") as audio, open(data / f"{kind}.jsonl", "w") as index:
        offset = 0
        for i in range(n_clips):
            if kind == "multi":
                texts = [sentence(text_rng) for _ in range(2 if text_rng.random() < 0.7 else 3)]
                samples, meta = render_multi(rng, texts, TRAIN_VARIANTS)
            else:
                texts = [sentence(text_rng) for _ in range(text_rng.randint(*LONG_COMMANDS))]
                parts, voices = [], []
                for j, text in enumerate(texts):
                    if j:
                        parts.append(np.zeros(int(rng.uniform(*MULTI_PAUSE) * SAMPLE_RATE), dtype=np.int16))
                    clip, clip_meta = render(rng, text, TRAIN_VARIANTS)
                    parts.append(clip)
                    voices.append(clip_meta["voice"])
                samples, meta = np.concatenate(parts), {"voices": voices}
            audio.write(samples.astype("<i2").tobytes())
            index.write(json.dumps({"offset": offset, "samples": int(samples.size), "text": " ".join(texts),
                                    **meta}) + "\n")
            offset += samples.size
            if (i + 1) % 500 == 0:
                print(f"prepare: {i + 1}/{n_clips} {kind} clips, {time.time() - t0:.0f} s", flush=True)
    hours = offset / SAMPLE_RATE / 3600
    done.write_text(json.dumps({"spec": spec, "hours": round(hours, 2), "seconds": round(time.time() - t0, 1)}) + "\n")
    print(f"prepare: {n_clips} {kind} clips ({hours:.2f} h) in {time.time() - t0:.0f} s", flush=True)


def telephone(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """``x`` (16 kHz) as it arrives through a telephone line and back to 16 kHz: at 8 kHz, optionally
    band-limited to 300-3400 Hz first and optionally G.711 mu-law coded (8 bits) at 8 kHz. A user's
    8 kHz audio reaches the model upsampled the same way, so it sees nothing above 4 kHz."""
    from scipy.signal import butter, resample_poly, sosfilt

    kind = int(rng.integers(3))  # 0: 8 kHz; 1: + telephone band; 2: + telephone band + mu-law
    if kind >= 1:
        x = sosfilt(butter(4, [300, 3400], btype="band", fs=SAMPLE_RATE, output="sos"), x)
    y = resample_poly(x, 1, 2)
    if kind == 2:
        mu = 255.0
        v = np.clip(y / 32768.0, -1.0, 1.0)
        code = np.round(np.sign(v) * np.log1p(mu * np.abs(v)) / np.log1p(mu) * 127) / 127
        y = np.sign(code) * np.expm1(np.abs(code) * np.log1p(mu)) / mu * 32768.0
    return resample_poly(y, 2, 1)[: x.size]


def prepare_test_multi(data: Path, seed: int) -> List[Dict[str, Any]]:
    """The held-out multi-command clips (voice variants never used in training), made once; with their audio."""
    manifest = data / "test_multi" / "manifest.jsonl"
    if not manifest.exists():
        (data / "test_multi").mkdir(exist_ok=True)
        text_rng, rng = random.Random(seed + 5), np.random.default_rng([seed, 5])
        with open(manifest.with_suffix(".tmp"), "w") as out:
            for i in range(N_TEST_MULTI):
                texts = [sentence(text_rng) for _ in range(2 if text_rng.random() < 0.7 else 3)]
                samples, meta = render_multi(rng, texts, TEST_VARIANTS)
                path = data / "test_multi" / f"multi_{i:03d}.wav"
                write_wav(path, samples)
                out.write(json.dumps({"audio_filepath": str(path), "duration": round(samples.size / SAMPLE_RATE, 4),
                                      "text": " ".join(texts), "commands": texts, **meta}) + "\n")
        manifest.with_suffix(".tmp").rename(manifest)
    test = [json.loads(line) for line in open(manifest)]
    for x in test:
        x["audio"] = read_wav(Path(x["audio_filepath"]))
    return test


# --------------------------------------------------------------------------------------------------
# Losses


def rnnt_loss(log_probs: Any, targets: Any, t_len: Any, u_len: Any, blank: int) -> Any:
    """Per-utterance RNN-T negative log-likelihood, -log P(y|x), from log-probabilities [B, T, U+1, V+1].

    The forward variable alpha(t, u) is computed one anti-diagonal n = t + u at a time, so every step is a
    few element-wise operations on [B, U+1]; gradients come from autograd. Cells outside the lattice of
    an utterance hold garbage that never reaches a cell inside it (alpha(t, u) depends on t' <= t, u' <= u)
    and cells with t < 0 or t >= T are reset to a large negative constant (not -inf, whose gradient is NaN).
    """
    import torch

    B, T, U1, _ = log_probs.shape
    U = U1 - 1
    neg = -1e4
    blank_lp = log_probs[..., blank]  # [B, T, U+1]
    if U > 0:
        label_lp = log_probs[:, :, :U, :].gather(3, targets[:, None, :U, None].expand(B, T, U, 1)).squeeze(3)
    else:
        label_lp = log_probs.new_zeros(B, T, 0)
    N = T + U  # diagonals 0 .. T+U-1
    n = torch.arange(N)[:, None]
    u = torch.arange(U1)[None, :]
    t = n - u  # [N, U+1]
    valid = (t >= 0) & (t < T)
    tc = t.clamp(0, T - 1)
    blank_sk = torch.where(valid, blank_lp[:, tc, u.expand(N, U1)], torch.tensor(neg))  # [B, N, U+1]
    label_sk = torch.where(valid[:, :U], label_lp[:, tc[:, :U], u[:, :U].expand(N, U)], torch.tensor(neg))
    alpha = torch.where(valid[0], torch.zeros(B, U1), torch.tensor(neg))  # diagonal 0: only (0, 0)
    alphas = [alpha]
    pad = log_probs.new_full((B, 1), neg)
    for k in range(1, N):
        stay = alpha + blank_sk[:, k - 1]  # (t-1, u) -> (t, u): blank
        move = torch.cat([pad, alpha[:, :U] + label_sk[:, k - 1]], dim=1)  # (t, u-1) -> (t, u): label u-1
        alpha = torch.where(valid[k], torch.logaddexp(stay, move), torch.tensor(neg))
        alphas.append(alpha)
    alphas_t = torch.stack(alphas, dim=1)  # [B, N, U+1]
    b = torch.arange(B)
    last = alphas_t[b, t_len - 1 + u_len, u_len] + blank_lp[b, t_len - 1, u_len]
    return -last


def check_loss(seed: int) -> None:
    """Compares rnnt_loss with NeMo's default (numba) RNN-T loss on a random batch: losses and gradients."""
    import torch
    from nemo.collections.asr.losses.rnnt import RNNTLoss

    torch.manual_seed(seed)
    B, T, U, V = 4, 23, 9, 17
    logits = torch.randn(B, T, U + 1, V + 1, dtype=torch.float32) * 2
    targets = torch.randint(0, V, (B, U))
    t_len = torch.tensor([23, 20, 11, 23])
    u_len = torch.tensor([9, 7, 3, 0])
    results = {}
    for name in ("ours", "nemo"):
        x = logits.clone().requires_grad_(True)
        lp = x.log_softmax(-1)
        if name == "ours":
            loss = rnnt_loss(lp, targets, t_len, u_len, blank=V)
        else:
            loss = RNNTLoss(num_classes=V, reduction=None, loss_name="default")(
                log_probs=lp, targets=targets, input_lengths=t_len, target_lengths=u_len)
        loss.sum().backward()
        results[name] = (loss.detach(), x.grad.detach())
    (l1, g1), (l2, g2) = results["ours"], results["nemo"]
    print(f"check-loss: ours {l1.tolist()}\n            nemo {l2.tolist()}")
    print(f"check-loss: max |loss difference| {float((l1 - l2).abs().max()):.3g}, "
          f"max |gradient difference| {float((g1 - g2).abs().max()):.3g}")


# --------------------------------------------------------------------------------------------------
# Model


def build_model(args: argparse.Namespace, tok_dir: Path) -> Any:
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    mr = make_reference()

    size = mr.Size(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads,
                               subsampling_channels=args.sub_channels, pred_hidden=args.pred_hidden,
                               joint_hidden=args.pred_hidden, vocab=args.vocab, tokens_per_frame=0.0)
    cfg = mr.model_config(size, tok_dir)
    if [list(c) for c in cfg["encoder"]["att_context_size"]] != CONTEXTS:
        raise RuntimeError(f"unexpected att_context_size order {cfg['encoder']['att_context_size']}")
    enc = cfg["encoder"]
    enc["dropout"], enc["dropout_pre_encoder"], enc["dropout_att"] = args.dropout, args.dropout, args.dropout
    cfg["decoder"]["prednet"]["dropout"] = args.dropout
    cfg["joint"]["jointnet"]["dropout"] = args.dropout
    cfg["decoding"]["greedy"]["max_symbols"] = 10
    model = EncDecRNNTBPEModel(cfg=OmegaConf.create(cfg))
    if model.tokenizer.vocab_size != args.vocab:
        raise RuntimeError(f"tokenizer has {model.tokenizer.vocab_size} pieces, expected {args.vocab}")
    return model


# Mean and standard deviation of the log-mel features (normalize "NA") over 64 training clips.
MEL_MEAN, MEL_STD = -11.6, 3.5


def _norm_conv_weights(conv: Any) -> Tuple[Any, Any]:
    """The weights that make conv(raw x) equal conv_trained((x - MEL_MEAN) / MEL_STD) inside the input."""
    w = conv.weight / MEL_STD
    return w, conv.bias - MEL_MEAN * w.sum(dim=(1, 2, 3))


def reparametrize(model: Any, training: bool, xscale: float) -> None:
    """Two changes of variables that make the model trainable in minutes, folded away for export.

    The exported architecture takes raw log-mel features (normalize "NA", here mean -11.6, std 3.5) and
    has no xscaling. Trained that way from scratch, the conformer stack washes out the input: at
    initialisation the subsampling output has an rms of 0.06, mostly a constant vector, against
    module outputs of rms ~1, and after 1400 steps the difference between two clips' encoder outputs
    had shrunk 1000-fold through 4 layers while the predictor learned the grammar alone. So, while
    training (training=True), the first subsampling conv sees standardised features and the
    subsampling output is multiplied by ``xscale`` (as NeMo's xscaling by sqrt(d_model) would do).
    training=False folds both into the weights (first conv: w/s and b - m*sum(w)/s; output linear:
    times xscale), which leaves NeMo's plain modules computing the same function of the raw features,
    zero padding included; that is what is exported.
    """
    import types

    import torch

    conv = model.encoder.pre_encode.conv[0]
    out = model.encoder.pre_encode.out
    if training:
        def forward(self: Any, x: Any) -> Any:
            x = torch.nn.functional.pad(x, (self._left_padding, self._right_padding,
                                            self._left_padding, self._right_padding))
            w, b = _norm_conv_weights(self)
            return torch.nn.functional.conv2d(x, w, b, self.stride, 0, self.dilation, self.groups)

        conv.forward = types.MethodType(forward, conv)
        out.forward = types.MethodType(lambda self, x: torch.nn.functional.linear(x, self.weight * xscale,
                                                                                  self.bias * xscale), out)
    else:
        with torch.no_grad():
            w, b = _norm_conv_weights(conv)
            conv.weight.copy_(w)
            conv.bias.copy_(b)
            out.weight.mul_(xscale)
            out.bias.mul_(xscale)
        del conv.forward
        del out.forward


def word_errors(ref: str, hyp: str) -> Tuple[int, int]:
    r, h = ref.split(), hyp.split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)], len(r)


def evaluate(model: Any, test: List[Dict[str, Any]], contexts: Sequence[Sequence[int]],
             batch_size: int = 25) -> Dict[str, Any]:
    """Greedy WER of NeMo's own batched greedy decoding, offline (whole utterance) at each att_context_size."""
    import torch

    was_training = model.training
    model.eval()
    out: Dict[str, Any] = {}
    try:
        with torch.inference_mode():
            for ctx in contexts:
                model.encoder.set_default_att_context_size(list(ctx))
                hyps: List[str] = []
                for i in range(0, len(test), batch_size):
                    batch = test[i:i + batch_size]
                    signal, length = pad_batch([x["audio"] for x in batch])
                    mel, mel_len = model.preprocessor(input_signal=signal, length=length)
                    enc, enc_len = model.encoder(audio_signal=mel, length=mel_len)
                    for h in model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len):
                        hyps.append(h.text if hasattr(h, "text") else str(h))
                errors = words = 0
                for x, h in zip(test, hyps):
                    e, n = word_errors(x["text"], h)
                    errors, words = errors + e, words + n
                key = f"{ctx[0]}_{ctx[1]}"
                out[f"wer_{key}"] = round(100.0 * errors / words, 2)
                out[f"empty_{key}"] = sum(1 for h in hyps if not h.strip())
                out[f"hyps_{key}"] = hyps
    finally:
        model.encoder.set_default_att_context_size(CONTEXTS[0])
        model.train(was_training)
    return out


def telephone_test(test: List[Dict[str, Any]], seed: int) -> List[Dict[str, Any]]:
    """The held-out clips through the telephone channel (one fixed draw per clip)."""
    return [{**x, "audio": telephone(np.random.default_rng([seed, 500, i]), x["audio"].astype(np.float64))}
            for i, x in enumerate(test)]


def pad_batch(clips: Sequence[np.ndarray]) -> Tuple[Any, Any]:
    import torch

    length = torch.tensor([c.size for c in clips])
    signal = torch.zeros(len(clips), int(length.max()))
    for i, c in enumerate(clips):
        signal[i, : c.size] = torch.from_numpy(c.astype(np.float32) / 32768.0)
    return signal, length


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> List[np.ndarray]:
    """Batches of similar length: shuffle, sort within windows of 50 batches, cut, shuffle the batches."""
    rng = np.random.default_rng([seed, 100, epoch])
    perm = rng.permutation(lengths.size)
    window = batch_size * 50
    batches = []
    for i in range(0, perm.size, window):
        chunk = perm[i:i + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[j:j + batch_size] for j in range(0, chunk.size, batch_size))
    order = rng.permutation(len(batches))
    return [batches[k] for k in order]


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    decay_start = int(args.max_steps * (1 - args.decay_frac))
    if step < decay_start:
        return args.lr
    frac = min(1.0, (step - decay_start) / max(1, args.max_steps - decay_start))
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * frac))


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    if path.exists():
        os.replace(path, path.with_name("prev.pt"))
    os.replace(tmp, path)


def export(model: Any, args: argparse.Namespace, test: List[Dict[str, Any]], log: Any) -> None:
    """Saves the RNN-T model as model.nemo (dither 0, default context [70,13]) and its test WER."""
    reparametrize(model, False, args.xscale)
    model.eval()
    model.preprocessor.featurizer.dither = 0.0
    model.encoder.set_default_att_context_size(CONTEXTS[0])
    work = args.work
    path = work / "model.nemo"
    model.save_to(str(path))
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    # The WER is measured on the saved file, as a user of the .nemo would load it.
    model = EncDecRNNTBPEModel.restore_from(str(path), map_location="cpu")
    res = evaluate(model, test, CONTEXTS)
    if args.n_multi:  # several commands with pauses between them in one recording, as a live stream hears them
        multi = evaluate(model, prepare_test_multi(args.data or args.work / "data", args.seed), CONTEXTS)
        res.update({f"multi_{k}": v for k, v in multi.items() if not k.startswith("hyps")})
    if args.tel_frac:
        tel = evaluate(model, telephone_test(test, args.seed), CONTEXTS)
        res.update({f"tel_{k}": v for k, v in tel.items() if not k.startswith("hyps")})
    params = sum(p.numel() for p in model.parameters())
    summary = {k: v for k, v in res.items() if not k.startswith("hyps")}
    (work / "model_eval.json").write_text(json.dumps(
        {"nemo": str(path), "parameters": params, **summary,
         "examples": [{"ref": x["text"], **{k[5:]: res[k][i] for k in res if k.startswith("hyps")}}
                      for i, x in enumerate(test)]}, indent=1) + "\n")
    log({"event": "export", "nemo": str(path), "parameters": params, **summary})
    print(f"export: {path} ({path.stat().st_size / 1e6:.1f} MB, {params} parameters); WER {summary}", flush=True)


SCHEDULE_ARGS = ("batch", "lr", "lr_min", "warmup", "decay_frac", "max_steps", "ctc_weight", "ctx_mix_step", "ctx_probs",
                 "specaug_step", "short_steps", "short_frac", "weight_decay", "clip", "seed", "n_multi", "multi_step",
                 "multi_frac", "multi_batch", "n_long", "long_step", "long_frac", "long_batch", "tel_frac", "tel_step")
ARCH_ARGS = ("vocab", "layers", "d_model", "heads", "sub_channels", "pred_hidden", "dropout", "xscale")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/work/demo-train"), help="work directory (default %(default)s)")
    p.add_argument("--data", type=Path, help="data directory (default WORK/data; several runs may share one)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--prepare", action="store_true", help="only make the data and the tokenizer")
    p.add_argument("--check-loss", action="store_true", help="only compare rnnt_loss with NeMo's")
    p.add_argument("--export", action="store_true", help="only export the last checkpoint (model.nemo + WER)")
    p.add_argument("--resume", action="store_true", help="continue from WORK/ckpt/last.pt")
    p.add_argument("--n-train", type=int, default=16000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--vocab", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=160, help="a multiple of 32, so that q8_0 applies")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--sub-channels", type=int, default=32)
    p.add_argument("--pred-hidden", type=int, default=160, help="predictor and joint hidden size")
    p.add_argument("--xscale", type=float, help="training-time scale of the subsampling output, folded away on "
                   "export (see reparametrize; default sqrt(d_model))")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--lr-min", type=float, default=5e-5)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--decay-frac", type=float, default=0.4, help="cosine decay over this last part of --max-steps")
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    p.add_argument("--ctc-weight", type=float, default=0.5)
    p.add_argument("--ctx-mix-step", type=int, default=3000, help="before this step train at [70,13] only")
    p.add_argument("--ctx-probs", default="0.4,0.2,0.2,0.2", help="probabilities of [70,13],[70,6],[70,1],[70,0] after")
    p.add_argument("--specaug-step", type=int, default=4000, help="SpecAugment from this step on (-1: never)")
    p.add_argument("--short-steps", type=int, default=0,
                   help="curriculum: the first steps draw from the shortest --short-frac of the clips only")
    p.add_argument("--short-frac", type=float, default=0.3)
    p.add_argument("--n-multi", type=int, default=4000, help="clips of two or three commands with pauses")
    p.add_argument("--multi-step", type=int, default=1443, help="from this step on, --multi-frac of the batches are "
                   "multi-command clips (the long run took them up when it was resumed at step 1443)")
    p.add_argument("--multi-frac", type=float, default=0.25)
    p.add_argument("--multi-batch", type=int, default=8, help="batch size of the (longer) multi-command clips")
    p.add_argument("--n-long", type=int, default=1500, help="clips of LONG_COMMANDS commands by as many speakers")
    p.add_argument("--long-step", type=int, default=3000, help="from this step on, --long-frac of the batches are long clips")
    p.add_argument("--long-frac", type=float, default=0.15)
    p.add_argument("--long-batch", type=int, default=4, help="batch size of the long clips")
    p.add_argument("--tel-step", type=int, default=3000, help="from this step on, --tel-frac of the clips of every "
                   "batch go through a telephone channel (see telephone)")
    p.add_argument("--tel-frac", type=float, default=0.3)
    p.add_argument("--max-steps", type=int, default=10000)
    p.add_argument("--max-minutes", type=float, default=600.0, help="stop (checkpoint + export) after this much time")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-minutes", type=float, default=10.0)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--no-export", action="store_true", help="do not write model.nemo at the end of the run")
    args = p.parse_args(argv)
    if args.xscale is None:
        args.xscale = math.sqrt(args.d_model)

    # libgomp's threads spin for a long time before they sleep: with another process on one of the two
    # cores a step took 2.9 s instead of 0.31; with spinning cut short, 0.6 (and 0.33 when quiet).
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.check_loss:
        check_loss(args.seed)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or args.work / "data"
    tok_dir = prepare(data, args.seed, args.n_train, args.n_test, args.vocab)
    if args.n_multi:
        prepare_multi(data, args.seed, args.n_multi)
    if args.n_long:
        prepare_multi(data, args.seed, args.n_long, "long")
    if args.prepare:
        return 0

    index = [json.loads(line) for line in open(data / "train.jsonl")]
    audio = np.memmap(data / "train.i16", dtype="<i2", mode="r")
    lengths = np.array([x["samples"] for x in index])
    multi_index = [json.loads(line) for line in open(data / "multi.jsonl")] if args.n_multi else []
    multi_audio = np.memmap(data / "multi.i16", dtype="<i2", mode="r") if args.n_multi else None
    multi_lengths = np.array([x["samples"] for x in multi_index])
    long_index = [json.loads(line) for line in open(data / "long.jsonl")] if args.n_long else []
    long_audio = np.memmap(data / "long.i16", dtype="<i2", mode="r") if args.n_long else None
    long_lengths = np.array([x["samples"] for x in long_index])
    test_multi = prepare_test_multi(data, args.seed) if args.n_multi else []
    test = [json.loads(line) for line in open(data / "test" / "manifest.jsonl")]
    for x in test:
        x["audio"] = read_wav(Path(x["audio_filepath"]))
    test_tel = telephone_test(test[:100], args.seed) if args.tel_frac else []
    log_path = args.work / "log.jsonl"
    log_file = open(log_path, "a")
    t_start = time.time()

    def log(rec: Dict[str, Any]) -> None:
        log_file.write(json.dumps({"time": round(time.time(), 1), **rec}) + "\n")
        log_file.flush()

    ckpt_dir = args.work / "ckpt"
    ckpt_dir.mkdir(exist_ok=True)
    ck = None
    if args.resume or args.export:
        ck = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=False)
        for key in ARCH_ARGS:  # the checkpoint's architecture wins over the command line
            setattr(args, key, ck["args"][key])
        changed = {k: (ck["args"].get(k), v) for k, v in vars(args).items()
                   if k in SCHEDULE_ARGS and ck["args"].get(k) != v}
        if changed and not args.export:
            print(f"resume: schedule options differ from the checkpoint's (old, new): {changed}", flush=True)
        tok_dir = prepare(data, args.seed, args.n_train, args.n_test, args.vocab)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = build_model(args, tok_dir)
    reparametrize(model, True, args.xscale)
    blank = model.decoder.blank_idx
    ctc_head = torch.nn.Linear(args.d_model, blank + 1)
    params = list(model.parameters()) + list(ctc_head.parameters())
    decay = [q for q in params if q.ndim >= 2]
    no_decay = [q for q in params if q.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    from nemo.collections.asr.modules import SpectrogramAugmentation

    specaug = SpectrogramAugmentation(freq_masks=2, freq_width=15, time_masks=2, time_width=0.05)
    step, epoch, pos, train_seconds = 0, 0, 0, 0.0
    multi_epoch, multi_pos = 0, 0
    long_epoch, long_pos = 0, 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        ctc_head.load_state_dict(ck["ctc_head"])
        opt.load_state_dict(ck["opt"])
        step, epoch, pos, train_seconds = ck["step"], ck["epoch"], ck["pos"], ck["train_seconds"]
        multi_epoch, multi_pos = ck.get("multi_epoch", 0), ck.get("multi_pos", 0)
        long_epoch, long_pos = ck.get("long_epoch", 0), ck.get("long_pos", 0)
        torch.set_rng_state(ck["torch_rng"])
        random.setstate(ck["py_rng"])
        np.random.set_state(ck["np_rng"])
        print(f"resumed at step {step} (epoch {epoch}, batch {pos}, {train_seconds / 60:.1f} min trained)", flush=True)
    n_params = sum(q.numel() for q in model.parameters())
    if args.export:
        export(model, args, test, log)
        return 0
    log({"event": "start", "step": step, "args": {k: str(v) for k, v in vars(args).items()}, "parameters": n_params,
         "ctc_head_parameters": sum(q.numel() for q in ctc_head.parameters())})
    print(f"model: {n_params} parameters (+ CTC head), vocab {blank}, {len(index)} training clips", flush=True)

    ctx_probs = [float(x) for x in args.ctx_probs.split(",")]
    model.train()
    batches = epoch_batches(lengths, args.batch, args.seed, epoch)
    multi_batches = epoch_batches(multi_lengths, args.multi_batch, args.seed + 1, multi_epoch) if args.n_multi else []
    long_batches = epoch_batches(long_lengths, args.long_batch, args.seed + 2, long_epoch) if args.n_long else []
    short = np.flatnonzero(lengths <= np.quantile(lengths, args.short_frac))
    short_batches = [short[b] for b in epoch_batches(lengths[short], args.batch, args.seed, 10**6)]
    last_eval = last_ckpt = time.time()
    if step == 0:
        res = evaluate(model, test[:50], [CONTEXTS[0]])
        log({"event": "eval", "step": 0, "train_minutes": 0.0, **{k: v for k, v in res.items() if not k.startswith("hyps")}})
    acc: Dict[str, float] = {"rnnt": 0.0, "ctc": 0.0, "n": 0, "sec": 0.0, "gn": 0.0}

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir / "last.pt", {
            "model": model.state_dict(), "ctc_head": ctc_head.state_dict(), "opt": opt.state_dict(),
            "step": step, "epoch": epoch, "pos": pos, "train_seconds": train_seconds,
            "multi_epoch": multi_epoch, "multi_pos": multi_pos, "long_epoch": long_epoch, "long_pos": long_pos,
            "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(), "np_rng": np.random.get_state(),
            "args": vars(args)})

    while step < args.max_steps and (time.time() - t_start) / 60 < args.max_minutes:
        t0 = time.time()
        # Whether this step trains on multi-command or long clips: a draw fixed by the step, so resuming repeats it.
        draw = np.random.default_rng([args.seed, 300, step]).random()
        multi = args.n_multi > 0 and step >= args.multi_step and draw < args.multi_frac
        long = (not multi and args.n_long > 0 and step >= args.long_step
                and args.multi_frac <= draw < args.multi_frac + args.long_frac)
        if long:
            if long_pos >= len(long_batches):
                long_epoch, long_pos = long_epoch + 1, 0
                long_batches = epoch_batches(long_lengths, args.long_batch, args.seed + 2, long_epoch)
            ids = long_batches[long_pos]
            long_pos += 1
        elif multi:
            if multi_pos >= len(multi_batches):
                multi_epoch, multi_pos = multi_epoch + 1, 0
                multi_batches = epoch_batches(multi_lengths, args.multi_batch, args.seed + 1, multi_epoch)
            ids = multi_batches[multi_pos]
            multi_pos += 1
        elif step < args.short_steps:  # curriculum: the shortest clips only, in an order fixed by the step
            ids = short_batches[step % len(short_batches)]
        else:
            if pos >= len(batches):
                epoch, pos = epoch + 1, 0
                batches = epoch_batches(lengths, args.batch, args.seed, epoch)
            ids = batches[pos]
            pos += 1
        model.encoder.att_context_probs = [1.0, 0.0, 0.0, 0.0] if step < args.ctx_mix_step else ctx_probs
        src, src_audio = (long_index, long_audio) if long else (multi_index, multi_audio) if multi else (index, audio)
        clips = [np.asarray(src_audio[src[i]["offset"]:src[i]["offset"] + src[i]["samples"]]) for i in ids]
        if step >= args.tel_step:  # a telephone channel for some clips, drawn by the step
            tel_rng = np.random.default_rng([args.seed, 400, step])
            clips = [telephone(tel_rng, c.astype(np.float64)) if tel_rng.random() < args.tel_frac else c for c in clips]
        signal, length = pad_batch(clips)
        tokens = [model.tokenizer.text_to_ids(src[i]["text"]) for i in ids]
        u_len = torch.tensor([len(tk) for tk in tokens])
        targets = torch.full((len(ids), int(u_len.max())), blank, dtype=torch.long)
        for i, tk in enumerate(tokens):
            targets[i, : len(tk)] = torch.tensor(tk)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)

        mel, mel_len = model.preprocessor(input_signal=signal, length=length)
        if 0 <= args.specaug_step <= step:
            mel = specaug(input_spec=mel, length=mel_len)
        enc, enc_len = model.encoder(audio_signal=mel, length=mel_len)  # [B, D, T]
        dec, _, _ = model.decoder(targets=targets, target_length=u_len)  # [B, H, U+1]
        lp = model.joint(encoder_outputs=enc, decoder_outputs=dec)  # log-probs on the CPU [B, T, U+1, V+1]
        lp = lp.log_softmax(-1)  # no-op when NeMo already normalised; guards against a raw-logit joint
        l_rnnt = rnnt_loss(lp, targets, enc_len, u_len, blank).mean()
        loss = l_rnnt
        l_ctc = torch.zeros(())
        if args.ctc_weight > 0:
            ctc_lp = ctc_head(enc.transpose(1, 2)).log_softmax(-1).transpose(0, 1)  # [T, B, V+1]
            l_ctc = torch.nn.functional.ctc_loss(ctc_lp, targets, enc_len, u_len, blank=blank, reduction="sum",
                                                 zero_infinity=True) / len(ids)
            loss = (1 - args.ctc_weight) * l_rnnt + args.ctc_weight * l_ctc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        step += 1
        dt = time.time() - t0
        train_seconds += dt
        acc["rnnt"] += float(l_rnnt)
        acc["ctc"] += float(l_ctc)
        acc["gn"] += float(gn)
        acc["sec"] += dt
        acc["n"] += 1
        if step % args.log_every == 0:
            n = acc["n"]
            rec = {"event": "train", "step": step, "epoch": epoch, "train_minutes": round(train_seconds / 60, 2),
                   "rnnt": round(acc["rnnt"] / n, 4), "ctc": round(acc["ctc"] / n, 4),
                   "grad_norm": round(acc["gn"] / n, 3), "lr": lr_at(step - 1, args), "sec_per_step": round(acc["sec"] / n, 3)}
            log(rec)
            print(json.dumps(rec), flush=True)
            acc = {k: 0.0 for k in acc}
        if time.time() - last_eval >= args.eval_minutes * 60:
            te = time.time()
            res = evaluate(model, test, [CONTEXTS[0], CONTEXTS[2]])
            if test_multi:
                res.update({f"multi_{k}": v for k, v in evaluate(model, test_multi, [CONTEXTS[0]]).items()})
            if test_tel:
                res.update({f"tel_{k}": v for k, v in evaluate(model, test_tel, [CONTEXTS[0]]).items()})
            rec = {"event": "eval", "step": step, "train_minutes": round(train_seconds / 60, 2),
                   **{k: v for k, v in res.items() if "hyps" not in k},
                   "example_ref": test[0]["text"], "example_70_13": res["hyps_70_13"][0],
                   "example_70_1": res["hyps_70_1"][0], "eval_seconds": round(time.time() - te, 1)}
            log(rec)
            print(json.dumps(rec), flush=True)
            last_eval = time.time()
        if time.time() - last_ckpt >= args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    log({"event": "stop", "step": step, "train_minutes": round(train_seconds / 60, 2)})
    if not args.no_export:
        export(model, args, test, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
