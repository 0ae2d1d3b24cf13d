"""Multilingual models (NeMo's ...WithPrompt, Nemotron 3.5): the prompt dictionary of either layout, the
language chosen per stream, the prompt kernel applied to every frame, batches of mixed languages."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import soundfile

from nemotron_cpp import NemotronModel, testing

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "reference" / "tiny"
LANGUAGES = (("en-US", 0), ("de-DE", 9), ("fr-FR", 8), ("auto", 101))  # Nemotron 3.5's indexes
SIZE = dataclasses.replace(testing.TINY, num_prompts=128, languages=LANGUAGES)
PIECE = 2560


def speech(name: str = "speech_a") -> np.ndarray:
    return soundfile.read(REFERENCE / f"{name}.wav", dtype="float32")[0]


@pytest.fixture(scope="module")
def prompt_models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("languages")
    return {layout: testing.write_model(folder / f"{layout}.gguf", size=SIZE, layout=layout, weight_type="q8_0")
            for layout in ("nemo", "asr")}


def test_both_layouts_list_their_languages(prompt_models: Dict[str, Path]) -> None:
    for layout, path in prompt_models.items():
        with NemotronModel(path, n_threads=1) as model:
            # The C++ port's converter sorts the codes; NVIDIA's keeps the dictionary's order.
            expected = sorted(code for code, _ in LANGUAGES) if layout == "nemo" else [code for code, _ in LANGUAGES]
            assert list(model.languages) == expected
            assert model.default_language == "auto" and model.hparams.num_prompts == 128
            prompt = next(g for g in model.tensor_groups if g.name == "prompt")
            d = SIZE.d_model
            assert prompt.n_params == (d + 128) * 2 * d + 2 * d + 2 * d * d + d and prompt.type == "f32"
            with model.stream(160) as s:
                assert s.language == "auto"


def fusion_identity(language_rows: np.ndarray) -> Dict[str, np.ndarray]:
    """A prompt kernel that adds language_rows[:, prompt] to each frame: ReLU(x + l) - ReLU(-x - l)."""
    d = language_rows.shape[0]
    eye = np.eye(d, dtype=np.float32)
    w1 = np.block([[eye, language_rows], [-eye, -language_rows]]).astype(np.float32)
    return {"prompt_kernel.0.weight": w1, "prompt_kernel.0.bias": np.zeros(2 * d, np.float32),
            "prompt_kernel.2.weight": np.concatenate([eye, -eye], axis=1),
            "prompt_kernel.2.bias": np.zeros(d, np.float32)}


def encoder_output(path: Path, audio: np.ndarray, language: object = None, **stream: object) -> np.ndarray:
    with NemotronModel(path, n_threads=1) as model:
        with model.stream(160, keep_encoder_output=True, language=language, **stream) as s:  # type: ignore[arg-type]
            s.feed(audio)
            s.finalize()
            return s.encoder_output


@pytest.mark.parametrize("layout", ["nemo", "asr"])
def test_each_frame_gets_its_languages_prompt(tmp_path: Path, layout: str) -> None:
    """With a prompt kernel that adds one vector per language to the frames, the engine's encoder
    output is the plain model's plus the vector of the stream's language: the kernel reads the
    one-hot of the right index, after the frame's own values, on every frame."""
    rng = np.random.default_rng(1)
    rows = np.zeros((SIZE.d_model, 128), np.float32)
    for _, index in LANGUAGES:
        rows[:, index] = rng.normal(0, 0.5, SIZE.d_model)
    state = testing.random_state_dict(SIZE)
    state.update(fusion_identity(rows))
    plain_state = {k: v for k, v in state.items() if not k.startswith("prompt_kernel")}
    fused = testing.write_model(tmp_path / "fused.gguf", size=SIZE, layout=layout, state_dict=state)
    plain = testing.write_model(tmp_path / "plain.gguf", size=dataclasses.replace(SIZE, num_prompts=0, languages=()),
                                layout=layout, state_dict=plain_state)
    audio = speech()
    base = encoder_output(plain, audio)
    for code, index in LANGUAGES:
        np.testing.assert_allclose(encoder_output(fused, audio, code) - base, np.tile(rows[:, index], (len(base), 1)),
                                   atol=2e-5, err_msg=code)


def alone(model: NemotronModel, audio: np.ndarray, language: str, latency: int) -> Tuple[List[int], np.ndarray]:
    with model.stream(latency, keep_encoder_output=True, language=language) as s:
        for i in range(0, len(audio), PIECE):
            s.feed(audio[i:i + PIECE])
        s.finalize()
        return s.tokens.tolist(), s.encoder_output


