"""Tests of nemotron_cpp.testing: random-weight GGUF models in the C++ port's and NVIDIA's layouts.

The references are the two converters' own files for one tiny model (conftest's ``fixtures_dir``): the
writer must reproduce their keys, types, tensor names, dtypes and shapes, and byte for byte the files
themselves when given the same weights. The numpy reference decoder is checked against the engine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import soundfile

gguf = pytest.importorskip("gguf")

from nemotron_cpp import NemotronModel, testing  # noqa: E402

A_F32 = "layout-a-tiny.f32.gguf"
A_Q8 = "layout-a-tiny.q8_0.gguf"
B_Q8 = "layout-b-tiny.q8_0.gguf"

GT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType


# --------------------------------------------------------------------------------------------------
# reading helpers


def _value(field: Any) -> Any:
    types = [GT(t) for t in field.types]
    if types[0] == GT.ARRAY:
        if types[1] == GT.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == GT.STRING:
        return bytes(field.parts[field.data[0]])
    return field.parts[field.data[0]].tolist()[0]


def _keys(reader: Any) -> Dict[str, Tuple[Tuple[GT, ...], Any]]:
    """Metadata in file order: key -> (types, value); strings come back as bytes."""
    return {
        name: (tuple(GT(t) for t in f.types), _value(f))
        for name, f in reader.fields.items()
        if not name.startswith("GGUF.")
    }


def _tensors(reader: Any) -> List[Tuple[str, str, Tuple[int, ...]]]:
    """(name, ggml type name, ne) for every tensor, in file order."""
    return [(t.name, t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in reader.tensors]


def _array(t: Any) -> np.ndarray:
    """A tensor's values as float32 in PyTorch order (reversed ne)."""
    shape = tuple(int(n) for n in reversed(t.shape))
    values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def _read(path: Path) -> Any:
    return gguf.GGUFReader(path)


def _fixture_state_dict(fixtures: Path) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """The fixture model's weights in NeMo shapes, and its vocabulary, from the nemo layout's f32 file."""
    reader = _read(fixtures / A_F32)
    sd = {}
    for t in reader.tensors:
        a = np.array(t.data)
        if "depthwise_conv" in t.name:
            a = np.ascontiguousarray(a.T[:, None, :])  # (k, C) back to NeMo's (C, 1, k)
        elif "pointwise_conv" in t.name:
            a = a[..., None]
        sd[t.name] = a
    return sd, [s.decode() if isinstance(s, bytes) else s for s in _keys(reader)["tokenizer.vocab_list"][1]]


# Tensor selection rules restated from the converters', independently of the module under test.
_A_QUANT = re.compile(r"encoder\.layers\.\d+\.(feed_forward\d+|self_attn|conv)\.[^.]+\.weight$")
_B_LINEAR = re.compile(
    r"(pre_encode\.out|linear\w*|pointwise_conv\d|lstm\.(ih|hh)_l\d|joint\.(enc|pred)|joint_net\.2)\.weight$"
)
_B_HALF = re.compile(r"(pre_encode\.conv\.\d+|depthwise_conv|embed)\.weight$")


def _expected_type(layout: str, name: str, torch_shape: Tuple[int, ...], wtype: str) -> str:
    if layout == "nemo":
        quant = _A_QUANT.search(name) and len(torch_shape) >= 2 and np.prod(torch_shape) >= 256
        return wtype.upper() if quant and "depthwise" not in name else "F32"
    if _B_LINEAR.search(name):
        return wtype.upper()
    return "F16" if _B_HALF.search(name) else "F32"


