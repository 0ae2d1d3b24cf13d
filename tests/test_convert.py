"""The .nemo converter: NeMo's tiny fixture converted to both layouts in every weight type, read back
through the engine and compared with the checkpoint; the two existing converters' files as references;
the checkpoint reader; refusals; the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
yaml = pytest.importorskip("yaml")

import nemotron_cpp  # noqa: E402
from nemotron_cpp import ModelFileError, NemotronModel, UnsupportedModelError  # noqa: E402
from nemotron_cpp.gguf.convert import convert_nemo, model_config  # noqa: E402
from nemotron_cpp.gguf.layout import FILE_TYPES, relative_pe  # noqa: E402
from nemotron_cpp.gguf.nemo_checkpoint import read_nemo, read_torch_state_dict, sentencepiece_pieces  # noqa: E402

NEMO = "tiny-random.nemo"
REFERENCE = {"nemo": "layout-a-tiny.f32.gguf", "asr": "layout-b-tiny.q8_0.gguf"}

# Largest |error| a weight type may leave, as a fraction of the largest |value| in the same block of
# (block size) values along a row. One quantization step for the 32-blocks (the signed-max scale of
# q4_0 / q5_0 clips the opposite extreme by up to a step); the k-quants quantize their sub-block scales
# too, so they are bounded over the 256-value super-block.
BLOCK_BOUND: Dict[str, Tuple[int, float]] = {
    "q8_0": (32, 1 / 127),
    "q5_1": (32, 1 / 28),
    "q5_0": (32, 1 / 14),
    "q4_1": (32, 1 / 13),
    "q4_0": (32, 1 / 7),
    "q6_k": (256, 1 / 48),
    "q5_k": (256, 1 / 16),
    "q4_k": (256, 1 / 9),
}


def assert_close_for_type(got: np.ndarray, want: np.ndarray, file_type: str, name: str) -> None:
    """``got`` decodes ``want`` stored as ``file_type`` (a ggml type name, any case)."""
    file_type = file_type.lower()
    assert got.shape == want.shape, name
    if file_type == "f32":
        assert np.array_equal(got, want), name
        return
    err = np.abs(got - want)
    if file_type in ("f16", "bf16"):
        rel = 2.0**-11 if file_type == "f16" else 2.0**-8
        assert (err <= rel * np.abs(want) + 1e-7).all(), (name, file_type, err.max())
        return
    block, bound = BLOCK_BOUND[file_type]
    amax = np.abs(want).reshape(-1, block).max(axis=1, keepdims=True)
    assert (err.reshape(-1, block) <= bound * amax + 1e-7).all(), (name, file_type, err.max())


def file_name(layout: str, name: str) -> str:
    """The name a state-dict entry has in a file of the layout."""
    if layout == "asr":
        if name == "preprocessor.featurizer.fb":
            return "preprocessor.fb"
        parts = name.split(".")
        if ".lstm." in name:
            kind, which, layer = parts[-1].split("_")  # weight_ih_l0
            return ".".join(parts[:-1]) + f".{which}_{layer}.{kind}"
    return name


def engine_view(name: str, array: np.ndarray) -> np.ndarray:
    """A checkpoint tensor in the shape the engine holds it (NemotronModel.get_tensor)."""
    if "pointwise_conv" in name:
        return array[..., 0]
    if "depthwise_conv" in name:
        return array[:, 0, :]
    if name == "preprocessor.featurizer.fb":
        return array[0]
    return array


# Which state-dict entries each layout stores in the file's weight type, restated from the converters' rules.
_A_WEIGHTS = re.compile(r"encoder\.layers\.\d+\.(feed_forward\d+|self_attn|conv)\.[^.]+\.weight$")
_B_WEIGHTS = re.compile(
    r"(pre_encode\.out\.weight|\.linear\w*\.weight|pointwise_conv\d\.weight|lstm\.weight_(ih|hh)_l\d"
    r"|joint\.(enc|pred|joint_net\.2)\.weight)$"
)


def weight_rows(layout: str, name: str, shape: Tuple[int, ...]) -> bool:
    """Whether a layout stores the state-dict entry in the file's weight type."""
    if layout == "nemo":
        return bool(_A_WEIGHTS.search(name)) and len(shape) >= 2 and "depthwise" not in name
    return bool(_B_WEIGHTS.search(name))


