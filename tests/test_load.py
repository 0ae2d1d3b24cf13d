"""Loading models of both GGUF layouts: the real converters' fixtures and generated models."""

from __future__ import annotations

import dataclasses
import doctest
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import nemotron_cpp
from nemotron_cpp import BackendError, HParams, ModelInfo, NemotronModel, testing

FIXTURE_FILES = ["layout-a-tiny.f32.gguf", "layout-a-tiny.q8_0.gguf", "layout-b-tiny.q8_0.gguf"]

# The tiny fixture model (fixtures/README.md), as NeMo configured it.
TINY_FIXTURE = dict(
    n_mels=128, d_model=128, n_heads=4, d_head=32, d_ff=512, n_layers=2, conv_kernel_size=9,
    subsampling_factor=8, subsampling_conv_channels=32, xscaling=False, use_bias=False,
    att_left_context=70, att_right_contexts=(13, 6, 1, 0), vocab_size=129, blank_id=128,
    pred_embed_dim=128, pred_hidden=128, pred_num_layers=2, joint_dim=128, max_symbols_per_step=10,
    num_prompts=0, sample_rate=16000, n_fft=512, win_length=400, hop_length=160, mag_power=2.0,
    dither=0.0, normalize="none",
)


def expected_hparams(size: testing.ModelSize) -> dict:
    return dict(
        n_mels=size.n_mels, d_model=size.d_model, n_heads=size.n_heads, d_head=size.d_model // size.n_heads,
        d_ff=size.d_ff, n_layers=size.n_layers, conv_kernel_size=size.conv_kernel,
        subsampling_factor=size.subsampling_factor, subsampling_conv_channels=size.subsampling_channels,
        att_left_context=size.att_left, att_right_contexts=tuple(size.att_right), vocab_size=size.vocab + 1,
        blank_id=size.vocab, pred_embed_dim=size.pred_hidden, pred_hidden=size.pred_hidden,
        pred_num_layers=size.pred_layers, joint_dim=size.joint_dim, max_symbols_per_step=size.max_symbols,
    )


def assert_hparams(hp: HParams, expected: dict) -> None:
    got = dataclasses.asdict(hp)
    mismatched = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not mismatched, f"hparams (got, expected): {mismatched}"


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixtures_load(fixtures_dir: Path, name: str) -> None:
    with NemotronModel(fixtures_dir / name) as model:
        assert_hparams(model.hparams, TINY_FIXTURE)
        assert model.hparams.preemph == pytest.approx(0.97)
        assert model.hparams.log_zero_guard == pytest.approx(2.0**-24)
        assert model.layout == ("nemo" if name.startswith("layout-a") else "asr")
        assert model.weight_type == ("f32" if ".f32." in name else "q8_0")
        assert len(model.vocabulary) == 128
        assert model.vocabulary[:3] == ("<unk>", "\u2581t", "\u2581w")
        assert model.uses_mmap
        assert model.backend == "CPU"


def test_both_layouts_map_to_one_representation(fixtures_dir: Path) -> None:
    """The same weights in the two layouts give the same hyperparameters, vocabulary, tensor
    names and frontend tables (the asr layout rebuilds the window it does not store)."""
    with NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf") as a, \
            NemotronModel(fixtures_dir / "layout-b-tiny.q8_0.gguf") as b:
        assert a.hparams == b.hparams
        assert a.vocabulary == b.vocabulary
        names_a = {t.name for t in a.tensors}
        names_b = {t.name for t in b.tensors} - {"encoder.pos_enc.pe"}
        assert names_a == names_b
        assert "decoder.prediction.dec_rnn.lstm.weight_ih_l0" in names_b  # the asr layout's LSTM names are mapped
        dw = {t.name: t for t in b.tensors}["encoder.layers.0.conv.depthwise_conv.weight"]
        assert (dw.type, dw.shape) == ("f32", (9, 128))  # held as F32 [kernel, channels] from either layout
        np.testing.assert_array_equal(a.mel_filterbank, b.mel_filterbank)
        # torch builds its Hann window in float32 with a vectorised cosine: agree to an ulp.
        np.testing.assert_allclose(b.window, a.window, rtol=0, atol=1e-7)