def _file_arrays(layout: str, sd: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """What each converter stores for a NeMo state dict (pe excluded), keyed by file name."""
    out = {}
    for name, a in sd.items():
        if "pointwise_conv" in name:
            a = a[..., 0]
        if layout == "nemo":
            if "depthwise_conv" in name:
                a = a[:, 0, :].T
            out[name] = a
            continue
        if name == "preprocessor.featurizer.fb":
            out["preprocessor.fb"] = a[0]
        elif name.startswith("preprocessor."):
            continue
        else:
            m = re.match(r"(.*\.lstm)\.(weight|bias)_(ih|hh)_l(\d)$", name)
            out[f"{m[1]}.{m[3]}_l{m[4]}.{m[2]}" if m else name] = a
    return out


# Largest |error| / max|x| a round trip may leave. Half a step, except for q4_0 / q5_0: ggml scales by
# the signed extreme, so the opposite extreme clips and loses a whole step (1/8, 1/16).
_TOLERANCE = {
    "f32": 0.0,
    "f16": 1e-3,
    "bf16": 5e-3,
    "q8_0": 4.5e-3,
    "q5_1": 3.5e-2,
    "q5_0": 6.5e-2,
    "q4_1": 7e-2,
    "q4_0": 0.13,
}
# Values that legitimately differ from the fixtures: the name and the (random) vocabulary.
_IGNORED_VALUES = {
    "general.name",
    "tokenizer.vocab_list",
    "tokenizer.vocab",
    "asr.tokenizer.vocab",
    "asr.tokenizer.spm_model",
}

A_EXTENSION = {
    "nemo.att_context_right": (GT.ARRAY, GT.INT32),
    "nemo.max_symbols_per_step": (GT.UINT32,),
    "nemo.subsampling_conv_channels": (GT.UINT32,),
    "nemo.pred_num_layers": (GT.UINT32,),
    "nemo.xscaling": (GT.BOOL,),
    "nemo.preprocessor.sample_rate": (GT.UINT32,),
    "nemo.preprocessor.window_size": (GT.FLOAT32,),
    "nemo.preprocessor.window_stride": (GT.FLOAT32,),
    "nemo.preprocessor.n_fft": (GT.UINT32,),
    "nemo.preprocessor.preemph": (GT.FLOAT32,),
    "nemo.preprocessor.normalize": (GT.STRING,),
    "nemo.preprocessor.log_zero_guard_value": (GT.FLOAT32,),
    "nemo.preprocessor.mag_power": (GT.FLOAT32,),
    "nemo.preprocessor.dither": (GT.FLOAT32,),
}
B_EXTENSION = {
    "asr.encoder.att_context_right": (GT.ARRAY, GT.INT32),
    "asr.preprocessor.log_zero_guard_value": (GT.FLOAT32,),
    "asr.preprocessor.mag_power": (GT.FLOAT32,),
}


# --------------------------------------------------------------------------------------------------
# agreement with the converters' files


@pytest.mark.parametrize(
    ("fixture", "layout", "wtype"), [(A_F32, "nemo", "f32"), (A_Q8, "nemo", "q8_0"), (B_Q8, "asr", "q8_0")]
)
def test_structure_matches_converter_output(
    fixtures_dir: Path, tmp_path: Path, fixture: str, layout: str, wtype: str
) -> None:
    ref = _read(fixtures_dir / fixture)
    path = testing.write_model(tmp_path / "m.gguf", layout=layout, weight_type=wtype, extended_metadata=False)
    out = _read(path)
    ref_kv, out_kv = _keys(ref), _keys(out)
    assert list(out_kv) == list(ref_kv)
    for key, (types, value) in ref_kv.items():
        assert out_kv[key][0] == types, key
        if key not in _IGNORED_VALUES:
            assert out_kv[key][1] == value, key
    assert _tensors(out) == _tensors(ref)
    assert out.alignment == ref.alignment == 32


@pytest.mark.parametrize(
    ("fixture", "layout", "extension"), [(A_F32, "nemo", A_EXTENSION), (B_Q8, "asr", B_EXTENSION)]
)
def test_extended_metadata_appends_extension_keys(
    fixtures_dir: Path, tmp_path: Path, fixture: str, layout: str, extension: Dict[str, Tuple[Any, ...]]
) -> None:
    ref_kv = _keys(_read(fixtures_dir / fixture))
    kv = _keys(_read(testing.write_model(tmp_path / "m.gguf", layout=layout)))
    assert list(kv) == list(ref_kv) + list(extension)
    for key, types in extension.items():
        assert kv[key][0] == types, key
    prefix = "nemo." if layout == "nemo" else "asr.encoder."
    assert kv[prefix + "att_context_right"][1] == [13, 6, 1, 0]
    guard_key = ("nemo." if layout == "nemo" else "asr.") + "preprocessor.log_zero_guard_value"
    assert kv[guard_key][1] == 2.0**-24
    if layout == "nemo":
        assert kv["nemo.preprocessor.normalize"][1] == b"NA"
        assert kv["nemo.max_symbols_per_step"][1] == 10
        assert kv["nemo.subsampling_conv_channels"][1] == 32


def test_layout_a_f32_is_byte_identical_to_the_converter(fixtures_dir: Path, tmp_path: Path) -> None:
    sd, vocab = _fixture_state_dict(fixtures_dir)
    p = testing.write_model(
        tmp_path / "a.gguf", state_dict=sd, vocab=vocab, extended_metadata=False, name="tiny-random"
    )
    assert p.read_bytes() == (fixtures_dir / A_F32).read_bytes()


def test_layout_b_q8_0_is_byte_identical_to_the_converter(fixtures_dir: Path, tmp_path: Path) -> None:
    sd, vocab = _fixture_state_dict(fixtures_dir)
    ref = _read(fixtures_dir / B_Q8)
    spm = _keys(ref)["asr.tokenizer.spm_model"][1]
    # The converter's pe comes from float32 torch arithmetic; ours is exact, so take its table.
    pe = _array(next(t for t in ref.tensors if t.name == "encoder.pos_enc.pe"))
    p = testing.write_model(
        tmp_path / "b.gguf",
        layout="asr",
        weight_type="q8_0",
        state_dict=sd,
        vocab=vocab,
        extended_metadata=False,
        name="layout-b-tiny.q8_0",
        set_keys={"asr.tokenizer.spm_model": (spm, "STRING")},
        tensor_overrides={"encoder.pos_enc.pe": pe},
    )
    assert p.read_bytes() == (fixtures_dir / B_Q8).read_bytes()


def test_layout_a_q8_0_decodes_like_the_converter(fixtures_dir: Path, tmp_path: Path) -> None:
    # The port's converter rounds with the fp16 scale, ggml's reference with the exact one: the codes
    # may differ by one, so compare values within one quantization step.
    sd, vocab = _fixture_state_dict(fixtures_dir)
    ours = _read(testing.write_model(tmp_path / "a.gguf", weight_type="q8_0", state_dict=sd, vocab=vocab))
    ref = {t.name: t for t in _read(fixtures_dir / A_Q8).tensors}
    for t in ours.tensors:
        assert t.tensor_type == ref[t.name].tensor_type, t.name
        a, b = _array(t), _array(ref[t.name])
        assert np.abs(a - b).max() <= np.abs(b).max() / 127 + 1e-6, t.name


def test_buffers_match_the_checkpoint(fixtures_dir: Path) -> None:
    sd, _ = _fixture_state_dict(fixtures_dir)
    ours = testing.random_state_dict(testing.TINY)
    assert np.array_equal(ours["preprocessor.featurizer.fb"], sd["preprocessor.featurizer.fb"])
    # torch.hann_window's float32 arithmetic differs from np.hanning by a few ulps.
    window = sd["preprocessor.featurizer.window"]
    np.testing.assert_allclose(ours["preprocessor.featurizer.window"], window, atol=1e-6)
    assert list(ours) == list(sd)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in sd.items()}


