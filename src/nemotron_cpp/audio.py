"""Audio input: files, file-like objects, bytes and numpy arrays, to mono float32 at the model's rate.

Decoding is libsndfile's (through ``soundfile``): WAV, FLAC, OGG/Vorbis, Opus, and MP3 where the
installed libsndfile has it. Resampling is libsoxr's (through ``soxr``), in its "HQ" setting; its
streaming resampler lets a live feed at 48 kHz be converted piece by piece with the same result as
converting it whole.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass
from typing import IO, Any, Iterator, Optional, Tuple, Union

import numpy as np
import soundfile
import soxr

from .errors import AudioError

__all__ = ["AudioInput", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE", "MAX_FLOAT_PEAK", "AudioLevelWarning",
           "TruncatedAudioWarning", "WavHeader", "decode_audio", "iter_audio", "is_container", "iter_wav_stream",
           "live_samples", "read_wav_header", "to_mono_float", "LevelCheck", "Resampler"]

#: Anything the model accepts as audio: a path, a binary file-like object, the bytes of an encoded
#: file or of raw 16-bit little-endian PCM, or a numpy array (frames or frames x channels).
AudioInput = Union[str, "os.PathLike[str]", IO[bytes], bytes, bytearray, memoryview, np.ndarray]

#: Below this, speech has lost the bands the model listens to.
MIN_SAMPLE_RATE = 8000

#: The highest rate common audio hardware records at; above it a rate is a mistake (a rate of 10**9
#: would resample a recording to nothing).
MAX_SAMPLE_RATE = 768000

#: Float samples are taken as they are; a peak above this means they are not in [-1, 1] (int16
#: values given as floats, say), which the model hears as noise.
MAX_FLOAT_PEAK = 2.0

#: Channels above this in a 2-D array almost surely mean a (channels, frames) array.
_MAX_CHANNELS = 64

# Leading bytes of the containers libsndfile reads; other bytes are raw PCM.
_CONTAINER_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff", b"ID3", b".snd", b"\xff\xfb",
                    b"\xff\xf3", b"\xff\xf2", b"\xff\xfa")


class AudioLevelWarning(UserWarning):
    """Float audio far outside [-1, 1]: float samples are taken as they are, so int16 values given as
    floats reach the model 32768 times too loud."""


class TruncatedAudioWarning(UserWarning):
    """An audio file that ends before its header says it does: the result covers only what was there."""


def check_sample_rate(sample_rate: object) -> int:
    """The rate as an int, or a ValueError saying what is wrong with it."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise TypeError(f"sample_rate must be a number of samples per second, not {sample_rate!r}")
    if not float(sample_rate).is_integer() or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, not {sample_rate!r}")
    accepted = f"(accepted: {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz)"
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"the sample rate is {int(sample_rate)} Hz; speech recognition needs at least "
                         f"{MIN_SAMPLE_RATE} Hz {accepted}")
    if sample_rate > MAX_SAMPLE_RATE:
        raise ValueError(f"the sample rate is {int(sample_rate)} Hz, above {MAX_SAMPLE_RATE} Hz, the highest that "
                         f"audio hardware records at {accepted}")
    return int(sample_rate)


def is_container(head: bytes) -> bool:
    """Whether the first bytes of some audio are those of a file libsndfile reads, not raw PCM."""
    return head.startswith(_CONTAINER_MAGIC)


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


def live_samples(pcm: Any) -> np.ndarray:
    """A piece of live audio as an array: numpy arrays as they are, bytes as 16-bit PCM. A path or a file
    is refused with where it should go instead, since a stream takes samples, not files."""
    if isinstance(pcm, np.ndarray):
        return pcm
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        return pcm16_bytes(pcm)
    what = repr(os.fspath(pcm)) if isinstance(pcm, (str, os.PathLike)) else type(pcm).__name__
    raise TypeError(f"feed() and push() take samples: a numpy array or bytes of 16-bit PCM, not {what}; "
                    f"give a file to model.transcribe(), or stream it with `nemotron-cpp stream FILE`")


