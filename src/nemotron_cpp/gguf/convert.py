"""Convert a NeMo ``.nemo`` checkpoint of a cache-aware FastConformer RNN-T to GGUF, without PyTorch.

>>> from nemotron_cpp.gguf.convert import convert_nemo
>>> convert_nemo("nemotron-speech-streaming-en-0.6b.nemo", "model.q8_0.gguf", weight_type="q8_0")  # doctest: +SKIP

The output is either layout (``layout="nemo"``, the C++ port's, the default; or ``"asr"``, NVIDIA's),
with every hyperparameter the engine uses taken from the model's config (right contexts, max symbols per
step and the preprocessor settings included, so nothing is left to the loader's defaults), the tokenizer
pieces, the checkpoint's filterbank and window, and where the file came from (``general.source.file``,
``general.source.sha256``, ``general.converter``). A config the engine cannot run is refused with
:class:`~nemotron_cpp.UnsupportedModelError`, whose message lists every unsupported setting.

Needs the ``convert`` extra (``pip install 'nemotron-cpp[convert]'``: gguf and PyYAML), not PyTorch.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

import numpy as np

from .. import __version__, _lib
from ..errors import ModelFileError, UnsupportedModelError
from .layout import (
    FILE_TYPES,
    KV,
    LAYOUTS,
    ModelSize,
    Preprocessor,
    check_output,
    import_gguf,
    layout_metadata,
    layout_plan,
    state_dict_spec,
    tensor_type,
    write_gguf,
)
from .nemo_checkpoint import NemoCheckpoint, read_nemo

__all__ = ["convert_nemo", "model_config"]

PathLike = Union[str, "os.PathLike[str]"]

# Where a config leaves a key out, the value is the default of the NeMo class that reads it
# (ConformerEncoder, RNNTDecoder, RNNTJoint, AudioToMelSpectrogramPreprocessor, greedy decoding).
_MAX_SYMBOLS_DEFAULT = 10
# RNN-T models; the hybrid ones' auxiliary CTC head is left out (the engine decodes with the RNN-T
# head), and the ...WithPrompt ones (Nemotron 3.5: the hybrid class in NeMo 2.7.3, the RNN-T one
# after it) carry a language prompt kernel and dictionary.
_RNNT_MODELS = ("EncDecRNNTBPEModel", "EncDecRNNTModel", "EncDecHybridRNNTCTCBPEModel",
                "EncDecHybridRNNTCTCBPEModelWithPrompt", "EncDecRNNTBPEModelWithPrompt")
#: The auxiliary CTC head's parameters, which the converter leaves out.
_CTC_HEAD = "ctc_decoder."


def _class_name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else ""


def _section(config: Mapping[str, Any], key: str) -> Dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def model_config(config: Mapping[str, Any]) -> Tuple[ModelSize, Preprocessor]:
    """The hyperparameters and preprocessor settings of a NeMo model config (``model_config.yaml``).

    Raises :class:`~nemotron_cpp.UnsupportedModelError` listing every setting the engine cannot run
    (another head, subsampling, attention, normalisation, frontend, ...), and
    :class:`~nemotron_cpp.ModelFileError` for a config that lacks or contradicts required values.
    """
    enc, dec, joint = _section(config, "encoder"), _section(config, "decoder"), _section(config, "joint")
    pre = _section(config, "preprocessor")
    prednet, jointnet = _section(dec, "prednet"), _section(joint, "jointnet")
    problems: List[str] = []

    def require(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    # --- the model class and its head
    model_class = _class_name(config.get("target"))
    if model_class and model_class not in _RNNT_MODELS:
        problems.append(f"model class {model_class} (only RNN-T models, {' or '.join(_RNNT_MODELS)}, are supported)")
    if not enc or not dec or not joint:
        missing = [k for k, v in (("encoder", enc), ("decoder", dec), ("joint", joint)) if not v]
        problems.append(f"no {', '.join(missing)} section (an RNN-T model has encoder, decoder and joint)")
    loss_name = _section(config, "loss").get("loss_name")
    durations = _section(config, "model_defaults").get("tdt_durations") or joint.get("num_extra_outputs")
    if str(loss_name).lower() == "tdt" or durations or _section(config, "decoding").get("model_type") == "tdt":
        problems.append("a TDT head (token-and-duration transducer); only plain RNN-T is supported")

    # --- encoder
    if enc:
        require(_class_name(enc.get("_target_")) in ("", "ConformerEncoder"),
                f"encoder {enc.get('_target_')} (expected ConformerEncoder)")
        subsampling = enc.get("subsampling", "striding")
        require(subsampling == "dw_striding", f"encoder.subsampling {subsampling} (expected dw_striding)")
        require(enc.get("causal_downsampling", False) is True, "encoder.causal_downsampling false (expected true)")
        attention = enc.get("self_attention_model", "rel_pos")
        require(attention == "rel_pos", f"encoder.self_attention_model {attention} (expected rel_pos)")
        style = enc.get("att_context_style", "regular")
        require(style == "chunked_limited", f"encoder.att_context_style {style} (expected chunked_limited)")
        norm = enc.get("conv_norm_type", "batch_norm")
        require(norm == "layer_norm", f"encoder.conv_norm_type {norm} (expected layer_norm)")
        kernel = enc.get("conv_kernel_size", 31)
        context = enc.get("conv_context_size")
        causal = context == "causal" or (isinstance(context, list) and list(context) == [kernel - 1, 0])
        require(causal, f"encoder.conv_context_size {context} (expected causal)")
        require(enc.get("untie_biases", True) is True, "encoder.untie_biases false (expected true)")
        require(not enc.get("reduction"), f"encoder.reduction {enc.get('reduction')} (expected none)")
    lefts, rights = _att_contexts(enc.get("att_context_size"), problems)

    # --- prediction network and joint
    if dec:
        require(_class_name(dec.get("_target_")) in ("", "RNNTDecoder"),
                f"decoder {dec.get('_target_')} (expected RNNTDecoder)")
        require(dec.get("blank_as_pad", True) is True, "decoder.blank_as_pad false (expected true)")
        require(dec.get("normalization_mode") is None,
                f"decoder.normalization_mode {dec.get('normalization_mode')} (expected none)")
        rnn_size = prednet.get("rnn_hidden_size", -1)
        require(rnn_size in (-1, None, prednet.get("pred_hidden")),
                f"decoder.prednet.rnn_hidden_size {rnn_size} differs from pred_hidden (projected LSTM)")
    if joint:
        require(_class_name(joint.get("_target_")) in ("", "RNNTJoint"),
                f"joint {joint.get('_target_')} (expected RNNTJoint)")
        activation = jointnet.get("activation", "relu")
        require(str(activation).lower() == "relu", f"joint.jointnet.activation {activation} (expected relu)")

    # --- preprocessor
    pre_class = _class_name(pre.get("_target_"))
    require(pre_class in ("", "AudioToMelSpectrogramPreprocessor"),
            f"preprocessor {pre.get('_target_')} (expected AudioToMelSpectrogramPreprocessor)")
    window = pre.get("window", "hann")
    require(window == "hann", f"preprocessor.window {window} (expected hann)")
    require(pre.get("log", True) is True, "preprocessor.log false (expected true)")
    guard_type = pre.get("log_zero_guard_type", "add")
    require(guard_type == "add", f"preprocessor.log_zero_guard_type {guard_type} (expected add)")
    guard = pre.get("log_zero_guard_value", 2.0**-24)
    require(isinstance(guard, (int, float)), f"preprocessor.log_zero_guard_value {guard} (expected a number)")
    require(pre.get("frame_splicing", 1) == 1, f"preprocessor.frame_splicing {pre.get('frame_splicing')} (expected 1)")
    require(not pre.get("exact_pad", False), "preprocessor.exact_pad true (expected false)")
    normalize = pre.get("normalize", "per_feature")
    normalize = "NA" if normalize in (None, "None") else str(normalize)
    require(normalize in ("NA", "per_feature", "all_features"),
            f"preprocessor.normalize {normalize} (expected NA, per_feature or all_features)")
    feat_in, features = enc.get("feat_in"), pre.get("features", 64)
    if enc:
        require(features == feat_in, f"preprocessor.features {features} differs from encoder.feat_in {feat_in}")

    # --- values
    try:
        d_model = int(enc["d_model"])
        channels = int(enc.get("subsampling_conv_channels", -1))
        num_classes = int(joint["num_classes"])
        pred_hidden = int(prednet["pred_hidden"])
        greedy = _section(_section(config, "decoding"), "greedy")
        max_symbols = greedy.get("max_symbols", greedy.get("max_symbols_per_step"))
        size = ModelSize(
            n_layers=int(enc["n_layers"]),
            d_model=d_model,
            n_heads=int(enc.get("n_heads", 4)),
            d_ff=int(round(d_model * float(enc.get("ff_expansion_factor", 4)))),
            subsampling_channels=d_model if channels == -1 else channels,
            n_mels=int(enc["feat_in"]),
            conv_kernel=int(enc.get("conv_kernel_size", 31)),
            subsampling_factor=int(enc.get("subsampling_factor", 4)),
            pred_hidden=pred_hidden,
            pred_layers=int(prednet.get("pred_rnn_layers", 1)),
            joint_dim=int(jointnet["joint_hidden"]),
            vocab=num_classes,
            att_left=lefts[0],
            att_right=tuple(rights),
            max_symbols=_MAX_SYMBOLS_DEFAULT if max_symbols is None else int(max_symbols),
            xscaling=bool(enc.get("xscaling", True)),
            use_bias=bool(enc.get("use_bias", True)),
            pos_emb_max_len=int(enc.get("pos_emb_max_len", 5000)),
        )
        sample_rate = int(pre.get("sample_rate", config.get("sample_rate", 16000)))
        # Lengths in samples (n_window_size, n_window_stride) take precedence over seconds in NeMo.
        window_size = float(pre.get("window_size", 0.02))
        if pre.get("n_window_size"):
            window_size = int(pre["n_window_size"]) / sample_rate
        window_stride = float(pre.get("window_stride", 0.01))
        if pre.get("n_window_stride"):
            window_stride = int(pre["n_window_stride"]) / sample_rate
        n_fft = pre.get("n_fft")
        preemph = pre.get("preemph", 0.97)
        preprocessor = Preprocessor(
            sample_rate=sample_rate,
            window_size=window_size,
            window_stride=window_stride,
            # NeMo's FilterbankFeatures: n_fft defaults to the next power of two of the window length.
            n_fft=int(n_fft) if n_fft else 2 ** math.ceil(math.log2(window_size * sample_rate)),
            preemph=0.0 if preemph is None else float(preemph),  # None turns pre-emphasis off
            normalize=normalize,
            log_zero_guard_value=float(guard),
            mag_power=float(pre.get("mag_power", 2.0)),
            dither=float(pre.get("dither", 1e-5)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if problems:  # an unsupported structure explains missing or odd values
            raise UnsupportedModelError("the model cannot run on this engine: " + "; ".join(problems)) from None
        if isinstance(exc, KeyError):
            raise ModelFileError(f"the model config lacks {exc.args[0]!r}") from None
        raise ModelFileError(f"the model config has an invalid value: {exc}") from None
    # The engine's own table of what it runs (the loader applies it to every file) has the last word.
    # A language-prompt model (NeMo's ...WithPrompt classes) has a prompt dictionary; its num_prompts
    # is copied to the top of the config, default 128.
    defaults = _section(config, "model_defaults")
    prompted = "prompt_dictionary" in defaults or "num_prompts" in config or "num_prompts" in defaults
    num_prompts = int(config.get("num_prompts") or defaults.get("num_prompts") or 128) if prompted else 0
    if prompted:
        dictionary = defaults.get("prompt_dictionary")
        if not isinstance(dictionary, dict) or not dictionary:
            raise ModelFileError("model_defaults.prompt_dictionary must map language codes to prompt indexes")
        try:
            # YAML reads a bare `no` (Norwegian) as False: the code is its text.
            languages = tuple(("no" if code is False else str(code), int(index)) for code, index in dictionary.items())
            size = dataclasses.replace(size, num_prompts=num_prompts, languages=languages)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"model_defaults.prompt_dictionary is not usable: {exc}") from None
    try:
        _lib.check_hparams(_engine_hparams(size, preprocessor, num_prompts))
    except UnsupportedModelError as exc:
        problems.append(str(exc).split(": ", 1)[-1])
    except ModelFileError:
        if not problems:
            raise
    if problems:
        raise UnsupportedModelError("the model cannot run on this engine: " + "; ".join(problems))
    if dec and int(dec.get("vocab_size", num_classes)) != num_classes:
        raise ModelFileError(f"decoder.vocab_size {dec.get('vocab_size')} differs from joint.num_classes {num_classes}")
    if not 1 <= size.max_symbols <= 1000:
        raise ModelFileError(f"decoding.greedy.max_symbols {size.max_symbols} is outside 1..1000")
    return size, preprocessor


def _engine_hparams(size: ModelSize, pre: Preprocessor, num_prompts: int) -> Dict[str, Any]:
    """The engine's hyperparameters (``struct nemotron_hparams``) of a model with these settings."""
    return {
        "n_mels": size.n_mels, "d_model": size.d_model, "n_heads": size.n_heads, "d_head": size.d_head,
        "d_ff": size.d_ff, "n_layers": size.n_layers, "conv_kernel_size": size.conv_kernel,
        "subsampling_factor": size.subsampling_factor, "subsampling_conv_channels": size.subsampling_channels,
        "pos_emb_max_len": size.pos_emb_max_len, "xscaling": size.xscaling, "use_bias": size.use_bias,
        "att_left_context": size.att_left, "att_right_contexts": size.att_right,
        "vocab_size": size.vocab + 1, "blank_id": size.vocab, "pred_embed_dim": size.pred_hidden,
        "pred_hidden": size.pred_hidden, "pred_num_layers": size.pred_layers, "joint_dim": size.joint_dim,
        "max_symbols_per_step": size.max_symbols, "num_prompts": num_prompts,
        "sample_rate": pre.sample_rate, "n_fft": pre.n_fft, "win_length": pre.win_length,
        "hop_length": int(round(pre.window_stride * pre.sample_rate)), "preemph": pre.preemph,
        "log_zero_guard": pre.log_zero_guard_value, "mag_power": pre.mag_power, "dither": pre.dither,
        "normalize": {"NA": "none"}.get(pre.normalize, pre.normalize),
    }