def test_pe_table(fixtures_dir: Path, tmp_path: Path) -> None:
    reader = _read(testing.write_model(tmp_path / "b.gguf", layout="asr"))
    pe = _array(next(t for t in reader.tensors if t.name == "encoder.pos_enc.pe"))
    assert pe.shape == (9999, 128)
    np.testing.assert_array_equal(pe[4999, 0::2], 0.0)  # position 0
    np.testing.assert_array_equal(pe[4999, 1::2], 1.0)
    r, i = 1234, 5
    p, freq = 4999 - r, 10000.0 ** (-2 * i / 128)
    assert pe[r, 2 * i] == pytest.approx(np.sin(p * freq), abs=1e-6)
    assert pe[r, 2 * i + 1] == pytest.approx(np.cos(p * freq), abs=1e-6)
    # The converter's table is float32 torch arithmetic: off by up to one float32 ulp of the angle.
    ref = next(t for t in _read(fixtures_dir / B_Q8).tensors if t.name == "encoder.pos_enc.pe")
    np.testing.assert_allclose(pe, _array(ref), atol=5e-4)


# --------------------------------------------------------------------------------------------------
# every layout and weight type


@pytest.mark.parametrize("wtype", sorted(testing.WEIGHT_TYPES))
@pytest.mark.parametrize("layout", testing.LAYOUTS)
def test_round_trip(tmp_path: Path, layout: str, wtype: str) -> None:
    reader = _read(testing.write_model(tmp_path / "m.gguf", layout=layout, weight_type=wtype, seed=3))
    expected = _file_arrays(layout, testing.random_state_dict(testing.TINY, seed=3))
    tensors = {t.name: t for t in reader.tensors}
    if layout == "asr":
        assert _keys(reader)["general.file_type"][1] == testing.WEIGHT_TYPES[wtype]
        assert set(tensors) == set(expected) | {"encoder.pos_enc.pe"}
    else:
        assert set(tensors) == set(expected)
    for name, want in expected.items():
        t = tensors[name]
        assert t.tensor_type.name == _expected_type(layout, name, want.shape, wtype), name
        got = _array(t)
        assert got.shape == want.shape, name
        tol = {"F32": 0.0, "F16": 1e-3}.get(t.tensor_type.name, _TOLERANCE[wtype])
        assert np.abs(got - want).max() <= tol * np.abs(want).max() + 1e-7, (name, t.tensor_type.name)