def metadata(path: Path) -> Dict[str, bytes]:
    """Every metadata key with its raw bytes (key, type and value) as stored, in file order."""
    reader = gguf.GGUFReader(path)
    return {
        k: b"".join(bytes(np.ascontiguousarray(p).view(np.uint8)) for p in f.parts)
        for k, f in reader.fields.items()
        if not k.startswith("GGUF.")
    }


def extract(nemo: Path, folder: Path) -> Path:
    """Extract a .nemo (whose members are flat) into ``folder``, as NeMo's restore does."""
    folder.mkdir(exist_ok=True)
    with tarfile.open(nemo) as tar:
        for member in tar.getmembers():
            if member.isfile():
                (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return folder


@pytest.fixture(scope="module")
def nemo_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / NEMO


@pytest.fixture(scope="module")
def checkpoint(nemo_path: Path) -> Any:
    return read_nemo(nemo_path)


@pytest.fixture(scope="module")
def references(fixtures_dir: Path) -> Dict[str, Tuple[Dict[str, Any], Tuple[str, ...]]]:
    """Hyperparameters and vocabulary the engine reads from the existing converters' files."""
    out = {}
    for layout, name in REFERENCE.items():
        with NemotronModel(fixtures_dir / name, backend="cpu") as model:
            out[layout] = (dataclasses.asdict(model.hparams), model.vocabulary)
    return out


# --------------------------------------------------------------------------------------------------
# every layout and type, read back by the engine


@pytest.mark.parametrize("wtype", list(FILE_TYPES))
@pytest.mark.parametrize("layout", ["nemo", "asr"])
def test_convert_loads_and_round_trips(
    nemo_path: Path, checkpoint: Any, references: Dict[str, Any], tmp_path: Path, layout: str, wtype: str
) -> None:
    out = convert_nemo(nemo_path, tmp_path / "m.gguf", layout=layout, weight_type=wtype)
    file_types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    hparams, vocabulary = references[layout]
    with NemotronModel(out, backend="cpu") as model:
        assert model.layout == layout
        assert dataclasses.asdict(model.hparams) == hparams
        assert model.vocabulary == vocabulary
        held = {t.name for t in model.tensors}
        for name, array in checkpoint.state_dict.items():
            want = engine_view(name, np.asarray(array, dtype=np.float32))
            got = model.get_tensor(name)
            held.discard(name)
            if name == "preprocessor.featurizer.window" and layout == "asr":
                # The asr layout has no window: the engine rebuilds the symmetric Hann window (torch's float32
                # arithmetic differs from an exact one by a few ulps).
                np.testing.assert_allclose(got, want, atol=1e-6)
                continue
            stored = file_types[file_name(layout, name)]
            assert_close_for_type(got, want, stored, name)
            if weight_rows(layout, name, array.shape):
                block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[wtype.upper()]][0]
                assert stored == (wtype.upper() if want.shape[-1] % block == 0 else "F16"), name
        # The engine holds nothing that is not in the checkpoint: not the asr layout's position table either,
        # since it computes the positions a chunk needs.
        assert not held


def test_pe_table_is_exact(nemo_path: Path, tmp_path: Path) -> None:
    out = convert_nemo(nemo_path, tmp_path / "b.gguf", layout="asr")
    (pe,) = [t for t in gguf.GGUFReader(out).tensors if t.name == "encoder.pos_enc.pe"]
    assert np.array_equal(np.asarray(pe.data), relative_pe(128, 5000))


# --------------------------------------------------------------------------------------------------
# agreement with the existing converters' files


def test_layout_a_matches_the_ports_converter(fixtures_dir: Path, nemo_path: Path, tmp_path: Path) -> None:
    out = convert_nemo(nemo_path, tmp_path / "tiny-random.gguf")
    ref, ours = gguf.GGUFReader(fixtures_dir / REFERENCE["nemo"]), gguf.GGUFReader(out)
    assert [(t.name, t.tensor_type, list(t.shape)) for t in ours.tensors] == [
        (t.name, t.tensor_type, list(t.shape)) for t in ref.tensors
    ]
    for a, b in zip(ref.tensors, ours.tensors):
        assert bytes(np.asarray(a.data)) == bytes(np.asarray(b.data)), a.name
    ref_kv, our_kv = metadata(fixtures_dir / REFERENCE["nemo"]), metadata(out)
    assert list(our_kv)[: len(ref_kv)] == list(ref_kv)
    assert all(our_kv[k] == v for k, v in ref_kv.items())
    extra = list(our_kv)[len(ref_kv) :]
    assert all(k.startswith("nemo.") for k in extra[:-3])
    assert extra[-3:] == ["general.source.file", "general.source.sha256", "general.converter"]


