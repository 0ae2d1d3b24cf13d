"""The log-mel frontend against an independent float64 implementation of NeMo's preprocessor.

(The comparison with NeMo's own features is in the reference-fixture tests.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nemotron_cpp import NemotronModel


def nemo_log_mel(x: np.ndarray, window: np.ndarray, fb: np.ndarray, n_fft: int = 512, hop: int = 160,
                 preemph: float = 0.97, guard: float = 2.0**-24) -> np.ndarray:
    """AudioToMelSpectrogramPreprocessor with this model family's settings, in float64."""
    x = x.astype(np.float64)
    y = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])
    padded = np.pad(y, n_fft // 2)  # torch.stft(center=True, pad_mode="constant")
    win = np.zeros(n_fft)
    offset = (n_fft - len(window)) // 2
    win[offset:offset + len(window)] = window
    n_frames = 1 + len(x) // hop
    frames = np.stack([padded[t * hop:t * hop + n_fft] * win for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = np.log(fb.astype(np.float64) @ power.T + guard)
    mel[:, -1] = 0.0  # NeMo's mel_len is len(x) // hop; the last frame is masked to pad_value 0
    return mel


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> NemotronModel:
    return NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf")


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.2 * np.sin(2 * np.pi * 3 * t)))
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 159, 160, 161, 400, 512, 16000, 16007, 48123])
def test_matches_float64_reference(model: NemotronModel, n: int) -> None:
    x = speechlike(n, seed=n)
    got = model.log_mel(x)
    want = nemo_log_mel(x, model.window, model.mel_filterbank)
    assert got.shape == (128, 1 + n // 160)
    assert np.all(got[:, -1] == 0.0)
    # float32 spectra against float64: the log of the mel energies agrees to ~1e-5 wherever the
    # energy is well above the 2^-24 guard.
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)


def test_silence_is_the_log_guard(model: NemotronModel) -> None:
    mel = model.log_mel(np.zeros(3200, np.float32))
    np.testing.assert_allclose(mel[:, :-1], np.log(np.float32(2.0**-24)), rtol=1e-6)


def test_bad_audio(model: NemotronModel) -> None:
    with pytest.raises(ValueError, match="empty"):
        model.log_mel(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.log_mel(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match=r"pass array\.T"):
        model.log_mel(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match=r"\(frames,\) or \(frames, channels\)"):
        model.log_mel(np.zeros((2, 100, 1), np.float32))
    with pytest.raises(TypeError, match="float32, float64, int16 or int32"):
        model.log_mel(np.zeros(100, np.uint8))
    np.testing.assert_array_equal(model.log_mel(np.full(800, 16384, np.int16)), model.log_mel(np.full(800, 0.5, np.float32)))
