#!/usr/bin/env python3
"""Turns a trained demo model into what the package ships and what its accuracy tests read.

Runs in the NeMo environment of ``scripts/README.md`` after ``scripts/train_demo_model.py``:

    /tmp/nemo-venv/bin/python scripts/make_demo_assets.py --nemo /work/demo-train/model.nemo \\
        --data /work/demo-train/data --nemotron-python .venv/bin/python

It writes

* ``src/nemotron_cpp/data/demo.q8_0.gguf``: the model, converted to q8_0 by this package's converter
  (run with ``--nemotron-python``, an interpreter that has nemotron_cpp installed);
* ``src/nemotron_cpp/data/demo-sample.flac`` + ``demo-sample.txt``: a recording of three commands
  with pauses between them, spoken by espeak-ng with a voice variant that training never used, and
  its text. Candidates are rendered from a seeded sequence and the first that NVIDIA NeMo's own
  greedy decoding of the model transcribes exactly at every att_context_size, and the q8_0 file
  (this package) at 1120 and 160 ms one segment per command, is kept (the seed is recorded), so
  the sample shows what the model can do, and says so;
* ``tests/reference/demo/``: ``--n-test`` held-out clips of the training script's test set (voice
  variants never used in training) as FLAC, and ``manifest.json`` with their texts and, for each
  att_context_size, NeMo's greedy hypotheses and WER on the same audio (NeMo decodes the
  whole utterance under the chunked_limited mask of that context, which is what the engine's
  chunk-by-chunk streaming computes), and NeMo's cache-aware streaming of the long stream
  (``nemotron_cpp.demo.long_stream``: the clips in order with pauses, ten minutes) at each
  att_context_size: its text and WER, and NeMo's hypotheses and WER on the clips through a telephone
  line (``nemotron_cpp.demo.telephone``, brought back to 16 kHz).

Nothing here is edited by hand; rerunning the script with the same inputs reproduces the files.
"""

from __future__ import annotations

import argparse
import random
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import train_demo_model as tdm  # noqa: E402  (the grammar, the voices, WER)

CONTEXTS = ((70, 13), (70, 6), (70, 1), (70, 0))
SAMPLE_COMMANDS = 3
SAMPLE_PAUSE = 1.2  # seconds of quiet between the sample's commands: the endpointer ends each one


def load_model(nemo: Path) -> Any:
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    model = EncDecRNNTBPEModel.restore_from(str(nemo), map_location="cpu")
    model.eval()
    model.preprocessor.featurizer.dither = 0.0
    return model


def transcribe(model: Any, clips: Sequence[np.ndarray], ctx: Sequence[int], batch_size: int = 25) -> List[str]:
    """NeMo's greedy text for each int16 clip, offline under att_context_size ``ctx``."""
    import torch

    model.encoder.set_default_att_context_size(list(ctx))
    hyps: List[str] = []
    with torch.inference_mode():
        for i in range(0, len(clips), batch_size):
            signal, length = tdm.pad_batch(clips[i:i + batch_size])
            mel, mel_len = model.preprocessor(input_signal=signal, length=length)
            enc, enc_len = model.encoder(audio_signal=mel, length=mel_len)
            hyps += [h.text for h in model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc,
                                                                                    encoded_lengths=enc_len)]
    return hyps


def stream_text(model: Any, audio: np.ndarray, ctx: Sequence[int], work: Path) -> str:
    """NeMo's greedy text of an int16 recording streamed chunk by chunk under att_context_size ``ctx``:
    the cache-aware streaming loop of NeMo's example script (pad_and_drop_preencoded=False, which the
    engine's streams follow), the decoder state carried from chunk to chunk through the whole stream."""
    import torch
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    wav = work / "long_stream.wav"
    tdm.write_wav(wav, audio)
    model.encoder.set_default_att_context_size(list(ctx))
    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False, pad_and_drop_preencoded=False)
    buffer.append_audio_file(str(wav), stream_id=-1)
    cache = model.encoder.get_initial_cache_state(batch_size=1, dtype=torch.float32)
    hypotheses, pred_out = None, None
    with torch.inference_mode():
        for step, (chunk, length) in enumerate(buffer):
            drop = 0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded
            pred_out, _, *cache, hypotheses = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=length, cache_last_channel=cache[0],
                cache_last_time=cache[1], cache_last_channel_len=cache[2], keep_all_outputs=buffer.is_buffer_empty(),
                previous_hypotheses=hypotheses, previous_pred_out=pred_out, drop_extra_pre_encoded=drop,
                return_transcription=True)
    wav.unlink()
    return str(hypotheses[0].text)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    errors = words = 0
    for r, h in zip(refs, hyps):
        e, n = tdm.word_errors(r, h)
        errors, words = errors + e, words + n
    return round(100.0 * errors / words, 2)