def test_mixed_language_batches_are_each_streams_own(prompt_models: Dict[str, Path]) -> None:
    model = NemotronModel(prompt_models["asr"], n_threads=1)
    clips = [speech("speech_a"), speech("speech_b"), speech("speech_a"), speech("speech_noisy")]
    languages = ["de-DE", "en-US", "fr-FR", "auto"]
    expected = [alone(model, a, lang, 160) for a, lang in zip(clips, languages)]
    assert expected[0][0] != alone(model, clips[0], "en-US", 160)[0]  # the language changes what is recognized
    streams = [model.stream(160, keep_encoder_output=True, language=lang) for lang in languages]
    for i in range(0, max(map(len, clips)), PIECE):
        for s, a in zip(streams, clips):
            s.push(a[i:i + PIECE])
        model.step(streams)
    model.step(streams, final=True)
    for s, (tokens, enc), lang in zip(streams, expected, languages):
        assert s.tokens.tolist() == tokens, lang
        np.testing.assert_array_equal(s.encoder_output, enc, err_msg=lang)
    # transcribe takes the language too: the offline path of the same stream.
    assert [t.id for t in model.transcribe(clips[0], language="de-DE").tokens] != \
        [t.id for t in model.transcribe(clips[0], language="en-US").tokens]


def test_the_language_stays_across_reset(prompt_models: Dict[str, Path]) -> None:
    model = NemotronModel(prompt_models["nemo"], n_threads=1)
    audio = speech()
    tokens, _ = alone(model, audio, "fr-FR", 560)
    with model.stream(560, language="fr-FR") as s:
        s.feed(audio)
        s.finalize()
        s.reset()
        s.feed(audio)
        s.finalize()
        assert s.tokens.tolist() == tokens and s.language == "fr-FR"


def test_language_errors(prompt_models: Dict[str, Path], fixtures_dir: Path) -> None:
    model = NemotronModel(prompt_models["asr"], n_threads=1)
    with pytest.raises(ValueError, match="unknown language 'xx-XX'; this model knows en-US, de-DE, fr-FR, auto"):
        model.stream(language="xx-XX")
    with pytest.raises(TypeError, match="language must be a language code"):
        model.stream(language=9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown language 'it-IT'"):
        model.transcribe(speech(), language="it-IT")
    english = NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf", n_threads=1)
    assert english.languages == () and english.default_language is None
    with english.stream() as s:
        assert s.language is None
    with pytest.raises(ValueError, match="language 'de-DE' was given, but this model has no language prompts"):
        english.stream(language="de-DE")


def test_language_tags_are_reported_not_written(tmp_path: Path) -> None:
    """Nemotron 3.5 emits the language it hears as pieces of its vocabulary ("<de-DE>"): they are left
    out of the text, words and tokens, and the last one is the segment's and transcript's language.
    Here two pieces that the multilingual test model emits often are renamed into tags."""
    from nemotron_cpp.gguf.convert import model_config
    from nemotron_cpp.gguf.nemo_checkpoint import read_nemo
    from nemotron_cpp.text import detokenize

    checkpoint = read_nemo(REPO / "tests" / "fixtures" / "tiny-multilingual.nemo")
    size = model_config(checkpoint.config)[0]
    weights = {k: v for k, v in checkpoint.state_dict.items() if not k.startswith("ctc_decoder.")}
    vocab = list(checkpoint.vocabulary)
    audio = speech()
    plain_path = testing.write_model(tmp_path / "plain.gguf", size=size, vocab=vocab, state_dict=weights)
    with NemotronModel(plain_path, n_threads=1) as model:
        plain = model.transcribe(audio, language="de-DE", endpointing=False)
    ids = [t.id for t in plain.tokens]
    common = sorted(set(ids), key=lambda i: -ids.count(i))[:2]
    vocab[common[0]], vocab[common[1]] = "<de-DE>", "<fr-FR>"
    tagged_path = testing.write_model(tmp_path / "tagged.gguf", size=size, vocab=vocab, state_dict=weights)
    with NemotronModel(tagged_path, n_threads=1) as model:
        tagged = model.transcribe(audio, language="de-DE", endpointing=False)
    kept = [i for i in ids if i not in common]
    assert [t.id for t in tagged.tokens] == kept and len(kept) < len(ids)
    assert tagged.text == detokenize(vocab, kept) and "<" not in tagged.text
    last = "<de-DE>" if max(k for k, i in enumerate(ids) if i == common[0]) > \
        max(k for k, i in enumerate(ids) if i == common[1]) else "<fr-FR>"
    assert tagged.language == last[1:-1] == tagged.segments[-1].language
    assert plain.language is None