def test_block_rule_keeps_ragged_rows_f16(tmp_path: Path) -> None:
    size = testing.ModelSize(
        n_layers=1, d_model=80, n_heads=4, d_ff=160, subsampling_channels=8, pred_hidden=48, joint_dim=64, vocab=20
    )
    for layout in testing.LAYOUTS:
        path = testing.write_model(tmp_path / f"{layout}.gguf", size=size, layout=layout, weight_type="q4_0")
        types = {t.name: t.tensor_type.name for t in _read(path).tensors}
        assert types["encoder.layers.0.feed_forward1.linear1.weight"] == "F16"  # ne0 = 80
        assert types["encoder.layers.0.feed_forward1.linear2.weight"] == "Q4_0"  # ne0 = 160
        assert types["encoder.layers.0.self_attn.linear_q.weight"] == "F16"
    assert types["decoder.prediction.dec_rnn.lstm.ih_l0.weight"] == "F16"  # ne0 = 48
    assert types["joint.joint_net.2.weight"] == "Q4_0"  # ne0 = 64


# --------------------------------------------------------------------------------------------------
# random weights and vocabulary


def test_random_state_dict_init_and_order() -> None:
    sd = testing.random_state_dict(testing.TINY, seed=1)
    names = list(sd)
    assert names[:2] == ["preprocessor.featurizer.window", "preprocessor.featurizer.fb"]
    assert names[2] == "encoder.pre_encode.out.weight"
    assert names.index("encoder.pre_encode.out.bias") < names.index("encoder.pre_encode.conv.0.weight")
    assert all(a.dtype == np.float32 for a in sd.values())
    assert sd["encoder.pre_encode.out.weight"].shape == (128, 32 * 17)
    assert sd["encoder.pre_encode.conv.0.weight"].shape == (32, 1, 3, 3)
    assert sd["encoder.pre_encode.conv.5.weight"].shape == (32, 1, 3, 3)
    assert sd["encoder.pre_encode.conv.6.weight"].shape == (32, 32, 1, 1)
    assert sd["encoder.layers.1.conv.pointwise_conv1.weight"].shape == (256, 128, 1)
    assert sd["encoder.layers.1.conv.depthwise_conv.weight"].shape == (128, 1, 9)
    assert sd["encoder.layers.1.self_attn.pos_bias_u"].shape == (4, 32)
    assert sd["decoder.prediction.embed.weight"].shape == (129, 128)
    assert sd["joint.joint_net.2.weight"].shape == (129, 128)
    assert not any("linear_q.bias" in n for n in names)
    assert not sd["decoder.prediction.embed.weight"][-1].any()
    assert sd["encoder.layers.0.feed_forward1.linear2.weight"].std() == pytest.approx(512**-0.5, rel=0.05)
    assert sd["encoder.pre_encode.conv.0.weight"].std() == pytest.approx(1 / 3, rel=0.2)
    assert sd["encoder.layers.0.norm_out.weight"].mean() == pytest.approx(1.0, abs=0.05)
    assert sd["encoder.layers.0.norm_out.bias"].std() == pytest.approx(0.05, rel=0.3)
    np.testing.assert_allclose(sd["preprocessor.featurizer.window"], np.hanning(400), atol=1e-7)
    again = testing.random_state_dict(testing.TINY, seed=1)
    assert all(np.array_equal(sd[k], again[k]) for k in sd)
    other = testing.random_state_dict(testing.TINY, seed=2)
    assert not np.array_equal(sd["joint.enc.weight"], other["joint.enc.weight"])