def test_tensor_values_agree_across_layouts(fixtures_dir: Path) -> None:
    """The same weights read from both layouts and every storage type agree: exactly where both
    files store f32, within f16 rounding where the asr layout stores f16, and the q8_0 matrices are
    within one quantization step of the f32 originals."""
    with NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf") as f32, \
            NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf") as a8, \
            NemotronModel(fixtures_dir / "layout-b-tiny.q8_0.gguf") as b8:
        b_types = {t.name: t.type for t in b8.tensors}
        for info in f32.tensors:
            ref = f32.get_tensor(info.name)
            for other, source_type in ((a8, {t.name: t.type for t in a8.tensors}[info.name]),
                                       (b8, b_types[info.name])):
                got = other.get_tensor(info.name)
                assert got.shape == ref.shape, info.name
                # The asr layout stores convolution kernels in f16 (held as f32) and has no window.
                rebuilt_by_b = (info.name.endswith("depthwise_conv.weight") or info.name.endswith(".window")
                                or info.name.startswith("encoder.pre_encode.conv."))
                if source_type == "f32" and not (other is b8 and rebuilt_by_b):
                    np.testing.assert_array_equal(got, ref, err_msg=info.name)
                elif source_type == "q8_0":
                    # Rounding to the step d = max|x| / 127 errs by d / 2; storing d as f16 adds up
                    # to 127 * d * 2^-11.
                    step = np.abs(ref.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
                    assert np.all(np.abs(got - ref).reshape(-1, 32) <= step * (0.5 + 127 * 2.0**-11)), info.name
                else:  # f16 in the asr layout (convolutions, embedding), or its rebuilt window
                    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-7, err_msg=info.name)
        with pytest.raises(KeyError, match="no tensor 'nope'"):
            f32.get_tensor("nope")


def test_rebuilt_filterbank_matches_nemo(fixtures_dir: Path, model_factory: Callable[..., Path]) -> None:
    """An asr-layout file without its filterbank (NVIDIA's converter omits it when librosa is
    missing) gets the librosa Slaney filterbank NeMo uses, bit for bit."""
    path = model_factory(layout="asr", weight_type="f32", drop_tensors=["preprocessor.fb"])
    with NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf") as ref, NemotronModel(path) as model:
        assert model.mel_filterbank.shape == (128, 257)
        np.testing.assert_array_equal(model.mel_filterbank, ref.mel_filterbank)


@pytest.mark.parametrize("layout", ["nemo", "asr"])
@pytest.mark.parametrize("weight_type", ["f32", "f16", "q8_0", "q4_0"])
def test_generated_models_load(model_factory: Callable[..., Path], layout: str, weight_type: str) -> None:
    size = testing.TINY
    path = model_factory(layout=layout, weight_type=weight_type)
    with NemotronModel(path) as model:
        assert_hparams(model.hparams, expected_hparams(size))
        assert model.layout == layout
        assert model.weight_type == weight_type
        assert model.vocabulary == tuple(testing.vocab_pieces(size.vocab))
        types = {t.name: t.type for t in model.tensors}
        assert types["encoder.layers.1.feed_forward2.linear1.weight"] == weight_type
        assert types["encoder.layers.0.norm_out.weight"] == "f32"
        assert model.file_size == path.stat().st_size
        # The properties are the fields of model.info, one frozen record.
        assert isinstance(model.info, ModelInfo) and model.info.name == "random-test-model"
        assert [getattr(model, f.name) for f in dataclasses.fields(ModelInfo)] == list(dataclasses.astuple(model.info))
        with pytest.raises(dataclasses.FrozenInstanceError):
            model.info.n_threads = 1  # type: ignore[misc]


