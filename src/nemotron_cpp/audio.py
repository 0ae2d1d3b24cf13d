"""Audio input: files, file-like objects, bytes and numpy arrays, to mono float32 at the model's rate.

Decoding is libsndfile's (through ``soundfile``): WAV, FLAC, OGG/Vorbis, Opus, and MP3 where the
installed libsndfile has it. Resampling is libsoxr's (through ``soxr``), in its "HQ" setting; its
streaming resampler lets a live feed at 48 kHz be converted piece by piece with the same result as
converting it whole.
"""

from __future__ import annotations

import io
import os
from typing import IO, Any, Iterator, Optional, Tuple, Union

import numpy as np
import soundfile
import soxr

from .errors import AudioError

__all__ = ["AudioInput", "MIN_SAMPLE_RATE", "decode_audio", "iter_audio", "to_mono_float", "Resampler"]

#: Anything the model accepts as audio: a path, a binary file-like object, the bytes of an encoded
#: file or of raw 16-bit little-endian PCM, or a numpy array (frames or frames x channels).
AudioInput = Union[str, "os.PathLike[str]", IO[bytes], bytes, bytearray, memoryview, np.ndarray]

#: Below this, speech has lost the bands the model listens to.
MIN_SAMPLE_RATE = 8000

#: Channels above this in a 2-D array almost surely mean a (channels, frames) array.
_MAX_CHANNELS = 64

# Leading bytes of the containers libsndfile reads; other bytes are raw PCM.
_CONTAINER_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff", b"ID3", b".snd", b"\xff\xfb",
                    b"\xff\xf3", b"\xff\xf2", b"\xff\xfa")


def check_sample_rate(sample_rate: object) -> int:
    """The rate as an int, or a ValueError saying what is wrong with it."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise TypeError(f"sample_rate must be a number of samples per second, not {sample_rate!r}")
    if not float(sample_rate).is_integer() or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, not {sample_rate!r}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"the sample rate is {int(sample_rate)} Hz; speech recognition needs at least "
                         f"{MIN_SAMPLE_RATE} Hz")
    return int(sample_rate)


def to_mono_float(samples: Any) -> np.ndarray:
    """A numpy array of samples as contiguous mono float32 in [-1, 1].

    Accepts float32/float64 (taken as they are), int16 (divided by 2**15) and int32 (by 2**31),
    one-dimensional or ``(frames, channels)``; channels are averaged.
    """
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"audio must be a path, a file-like object, bytes or a numpy array, not {type(samples).__name__}")
    if samples.dtype == np.int16:
        audio = samples.astype(np.float32) / np.float32(32768.0)
    elif samples.dtype == np.int32:
        audio = (samples.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif samples.dtype in (np.float32, np.float64):
        audio = samples
    else:
        raise TypeError(f"audio arrays must be float32, float64, int16 or int32, not {samples.dtype}")
    if audio.ndim == 2:
        if audio.shape[1] > _MAX_CHANNELS:
            raise ValueError(f"a 2-D audio array is (frames, channels); {audio.shape} has {audio.shape[1]} channels "
                             f"(pass array.T if it is (channels, frames))")
        if audio.shape[1] == 0:
            raise ValueError(f"the audio array {audio.shape} has no channels")
        audio = audio.mean(axis=1, dtype=np.float64) if audio.shape[1] > 1 else audio[:, 0]
    elif audio.ndim != 1:
        raise ValueError(f"audio arrays must be (frames,) or (frames, channels), not of shape {audio.shape}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise ValueError("the audio contains NaN or infinity")
    return audio


def pcm16_bytes(data: Union[bytes, bytearray, memoryview]) -> np.ndarray:
    """Raw 16-bit little-endian mono PCM as int16 samples."""
    raw = memoryview(data).cast("B")
    if len(raw) % 2:
        raise ValueError(f"raw PCM must be 16-bit samples, but {len(raw)} bytes is an odd count")
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


class Resampler:
    """Converts a feed of mono float32 pieces from one rate to another; the pieces may have any
    size and the result is the same as converting the whole signal at once."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32",
                                                                                quality="HQ")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return np.ascontiguousarray(self._stream.resample_chunk(samples, last=last), dtype=np.float32)


def _open(source: Any) -> Optional[soundfile.SoundFile]:
    """A SoundFile for an encoded source, or None when the source is samples (array or raw PCM)."""
    if isinstance(source, np.ndarray):
        return None
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(memoryview(source)[:4])
        if not head.startswith(_CONTAINER_MAGIC):
            return None
        source = io.BytesIO(source)
        name = "the audio bytes"
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if not os.path.exists(name):
            raise FileNotFoundError(f"no such audio file: {name}")
        if os.path.isdir(name):
            raise IsADirectoryError(f"{name} is a directory, not an audio file")
    elif hasattr(source, "read"):
        name = getattr(source, "name", "the audio file object")
    else:
        raise TypeError(f"audio must be a path, a file-like object, bytes or a numpy array, not {type(source).__name__}")
    try:
        return soundfile.SoundFile(source)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"cannot read {name}: {e}") from None


def iter_audio(source: AudioInput, sample_rate: Optional[int], out_rate: int,
               block_seconds: float = 10.0) -> Iterator[Tuple[np.ndarray, float, Optional[float]]]:
    """Decodes, mixes down and resamples ``source`` in blocks, so a long file is never whole in memory.

    Yields ``(samples at out_rate, seconds read so far, total seconds or None)``. ``sample_rate`` is the
    rate of an array or of raw PCM (default: ``out_rate``); for an encoded file it is read from the
    file, and a different value given here is an error.
    """
    sound = _open(source)
    if sound is None:
        samples = to_mono_float(pcm16_bytes(source) if not isinstance(source, np.ndarray) else source)  # type: ignore[arg-type]
        rate = check_sample_rate(out_rate if sample_rate is None else sample_rate)
        if samples.size == 0:
            raise ValueError("the audio is empty")
        seconds = samples.size / rate
        yield Resampler(rate, out_rate)(samples, last=True), seconds, seconds
        return
    with sound:
        rate = check_sample_rate(sound.samplerate)
        if sample_rate is not None and int(sample_rate) != rate:
            raise ValueError(f"sample_rate={sample_rate} was given, but the file is {rate} Hz")
        total = sound.frames / rate if sound.frames > 0 else None
        resample = Resampler(rate, out_rate)
        block = max(1, int(block_seconds * rate))
        read = 0
        try:
            while True:
                data = sound.read(block, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                read += data.shape[0]
                yield resample(to_mono_float(data)), read / rate, total
        except (soundfile.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"cannot decode {sound.name}: {e}") from None
        if read == 0:
            raise ValueError(f"{sound.name} holds no audio")
        yield resample(np.zeros(0, np.float32), last=True), read / rate, total


def decode_audio(source: AudioInput, sample_rate: Optional[int] = None, out_rate: int = 16000) -> np.ndarray:
    """The whole of ``source`` as mono float32 at ``out_rate``; see :func:`iter_audio` for the inputs.

    >>> decode_audio(np.zeros((4800, 2), np.int16), sample_rate=48000).shape
    (1600,)
    """
    return np.concatenate([block for block, _, _ in iter_audio(source, sample_rate, out_rate)])