def test_model_size() -> None:
    assert testing.FULL.subsampled_freq == 17 and testing.FULL.d_head == 128 and testing.FULL.vocab_size == 1025
    assert testing.TINY.subsampling_stages == 3
    assert testing.ModelSize(1, 64, 4, 128, 8, att_right=[3, 0]).att_right == (3, 0)
    with pytest.raises(ValueError):
        testing.ModelSize(1, 66, 4, 128, 8)
    with pytest.raises(ValueError):
        testing.ModelSize(1, 64, 4, 128, 8, subsampling_factor=6)


def test_vocab_pieces() -> None:
    pieces = testing.vocab_pieces(1024)
    assert pieces == testing.vocab_pieces(1024, seed=0)
    assert pieces != testing.vocab_pieces(1024, seed=1)
    assert len(pieces) == len(set(pieces)) == 1024
    assert pieces[0] == "<unk>"
    assert all(len(p.encode("utf-8")) <= 7 for p in pieces)
    starts = sum(p.startswith("\u2581") for p in pieces)
    assert 200 < starts < 800
    long = testing.vocab_pieces(500, max_bytes=16)
    assert max(len(p.encode("utf-8")) for p in long) > 7
    assert testing.vocab_pieces(1) == ["<unk>"]


def test_legacy_vocab_blob(tmp_path: Path) -> None:
    vocab = testing.vocab_pieces(128, seed=4)
    kv = _keys(_read(testing.write_model(tmp_path / "a.gguf", vocab=vocab)))
    assert kv["tokenizer.vocab"][0] == (GT.STRING,)
    blob = kv["tokenizer.vocab"][1]
    assert len(blob) == 8 * 128
    assert [blob[i : i + 8].rstrip(b"\0").decode() for i in range(0, len(blob), 8)] == vocab
    assert kv["tokenizer.vocab_list"][1] == vocab

    kv = _keys(_read(testing.write_model(tmp_path / "b.gguf", vocab=vocab, legacy_vocab=False)))
    assert "tokenizer.vocab" not in kv and "tokenizer.vocab_list" in kv

    long = vocab[:-1] + ["\u2581internationally"]
    kv = _keys(_read(testing.write_model(tmp_path / "c.gguf", vocab=long)))
    assert "tokenizer.vocab" not in kv
    with pytest.raises(ValueError):
        testing.write_model(tmp_path / "d.gguf", vocab=long, legacy_vocab=True)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for layout in testing.LAYOUTS:
        a = testing.write_model(tmp_path / f"{layout}1.gguf", layout=layout, weight_type="q4_0", seed=7)
        b = testing.write_model(tmp_path / f"{layout}2.gguf", layout=layout, weight_type="q4_0", seed=7)
        c = testing.write_model(tmp_path / f"{layout}3.gguf", layout=layout, weight_type="q4_0", seed=8)
        # Writing given weights is the same as drawing them from the seed.
        d = testing.write_model(
            tmp_path / f"{layout}4.gguf",
            layout=layout,
            weight_type="q4_0",
            seed=7,
            state_dict=testing.random_state_dict(testing.TINY, seed=7),
        )
        assert a.read_bytes() == b.read_bytes() == d.read_bytes()
        assert a.read_bytes() != c.read_bytes()