@pytest.mark.parametrize("layout", ["nemo", "asr"])
def test_every_hyperparameter_reads_back(model_factory: Callable[..., Path], layout: str) -> None:
    """Non-default values for every hyperparameter a file can carry come back as written."""
    size = testing.ModelSize(
        n_layers=3, d_model=96, n_heads=3, d_ff=160, subsampling_channels=16, n_mels=80, conv_kernel=5,
        subsampling_factor=4, pred_hidden=48, pred_layers=1, joint_dim=40, vocab=50, att_left=33,
        att_right=(4, 2, 0), max_symbols=7,
    )
    path = model_factory(size=size, layout=layout, weight_type="f32")
    with NemotronModel(path) as model:
        assert_hparams(model.hparams, expected_hparams(size))
        assert model.vocabulary == tuple(testing.vocab_pieces(size.vocab))
        assert model.mel_filterbank.shape == (80, 257)


def test_layout_a_without_extension_keys(model_factory: Callable[..., Path]) -> None:
    """A file exactly as the C++ port's converter writes it: the missing values are inferred
    from tensor shapes or are the family's defaults."""
    path = model_factory(layout="nemo", weight_type="q8_0", extended_metadata=False)
    with NemotronModel(path) as model:
        assert_hparams(model.hparams, expected_hparams(testing.TINY))


def test_layout_a_inferred_from_shapes(model_factory: Callable[..., Path]) -> None:
    """Every hyperparameter key of the nemo layout is optional: shapes give them back."""
    keys = ["nemo." + k for k in ("n_mels", "d_model", "n_heads", "d_head", "d_ff", "n_layers", "kernel_size",
                                  "vocab_size", "decoder_dim", "joint_dim", "subsampling_factor")]
    path = model_factory(layout="nemo", weight_type="f32", extended_metadata=False, drop_keys=keys)
    with NemotronModel(path) as model:
        assert_hparams(model.hparams, expected_hparams(testing.TINY))


def test_legacy_vocabulary_blob(model_factory: Callable[..., Path]) -> None:
    """Old nemo-layout files carry only tokenizer.vocab, 8-byte NUL-padded records."""
    path = model_factory(layout="nemo", drop_keys=["tokenizer.vocab_list"], legacy_vocab=True)
    with NemotronModel(path) as model:
        assert model.vocabulary == tuple(testing.vocab_pieces(testing.TINY.vocab))


def test_long_pieces_round_trip(model_factory: Callable[..., Path]) -> None:
    """Pieces longer than the legacy record (multilingual vocabularies) load from vocab_list."""
    vocab = testing.vocab_pieces(testing.TINY.vocab)
    vocab[5] = "\u2581" + "überlängeresWort"
    vocab[6] = "<0x0A>"
    path = model_factory(layout="nemo", vocab=vocab)
    with NemotronModel(path) as model:
        assert model.vocabulary == tuple(vocab)


def test_without_mmap(fixtures_dir: Path) -> None:
    with NemotronModel(fixtures_dir / "layout-b-tiny.q8_0.gguf", use_mmap=False) as model:
        assert not model.uses_mmap
        assert model.hparams.n_layers == 2


def test_q8_0_weights_read_and_compute_alike_with_or_without_mmap(fixtures_dir: Path) -> None:
    """Without mmap the q8_0 matrices are packed where they were loaded (on CPUs with AVX-512 VNNI):
    get_tensor still returns the file's values and recognition is the same as from the mapped file."""
    path = fixtures_dir / "layout-a-tiny.q8_0.gguf"
    audio = np.random.default_rng(3).standard_normal(16000 * 3).astype(np.float32) * 0.1
    with NemotronModel(path) as mapped, NemotronModel(path, use_mmap=False) as loaded:
        names = [t.name for t in mapped.tensors if t.type == "q8_0" and t.name.startswith("encoder.layers.")]
        assert names
        for name in names:
            np.testing.assert_array_equal(loaded.get_tensor(name), mapped.get_tensor(name))
        assert loaded.transcribe(audio).text == mapped.transcribe(audio).text
        with mapped.stream(keep_encoder_output=True) as a, loaded.stream(keep_encoder_output=True) as b:
            a.feed(audio), b.feed(audio)
            a.finalize(), b.finalize()
            np.testing.assert_array_equal(a.encoder_output, b.encoder_output)