def test_layout_b_matches_nvidias_converter(fixtures_dir: Path, nemo_path: Path, tmp_path: Path) -> None:
    out = convert_nemo(nemo_path, tmp_path / "b.gguf", layout="asr", weight_type="q8_0")
    ref_kv, our_kv = metadata(fixtures_dir / REFERENCE["asr"]), metadata(out)
    # NVIDIA's converter named this file after its output; ours names it after the .nemo.
    assert [k for k, v in ref_kv.items() if our_kv.get(k) != v] == ["general.name"]
    ref = {t.name: t for t in gguf.GGUFReader(fixtures_dir / REFERENCE["asr"]).tensors}
    ours = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert list(ours) == list(ref)
    # Its pe table comes from float32 torch arithmetic; ours is exact.
    differ = [n for n, t in ref.items() if bytes(np.asarray(t.data)) != bytes(np.asarray(ours[n].data))]
    assert differ == ["encoder.pos_enc.pe"]


def test_provenance_and_config_values(nemo_path: Path, tmp_path: Path) -> None:
    out = convert_nemo(nemo_path, tmp_path / "a.gguf")
    fields = gguf.GGUFReader(out).fields
    assert fields["general.source.file"].contents() == NEMO
    assert fields["general.source.sha256"].contents() == hashlib.sha256(nemo_path.read_bytes()).hexdigest()
    assert fields["general.converter"].contents() == f"nemotron-cpp {nemotron_cpp.__version__}"
    assert fields["general.name"].contents() == "tiny-random"
    assert fields["nemo.att_context_right"].contents() == [13, 6, 1, 0]
    assert fields["nemo.max_symbols_per_step"].contents() == 10
    assert fields["nemo.preprocessor.normalize"].contents() == "NA"


def test_config_values_reach_the_file(nemo_path: Path, tmp_path: Path) -> None:
    extracted = extract(nemo_path, tmp_path / "extracted")
    config_path = extracted / "model_config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["decoding"]["greedy"]["max_symbols"] = 5
    config["encoder"]["att_context_size"] = [[70, 6], [70, 0]]
    config["preprocessor"]["preemph"] = 0.9
    config["encoder"]["xscaling"] = True
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    for layout in ("nemo", "asr"):
        out = convert_nemo(extracted, tmp_path / f"{layout}.gguf", layout=layout)
        with NemotronModel(out, backend="cpu") as model:
            hp = model.hparams
            assert (hp.max_symbols_per_step, hp.att_right_contexts, hp.xscaling) == (5, (6, 0), True)
            assert hp.preemph == pytest.approx(0.9)


# --------------------------------------------------------------------------------------------------
# the checkpoint reader


def test_extracted_directory_and_tokenizer_fallbacks(nemo_path: Path, checkpoint: Any, tmp_path: Path) -> None:
    extract(nemo_path, tmp_path)
    from_dir = read_nemo(tmp_path)
    assert list(from_dir.state_dict) == list(checkpoint.state_dict)
    assert all(np.array_equal(from_dir.state_dict[k], v) for k, v in checkpoint.state_dict.items())
    assert from_dir.config == checkpoint.config
    assert sentencepiece_pieces(checkpoint.spm_model) == checkpoint.vocabulary
    # Older NeMo versions compressed the archive; it cannot be mapped then, only read.
    compressed = tmp_path / "old.nemo"
    with tarfile.open(compressed, "w:gz") as tar:
        tar.add(tmp_path, arcname=".")
    from_gz = read_nemo(compressed)
    assert all(np.array_equal(from_gz.state_dict[k], v) for k, v in checkpoint.state_dict.items())
    compressed.unlink()

    config_path = tmp_path / "model_config.yaml"
    config = yaml.safe_load(config_path.read_text())
    del config["joint"]["vocabulary"]
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    assert read_nemo(tmp_path).vocabulary == checkpoint.vocabulary  # from the SentencePiece model
    next(tmp_path.glob("*_tokenizer.model")).unlink()
    assert read_nemo(tmp_path).vocabulary == checkpoint.vocabulary  # from the .vocab file
    for vocab_file in tmp_path.glob("*vocab*"):
        vocab_file.unlink()
    with pytest.raises(ModelFileError, match="no vocabulary"):
        read_nemo(tmp_path)


