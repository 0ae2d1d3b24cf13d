"""Every kind of bad model file gets the documented exception, never a crash.

Each file is loaded in a child process (conftest.load_in_subprocess), so that a crash in the
engine fails the test instead of killing pytest.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest

from conftest import load_in_subprocess

gguf = pytest.importorskip("gguf")


def assert_rejected(result: Dict[str, Any], *fragments: str, unsupported: bool = False) -> None:
    assert not result["ok"], "the file loaded, but it should have been rejected"
    expected = "UnsupportedModelError" if unsupported else "ModelFileError"
    assert expected in result["mro"] and "ValueError" in result["mro"], result
    for fragment in fragments:
        assert fragment in result["message"], (fragment, result["message"])


@pytest.fixture(scope="module")
def good_file(model_factory: Callable[..., Path]) -> Path:
    return model_factory(layout="nemo", weight_type="q8_0")


def _patched(tmp_path: Path, source: Path, offset: int, data: bytes) -> Path:
    blob = bytearray(source.read_bytes())
    blob[offset:offset + len(data)] = data
    out = tmp_path / "patched.gguf"
    out.write_bytes(bytes(blob))
    return out


def _tensor_info_offsets(path: Path, name: str) -> Tuple[int, int]:
    """Byte offsets of a tensor's type and data-offset fields in the tensor table."""
    reader = gguf.GGUFReader(path)
    (tensor,) = [t for t in reader.tensors if t.name == name]
    type_at = tensor.field.offset + 8 + len(name.encode()) + 4 + 8 * len(tensor.shape)
    return type_at, type_at + 4


# ---- the file as bytes ------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    assert_rejected(load_in_subprocess(path), "is empty")


def test_directory(tmp_path: Path) -> None:
    assert_rejected(load_in_subprocess(tmp_path), "is a directory")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.gguf"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_rejected(load_in_subprocess(path), "not a GGUF file")


def test_wrong_magic(tmp_path: Path, good_file: Path) -> None:
    assert_rejected(load_in_subprocess(_patched(tmp_path, good_file, 0, b"GGML")), "not a GGUF file")


@pytest.mark.parametrize("version", [1, 4, 0xFFFFFFFF])
def test_wrong_version(tmp_path: Path, good_file: Path, version: int) -> None:
    path = _patched(tmp_path, good_file, 4, struct.pack("<I", version))
    assert_rejected(load_in_subprocess(path), f"GGUF version {version}")