# --------------------------------------------------------------------------------------------------
# corruption hooks


def test_drop_and_set_keys(tmp_path: Path) -> None:
    p = testing.write_model(
        tmp_path / "m.gguf",
        drop_keys=["nemo.d_model", "general.architecture"],
        set_keys={
            "nemo.n_layers": (2, "INT32"),
            "nemo.extra": ([1, 2, 3], "ARRAY", "UINT32"),
            "nemo.blob": (b"a\0b", GT.STRING),
            "nemo.n_heads": (4.0, "float32"),
        },
    )
    kv = _keys(_read(p))
    assert "nemo.d_model" not in kv and "general.architecture" not in kv
    names = list(kv)
    assert kv["nemo.n_layers"] == ((GT.INT32,), 2)
    assert names.index("nemo.n_layers") == names.index("nemo.d_ff") + 1  # replaced in place
    assert names[-2:] == ["nemo.extra", "nemo.blob"]
    assert kv["nemo.extra"] == ((GT.ARRAY, GT.UINT32), [1, 2, 3])
    assert kv["nemo.blob"][1] == b"a\0b"
    assert kv["nemo.n_heads"][0] == (GT.FLOAT32,)

    unknown_arch = {"general.architecture": ("whisper", "STRING")}
    path = testing.write_model(tmp_path / "w.gguf", layout="asr", set_keys=unknown_arch)
    kv = _keys(_read(path))
    assert kv["general.architecture"][1] == b"whisper" and list(kv)[0] == "general.architecture"

    with pytest.raises(KeyError):
        testing.write_model(tmp_path / "x.gguf", drop_keys=["nemo.no_such_key"])
    with pytest.raises(ValueError):
        testing.write_model(tmp_path / "x.gguf", set_keys={"k": ([1], "ARRAY")})
    with pytest.raises(ValueError):
        testing.write_model(tmp_path / "x.gguf", set_keys={"k": (1, "UINT33")})