def _att_contexts(value: Any, problems: List[str]) -> Tuple[List[int], List[int]]:
    """Left and right attention contexts of ``encoder.att_context_size`` ([l, r] or [[l, r], ...])."""
    if not isinstance(value, (list, tuple)):
        problems.append(f"encoder.att_context_size {value} (a cache-aware model needs [left, right] limits)")
        return [0], [0]
    pairs = [value] if value and not isinstance(value[0], (list, tuple)) else list(value)
    try:
        lefts = [int(p[0]) for p in pairs]
        rights = [int(p[1]) for p in pairs]
    except (TypeError, ValueError, IndexError):
        problems.append(f"encoder.att_context_size {value} (expected [left, right] pairs)")
        return [0], [0]
    if not pairs or min(lefts + rights) < 0:
        problems.append(f"encoder.att_context_size {value} (unlimited contexts; a cache-aware model needs limits)")
    elif len(set(lefts)) > 1:
        problems.append(f"encoder.att_context_size {value} (left contexts differ; the engine has one)")
    return lefts or [0], rights or [0]


def _check_state_dict(
    ckpt: NemoCheckpoint, size: ModelSize, preprocessor: Preprocessor
) -> List[Tuple[str, Tuple[int, ...]]]:
    """The checkpoint's entries in its order, checked against the config's model; returns (name, shape)."""
    expected = {e.name: e.shape for e in state_dict_spec(size, preprocessor)}
    sd = {n: a for n, a in ckpt.state_dict.items() if not n.startswith(_CTC_HEAD)}
    unexpected = [n for n in sd if n not in expected]
    if unexpected:
        more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
        raise UnsupportedModelError(
            f"{ckpt.path.name} has parameters this engine does not know: {', '.join(unexpected[:5])}{more}"
        )
    missing = [n for n in expected if n not in sd]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ModelFileError(f"{ckpt.path.name} lacks parameters its config implies: {', '.join(missing[:5])}{more}")
    for name, shape in expected.items():
        array = sd[name]
        if tuple(array.shape) != shape:
            raise ModelFileError(
                f"{ckpt.path.name}: {name} has shape {tuple(array.shape)}, the config implies {shape}"
            )
        if array.dtype.kind != "f":
            raise ModelFileError(f"{ckpt.path.name}: {name} has dtype {array.dtype}, expected floating point")
    if len(ckpt.vocabulary) != size.vocab:
        raise ModelFileError(
            f"{ckpt.path.name}: the tokenizer has {len(ckpt.vocabulary)} pieces, the joint {size.vocab} classes"
        )
    return [(n, tuple(sd[n].shape)) for n in sd]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        # An extracted archive is identified by its weights.
        path = next(p for p in path.rglob("model_weights.ckpt"))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_nemo(
    src: PathLike,
    dst: PathLike,
    *,
    layout: str = "nemo",
    weight_type: str = "f32",
    force: bool = False,
) -> Path:
    """Convert a ``.nemo`` archive (or the directory it was extracted into) to a GGUF file; return its path.

    Parameters
    ----------
    src:
        The ``.nemo`` file saved by NeMo.
    dst:
        The GGUF file to write; written to a temporary file beside it and renamed at the end, so an
        interrupted conversion leaves no partial output.
    layout:
        ``"nemo"`` (the layout of the C++ port's files) or ``"asr"`` (the layout of NVIDIA's).
    weight_type:
        One of :data:`~nemotron_cpp.gguf.layout.FILE_TYPES`. The layout decides which tensors take it (the nemo layout: the conformer
        layers' matrices; the asr layout: every Linear weight); a tensor whose rows are not whole blocks of the
        type is stored F16.
    force:
        Overwrite an existing ``dst``.

    The file records its source as ``general.source.file`` (the file name) and ``general.source.sha256``
    (of the ``.nemo`` file; for an extracted directory, of its ``model_weights.ckpt``).

    Raises
    ------
    FileNotFoundError
        ``src`` does not exist.
    FileExistsError
        ``dst`` exists and ``force`` is false.
    ModelFileError
        ``src`` is not a readable NeMo archive, or is inconsistent.
    UnsupportedModelError
        The model is not one the engine runs; the message lists why.
    ValueError
        An unknown layout or weight type, or ``dst`` is ``src``.
    """
    src, dst = Path(src), Path(dst)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if weight_type not in FILE_TYPES:
        raise ValueError(f"weight type must be one of {', '.join(FILE_TYPES)}, not {weight_type!r}")
    if not src.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(src))
    check_output(src, dst, force)
    gguf = import_gguf()

    ckpt = read_nemo(src)
    size, preprocessor = model_config(ckpt.config)
    params = _check_state_dict(ckpt, size, preprocessor)

    kv: Dict[str, KV] = layout_metadata(
        gguf,
        layout,
        size,
        ckpt.vocabulary,
        # The C++ port's converter names the model after the input file; so does this one.
        name=src.stem,
        weight_type=weight_type,
        preprocessor=preprocessor,
        spm_model=base64.b64encode(ckpt.spm_model).decode("ascii") if ckpt.spm_model is not None else None,
    )
    text = gguf.GGUFValueType.STRING
    kv["general.source.file"] = (src.name, text, None)
    kv["general.source.sha256"] = (_sha256(src), text, None)
    kv["general.converter"] = (f"nemotron-cpp {__version__}", text, None)

    plan = layout_plan(layout, params, size, preprocessor)
    weight_qtype = gguf.GGMLQuantizationType[weight_type.upper()]
    for entry in plan:
        entry.qtype = tensor_type(gguf, layout, entry.name, entry.shape, weight_qtype)
    state_dict = ckpt.state_dict
    return write_gguf(dst, kv, plan, lambda name: np.asarray(state_dict[name], dtype=np.float32))