def _truncation_points(path: Path) -> List[Tuple[str, int]]:
    reader = gguf.GGUFReader(path)
    fields = [f for k, f in reader.fields.items() if not k.startswith("GGUF.")]
    tensors = reader.tensors
    size = path.stat().st_size
    return [
        ("magic", 2),
        ("version", 6),
        ("tensor count", 13),
        ("metadata count", 20),
        ("first key", fields[0].offset + 5),
        ("vocabulary", reader.fields["tokenizer.vocab_list"].offset + 300),
        ("last metadata value", fields[-1].offset + 10),
        ("first tensor info", tensors[0].field.offset + 4),
        ("middle tensor info", tensors[len(tensors) // 2].field.offset + 20),
        ("padding before data", reader.data_offset - 1),
        ("first tensor data", reader.data_offset + 100),
        ("middle of the data", (reader.data_offset + size) // 2),
        ("last byte", size - 1),
    ]


def test_truncation_at_every_part(tmp_path: Path, good_file: Path) -> None:
    data = good_file.read_bytes()
    points = _truncation_points(good_file)
    assert len(points) >= 10
    for where, offset in points:
        path = tmp_path / f"truncated-{offset}.gguf"
        path.write_bytes(data[:offset])
        result = load_in_subprocess(path)
        assert_rejected(result, "truncated")
        assert "ModelFileError" in result["mro"], where


def test_counts_larger_than_the_file(tmp_path: Path, good_file: Path) -> None:
    assert_rejected(load_in_subprocess(_patched(tmp_path, good_file, 16, struct.pack("<Q", 1 << 40))),
                    "claims 1099511627776 metadata entries")
    assert_rejected(load_in_subprocess(_patched(tmp_path, good_file, 8, struct.pack("<Q", 1 << 50))),
                    "claims 1125899906842624 tensors")


def test_unknown_value_type(tmp_path: Path, good_file: Path) -> None:
    field = gguf.GGUFReader(good_file).fields["general.architecture"]
    type_at = field.offset + 8 + len("general.architecture")
    assert_rejected(load_in_subprocess(_patched(tmp_path, good_file, type_at, struct.pack("<I", 99))),
                    "unknown value type 99")


def test_string_longer_than_the_file(tmp_path: Path, good_file: Path) -> None:
    field = gguf.GGUFReader(good_file).fields["general.name"]
    length_at = field.offset + 8 + len("general.name") + 4
    assert_rejected(load_in_subprocess(_patched(tmp_path, good_file, length_at, struct.pack("<Q", 1 << 50))),
                    "truncated")


def test_unknown_tensor_type(tmp_path: Path, good_file: Path) -> None:
    type_at, _ = _tensor_info_offsets(good_file, "joint.enc.weight")
    for bad_type in (4, 31, 1000):  # removed ggml types and out of range
        path = _patched(tmp_path, good_file, type_at, struct.pack("<I", bad_type))
        assert_rejected(load_in_subprocess(path), f"unknown ggml type {bad_type}")


def test_misaligned_tensor_offset(tmp_path: Path, good_file: Path) -> None:
    _, offset_at = _tensor_info_offsets(good_file, "joint.enc.weight")
    old = struct.unpack("<Q", good_file.read_bytes()[offset_at:offset_at + 8])[0]
    path = _patched(tmp_path, good_file, offset_at, struct.pack("<Q", old + 1))
    assert_rejected(load_in_subprocess(path), "not a multiple of the alignment")


def test_tensor_data_past_the_end(tmp_path: Path, good_file: Path) -> None:
    _, offset_at = _tensor_info_offsets(good_file, "joint.enc.weight")
    path = _patched(tmp_path, good_file, offset_at, struct.pack("<Q", 1 << 40))
    assert_rejected(load_in_subprocess(path), "joint.enc.weight", "lies past the end")


def test_random_header_corruption_never_crashes(tmp_path: Path, good_file: Path) -> None:
    """Random bytes overwritten anywhere in the header and tensor table: each load either
    succeeds or raises ModelFileError, in one process that must survive all of them."""
    script = r"""
import random, sys
from nemotron_cpp import ModelFileError, NemotronModel
src, path, header_end = sys.argv[1], sys.argv[2], int(sys.argv[3])
original = open(src, "rb").read()
open(path, "wb").write(original)
rng = random.Random(1)
outcomes = {"loaded": 0, "rejected": 0}
with open(path, "r+b") as f:
    for case in range(600):
        positions = [rng.randrange(header_end) for _ in range(rng.choice([1, 2, 4, 8]))]
        for p in positions:
            f.seek(p); f.write(bytes([rng.randrange(256)]))
        f.flush()
        try:
            NemotronModel(path).close()
            outcomes["loaded"] += 1
        except ModelFileError:
            outcomes["rejected"] += 1
        except Exception as e:
            print("case", case, "raised", type(e).__name__, e); sys.exit(3)
        for p in positions:
            f.seek(p); f.write(original[p:p + 1])
print(outcomes["loaded"], outcomes["rejected"])
"""
    header_end = gguf.GGUFReader(good_file).data_offset
    proc = subprocess.run([sys.executable, "-c", script, str(good_file), str(tmp_path / "fuzz.gguf"), str(header_end)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    loaded, rejected = map(int, proc.stdout.split())
    assert rejected > 300  # most corruptions are caught; the rest hit bytes no reader checks (e.g. name text)


# ---- valid GGUF, wrong model ---------------------------------------------------------------


def _case(model_factory: Callable[..., Path], **kwargs: Any) -> Dict[str, Any]:
    return load_in_subprocess(model_factory(**kwargs))


def test_missing_tensor(model_factory: Callable[..., Path]) -> None:
    name = "encoder.layers.1.conv.pointwise_conv2.weight"
    assert_rejected(_case(model_factory, drop_tensors=[name]), f"tensor '{name}' is missing")


def test_missing_layout_b_lstm_tensor(model_factory: Callable[..., Path]) -> None:
    name = "decoder.prediction.dec_rnn.lstm.hh_l1.bias"
    assert_rejected(_case(model_factory, layout="asr", drop_tensors=[name]), f"tensor '{name}' is missing")


def test_wrong_shape(model_factory: Callable[..., Path]) -> None:
    name = "encoder.layers.0.self_attn.linear_q.weight"
    result = _case(model_factory, tensor_overrides={name: np.zeros((128, 64), np.float32)})
    assert_rejected(result, f"tensor '{name}' has shape ne [64, 128], expected ne [128, 128]")


@pytest.mark.parametrize("layout,name,dtype,expected", [
    ("nemo", "encoder.layers.0.norm_out.weight", "f16", "has type f16, expected f32"),
    ("asr", "encoder.layers.1.self_attn.pos_bias_u", "q8_0", "has type q8_0, expected f32 or f16"),
    ("asr", "encoder.layers.0.feed_forward1.linear1.weight", "i32", "has type i32, expected f32, f16"),
])
def test_wrong_dtype(model_factory: Callable[..., Path], layout: str, name: str, dtype: str, expected: str) -> None:
    assert_rejected(_case(model_factory, layout=layout, tensor_types={name: dtype}), f"tensor '{name}'", expected)


@pytest.mark.parametrize("layout,key,value,expected", [
    ("nemo", "nemo.d_model", ("128", "STRING"), "metadata key 'nemo.d_model' holds a STRING, expected an integer"),
    ("nemo", "nemo.n_layers", (2.0, "FLOAT32"), "holds a FLOAT32, expected an integer"),
    ("nemo", "tokenizer.vocab_list", ([1, 2], "ARRAY", "INT32"), "holds a ARRAY of INT32, expected an ARRAY of STRING"),
    ("asr", "asr.encoder.xscaling", (0, "UINT32"), "'asr.encoder.xscaling' holds a UINT32, expected a BOOL"),
    ("asr", "asr.preprocessor.preemph", ("0.97", "STRING"), "expected a FLOAT32"),
    ("asr", "general.architecture", (7, "UINT32"), "expected a STRING"),
    ("asr", "asr.preprocessor.preemph", (math.nan, "FLOAT32"), "is not a finite number"),
    ("nemo", "nemo.d_model", (-5, "INT32"), "= -5 is out of range"),
])
def test_wrong_metadata_type(model_factory: Callable[..., Path], layout: str, key: str, value: tuple,
                             expected: str) -> None:
    assert_rejected(_case(model_factory, layout=layout, set_keys={key: value}), expected)


def test_unknown_architecture(model_factory: Callable[..., Path]) -> None:
    result = _case(model_factory, set_keys={"general.architecture": ("llama", "STRING")})
    assert_rejected(result, "general.architecture is 'llama'", unsupported=True)
    result = _case(model_factory, set_keys={"general.architecture": ("parakeet-ctc", "STRING")})
    assert_rejected(result, "CTC model", unsupported=True)
    assert_rejected(_case(model_factory, drop_keys=["general.architecture"]), "no general.architecture key")


@pytest.mark.parametrize("key,value,fragments", [
    ("asr.encoder.q8_layout", "tensor_planar_v1", ("planar", "CUDA")),
    ("asr.encoder.qkv_q8_layout", "tensor_planar_v1", ("planar", "CUDA")),
    ("asr.head_type", "ctc", ("RNN-T",)),
    ("asr.head_type", "tdt", ("RNN-T",)),
    ("asr.encoder.conv_norm", "batch_norm", ("batch-norm",)),
    ("asr.encoder.att_context_style", "regular", ("cache-aware",)),
])
def test_unsupported_variants(model_factory: Callable[..., Path], key: str, value: str, fragments: tuple) -> None:
    result = _case(model_factory, layout="asr", weight_type="q8_0", set_keys={key: (value, "STRING")})
    assert_rejected(result, key, *fragments, unsupported=True)


@pytest.mark.parametrize("layout,keys,fragments", [
    ("nemo", {"nemo.n_heads": (3, "UINT32")}, ("n_heads 3 x d_head 32 != d_model 128",)),
    ("nemo", {"nemo.d_model": (256, "UINT32")}, ("n_heads 4 x d_head 32 != d_model 256",)),
    ("nemo", {"nemo.d_model": (256, "UINT32"), "nemo.d_head": (64, "UINT32")}, ("expected ne [544, 256]",)),
    ("nemo", {"nemo.d_ff": (1024, "UINT32")},
     ("feed_forward1.linear1.weight' has shape ne [128, 512], expected ne [128, 1024]",)),
    ("nemo", {"nemo.n_layers": (1, "UINT32")}, ("n_layers is 1 but the file holds layer 1 too",)),
    ("nemo", {"nemo.n_layers": (3, "UINT32")}, ("tensor 'encoder.layers.2.", "is missing")),
    ("nemo", {"nemo.vocab_size": (200, "UINT32")}, ("the vocabulary has 128 pieces, but vocab_size 200",)),
    ("nemo", {"nemo.kernel_size": (7, "UINT32")}, ("conv.depthwise_conv.weight' has shape ne [128, 9], expected ne [128, 7]",)),
    ("asr", {"asr.rnnt.pred_num_layers": (1, "UINT32")}, ("pred_num_layers is 1 but the file holds LSTM layer 1",)),
    ("asr", {"asr.preprocessor.features": (80, "UINT32")}, ("features = 80 but asr.encoder.feat_in = 128",)),
    ("asr", {"asr.preprocessor.window_size": (0.05, "FLOAT32")}, ("inconsistent hyperparameters: a preprocessor window of 800 samples, hop 160, n_fft 512",)),
    ("asr", {"asr.encoder.att_context_right": (list(range(9)), "ARRAY", "INT32")}, ("has 9 entries",)),
])
def test_inconsistent_hyperparameters(model_factory: Callable[..., Path], layout: str, keys: dict,
                                      fragments: tuple) -> None:
    assert_rejected(_case(model_factory, layout=layout, set_keys=keys), *fragments)


def test_blank_not_last(model_factory: Callable[..., Path]) -> None:
    result = _case(model_factory, layout="asr", set_keys={"asr.rnnt.blank_id": (0, "UINT32")})
    assert_rejected(result, "blank_id 0 (the engine expects the blank to be the last id, 128)", unsupported=True)


def test_vocabulary_problems(model_factory: Callable[..., Path]) -> None:
    result = _case(model_factory, layout="nemo", legacy_vocab=False, drop_keys=["tokenizer.vocab_list"])
    assert_rejected(result, "has no vocabulary")
    result = _case(model_factory, layout="nemo", drop_keys=["tokenizer.vocab_list"],
                   set_keys={"tokenizer.vocab": (b"<unk>\0\0\0", "STRING")})
    assert_rejected(result, "tokenizer.vocab holds 8 bytes, but 128 pieces of 8 bytes need 1024")
    assert_rejected(_case(model_factory, layout="asr", drop_keys=["asr.tokenizer.vocab"]), "has no vocabulary")


def test_batch_norm_conv_module_is_refused(model_factory: Callable[..., Path]) -> None:
    stats = {"encoder.layers.0.conv.batch_norm.running_mean": np.zeros(128, np.float32)}
    assert_rejected(_case(model_factory, tensor_overrides=stats), "batch norm", unsupported=True)


def test_symmetric_subsampling_is_refused(model_factory: Callable[..., Path]) -> None:
    """An offline FastConformer's subsampling gives 16 frequency bins instead of 17."""
    result = _case(model_factory, tensor_overrides={"encoder.pre_encode.out.weight": np.zeros((128, 32 * 16), np.float32)})
    assert_rejected(result, "not causal", unsupported=True)


# --------------------------------------------------------------------------------------------------
# every hyperparameter is honoured or refused


def _prompt_tensors(num_prompts: int) -> Dict[str, np.ndarray]:
    d = 128  # the tiny model's d_model
    return {"prompt_kernel.0.weight": np.zeros((2 * d, d + num_prompts), np.float32),
            "prompt_kernel.0.bias": np.zeros(2 * d, np.float32),
            "prompt_kernel.2.weight": np.zeros((d, 2 * d), np.float32),
            "prompt_kernel.2.bias": np.zeros(d, np.float32)}


@pytest.mark.parametrize("layout,keys,message", [
    ("nemo", {}, "a model with 128 language prompts needs nemo.prompt_langs and nemo.prompt_ids"),  # tensors alone
    ("nemo", {"nemo.num_prompts": (128, "UINT32"), "nemo.prompt_langs": (["auto", "en-US"], "ARRAY", "STRING"),
              "nemo.prompt_ids": ([101], "ARRAY", "INT32")}, "of equal length"),
    ("nemo", {"nemo.num_prompts": (128, "UINT32"), "nemo.prompt_langs": (["auto", "en-US"], "ARRAY", "STRING"),
              "nemo.prompt_ids": ([101, 128], "ARRAY", "INT32")}, "'nemo.prompt_ids' element 1 = 128 is out of range [0, 127]"),
    ("asr", {"asr.rnnt.num_prompts": (128, "UINT32"), "asr.rnnt.prompt_dictionary": (["auto:101", "en-US"], "ARRAY",
                                                                                      "STRING")},
     "asr.rnnt.prompt_dictionary entry 'en-US' is not 'code:index'"),
    ("asr", {"asr.rnnt.num_prompts": (128, "UINT32"), "asr.rnnt.prompt_dictionary": (["auto:101", "en-US:200"],
                                                                                      "ARRAY", "STRING")},
     "'en-US:200' is not 'code:index' with an index below 128"),
    ("asr", {"asr.rnnt.num_prompts": (128, "UINT32"), "asr.rnnt.prompt_dictionary": (["en:0", "en:1"], "ARRAY",
                                                                                      "STRING")},
     "the prompt dictionary names 'en' twice"),
])
def test_bad_prompt_dictionaries_are_refused(model_factory: Callable[..., Path], layout: str, keys: dict,
                                            message: str) -> None:
    result = _case(model_factory, layout=layout, set_keys=keys, tensor_overrides=_prompt_tensors(128))
    assert_rejected(result, message)


def test_prompt_kernel_of_the_wrong_shape_is_refused(model_factory: Callable[..., Path]) -> None:
    tensors = _prompt_tensors(128)
    tensors["prompt_kernel.2.weight"] = np.zeros((128, 128), np.float32)
    keys = {"nemo.num_prompts": (128, "UINT32"), "nemo.prompt_langs": (["auto"], "ARRAY", "STRING"),
            "nemo.prompt_ids": ([101], "ARRAY", "INT32")}
    assert_rejected(_case(model_factory, set_keys=keys, tensor_overrides=tensors), "prompt_kernel.2.weight")


@pytest.mark.parametrize("layout,key", [("nemo", "nemo.preprocessor.normalize"), ("asr", "asr.preprocessor.normalize")])
def test_feature_normalisation_is_refused_at_load(model_factory: Callable[..., Path], layout: str, key: str) -> None:
    result = _case(model_factory, layout=layout, set_keys={key: ("per_feature", "STRING")})
    assert_rejected(result, "feature normalisation 'per_feature' (streaming models use none)", unsupported=True)