def torch_save(path: Path, tensors: Dict[str, Tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch,
               byteorder: str = "little") -> None:
    """Write what ``torch.save(state_dict)`` writes, without torch.

    ``tensors``: name -> (storage key, offset, size, stride, parameter?); storages come from
    ``tensors["__storages__"]``: key -> (storage class name, raw bytes, numel).
    """
    storages = tensors.pop("__storages__")
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def rebuild_tensor_v2(*args: Any) -> None: ...

    def rebuild_parameter(*args: Any) -> None: ...

    rebuild_tensor_v2.__module__ = rebuild_parameter.__module__ = "torch._utils"
    rebuild_tensor_v2.__qualname__, rebuild_parameter.__qualname__ = "_rebuild_tensor_v2", "_rebuild_parameter"
    utils_mod._rebuild_tensor_v2, utils_mod._rebuild_parameter = rebuild_tensor_v2, rebuild_parameter
    torch_mod._utils = utils_mod
    for cls in set(s[0] for s in storages.values()):
        setattr(torch_mod, cls, type(cls, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)

    class Storage:
        def __init__(self, key: str) -> None:
            self.key = key

    class Tensor:
        def __init__(self, key: str, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> None:
            self.args = (Storage(key), offset, size, stride, False, OrderedDict())

        def __reduce__(self) -> Any:
            return rebuild_tensor_v2, self.args

    class Parameter:
        def __init__(self, tensor: Tensor) -> None:
            self.tensor = tensor

        def __reduce__(self) -> Any:
            return rebuild_parameter, (self.tensor, True, OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, Storage):
                cls, _, numel = storages[obj.key]
                return ("storage", getattr(torch_mod, cls), obj.key, "cpu", numel)
            return None

    state = OrderedDict()
    for name, (key, offset, size, stride, parameter) in tensors.items():
        t = Tensor(key, offset, size, stride)
        state[name] = Parameter(t) if parameter else t
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", byteorder)
        for key, (_, raw, _) in storages.items():
            z.writestr(f"archive/data/{key}", raw)


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_torch_checkpoint_storages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, byteorder: str) -> None:
    order = "<" if byteorder == "little" else ">"
    base = np.arange(24, dtype=np.float32) / 7
    # Values bfloat16 holds exactly: the upper halves of their float32 bits.
    bf16 = (np.array([1.5, -2.25, 2.0**100, -(2.0**-100)], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    ints, flags = np.array([-3, 2**40], dtype=np.int64), np.array([True, False, True])
    halves, int32 = np.array([0.5, -1.0, 65504.0], dtype=np.float16), np.array([7, -9], dtype=np.int32)
    storages = {
        "0": ("FloatStorage", base.astype(order + "f4").tobytes(), 24),
        "1": ("BFloat16Storage", bf16.astype(order + "u2").tobytes(), 4),
        "2": ("LongStorage", ints.astype(order + "i8").tobytes(), 2),
        "3": ("BoolStorage", flags.tobytes(), 3),
        "4": ("HalfStorage", halves.astype(order + "f2").tobytes(), 3),
        "5": ("IntStorage", int32.astype(order + "i4").tobytes(), 2),
    }
    tensors: Dict[str, Any] = {
        "__storages__": storages,
        "matrix": ("0", 0, (4, 6), (6, 1), True),
        "transposed": ("0", 0, (6, 4), (1, 6), False),  # a non-contiguous view of the same storage
        "slice": ("0", 10, (2, 3), (3, 1), False),  # a storage offset
        "scalar": ("0", 5, (), (), False),
        "bf16": ("1", 0, (4,), (1,), False),
        "ints": ("2", 0, (2,), (1,), False),
        "flags": ("3", 0, (3,), (1,), False),
        "halves": ("4", 0, (3,), (1,), True),
        "int32": ("5", 0, (2,), (1,), False),
    }
    path = tmp_path / "weights.ckpt"
    torch_save(path, tensors, monkeypatch, byteorder)
    sd = read_torch_state_dict(path)
    assert list(sd) == ["matrix", "transposed", "slice", "scalar", "bf16", "ints", "flags", "halves", "int32"]
    matrix = base.reshape(4, 6)
    assert np.array_equal(sd["matrix"], matrix)
    assert np.array_equal(sd["transposed"], matrix.T) and sd["transposed"].flags.c_contiguous
    assert np.array_equal(sd["slice"], base[10:16].reshape(2, 3))
    assert sd["scalar"].shape == () and sd["scalar"] == base[5]
    assert sd["bf16"].dtype == np.float32
    assert sd["bf16"].tolist() == [1.5, -2.25, 2.0**100, -(2.0**-100)]
    assert sd["ints"].tolist() == [-3, 2**40] and sd["flags"].tolist() == [True, False, True]
    assert sd["halves"].tolist() == [0.5, -1.0, 65504.0] and sd["int32"].tolist() == [7, -9]


def test_torch_checkpoint_overrun_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storages = {"0": ("FloatStorage", np.zeros(4, np.float32).tobytes(), 4)}
    path = tmp_path / "weights.ckpt"
    torch_save(path, {"__storages__": storages, "w": ("0", 2, (3,), (1,), False)}, monkeypatch)
    with pytest.raises(ModelFileError, match="overruns its storage"):
        read_torch_state_dict(path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Exploit(marker)}, protocol=2))
    with pytest.raises(ModelFileError, match=r"refers to (posix|nt)\.system; only tensors"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_legacy_and_foreign_checkpoints(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.ckpt"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))  # torch's legacy magic number
    with pytest.raises(ModelFileError, match="legacy"):
        read_torch_state_dict(legacy)
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"hello")
    with pytest.raises(ModelFileError, match="not a PyTorch checkpoint"):
        read_torch_state_dict(other)


# --------------------------------------------------------------------------------------------------
# refusals


def _unsupported(config: Dict[str, Any], **changes: Any) -> Dict[str, Any]:
    changed = yaml.safe_load(yaml.safe_dump(config))
    for path, value in changes.items():
        section, key = path.split("__")
        if value is None:
            changed[section].pop(key, None)
        else:
            changed[section][key] = value
    return changed


def test_unsupported_configs_list_every_problem(checkpoint: Any) -> None:
    config = _unsupported(
        checkpoint.config,
        encoder__subsampling="striding",
        encoder__self_attention_model="abs_pos",
        encoder__att_context_style="regular",
        encoder__conv_norm_type="batch_norm",
        encoder__conv_context_size=None,
        joint__num_extra_outputs=5,
    )
    with pytest.raises(UnsupportedModelError) as info:
        model_config(config)
    message = str(info.value)
    for item in ("subsampling striding", "self_attention_model abs_pos", "att_context_style regular",
                 "conv_norm_type batch_norm", "conv_context_size None", "TDT"):
        assert item in message, message
    assert "\n" not in message

    ctc = dict(checkpoint.config, target="nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE")
    with pytest.raises(UnsupportedModelError, match="model class EncDecCTCModelBPE"):
        model_config(ctc)
    hybrid = dict(checkpoint.config, aux_ctc={"decoder": {}},
                  target="nemo.collections.asr.models.EncDecHybridRNNTCTCBPEModel")
    assert model_config(hybrid)[0] == model_config(checkpoint.config)[0]  # its RNN-T head runs
    unlimited = _unsupported(checkpoint.config, encoder__att_context_size=[-1, -1])
    with pytest.raises(UnsupportedModelError, match="unlimited"):
        model_config(unlimited)


def test_converter_refuses_what_the_engine_refuses(checkpoint: Any) -> None:
    """The engine's table of what it runs (nemotron_hparams_check, which its loader applies) decides
    for the converter too, listed with the converter's own findings."""
    prompted = dict(checkpoint.config, model_defaults={"prompt_dictionary": {"auto": 101, "en-US": 0, False: 3},
                                                       "num_prompts": 128})
    size = model_config(prompted)[0]  # multilingual models run; YAML's `no: 3` is Norwegian, not False
    assert (size.num_prompts, size.languages) == (128, (("auto", 101), ("en-US", 0), ("no", 3)))
    for dictionary in ({}, {"en-US": "first"}, {"en-US": 0, "de-DE": 128}):
        with pytest.raises(ModelFileError, match="prompt_dictionary"):
            model_config(dict(checkpoint.config, model_defaults={"prompt_dictionary": dictionary, "num_prompts": 128}))
    normalized = _unsupported(checkpoint.config, preprocessor__normalize="per_feature")
    with pytest.raises(UnsupportedModelError, match="feature normalisation 'per_feature'"):
        model_config(normalized)
    inconsistent = _unsupported(checkpoint.config, preprocessor__window_size=0.05)
    with pytest.raises(ModelFileError, match="a preprocessor window of 800 samples, hop 160, n_fft 512"):
        model_config(inconsistent)
    # The engine holds NEMOTRON_MAX_RIGHT_CONTEXTS (8) right contexts; its table says so, not a Python copy.
    eight = _unsupported(checkpoint.config, encoder__att_context_size=[[70, r] for r in range(8)])
    assert model_config(eight)[0].att_right == tuple(range(8))
    nine = _unsupported(checkpoint.config, encoder__att_context_size=[[70, r] for r in range(9)])
    with pytest.raises(ModelFileError, match=r"9 right contexts \(1 to 8 are valid\)"):
        model_config(nine)


def test_model_config_of_the_fixture(checkpoint: Any) -> None:
    size, pre = model_config(checkpoint.config)
    assert (size.n_layers, size.d_model, size.n_heads, size.d_ff, size.subsampling_channels) == (2, 128, 4, 512, 32)
    assert (size.att_left, size.att_right, size.max_symbols, size.vocab) == (70, (13, 6, 1, 0), 10, 128)
    assert (size.xscaling, size.use_bias, size.pred_layers) == (False, False, 2)
    assert (pre.sample_rate, pre.win_length, pre.n_fft, pre.normalize, pre.dither) == (16000, 400, 512, "NA", 0.0)
    config = yaml.safe_load(yaml.safe_dump(checkpoint.config))
    del config["decoding"]
    assert model_config(config)[0].max_symbols == 10  # NeMo's greedy default


def test_api_refusals(nemo_path: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        convert_nemo(tmp_path / "missing.nemo", tmp_path / "out.gguf")
    with pytest.raises(ValueError, match="weight type"):
        convert_nemo(nemo_path, tmp_path / "out.gguf", weight_type="q3_k")
    with pytest.raises(ValueError, match="layout"):
        convert_nemo(nemo_path, tmp_path / "out.gguf", layout="gguf")
    copy = tmp_path / "copy.nemo"
    shutil.copy(nemo_path, copy)
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        convert_nemo(copy, copy, force=True)
    assert copy.read_bytes() == nemo_path.read_bytes()
    existing = tmp_path / "existing.gguf"
    existing.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        convert_nemo(nemo_path, existing)
    assert existing.read_bytes() == b"keep"
    assert convert_nemo(nemo_path, existing, force=True).read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.nemo", "existing.gguf"]


# --------------------------------------------------------------------------------------------------
# command line


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemotron_cpp", *args], capture_output=True, text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess, expected: List[str]) -> None:
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nemotron-cpp: error: "), out.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_cli_convert(nemo_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    done = run("convert", str(nemo_path), str(out), "--layout", "asr", "--type", "q4_0")
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and "q4_0" in done.stdout
    with NemotronModel(out, backend="cpu") as model:
        assert (model.layout, model.weight_type) == ("asr", "q4_0")

    one_line_error(run("convert", str(nemo_path), str(out)), [f"{out} exists; pass --force to overwrite it"])
    assert run("convert", str(nemo_path), str(out), "--force").returncode == 0
    one_line_error(run("convert", str(tmp_path / "missing.nemo"), str(tmp_path / "x.gguf")),
                   [f"{tmp_path / 'missing.nemo'}: no such file"])
    one_line_error(run("convert", str(out), str(tmp_path / "x.gguf")), ["m.gguf is not a .nemo file"])
    one_line_error(run("convert", str(nemo_path), str(nemo_path)), ["refusing to overwrite the input"])

    unknown = run("convert", str(nemo_path), str(tmp_path / "x.gguf"), "--type", "q3")
    assert unknown.returncode == 2 and "invalid choice: 'q3'" in unknown.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_cli_unsupported_config(nemo_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ctc.nemo"
    with tarfile.open(nemo_path) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("model_config.yaml"):
                config = yaml.safe_load(data)
                config["encoder"]["self_attention_model"] = "abs_pos"
                config["decoder"]["_target_"] = "nemo.collections.asr.modules.ConvASRDecoder"
                data = yaml.safe_dump(config, allow_unicode=True).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    one_line_error(run("convert", str(bad), str(tmp_path / "x.gguf")),
                   ["cannot run on this engine", "self_attention_model abs_pos", "ConvASRDecoder"])
    assert not (tmp_path / "x.gguf").exists()