class LevelCheck:
    """Warns once, at the first float piece of a recording or stream whose peak is above
    :data:`MAX_FLOAT_PEAK`: later pieces of the same audio would only repeat it."""

    def __init__(self) -> None:
        self.warned = False

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """``to_mono_float(samples)``, with the check."""
        audio = to_mono_float(samples)
        if self.warned or samples.dtype.kind != "f" or audio.size == 0:
            return audio
        peak = float(np.abs(audio).max())
        if peak > MAX_FLOAT_PEAK:
            self.warned = True
            warnings.warn(AudioLevelWarning(
                f"float audio peaks at {peak:g}, far outside [-1, 1], and float samples are taken as they are; "
                f"if these are int16 samples given as floats, divide them by 32768 (or pass the int16 array)"))
        return audio


@dataclass(frozen=True)
class WavHeader:
    """What a RIFF WAV header says about the samples after it."""

    sample_rate: int
    channels: int
    format_tag: int  #: 1: integer PCM, 3: IEEE float (WAVE_FORMAT_EXTENSIBLE's sub-format)
    bits: int  #: per sample
    block_align: int  #: bytes per frame
    data_bytes: Optional[int]  #: None where the writer did not know the length (a stream)

    @property
    def frames(self) -> Optional[int]:
        """Frames the data chunk holds, where its size and sample format say."""
        if self.data_bytes is None or self._dtype is None:
            return None
        return self.data_bytes // self.block_align

    @property
    def _dtype(self) -> Optional[str]:
        return {(1, 8): "u1", (1, 16): "<i2", (1, 24): "u1", (1, 32): "<i4", (3, 32): "<f4", (3, 64): "<f8"}.get(
            (self.format_tag, self.bits)) if self.block_align == self.channels * self.bits // 8 else None

    def samples(self, data: bytes) -> np.ndarray:
        """Whole frames of the data chunk as a ``(frames, channels)`` array :func:`to_mono_float` takes."""
        dtype = self._dtype
        if dtype is None:
            raise AudioError(f"the WAV stream holds {self.bits}-bit samples of format {self.format_tag:#x}; "
                             f"only 8/16/24/32-bit integer PCM and 32/64-bit float are read as they arrive")
        values = np.frombuffer(data, dtype=dtype)
        if self.bits == 8:  # unsigned, 128 is zero
            values = ((values.astype(np.int16) - 128) << 8).astype(np.int16)
        elif self.bits == 24:  # three bytes, little-endian: into the top of an int32
            b = values.reshape(-1, 3).astype(np.uint32)
            values = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)).view(np.int32)
        return values.reshape(-1, self.channels)


# A data chunk size of 0 or from here up is a placeholder written by a tool that streams a WAV of
# unknown length into a pipe (sox writes 0x7ffff000, others 0xffffffff).
_UNKNOWN_DATA_SIZE = 0x7FFFF000


def read_wav_header(f: IO[bytes], head: bytes = b"") -> WavHeader:
    """Reads a RIFF WAV header from ``f`` and leaves it at the first sample; ``head`` is what was already
    read of it. Reads no further than the header, so ``f`` may be a pipe."""
    buffer = bytearray(head)

    def take(n: int) -> bytes:
        while len(buffer) < n:
            more = f.read(min(n - len(buffer), 1 << 16))
            if not more:
                raise AudioError("the WAV header ends before its data")
            buffer.extend(more)
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    riff = take(12)
    if riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
        raise AudioError("not a RIFF WAVE header")
    fmt: Optional[bytes] = None
    while True:
        chunk, size = struct.unpack("<4sI", take(8))
        if chunk == b"data":
            break
        body = take(size + size % 2)  # chunks are padded to even sizes
        if chunk == b"fmt ":
            fmt = body[:size]
    if fmt is None or len(fmt) < 16:
        raise AudioError("the WAV header has no fmt chunk before its data")
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
        tag = struct.unpack("<H", fmt[24:26])[0]
    if channels == 0 or block_align == 0:
        raise AudioError(f"the WAV header says {channels} channels of {block_align} bytes")
    return WavHeader(sample_rate=rate, channels=channels, format_tag=tag, bits=bits, block_align=block_align,
                     data_bytes=None if size == 0 or size >= _UNKNOWN_DATA_SIZE else size)