def test_threads_and_backend_arguments(fixtures_dir: Path) -> None:
    path = fixtures_dir / "layout-a-tiny.q8_0.gguf"
    with NemotronModel(path, n_threads=3, backend="cpu") as model:
        assert model.n_threads == 3
        assert model.backend == "CPU"
    with NemotronModel(path) as model:
        assert model.n_threads >= 1
    with pytest.raises(ValueError, match="n_threads"):
        NemotronModel(path, n_threads=0)
    with pytest.raises(ValueError, match="backend must be"):
        NemotronModel(path, backend="tpu")
    if not any(d.type in ("gpu", "igpu") for d in nemotron_cpp.system_info().devices):
        with pytest.raises(BackendError, match="there is no GPU 0"):
            NemotronModel(path, backend="gpu")


def test_close_and_context_manager(fixtures_dir: Path) -> None:
    model = NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf")
    assert not model.closed
    model.close()
    model.close()
    assert model.closed
    with pytest.raises(ValueError, match="closed"):
        model.window
    assert "closed" in repr(model)
    assert model.hparams.d_model == 128  # plain data stays readable


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        NemotronModel(tmp_path / "nope.gguf")


def test_system_info() -> None:
    info = nemotron_cpp.system_info()
    assert info.version == "0.1.0"
    assert info.ggml_version == "0.15.3"
    assert "CPU" in info.backends
    assert any(d.type == "cpu" for d in info.devices)
    assert info.cpu_features  # e.g. {"AVX2": "1", ...}
    assert "ggml 0.15.3" in str(info)
    # Each device with its memory (the free part moves between reads; the total does not).
    for d in info.devices:
        assert re.search(rf"{re.escape(d.name)} \({re.escape(d.description)}, \d+\.\d of "
                         rf"{d.memory_total / 2**30:.1f} GiB free\)", str(info)), str(info)


def test_docstring_examples(fixtures_dir: Path) -> None:
    for module in (nemotron_cpp.model, nemotron_cpp.info):
        result = doctest.testmod(module, extraglobs={"tiny_model_path": fixtures_dir / "layout-a-tiny.q8_0.gguf"})
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_weights_are_used_in_place(model_factory: Callable[..., Path]) -> None:
    """Loading maps the file instead of reading it: resident memory grows by far less than
    the file (it would grow by all of it if the weights were copied)."""
    import subprocess
    import sys

    size = testing.ModelSize(n_layers=8, d_model=512, n_heads=8, d_ff=2048, subsampling_channels=64,
                             pred_hidden=256, joint_dim=256, vocab=256)
    path = model_factory(size=size, layout="nemo", weight_type="f32")
    script = (
        "import sys, resource\n"
        "from nemotron_cpp import NemotronModel\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()\n"
        "before = rss()\n"
        "m = NemotronModel(sys.argv[1], use_mmap=sys.argv[2] == '1')\n"
        "print(rss() - before)\n"
    )
    grow = {}
    for mmap in ("1", "0"):
        out = subprocess.run([sys.executable, "-c", script, str(path), mmap], capture_output=True, text=True, check=True)
        grow[mmap] = int(out.stdout.strip())
    file_size = path.stat().st_size
    assert file_size > 60_000_000
    assert grow["1"] < 0.1 * file_size, grow
    assert grow["0"] > 0.9 * file_size, grow  # the copy path really holds the weights