def make_sample(model: Any, seed: int, out_dir: Path, gguf: Path) -> Dict[str, Any]:
    import soundfile
    from nemotron_cpp import NemotronModel

    shipped = NemotronModel(gguf, n_threads=1)

    tries = []
    for attempt in range(50):
        rng = np.random.default_rng([seed, 7, attempt])
        text_rng = random.Random(seed * 1000 + attempt)
        commands = [tdm.sentence(text_rng) for _ in range(SAMPLE_COMMANDS)]
        # One speaker with a voice variant training never used, a pause after each command.
        voice, speed, pitch = tdm.speaker(rng, tdm.TEST_VARIANTS)
        pieces = []
        for text in commands:
            pieces.append(tdm.espeak(text, voice, speed, pitch))
            pieces.append(np.zeros(int(SAMPLE_PAUSE * tdm.SAMPLE_RATE)))
        sample, meta = tdm.finish(rng, np.concatenate(pieces[:-1]))
        text = " ".join(commands)
        hyps = {f"{c[0]}_{c[1]}": transcribe(model, [sample], c)[0] for c in CONTEXTS}
        tries.append({"attempt": attempt, "text": text, "hyps": hyps})
        # The shipped q8_0 file must say it too, split into the commands by its endpoints (the package's
        # tests check exactly that).
        ours = {lat: [seg.text for seg in shipped.transcribe(sample / 32768.0, sample_rate=tdm.SAMPLE_RATE,
                                                                latency_ms=lat).segments] for lat in (1120, 160)}
        with shipped.stream(160) as live:  # as a live stream hears it, in pieces
            pcm = sample / 32768.0
            ours["stream_160"] = [seg.text for i in range(0, pcm.size, 2560)
                                  for seg in live.feed(pcm[i:i + 2560]).segments]
            ours["stream_160"] += [seg.text for seg in live.finalize().segments]
        tries[-1]["engine_q8_0"] = ours
        if all(h == text for h in hyps.values()) and all(c == commands for c in ours.values()):
            soundfile.write(out_dir / "demo-sample.flac", sample, tdm.SAMPLE_RATE, subtype="PCM_16")
            (out_dir / "demo-sample.txt").write_text("\n".join(commands) + "\n", encoding="utf-8")
            return {"seed": seed, "attempt": attempt, "voice": voice, "speed": speed, "pitch": pitch, **meta,
                    "commands": commands, "seconds": round(sample.size / tdm.SAMPLE_RATE, 2), "rejected": tries[:-1]}
    raise SystemExit(f"no sample in 50 attempts was transcribed exactly by NeMo and the engine: {json.dumps(tries[-3:], indent=1)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nemo", type=Path, required=True, help="the trained model (EncDecRNNTBPEModel .nemo)")
    p.add_argument("--data", type=Path, required=True, help="train_demo_model.py's data directory")
    p.add_argument("--nemotron-python", required=True, help="a Python with nemotron_cpp installed (the converter)")
    p.add_argument("--n-test", type=int, default=200, help="held-out clips to commit (default: all 200)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--package-data", type=Path, default=ROOT / "src" / "nemotron_cpp" / "data")
    p.add_argument("--tests", type=Path, default=ROOT / "tests" / "reference" / "demo")
    args = p.parse_args()
    import soundfile
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    args.package_data.mkdir(parents=True, exist_ok=True)
    args.tests.mkdir(parents=True, exist_ok=True)
    gguf = args.package_data / "demo.q8_0.gguf"
    subprocess.run([args.nemotron_python, "-m", "nemotron_cpp", "convert", str(args.nemo), str(gguf),
                    "--type", "q8_0", "--force"], check=True)
    model = load_model(args.nemo)

    sample = make_sample(model, args.seed, args.package_data, gguf)
    print(f"sample: {sample['commands']} ({sample['seconds']} s, attempt {sample['attempt']})", flush=True)

    test = [json.loads(line) for line in (args.data / "test" / "manifest.jsonl").read_text().splitlines()]
    test = test[: args.n_test]
    clips, entries = [], []
    for i, item in enumerate(test):
        audio = tdm.read_wav(Path(item["audio_filepath"]))
        name = f"heldout_{i:03d}.flac"
        soundfile.write(args.tests / name, audio, tdm.SAMPLE_RATE, subtype="PCM_16")
        clips.append(audio)
        entries.append({"file": name, "text": item["text"],
                        **{k: item[k] for k in ("voice", "speed", "pitch", "snr_db", "noise")}})
    refs = [e["text"] for e in entries]
    nemo: Dict[str, Any] = {}
    for ctx in CONTEXTS:
        hyps = transcribe(model, clips, ctx)
        nemo[f"{ctx[0]}_{ctx[1]}"] = {"wer": wer(refs, hyps), "hyps": hyps}
        print(f"NeMo [{ctx[0]},{ctx[1]}]: WER {nemo[f'{ctx[0]}_{ctx[1]}']['wer']} %", flush=True)

    import soxr
    from nemotron_cpp.demo import LONG_STREAM_GAP, long_stream, telephone

    # The clips through a telephone line, brought back to 16 kHz as the package does with 8 kHz input.
    narrow = [(soxr.resample(telephone(c / 32768.0), 8000, tdm.SAMPLE_RATE, quality="HQ") * 32768.0)
              .round().clip(-32768, 32767).astype(np.int16) for c in clips]
    phone: Dict[str, Any] = {}
    for ctx in CONTEXTS:
        hyps = transcribe(model, narrow, ctx)
        phone[f"{ctx[0]}_{ctx[1]}"] = {"wer": wer(refs, hyps), "hyps": hyps}
        print(f"NeMo telephone [{ctx[0]},{ctx[1]}]: WER {phone[f'{ctx[0]}_{ctx[1]}']['wer']} %", flush=True)

    # int16 in, int16 out: the stream holds exactly the committed clips' samples and zeros.
    stream_audio = (long_stream([c / 32768.0 for c in clips], tdm.SAMPLE_RATE) * 32768.0).round().astype(np.int16)
    long: Dict[str, Any] = {"gap_seconds": LONG_STREAM_GAP, "seconds": round(stream_audio.size / tdm.SAMPLE_RATE, 2),
                            "nemo": {}}
    reference = " ".join(refs)
    for ctx in CONTEXTS:
        t1 = time.time()
        text = stream_text(model, stream_audio, ctx, args.tests)
        long["nemo"][f"{ctx[0]}_{ctx[1]}"] = {"wer": wer([reference], [text]), "text": text}
        print(f"NeMo long stream [{ctx[0]},{ctx[1]}]: WER {long['nemo'][f'{ctx[0]}_{ctx[1]}']['wer']} % "
              f"({time.time() - t1:.0f} s)", flush=True)

    import nemo as nemo_pkg

    manifest = {
        "what": "held-out clips of scripts/train_demo_model.py's test set (voice variants never used in training) "
                "and NVIDIA NeMo's greedy hypotheses and WER per att_context_size on the same audio",
        "made_by": "scripts/make_demo_assets.py",
        "model": {"nemo": args.nemo.name, "nemo_sha256": tdm.make_reference().sha256_file(args.nemo), "gguf": gguf.name,
                  "gguf_sha256": tdm.make_reference().sha256_file(gguf)},
        "versions": {"nemo_toolkit": nemo_pkg.__version__, "torch": torch.__version__},
        "words": sum(len(r.split()) for r in refs),
        "clips": entries,
        "nemo": nemo,
        "long_stream": long,
        "telephone": {"nemo": phone},
        "sample": sample,
        "seconds": round(time.time() - t0, 1),
    }
    (args.tests / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {gguf} ({gguf.stat().st_size / 1e6:.1f} MB), the sample and {len(entries)} held-out clips "
          f"in {manifest['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
