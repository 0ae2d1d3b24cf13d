"""Audio input: every kind of source, resampling and mixing down, and the errors for bad input."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import soundfile
import soxr

from conftest import edit_distance, replay_decisions
from nemotron_cpp import AudioError, NemotronModel
from nemotron_cpp.audio import decode_audio

REFERENCE = Path(__file__).parent / "reference" / "tiny"


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> NemotronModel:
    return NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """16 kHz int16 speech."""
    audio, rate = soundfile.read(REFERENCE / "speech_a.wav", dtype="int16")
    assert rate == 16000
    return audio


def ids(model: NemotronModel, audio: Any, **kwargs: Any) -> List[int]:
    return [t.id for t in model.transcribe(audio, latency_ms=160, **kwargs).tokens]


def test_every_kind_of_source_gives_the_same_tokens(model: NemotronModel, speech: np.ndarray, tmp_path: Path) -> None:
    expected = ids(model, speech)
    assert len(expected) > 10
    floats = speech.astype(np.float32) / 32768
    wav, flac = tmp_path / "a.wav", tmp_path / "a.flac"
    soundfile.write(wav, speech, 16000, subtype="PCM_16")
    soundfile.write(flac, speech, 16000, subtype="PCM_16")
    sources: Dict[str, Any] = {
        "wav path": str(wav), "flac pathlib": flac, "file object": open(flac, "rb"),
        "BytesIO": io.BytesIO(wav.read_bytes()), "wav bytes": wav.read_bytes(), "flac bytearray": bytearray(flac.read_bytes()),
        "raw PCM bytes": speech.astype("<i2").tobytes(), "memoryview": memoryview(speech.astype("<i2").tobytes()),
        "float32": floats, "float64": floats.astype(np.float64), "int32": speech.astype(np.int32) << 16,
        "(frames, 1)": speech[:, None], "non-contiguous": np.repeat(floats, 2)[::2],
    }
    for name, source in sources.items():
        assert ids(model, source) == expected, name
    sources["file object"].close()


@pytest.mark.parametrize("fmt,subtype", [("OGG", "VORBIS"), ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")])
def test_lossy_formats_decode(model: NemotronModel, speech: np.ndarray, tmp_path: Path, fmt: str, subtype: str) -> None:
    if fmt not in soundfile.available_formats() or subtype not in soundfile.available_subtypes(fmt):
        pytest.skip(f"this libsndfile has no {fmt}/{subtype}")
    rate = 48000 if subtype == "OPUS" else 16000  # Opus runs at 48 kHz
    path = tmp_path / f"a.{fmt.lower()}"
    soundfile.write(path, soxr.resample(speech.astype(np.float32) / 32768, 16000, rate), rate, format=fmt, subtype=subtype)
    result = model.transcribe(path)
    # Codec delay and padding move the length by a few ms at most.
    assert abs(result.duration - len(speech) / 16000) < 0.1
    assert result.tokens


def test_multichannel_is_mixed_down(model: NemotronModel, speech: np.ndarray) -> None:
    floats = speech.astype(np.float32) / 32768
    expected = ids(model, floats)
    assert ids(model, np.stack([floats, floats], axis=1)) == expected
    assert ids(model, np.stack([speech, speech, speech, speech], axis=1)) == expected
    # Unequal channels: their mean, to the last bit.
    assert ids(model, np.stack([floats, 0.5 * floats], axis=1)) == ids(model, 0.75 * floats)


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    spectrum = np.fft.rfft(x.astype(np.float64))
    spectrum[np.fft.rfftfreq(len(x), 1 / 16000) > cutoff] = 0
    return np.fft.irfft(spectrum, len(x)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_match_the_16k_original(model: NemotronModel, rate: int) -> None:
    """The original is band-limited to 3.4 kHz, so an 8 kHz copy still holds all of it, and each
    copy is made with soxr, the resampler under test, so the round trip is its whole effect.

    Asserted: the audio the model hears is the original to >= 60 dB SNR (measured 71-104 dB), and the
    encoder of that audio makes the same decision as the original's at >= 95 % of the original's joint
    steps (teacher-forced; measured 97.6-100 %). A random-weight model decodes in near-ties and one
    flip changes every later label, so free-running token agreement (measured 92-100 %) is printed."""
    weights = {t.name: model.get_tensor(t.name) for t in model.tensors if t.name.startswith(("decoder.", "joint."))}
    report = []
    for clip in ("speech_a", "speech_b", "speech_noisy"):
        original = _lowpass(soundfile.read(REFERENCE / f"{clip}.wav", dtype="float32")[0], 3400)
        copy = soxr.resample(original, 16000, rate, quality="HQ")
        heard = decode_audio(copy, sample_rate=rate)
        assert abs(len(heard) - len(original)) <= 1
        heard = heard[: len(original)]
        snr = 10 * np.log10(np.sum(original ** 2) / np.sum((heard - original[: len(heard)]) ** 2))
        assert snr >= 60, f"{clip}: {snr:.1f} dB"
        for latency in (160, 1120):
            runs = []
            for audio in (original, heard):
                with model.stream(latency, chunking="offline", keep_encoder_output=True, keep_trace=True) as s:
                    s.feed(audio)
                    s.finalize()
                    runs.append((s.encoder_output, s.trace, s.tokens.tolist()))
            (_, trace, tokens), (enc, _, got) = runs
            decisions = np.mean(np.array(replay_decisions(model, weights, enc, trace)) == trace["token"])
            assert decisions >= 0.95, f"{clip} at {latency} ms: {decisions:.1%} of joint decisions agree"
            report.append(f"{clip}@{latency}: decisions {decisions:.1%}, tokens {1 - edit_distance(got, tokens) / len(tokens):.0%}")
            # Through the public path too: the same tokens as the audio it heard.
            assert [t.id for t in model.transcribe(copy, sample_rate=rate, latency_ms=latency).tokens] == got
    print(f"\n{rate} Hz: " + "; ".join(report))


def test_streams_resample_pieces_as_a_whole(model: NemotronModel, speech: np.ndarray) -> None:
    copy = soxr.resample(speech.astype(np.float32) / 32768, 16000, 48000)
    with model.stream(160, sample_rate=48000) as s:
        rng = np.random.default_rng(0)
        cuts = np.sort(rng.integers(0, len(copy), 17))
        for piece in np.split(copy, cuts):
            s.feed(piece, sample_rate=48000)
        s.finalize()
        pieces = s.tokens.tolist()
        with pytest.raises(ValueError, match="takes 48000 Hz audio, not 16000 Hz"):
            s.reset()
            s.feed(copy[:100], sample_rate=16000)
    with model.stream(160) as s:
        s.feed(decode_audio(copy, sample_rate=48000))
        s.finalize()
        assert s.tokens.tolist() == pieces


def test_bad_input_raises_clear_errors(model: NemotronModel, tmp_path: Path) -> None:
    good = np.zeros(1600, np.float32)
    cases = [
        (np.array([0.0, np.nan] * 800, np.float32), ValueError, "NaN or infinity"),
        (np.array([0.0, -np.inf] * 800), ValueError, "NaN or infinity"),
        (np.zeros(0, np.float32), ValueError, "empty"),
        (b"", ValueError, "empty"),
        (np.zeros((2, 16000), np.float32), ValueError, r"pass array\.T"),
        (np.zeros((10, 10, 2), np.float32), ValueError, r"\(frames,\) or \(frames, channels\)"),
        (np.zeros(1600, np.uint8), TypeError, "float32, float64, int16 or int32"),
        (np.zeros(1600, np.complex64), TypeError, "float32, float64, int16 or int32"),
        ([0.0] * 1600, TypeError, "not list"),
        (b"\x00\x01\x02", ValueError, "odd count"),
        (tmp_path / "missing.wav", FileNotFoundError, "no such audio file"),
        (tmp_path, IsADirectoryError, "is a directory"),
        (b"RIFF" + bytes(100), AudioError, "cannot read the audio bytes"),
    ]
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 100)
    cases.append((garbage, AudioError, f"cannot read {garbage}"))
    truncated = tmp_path / "truncated.flac"
    soundfile.write(truncated, np.zeros(16000, np.int16), 16000)
    truncated.write_bytes(truncated.read_bytes()[:30])
    cases.append((truncated, AudioError, "cannot read"))
    silent = tmp_path / "nothing.wav"
    soundfile.write(silent, np.zeros(0, np.int16), 16000)
    cases.append((silent, ValueError, "holds no audio"))
    low = tmp_path / "low.wav"
    soundfile.write(low, np.zeros(4000, np.int16), 4000)
    cases.append((low, ValueError, "4000 Hz; speech recognition needs at least 8000 Hz"))
    for source, error, message in cases:
        with pytest.raises(error, match=message):
            model.transcribe(source)
    for rate, error, message in [(7999, ValueError, "at least 8000 Hz"), (16000.5, ValueError, "whole number"),
                                 (0, ValueError, "at least|positive"), ("16k", TypeError, "samples per second")]:
        with pytest.raises(error, match=message):
            model.transcribe(good, sample_rate=rate)  # type: ignore[arg-type]
        with pytest.raises(error, match=message):
            model.stream(sample_rate=rate)  # type: ignore[arg-type]
    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(16000, np.int16), 16000)
    with pytest.raises(ValueError, match="sample_rate=8000 was given, but the file is 16000 Hz"):
        model.transcribe(wav, sample_rate=8000)
    assert model.transcribe(wav, sample_rate=16000).duration == 1.0


def test_sample_rates_above_the_hardware_range_are_refused(model: NemotronModel) -> None:
    good = np.zeros(1600, np.float32)
    message = r"the sample rate is 1000000000 Hz, above 768000 Hz, .*\(accepted: 8000 to 768000 Hz\)"
    with pytest.raises(ValueError, match=message):
        model.transcribe(good, sample_rate=10**9)
    with pytest.raises(ValueError, match=message):
        model.stream(sample_rate=10**9)
    with pytest.raises(ValueError, match=r"needs at least 8000 Hz \(accepted: 8000 to 768000 Hz\)"):
        model.transcribe(good, sample_rate=4000)
    assert model.transcribe(np.zeros(768000, np.float32), sample_rate=768000).duration == 1.0
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "Sample rates must lie in 8000-768000 Hz" in readme


def test_a_truncated_wav_warns(model: NemotronModel, tmp_path: Path) -> None:
    from nemotron_cpp import TruncatedAudioWarning

    whole = tmp_path / "whole.wav"
    soundfile.write(whole, np.zeros(16000, np.int16), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:44 + 2 * 8000])  # the header and half of the samples
    message = r"truncated: 8000 frames \(0\.50 s\) read of the 16000 \(1\.00 s\) its header promises"
    with pytest.warns(TruncatedAudioWarning, match=f"{cut}: {message}"):
        assert model.transcribe(cut).duration == 0.5
    with pytest.warns(TruncatedAudioWarning, match=f"the audio bytes: {message}"):
        model.transcribe(cut.read_bytes())
    with open(cut, "rb") as f, pytest.warns(TruncatedAudioWarning, match=message):
        model.transcribe(f)
    # A whole file, and a WAV whose writer streamed it without knowing its length, are not truncated.
    streamed = bytearray(whole.read_bytes())
    streamed[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.transcribe(whole).duration == 1.0
        assert model.transcribe(bytes(streamed)).duration == 1.0


def test_feeding_a_file_says_where_files_go(model: NemotronModel, tmp_path: Path) -> None:
    message = (r"feed\(\) and push\(\) take samples: a numpy array or bytes of 16-bit PCM, not {}; give a file to "
               r"model\.transcribe\(\), or stream it with `nemotron-cpp stream FILE`")
    with model.stream() as s:
        with pytest.raises(TypeError, match=message.format("'x.wav'")):
            s.feed("x.wav")
        with pytest.raises(TypeError, match=message.format(re.escape(repr(str(tmp_path))))):
            s.push(tmp_path)
        with io.BytesIO(b"RIFF") as f, pytest.raises(TypeError, match=message.format("BytesIO")):
            s.feed(f)  # type: ignore[arg-type]
        s.feed(np.zeros(160, np.int16).tobytes())


def test_float_audio_far_outside_the_unit_range_warns_once(model: NemotronModel, speech: np.ndarray) -> None:
    from nemotron_cpp import AudioLevelWarning

    as_floats = speech.astype(np.float32)  # int16 values, not divided by 32768
    hint = r"float audio peaks at \d+, far outside \[-1, 1\].*divide them by 32768"
    with pytest.warns(AudioLevelWarning, match=hint) as caught:
        model.transcribe(as_floats)
    assert len(caught) == 1
    with pytest.warns(AudioLevelWarning, match=hint) as caught:
        with model.stream() as s:
            for piece in np.array_split(as_floats, 5):
                s.feed(piece)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.transcribe(speech)  # int16: scaled by the package
        model.transcribe(1.9 * as_floats / 32768)  # loud, but plausibly float audio


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
                                         ("WAV", "FLOAT"), ("WAV", "DOUBLE"), ("WAVEX", "PCM_16")])
def test_wav_streams_read_as_libsndfile_reads_them(tmp_path: Path, fmt: str, subtype: str) -> None:
    from nemotron_cpp.audio import iter_wav_stream, read_wav_header, to_mono_float

    rng = np.random.default_rng(0)
    path = tmp_path / "a.wav"
    soundfile.write(path, rng.uniform(-0.9, 0.9, (4001, 2)), 22050, format=fmt, subtype=subtype)
    expected, _ = soundfile.read(path, dtype="float32", always_2d=True)
    with open(path, "rb") as f:
        head = f.read(4)
        header = read_wav_header(f, head)
        assert (header.sample_rate, header.channels, header.frames) == (22050, 2, 4001)
        pieces = list(iter_wav_stream(f, header, 1000))
    assert [len(p) for p in pieces] == [1000, 1000, 1000, 1000, 1]
    got = np.concatenate([to_mono_float(p) for p in pieces])
    # The same samples, to float32 rounding (libsndfile rounds to float32 before the mean, we after).
    np.testing.assert_allclose(got, expected.mean(axis=1), rtol=0, atol=1e-7)
