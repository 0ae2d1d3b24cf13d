#!/usr/bin/env python3
"""Records NVIDIA NeMo's outputs for a multilingual (language-prompt) model, per language, as test
ground truth. Runs in the NeMo environment of scripts/README.md.

The model is built from the committed English tiny model (``--base``, tests/fixtures/tiny-random.nemo)
as NeMo 2.7.3's ``EncDecHybridRNNTCTCBPEModelWithPrompt``, the class of the multilingual Nemotron 3.5
checkpoints there: the English model's encoder, prediction network, joint and tokenizer; Nemotron 3.5's
attention contexts ([56, 3] first, then [56, 0], [56, 6], [56, 13]); a prompt dictionary with its
indexes for the languages recorded (en-US 0, es-ES 2, fr-FR 8, de-DE 9, it-IT 15, auto 101) and 128
prompts; a seeded CTC head (which the engine does not use); and a seeded prompt kernel close to
"add one vector per language to every frame" (Linear [I, L; -I, -L], ReLU, Linear [I, -I], plus
noise in every weight), so that each language changes what is recognized; the joint is then tuned
again (make_reference.py's tune_joint on the English tuning clips through the kernel with auto's
prompt) to the English model's rate of tokens per frame. It is saved as ``--model`` (the committed
tests/fixtures/tiny-multilingual.nemo).

For each language, OUT/LANGUAGE/ holds what make_reference.py records (its Recorder: log-mel, encoder
output, tokens, text and the greedy trace; offline and NeMo's default streaming, every context)
for one clip spoken in that language by espeak-ng (auto: the English clip), with the prompt kernel
applied to every frame as NeMo computes it: the model's encoder is wrapped so that its output, offline
and in each chunk of the cache-aware streaming loop, goes through ``prompt_kernel(cat([enc, one_hot]))``
(what NeMo's ``forward`` does with ``prompt=``, and upstream NeMo's PromptStreamingMixin after each
streaming step). The offline tokens are checked against NeMo's own prompt path, the model's
``forward(..., prompt=ONE_HOT)`` and its decoding.

    /tmp/nemo-venv/bin/python scripts/make_multilingual_reference.py --base tests/fixtures/tiny-random.nemo \\
        --model tests/fixtures/tiny-multilingual.nemo --out tests/reference/tiny-multilingual --reuse-audio

    # full size, from make_reference.py's full-size model, two languages and contexts (slow tests)
    /tmp/nemo-venv/bin/python scripts/make_multilingual_reference.py --base ~/.cache/nemotron-cpp/reference/full/model.nemo \\
        --model ~/.cache/nemotron-cpp/reference/full-multilingual/model.nemo \\
        --out ~/.cache/nemotron-cpp/reference/full-multilingual --languages de-DE,auto --att-context-sizes '56,3;56,13'
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import make_reference as mr  # noqa: E402

#: Nemotron 3.5's contexts: left 56, the right ones with 3 (320 ms) first, its default.
CONTEXTS = ((56, 3), (56, 0), (56, 6), (56, 13))
NUM_PROMPTS = 128
#: The recorded languages with Nemotron 3.5's prompt indexes, and the clip each is recorded on.
LANGUAGES = {"en-US": 0, "es-ES": 2, "fr-FR": 8, "de-DE": 9, "it-IT": 15, "auto": 101}
CLIPS = {
    "en-US": mr._SPEECH_A,
    "auto": mr._SPEECH_A,
    "de-DE": mr.Clip("speech_de", "speech", text="Der schnelle braune Fuchs springt über den faulen Hund am Fluss.",
                     voice="de", speed=170),
    "fr-FR": mr.Clip("speech_fr", "speech", text="Le vif renard brun saute par-dessus le chien paresseux du village.",
                     voice="fr", speed=175),
    "es-ES": mr.Clip("speech_es", "speech", text="El veloz zorro marrón salta sobre el perro perezoso del jardín.",
                     voice="es", speed=175),
    "it-IT": mr.Clip("speech_it", "speech", text="La volpe marrone veloce salta sopra il cane pigro vicino al fiume.",
                     voice="it", speed=175),
}
SEED = 17
#: NeMo's default streaming (its padded mode is recorded for the English model; the prompt acts the same).
MODES = ("stream",)


def build(base: Path, out: Path, tuning_audio: Sequence[np.ndarray]) -> None:
    """The multilingual tiny model from the English one (see the module's description)."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from nemo.collections.asr.models.hybrid_rnnt_ctc_bpe_models_prompt import EncDecHybridRNNTCTCBPEModelWithPrompt
    from omegaconf import OmegaConf, open_dict

    english = EncDecRNNTBPEModel.restore_from(str(base), map_location="cpu")
    cfg = english.cfg
    with open_dict(cfg):
        cfg.target = "nemo.collections.asr.models.hybrid_rnnt_ctc_bpe_models_prompt.EncDecHybridRNNTCTCBPEModelWithPrompt"
        cfg.encoder.att_context_size = [list(c) for c in CONTEXTS]
        cfg.model_defaults.num_prompts = NUM_PROMPTS
        cfg.model_defaults.prompt_dictionary = dict(LANGUAGES)
        cfg.model_defaults.initialize_prompt_feature = True
        cfg.aux_ctc = OmegaConf.create({
            "ctc_loss_weight": 0.3, "use_cer": False, "ctc_reduction": "mean_batch",
            "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": cfg.encoder.d_model,
                        "num_classes": -1, "vocabulary": []},
            "decoding": {"strategy": "greedy"}})
        for split in ("train_ds", "validation_ds", "test_ds"):
            cfg.pop(split, None)
    # The tokenizer's files, from the English archive (its config names them as "nemo:FILE").
    tokenizer_dir = Path(tempfile.mkdtemp())
    with tarfile.open(base) as tar:
        tar.extractall(tokenizer_dir, filter="data")
    with open_dict(cfg):
        cfg.tokenizer.dir = str(tokenizer_dir)
        for key in ("model_path", "vocab_path", "spe_tokenizer_vocab"):
            cfg.tokenizer[key] = str(tokenizer_dir / str(cfg.tokenizer[key]).removeprefix("nemo:"))
    torch.manual_seed(SEED)
    model = EncDecHybridRNNTCTCBPEModelWithPrompt(cfg=cfg)
    missing, unexpected = model.load_state_dict(english.state_dict(), strict=False)
    if unexpected or any(not n.startswith(("prompt_kernel.", "ctc_decoder.")) for n in missing):
        raise RuntimeError(f"the English weights do not fit: missing {missing}, unexpected {unexpected}")
    gen = torch.Generator().manual_seed(SEED)
    d = cfg.encoder.d_model
    with torch.no_grad():
        rows = torch.zeros(d, NUM_PROMPTS)
        for index in sorted(LANGUAGES.values()):
            rows[:, index] = 0.2 * torch.randn(d, generator=gen)
        eye = torch.eye(d)
        first, second = model.prompt_kernel[0], model.prompt_kernel[2]
        noise = 0.01
        first.weight.copy_(torch.cat([torch.cat([eye, rows], 1), torch.cat([-eye, -rows], 1)], 0)
                           + noise * torch.randn(first.weight.shape, generator=gen))
        first.bias.copy_(0.01 * torch.randn(first.bias.shape, generator=gen))
        second.weight.copy_(torch.cat([eye, -eye], 1) + noise * torch.randn(second.weight.shape, generator=gen))
        second.bias.copy_(0.01 * torch.randn(second.bias.shape, generator=gen))
        for p in model.ctc_decoder.parameters():
            p.copy_((p[0].numel() ** -0.5 if p.dim() > 1 else 0.05) * torch.randn(p.shape, generator=gen))
    model.eval()
    # The kernel moves the encoder output: the joint is tuned again, on what it now sees (auto's prompt),
    # to the English model's rate of tokens per frame.
    target = next(s.tokens_per_frame for s in mr.SIZES.values() if s.d_model == d)
    prompted = PromptedEncoder(model)
    prompted.prompt = LANGUAGES["auto"]
    with prompted, torch.inference_mode():
        tuning = mr.tune_joint(model, tuning_audio, target)
    print(f"joint tuned: {tuning}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(out))
    print(f"model: {out} ({sum(p.numel() for p in model.parameters())} parameters)")


class PromptedEncoder:
    """Wraps a prompt model's encoder so that its output goes through the prompt kernel with one
    language's one-hot on every frame, offline and in each streaming step."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.forward = model.encoder.forward
        self.prompt: Optional[int] = None

    def __enter__(self) -> "PromptedEncoder":
        self.model.encoder.forward = self._forward
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.encoder.forward

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        result = self.forward(*args, **kwargs)
        encoded = result[0]  # [B, D, T]
        one_hot = torch.zeros(encoded.shape[0], encoded.shape[2], NUM_PROMPTS, dtype=encoded.dtype)
        one_hot[:, :, self.prompt] = 1.0
        fused = self.model.prompt_kernel(torch.cat([encoded.transpose(1, 2), one_hot], dim=-1)).transpose(1, 2)
        return (fused, *result[1:])


def record(model: Any, wavs: Dict[str, Path], out: Path, modes: Sequence[str], command: str,
           languages: Sequence[str], contexts: Sequence[Tuple[int, int]], source: str) -> None:
    import nemo
    import torch
    from omegaconf import OmegaConf

    recorder = mr.Recorder(model, check_transcribe=False)
    prompted = PromptedEncoder(model)
    for language in languages:
        index = LANGUAGES[language]
        clip = CLIPS[language]
        folder = out / language
        folder.mkdir(parents=True, exist_ok=True)
        wav = folder / f"{clip.name}.wav"
        if wav.resolve() != wavs[clip.name].resolve():
            wav.write_bytes(wavs[clip.name].read_bytes())
        t0 = time.time()
        prompted.prompt = index
        with prompted:
            arrays, info = recorder.clip(wav, contexts, modes)
        # NeMo's own prompt path (the model's forward with prompt=) must give what the wrapped encoder
        # gave. (Not transcribe(target_lang=): NeMo 2.7.3 builds its one-hot from the audio length, for
        # some lengths one frame shorter than the encoder output, and fails; forward trims a longer one.)
        samples = torch.from_numpy(mr.read_wav_int16(wav).astype(np.float32) / 32768.0)[None]
        one_hot = torch.zeros(1, samples.shape[1] // 160 + 1, NUM_PROMPTS)
        one_hot[:, :, index] = 1.0
        for ctx in contexts:
            model.encoder.set_default_att_context_size(list(ctx))
            encoded, encoded_len = model.forward(input_signal=samples, input_signal_length=torch.tensor([samples.shape[1]]),
                                                 prompt=one_hot)
            hyp = mr.first_hypothesis(model.decoding.rnnt_decoder_predictions_tensor(
                encoder_output=encoded, encoded_lengths=encoded_len, return_hypotheses=True))
            key = f"offline_{ctx[0]}_{ctx[1]}"
            if mr.hyp_tokens(hyp) != arrays[f"{key}__tokens"].tolist():
                raise RuntimeError(f"{language} {ctx}: NeMo's forward(prompt=) gives other tokens than the wrapped encoder")
            info["cases"][key]["forward_with_prompt_matches"] = True
        np.savez_compressed(folder / f"{clip.name}.npz", **arrays)  # type: ignore[arg-type]
        cfg = mr.plain(OmegaConf.to_container(model.cfg, resolve=True))
        vocabulary = list(cfg["joint"].pop("vocabulary"))
        cfg.pop("labels", None)
        for key in ("aux_ctc",):
            cfg.pop(key, None)
        counts = ", ".join(f"{k} {v['tokens']}/{v['enc_frames']}" for k, v in info["cases"].items())
        print(f"{language} ({clip.name}): {time.time() - t0:.1f} s; tokens/frames: {counts}")
        silent = [k for k, v in info["cases"].items() if v["tokens"] == 0 or v["blank_steps"] == 0]
        if silent:
            raise SystemExit(f"{language}: cases {silent} emit no tokens or no blanks; the model proves nothing")
        manifest = {
            "format": mr.FORMAT_VERSION, "generator": "scripts/make_multilingual_reference.py", "command": command,
            "language": language, "prompt": index,
            "versions": {"nemo": nemo.__version__, "torch": torch.__version__, "python": platform.python_version(),
                         "espeak-ng": mr.tool_version(["espeak-ng", "--version"])},
            "model": {"source": source, "blank_id": recorder.blank,
                      "vocab_size": len(vocabulary), "max_symbols": recorder.tracer.max_symbols,
                      "conversion": None, "config_overrides": {}},
            "vocabulary": vocabulary, "config": cfg, "streaming": mr.streaming_geometry(model, contexts),
            "att_contexts": [list(c) for c in contexts],
            "modes": {m: {"pad_and_drop_preencoded": mr.STREAM_MODES[m]} for m in modes},
            "clips": [{"name": clip.name, "kind": clip.kind, "wav": wav.name, "sha256": mr.sha256_file(wav),
                       "npz": f"{clip.name}.npz", "synthesis": {"text": clip.text, "voice": clip.voice,
                                                                "speed": clip.speed},
                       **info}],
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def parse_contexts(text: str) -> List[Tuple[int, int]]:
    contexts = [tuple(int(x) for x in item.split(",")) for item in text.split(";")]
    unknown = [c for c in contexts if c not in CONTEXTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{unknown} are not among the model's contexts {list(CONTEXTS)}")
    return contexts  # type: ignore[return-value]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the English tiny model (.nemo)")
    parser.add_argument("--model", type=Path, required=True,
                        help="the multilingual model: built here unless it exists (then recorded as it is)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--languages", default=",".join(LANGUAGES),
                        help=f"comma-separated subset of {','.join(LANGUAGES)} (default: all)")
    parser.add_argument("--att-context-sizes", type=parse_contexts,
                        help="e.g. '56,3;56,13' (default: all four)")
    parser.add_argument("--reuse-audio", action="store_true",
                        help="keep OUT/LANGUAGE's WAV files whose sha256 matches its manifest")
    args = parser.parse_args(argv)

    import torch
    from nemo.collections.asr.models.hybrid_rnnt_ctc_bpe_models_prompt import EncDecHybridRNNTCTCBPEModelWithPrompt

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    reuse: Dict[str, str] = {}
    if args.reuse_audio:
        for manifest in args.out.glob("*/manifest.json"):
            reuse.update({c["name"]: c["sha256"] for c in json.loads(manifest.read_text())["clips"]})
    audio_dir = args.out / ".audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for manifest in args.out.glob("*/manifest.json"):  # the committed audio, where it is reused
        for clip in json.loads(manifest.read_text())["clips"]:
            if clip["name"] in reuse and not (audio_dir / clip["wav"]).exists():
                (audio_dir / clip["wav"]).write_bytes((manifest.parent / clip["wav"]).read_bytes())
    languages = args.languages.split(",")
    if set(languages) - set(LANGUAGES):
        parser.error(f"--languages: choose from {list(LANGUAGES)}")
    unique: List[mr.Clip] = list({CLIPS[lang].name: CLIPS[lang] for lang in languages}.values())
    wavs = mr.prepare_audio(unique, audio_dir, reuse)
    if not args.model.exists():
        tuning = mr.prepare_audio([c for c in mr.TUNING_CLIPS if c.name not in wavs], audio_dir, {})
        build(args.base, args.model, [mr.read_wav_int16(p) for p in {**wavs, **tuning}.values()
                                      if p.stem in {c.name for c in mr.TUNING_CLIPS}])
    model = EncDecHybridRNNTCTCBPEModelWithPrompt.restore_from(str(args.model), map_location="cpu")
    model.eval()
    model.preprocessor.featurizer.dither = 0.0
    model.preprocessor.featurizer.pad_to = 0
    command = shlex.join(["python", "scripts/make_multilingual_reference.py", *(sys.argv[1:] if argv is None else argv)])
    with torch.inference_mode():
        inside = args.model.resolve().is_relative_to(mr.REPO)
        record(model, wavs, args.out, MODES, command, languages, args.att_context_sizes or CONTEXTS,
               mr.display_path(args.model) if inside else str(args.model.resolve()))
    for wav in audio_dir.iterdir():
        wav.unlink()
    audio_dir.rmdir()
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {total / 1e6:.2f} MB of fixtures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