def test_drop_override_and_force_tensors(tmp_path: Path) -> None:
    wrong = np.zeros((7, 128), dtype=np.float32)
    extra = np.arange(64, dtype=np.float32).reshape(2, 32)
    p = testing.write_model(
        tmp_path / "b.gguf",
        layout="asr",
        weight_type="q8_0",
        drop_tensors=["decoder.prediction.dec_rnn.lstm.hh_l1.weight", "preprocessor.fb"],
        tensor_overrides={"joint.enc.weight": wrong, "prompt_kernel.0.weight": extra},
        tensor_types={
            "encoder.layers.0.norm_out.weight": "f16",
            "joint.joint_net.2.bias": QT.F32,
            "prompt_kernel.0.weight": "i32",
            "encoder.pre_encode.out.weight": "q4_0",
        },
    )
    reader = _read(p)
    tensors = {t.name: t for t in reader.tensors}
    assert "decoder.prediction.dec_rnn.lstm.hh_l1.weight" not in tensors and "preprocessor.fb" not in tensors
    assert tuple(tensors["joint.enc.weight"].shape) == (128, 7)
    assert tensors["joint.enc.weight"].tensor_type == QT.Q8_0
    assert not _array(tensors["joint.enc.weight"]).any()
    assert reader.tensors[-1].name == "prompt_kernel.0.weight"
    assert tensors["prompt_kernel.0.weight"].tensor_type == QT.I32
    assert np.array(tensors["prompt_kernel.0.weight"].data).ravel().tolist() == list(range(64))
    assert tensors["encoder.layers.0.norm_out.weight"].tensor_type == QT.F16
    assert tensors["encoder.pre_encode.out.weight"].tensor_type == QT.Q4_0

    with pytest.raises(KeyError):  # the asr layout renames the LSTM tensors
        torch_name = "decoder.prediction.dec_rnn.lstm.weight_hh_l1"
        testing.write_model(tmp_path / "x.gguf", layout="asr", drop_tensors=[torch_name])
    with pytest.raises(KeyError):
        testing.write_model(tmp_path / "x.gguf", tensor_types={"nope": "f16"})
    with pytest.raises(ValueError):  # 400 is not a whole number of 32-blocks
        testing.write_model(tmp_path / "x.gguf", tensor_types={"preprocessor.featurizer.window": "q8_0"})
    assert sorted(f.name for f in tmp_path.iterdir()) == ["b.gguf"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.gguf"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        testing.write_model(target, tensor_types={"preprocessor.featurizer.window": "q4_0"})
    assert target.read_bytes() == b"old"
    testing.write_model(target)
    assert target.read_bytes()[:4] == b"GGUF"
    assert [f.name for f in tmp_path.iterdir()] == ["m.gguf"]


# --------------------------------------------------------------------------------------------------
# the numpy reference decoder


def _speech() -> List[np.ndarray]:
    folder = Path(__file__).parent / "reference" / "tiny"
    return [soundfile.read(folder / f"{name}.wav", dtype="float32")[0] for name in ("speech_a", "speech_b", "speech_noisy")]


def _decoder_weights(model: NemotronModel) -> Dict[str, np.ndarray]:
    return {t.name: model.get_tensor(t.name) for t in model.tensors if t.name.startswith(("decoder.", "joint."))}


def test_reference_decoder_emits_the_engines_tokens(fixtures_dir: Path) -> None:
    with NemotronModel(fixtures_dir / A_F32, n_threads=1) as model:
        w = _decoder_weights(model)
        for audio in _speech():
            for latency in model.latencies_ms:
                with model.stream(latency, chunking="offline", keep_encoder_output=True) as s:
                    s.feed(audio)
                    s.finalize()
                    tokens = testing.greedy_decode(w, s.encoder_output, model.hparams.max_symbols_per_step)
                    assert tokens == s.tokens.tolist(), latency


def test_tuned_joint_emits_its_rate_on_the_engine(tmp_path: Path) -> None:
    """bench/run.py's recipe at the tiny size: the random joint emits a token on every step; tuned on
    the engine's encoder outputs, it emits about the target rate, on the engine as in numpy."""
    size, speech = testing.TINY, _speech()[0]
    state = testing.random_state_dict(size)

    def decode(path: Path) -> Tuple[List[np.ndarray], List[float]]:
        encs, rates = [], []
        with NemotronModel(path, n_threads=1) as model:
            for latency in model.latencies_ms:
                with model.stream(latency, endpointing=False, keep_encoder_output=True) as s:
                    s.feed(speech)
                    s.finalize()
                    encs.append(s.encoder_output)
                    rates.append(len(s.tokens) / s.n_frames)
        return encs, rates

    encs, rates = decode(testing.write_model(tmp_path / "random.gguf", state_dict=state))
    assert rates == [size.max_symbols] * len(encs)
    tuned = testing.tune_joint(state, size, encs, target=0.5)
    assert abs(tuned.tokens_per_frame - 0.5) <= 0.05
    assert tuned.tensors["joint.joint_net.2.bias"][size.vocab] == tuned.blank_bias
    _, rates = decode(testing.write_model(tmp_path / "tuned.gguf", state_dict={**state, **tuned.tensors}))
    assert np.median(rates) == pytest.approx(tuned.tokens_per_frame, abs=0.05)


# --------------------------------------------------------------------------------------------------
# packaging


def test_missing_gguf_gives_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'nemotron-cpp\[convert\]'"):
        testing.write_model(tmp_path / "m.gguf")
    assert testing.vocab_pieces(3)[0] == "<unk>"  # the numpy-only parts still work


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    env = dict(os.environ)
    package_root = str(Path(testing.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "nemotron_cpp.testing", str(out), "--layout", "asr", "--type", "q4_0", "--seed", "2"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert str(out) in result.stdout and str(out.stat().st_size) in result.stdout
    api = testing.write_model(tmp_path / "api.gguf", layout="asr", weight_type="q4_0", seed=2)
    assert out.read_bytes() == api.read_bytes()