def iter_wav_stream(f: IO[bytes], header: WavHeader, frames: int) -> Iterator[np.ndarray]:
    """The samples after a WAV header as they arrive, ``frames`` at a time, as ``(frames, channels)``
    arrays, until the data chunk or ``f`` ends."""
    left = header.data_bytes
    pending = b""
    while left is None or left > 0:
        data = f.read(frames * header.block_align if left is None else min(frames * header.block_align, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        data = pending + data
        whole = len(data) - len(data) % header.block_align
        pending = data[whole:]
        if whole:
            yield header.samples(data[:whole])


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


def _wav_frames(source: Any) -> Optional[int]:
    """The frames a WAV source's header promises (libsndfile clips the count to what the file holds, so
    it cannot tell a truncated file), or None where it says no length or cannot be read from the start."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                return read_wav_header(f).frames
        position = source.tell()
        try:
            return read_wav_header(source).frames
        finally:
            source.seek(position)
    except (AudioError, OSError, ValueError, AttributeError, struct.error):
        return None


def _open(source: Any) -> Optional[Tuple[soundfile.SoundFile, str, Optional[int]]]:
    """For an encoded source: a SoundFile, a name for messages and the frames its header promises (None
    where unknown); None when the source is samples (array or raw PCM)."""
    if isinstance(source, np.ndarray):
        return None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not is_container(bytes(memoryview(source)[:4])):
            return None
        source = io.BytesIO(source)
        name = "the audio bytes"
    elif isinstance(source, (str, os.PathLike)):
        source = name = os.fspath(source)
        if not os.path.exists(name):
            raise FileNotFoundError(f"no such audio file: {name}")
        if os.path.isdir(name):
            raise IsADirectoryError(f"{name} is a directory, not an audio file")
    elif hasattr(source, "read"):
        name = getattr(source, "name", "the audio file object")
    else:
        raise TypeError(f"audio must be a path, a file-like object, bytes or a numpy array, not {type(source).__name__}")
    wav_frames = _wav_frames(source)  # before libsndfile moves a file object
    try:
        sound = soundfile.SoundFile(source)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"cannot read {name}: {e}") from None
    if sound.format == "WAV":
        promised = wav_frames
    else:  # an MP3's count is mpg123's estimate, exact only with a Xing/Info tag
        promised = sound.frames if sound.format != "MP3" and 0 < sound.frames < 2**62 else None
    return sound, name, promised


def iter_audio(source: AudioInput, sample_rate: Optional[int], out_rate: int,
               block_seconds: float = 10.0) -> Iterator[Tuple[np.ndarray, float, Optional[float]]]:
    """Decodes, mixes down and resamples ``source`` in blocks, so a long file is never whole in memory.

    Yields ``(samples at out_rate, seconds read so far, total seconds or None)``. ``sample_rate`` is the
    rate of an array or of raw PCM (default: ``out_rate``); for an encoded file it is read from the
    file, and a different value given here is an error. Warns (:class:`TruncatedAudioWarning`) when a
    file ends before its header says.
    """
    opened = _open(source)
    if opened is None:
        samples = to_mono_float(pcm16_bytes(source) if not isinstance(source, np.ndarray) else source)  # type: ignore[arg-type]
        rate = check_sample_rate(out_rate if sample_rate is None else sample_rate)
        if samples.size == 0:
            raise ValueError("the audio is empty")
        seconds = samples.size / rate
        yield Resampler(rate, out_rate)(samples, last=True), seconds, seconds
        return
    sound, name, promised = opened
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
            raise AudioError(f"cannot decode {name}: {e}") from None
        if read == 0:
            raise ValueError(f"{name} holds no audio")
        if promised is not None and read < promised:
            warnings.warn(TruncatedAudioWarning(
                f"{name}: truncated: {read} frames ({read / rate:.2f} s) read of the {promised} "
                f"({promised / rate:.2f} s) its header promises; the result covers only what is there"))
        yield resample(np.zeros(0, np.float32), last=True), read / rate, total


def decode_audio(source: AudioInput, sample_rate: Optional[int] = None, out_rate: int = 16000) -> np.ndarray:
    """The whole of ``source`` as mono float32 at ``out_rate``; see :func:`iter_audio` for the inputs.

    >>> decode_audio(np.zeros((4800, 2), np.int16), sample_rate=48000).shape
    (1600,)
    """
    return np.concatenate([block for block, _, _ in iter_audio(source, sample_rate, out_rate)])
