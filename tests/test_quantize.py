"""The GGUF quantizer: type chains on both layouts, what it keeps and what it changes, refusals, atomic
output, the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("yaml")

from nemotron_cpp import ModelFileError, NemotronModel, UnsupportedModelError, testing  # noqa: E402
from nemotron_cpp.gguf import layout as gguf_layout  # noqa: E402
from nemotron_cpp.gguf.convert import convert_nemo  # noqa: E402
from nemotron_cpp.gguf.quantize import RequantizationWarning, quantize_gguf  # noqa: E402

from test_convert import assert_close_for_type, metadata  # noqa: E402


@pytest.fixture(scope="module")
def f32_models(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """The fixture checkpoint converted to f32 in both layouts."""
    folder = tmp_path_factory.mktemp("f32")
    return {
        layout: convert_nemo(fixtures_dir / "tiny-random.nemo", folder / f"{layout}.f32.gguf", layout=layout)
        for layout in ("nemo", "asr")
    }


def tensors(path: Path) -> Dict[str, Any]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def values(t: Any) -> np.ndarray:
    decoded = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    return np.asarray(decoded, dtype=np.float32).reshape([int(n) for n in reversed(t.shape.tolist())])


def raw(t: Any) -> bytes:
    return bytes(np.ascontiguousarray(t.data).view(np.uint8))


@pytest.mark.parametrize("layout", ["nemo", "asr"])
def test_chain_f32_q8_0_q4_0(f32_models: Dict[str, Path], tmp_path: Path, layout: str) -> None:
    source = f32_models[layout]
    q8 = quantize_gguf(source, tmp_path / "q8.gguf", weight_type="q8_0")
    with pytest.warns(RequantizationWarning):
        q4 = quantize_gguf(q8, tmp_path / "q4.gguf", weight_type="q4_0")
    src_kv, src_t = metadata(source), tensors(source)
    for path, wtype in ((q8, "q8_0"), (q4, "q4_0")):
        kv = metadata(path)
        # Every key kept, in order and byte for byte, but the file type (which the asr layout records).
        assert list(kv) == list(src_kv)
        changed = [k for k in kv if kv[k] != src_kv[k]]
        assert changed == (["general.file_type"] if layout == "asr" else [])
        if layout == "asr":
            assert gguf.GGUFReader(path).fields["general.file_type"].contents() == gguf_layout.FILE_TYPES[wtype]
        out_t = tensors(path)
        assert [(n, list(t.shape)) for n, t in out_t.items()] == [(n, list(t.shape)) for n, t in src_t.items()]
        for name, t in out_t.items():
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))
            if not gguf_layout.weight_tensor(layout, name, shape):
                assert t.tensor_type == src_t[name].tensor_type and raw(t) == raw(src_t[name]), name
                continue
            assert t.tensor_type.name == (wtype.upper() if shape[-1] % 32 == 0 else "F16"), name
            if path == q8:
                assert_close_for_type(values(t), values(src_t[name]), wtype, name)
            else:
                # Two roundings: the q8_0 step, then the q4_0 one.
                q8_values = values(tensors(q8)[name])
                assert_close_for_type(values(t), q8_values, wtype, name)
        with NemotronModel(path, backend="cpu") as model:
            assert model.layout == layout and model.weight_type == wtype


@pytest.mark.parametrize("layout", ["nemo", "asr"])
def test_from_f32_equals_converting_to_the_type(
    fixtures_dir: Path, f32_models: Dict[str, Path], tmp_path: Path, layout: str
) -> None:
    # The quantizer and the converter choose the same types and encode the same values the same way.
    for wtype in ("f16", "q5_1", "q4_k"):
        direct = convert_nemo(fixtures_dir / "tiny-random.nemo", tmp_path / f"c.{wtype}.gguf", layout=layout,
                              weight_type=wtype)
        quantized = quantize_gguf(f32_models[layout], tmp_path / f"q.{wtype}.gguf", weight_type=wtype)
        assert quantized.read_bytes() == direct.read_bytes(), wtype


@pytest.mark.parametrize("wtype", list(gguf_layout.FILE_TYPES))
def test_any_type_to_any_type(f32_models: Dict[str, Path], tmp_path: Path, wtype: str) -> None:
    # Going through every type and back to f16 keeps the file loadable and the values near the source.
    mid = quantize_gguf(f32_models["asr"], tmp_path / "mid.gguf", weight_type=wtype)
    back = quantize_gguf(mid, tmp_path / "back.gguf", weight_type="f16")
    src, mid_t, back_t = tensors(f32_models["asr"]), tensors(mid), tensors(back)
    for name, t in back_t.items():
        if gguf_layout.weight_tensor("asr", name, tuple(reversed(t.shape.tolist()))):
            assert t.tensor_type.name == "F16"
            assert_close_for_type(values(t), values(mid_t[name]), "f16", name)
            stored = mid_t[name].tensor_type.name
            assert_close_for_type(values(mid_t[name]), values(src[name]), stored, name)
        else:
            assert raw(t) == raw(src[name]), name
    with NemotronModel(back, backend="cpu") as model:
        assert model.weight_type == "f16"


def test_converter_files_without_final_padding(fixtures_dir: Path, tmp_path: Path) -> None:
    # The C++ port's converter leaves out the padding after the last tensor.
    ref = fixtures_dir / "layout-a-tiny.q8_0.gguf"
    with pytest.warns(RequantizationWarning):
        out = quantize_gguf(ref, tmp_path / "a.q4_0.gguf", weight_type="q4_0")
    assert metadata(out) == metadata(ref)
    with NemotronModel(out, backend="cpu") as model:
        assert model.weight_type == "q4_0"
    out = quantize_gguf(fixtures_dir / "layout-b-tiny.q8_0.gguf", tmp_path / "b.f32.gguf", weight_type="f32")
    with NemotronModel(out, backend="cpu") as model:
        assert model.weight_type == "f32"


def test_requantizing_quantized_weights_warns(f32_models: Dict[str, Path], tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # from the trained values' types: no warning
        q8 = quantize_gguf(f32_models["nemo"], tmp_path / "q8.gguf", weight_type="q8_0")
        f16 = quantize_gguf(f32_models["nemo"], tmp_path / "f16.gguf", weight_type="f16")
        bf16 = quantize_gguf(f32_models["nemo"], tmp_path / "bf16.gguf", weight_type="bf16")
        for source in (f16, bf16):
            quantize_gguf(source, tmp_path / "q4.gguf", weight_type="q4_0", force=True)
        quantize_gguf(q8, tmp_path / "back.gguf", weight_type="f16")  # decoding only: no second rounding
        quantize_gguf(q8, tmp_path / "same.gguf", weight_type="q8_0")  # copied as it is
    with pytest.warns(RequantizationWarning, match=r"q8\.gguf's weights are already quantized \(q8_0\): quantizing "
                      r"them to q4_0 decodes and rounds them again, so the result carries both types' error") as caught:
        quantize_gguf(q8, tmp_path / "q4.gguf", weight_type="q4_0", force=True)
    assert len(caught) == 1


def test_refuses_to_overwrite_its_input(f32_models: Dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "in.gguf"
    src.write_bytes(f32_models["nemo"].read_bytes())
    before = src.read_bytes()
    link = tmp_path / "link.gguf"
    os.link(src, link)
    for dst in (src, link, tmp_path / "." / "in.gguf"):
        with pytest.raises(ValueError, match="refusing to overwrite the input"):
            quantize_gguf(src, dst, weight_type="q8_0", force=True)
    assert src.read_bytes() == before
    existing = tmp_path / "existing.gguf"
    existing.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        quantize_gguf(src, existing, weight_type="q8_0")
    assert existing.read_bytes() == b"keep"
    quantize_gguf(src, existing, weight_type="q8_0", force=True)
    assert existing.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize("interrupt", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_no_output(
    f32_models: Dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: type
) -> None:
    encode = gguf_layout.encode
    calls: List[int] = []

    def failing_encode(*args: Any) -> np.ndarray:
        calls.append(1)
        if len(calls) == 5:  # mid-way through the tensors
            raise interrupt("interrupted")
        return encode(*args)

    monkeypatch.setattr(gguf_layout, "encode", failing_encode)
    with pytest.raises(interrupt):
        quantize_gguf(f32_models["asr"], tmp_path / "new.gguf", weight_type="q4_0")
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old.gguf"
    old.write_bytes(b"previous model")
    calls.clear()
    with pytest.raises(interrupt):
        quantize_gguf(f32_models["asr"], old, weight_type="q4_0", force=True)
    assert old.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["old.gguf"]


def test_refusals(fixtures_dir: Path, tmp_path: Path) -> None:
    planar = testing.write_model(tmp_path / "planar.gguf", layout="asr", weight_type="q8_0",
                                 set_keys={"asr.encoder.q8_layout": ("tensor_planar_v1", "STRING")})
    with pytest.raises(UnsupportedModelError, match="planar"):
        quantize_gguf(planar, tmp_path / "out.gguf", weight_type="q4_0")
    llama = testing.write_model(tmp_path / "llama.gguf", set_keys={"general.architecture": ("llama", "STRING")})
    with pytest.raises(UnsupportedModelError, match="'llama'"):
        quantize_gguf(llama, tmp_path / "out.gguf", weight_type="q4_0")
    text = tmp_path / "text.gguf"
    text.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a readable GGUF file"):
        quantize_gguf(text, tmp_path / "out.gguf", weight_type="q4_0")
    with pytest.raises(FileNotFoundError):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "out.gguf", weight_type="q4_0")
    with pytest.raises(ValueError, match="weight type"):
        quantize_gguf(fixtures_dir / "layout-a-tiny.f32.gguf", tmp_path / "out.gguf", weight_type="q2_k")
    assert not (tmp_path / "out.gguf").exists()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemotron_cpp", *args], capture_output=True, text=True, timeout=120)


def test_cli_quantize(f32_models: Dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "q.gguf"
    done = run("quantize", str(f32_models["nemo"]), str(out), "--type", "q8_0")
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    again = run("quantize", str(f32_models["nemo"]), str(out), "--type", "q8_0")
    assert again.returncode == 1 and again.stderr == f"nemotron-cpp: error: {out} exists; pass --force to overwrite it\n"
    missing = run("quantize", str(tmp_path / "nope.gguf"), str(tmp_path / "x.gguf"), "--type", "q8_0")
    assert missing.returncode == 1 and missing.stderr == f"nemotron-cpp: error: {tmp_path / 'nope.gguf'}: no such file\n"
    requantized = run("quantize", str(out), str(tmp_path / "q4.gguf"), "--type", "q4_0")
    assert requantized.returncode == 0 and str(tmp_path / "q4.gguf") in requantized.stdout
    assert requantized.stderr.startswith("nemotron-cpp: warning: q.gguf's weights are already quantized (q8_0)")
    assert requantized.stderr.count("\n") == 1
    quiet = run("quantize", str(out), str(tmp_path / "q4.gguf"), "--type", "q4_0", "--force", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    same = run("quantize", str(out), str(out), "--type", "q4_0", "--force")
    assert same.returncode == 1 and "refusing to overwrite the input" in same.stderr
    missing_type = run("quantize", str(out), str(tmp_path / "x.gguf"))
    assert missing_type.returncode == 2 and "--type" in missing_type.stderr
