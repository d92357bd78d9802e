"""Loading PySlowFast checkpoints safely: ``.pyth`` (torch zip pickle) and Caffe2/Detectron ``.pkl`` blobs.

* ``.pyth``/``.pth``: ``torch.load(..., weights_only=True)`` (``vidvec.checkpoints.torch_load``: a pickle that would
  run code is refused in one line, as a ``WeightsError``); PySlowFast stores
  ``{epoch, model_state, optimizer_state, cfg}`` with ``cfg`` a YAML string, which becomes a :class:`CfgNode`.
* ``.pkl``: a latin-1 Python pickle ``{'blobs': {name: ndarray}}`` read with a restricted unpickler that can
  only rebuild numpy arrays (no other global can be looked up, so no code runs); blob names are converted
  to PyTorch keys with PySlowFast's Caffe2 naming rules (:func:`c2_to_pytorch_name`).

:func:`load_state_dict_strict` loads with exact key matching and, on mismatch, raises one error that lists
a few missing/unexpected keys and the known configs whose key set fits the checkpoint best.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidvec.checkpoints import check_finite, torch_load

from .build import build_model
from .config import CfgNode, known_config_names, load_config

__all__ = ["CheckpointError", "UnsafePickleError", "c2_to_pytorch_name", "convert_c2_blobs", "load_c2_pickle",
           "load_checkpoint", "load_pretrained", "load_state_dict_strict", "suggest_configs"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used with the model (unreadable, or keys/shapes do not match)."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than numpy array reconstruction."""


# ------------------------------------------------------------------------------------ restricted pickle

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, 'latin1'): a pure conversion.
    ("_codecs", "encode"),
    # ... and empty bytes as bytes() (see _safe_bytes).
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
}


def _safe_bytes(*args: Any) -> bytes:
    """bytes() / bytes(str, encoding) / bytes(bytes) only; bytes(n) would let a pickle allocate n bytes."""
    if args and not isinstance(args[0], (bytes, str)):
        raise UnsafePickleError("refusing bytes() of a non-string in a Caffe2 checkpoint pickle")
    return bytes(*args)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals needed to rebuild numpy arrays and dicts; refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load {module}.{name} from a Caffe2 checkpoint pickle: only numpy arrays are "
                "allowed (the file may be corrupt or malicious)")
        if module == "collections":
            return OrderedDict
        if name == "bytes":
            return _safe_bytes
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        try:
            from numpy._core import multiarray  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core import multiarray  # type: ignore[no-redef]
        return getattr(multiarray, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent ids in a Caffe2 checkpoint pickle")


def safe_pickle_loads(data: bytes) -> Any:
    """Unpickle (latin-1 for Python 2 strings) allowing only numpy array reconstruction."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


# --------------------------------------------------------------------------------- Caffe2 name mapping

# Applied in order, each to the result of the previous one (the order matters). The rules reproduce
# PySlowFast's Caffe2 converter (slowfast/utils/c2_model_loading.py), stated here as (pattern, replacement).
_C2_RULES: list[tuple[str, str]] = [
    # non-local blocks: nonlocal_conv{stage}_{block}_{part} -> s{stage}.pathway0_nonlocal{block}.{...}
    (r"^nonlocal_conv([0-9]+)_([0-9]+)_(.*)", r"s\1.pathway0_nonlocal\2_\3"),
    (r"^(.*)_nonlocal([0-9]+)_(theta)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(g)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(phi)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(out)(.*)", r"\1_nonlocal\2.conv_\3\4"),
    (r"^(.*)_nonlocal([0-9]+)_(bn)_(.*)", r"\1_nonlocal\2.\3.\4"),
    # lateral (fast -> slow) connections
    (r"^t_pool1_subsample_bn_(.*)", r"s1_fuse.bn.\1"),
    (r"^t_pool1_subsample_(.*)", r"s1_fuse.conv_f2s.\1"),
    (r"^t_res([0-9]+)_([0-9]+)_branch2c_bn_subsample_bn_(.*)", r"s\1_fuse.bn.\3"),
    (r"^t_res([0-9]+)_([0-9]+)_branch2c_bn_subsample_(.*)", r"s\1_fuse.conv_f2s.\3"),
    # slow / single pathway
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)([a-z])_(.*)", r"s\1.pathway0_res\2.branch\3.\4_\5"),
    (r"^res_conv1_bn_(.*)", r"s1.pathway0_stem.bn.\1"),
    (r"^conv1_xy(.*)", r"s1.pathway0_stem.conv_xy\1"),
    (r"^conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    (r"^res([0-9]+)_([0-9]+)_branch([0-9]+)_(.*)", r"s\1.pathway0_res\2.branch\3_\4"),
    (r"^res_conv1_(.*)", r"s1.pathway0_stem.conv.\1"),
    # fast pathway ('t_' prefix)
    (r"^t_res([0-9]+)_([0-9]+)_branch([0-9]+)([a-z])_(.*)", r"s\1.pathway1_res\2.branch\3.\4_\5"),
    (r"^t_res_conv1_bn_(.*)", r"s1.pathway1_stem.bn.\1"),
    (r"^t_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    (r"^t_res([0-9]+)_([0-9]+)_branch([0-9]+)_(.*)", r"s\1.pathway1_res\2.branch\3_\4"),
    (r"^t_res_conv1_(.*)", r"s1.pathway1_stem.conv.\1"),
    # heads and X3D extras
    (r"pred_(.*)", r"head.projection.\1"),
    (r"(.*)b_bn_fc(.*)", r"\1se.fc\2"),
    (r"conv_5(.*)", r"head.conv_5\1"),
    (r"lin_5(.*)", r"head.lin_5\1"),
    # parameter suffixes
    (r"(.*)bn.b\Z", r"\1bn.bias"),
    (r"(.*)bn.s\Z", r"\1bn.weight"),
    (r"(.*)bn.rm\Z", r"\1bn.running_mean"),
    (r"(.*)bn.riv\Z", r"\1bn.running_var"),
    (r"(.*)[\._]b\Z", r"\1.bias"),
    (r"(.*)[\._]w\Z", r"\1.weight"),
]
_C2_COMPILED = [(re.compile(p), r) for p, r in _C2_RULES]
# Blobs that are training state, not weights.
_C2_SKIP = ("momentum", "lr", "model_iter")


def c2_to_pytorch_name(name: str) -> str:
    """PySlowFast's Caffe2 blob name -> PyTorch state_dict key (e.g. ``t_res2_0_branch2a_bn_riv`` ->
    ``s2.pathway1_res0.branch2.a_bn.running_var``)."""
    for pattern, repl in _C2_COMPILED:
        name = pattern.sub(repl, name)
    return name


def convert_c2_blobs(blobs: Mapping[str, Any]) -> OrderedDict[str, Tensor]:
    """Caffe2 blobs -> PyTorch state dict (training-state blobs dropped). Shapes are the blobs' own; a blob
    with fewer dimensions than its parameter is reshaped by :func:`load_state_dict_strict`."""
    out: OrderedDict[str, Tensor] = OrderedDict()
    for name, blob in blobs.items():
        if any(s in name for s in _C2_SKIP):
            continue
        if not isinstance(blob, np.ndarray):
            raise CheckpointError(f"Caffe2 blob {name!r} is a {type(blob).__name__}, not an array")
        key = c2_to_pytorch_name(name)
        if key in out:
            raise CheckpointError(f"two Caffe2 blobs map to {key!r}")
        out[key] = torch.from_numpy(np.array(blob, copy=True))
    return out


def load_c2_pickle(path: str | os.PathLike) -> OrderedDict[str, Tensor]:
    """Read a Caffe2/Detectron ``.pkl`` safely and convert it to a PySlowFast state dict."""
    data = safe_pickle_loads(Path(path).read_bytes())
    if not isinstance(data, Mapping) or "blobs" not in data:
        raise CheckpointError(f"{path}: not a Caffe2 checkpoint (expected a dict with 'blobs')")
    return convert_c2_blobs(data["blobs"])


# ---------------------------------------------------------------------------------------- any checkpoint


def load_checkpoint(path: str | os.PathLike) -> tuple[OrderedDict[str, Tensor], CfgNode | None]:
    """Read a PySlowFast checkpoint without running code from it: ``(state_dict, cfg or None)``.

    ``.pkl`` files are Caffe2 blobs (no cfg); anything else goes through ``vidvec.checkpoints.torch_load``
    (``torch.load(weights_only=True)``; a pickle that would run code is a one-line ``WeightsError``).
    A cfg embedded as YAML (PySlowFast's ``save_checkpoint``) is parsed with ``yaml.safe_load``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    is_zip = zipfile.is_zipfile(path)
    if path.suffix == ".pkl" and not is_zip:
        return load_c2_pickle(path), None
    ckpt = torch_load(path)
    cfg = None
    if isinstance(ckpt, Mapping) and "model_state" in ckpt:
        state = ckpt["model_state"]
        raw_cfg = ckpt.get("cfg")
        if isinstance(raw_cfg, str) and raw_cfg.strip():
            cfg = load_config(raw_cfg)
        elif isinstance(raw_cfg, Mapping):
            cfg = load_config(raw_cfg)
    elif isinstance(ckpt, Mapping) and all(isinstance(v, Tensor) for v in ckpt.values()):
        state = ckpt
    else:
        raise CheckpointError(f"{path}: no 'model_state' in the checkpoint (keys: {list(ckpt)[:8]})")
    return OrderedDict((k, v) for k, v in state.items()), cfg


def _adapt_shapes(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Reshape tensors whose element count matches but which have fewer dimensions (Caffe2 linear blobs)."""
    out = dict(state)
    for key, value in state.items():
        ref = target.get(key)
        if ref is not None and value.shape != ref.shape and value.ndim < ref.ndim and value.numel() == ref.numel():
            out[key] = value.reshape(ref.shape)
    return out


def _signature(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def suggest_configs(state: Mapping[str, Tensor], top: int = 3) -> list[tuple[str, bool]]:
    """Known configs ranked by how well their key set fits ``state``: ``[(name, shapes_also_match), ...]``.
    Models are built on the meta device, so this allocates nothing."""
    keys = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    scored = []
    for name in known_config_names():
        try:
            with torch.device("meta"):
                sig = _signature(build_model(name))
        except Exception:  # noqa: BLE001 - a config that cannot be built here is simply not suggested
            continue
        common = set(sig) & set(keys)
        jaccard = len(common) / max(1, len(set(sig) | set(keys)))
        shapes = jaccard == 1.0 and all(sig[k] == keys[k] for k in common)
        scored.append((jaccard, shapes, name))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    return [(name, shapes) for j, shapes, name in scored[:top] if j > 0]


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """``model.load_state_dict(state, strict=True)`` (BatchNorm ``num_batches_tracked`` may be absent, as in
    Caffe2 files) with one readable error on any key or shape mismatch."""
    target = model.state_dict()
    state = _adapt_shapes(state, target)
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
             for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or wrong:
        lines = [f"{source} does not match the model ({type(model).__name__}): {len(missing)} missing, "
                 f"{len(unexpected)} unexpected, {len(wrong)} with a different shape"]
        if missing:
            lines.append("  missing: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            lines.append("  unexpected: " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        if wrong:
            lines.append("  shape: " + "; ".join(wrong[:3]) + (" ..." if len(wrong) > 3 else ""))
        try:
            suggestions = suggest_configs(state)
        except Exception:  # noqa: BLE001 - a hint must never hide the real error
            suggestions = []
        if suggestions:
            hint = ", ".join(f"{n}" + ("" if exact else " (same keys, other widths/shapes)")
                             for n, exact in suggestions)
            lines.append(f"  closest known configs: {hint}")
            stem = state.get("s1.pathway0_stem.conv.weight")
            if stem is not None and "s1.pathway0_stem.conv_xy.weight" not in state and not suggestions[0][1]:
                lines.append(f"  (the checkpoint's stem has {stem.shape[0]} channels: "
                             f"RESNET.WIDTH_PER_GROUP {stem.shape[0]}?)")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)


def load_pretrained(path: str | os.PathLike, cfg: Mapping[str, Any] | str | None = None,
                    overrides: Sequence[Any] | None = None) -> nn.Module:
    """Build the model for a checkpoint and load it strictly, in eval mode.

    ``cfg`` (a config or a known config name) is required for Caffe2 ``.pkl`` files, which carry none; for a
    ``.pyth`` the embedded cfg is used unless ``cfg`` is given. NaN/Inf weights are refused
    (``vidvec.checkpoints.check_finite``).
    """
    state, ckpt_cfg = load_checkpoint(path)
    check_finite(state, path)
    if cfg is None:
        if ckpt_cfg is None:
            raise CheckpointError(f"{path} has no embedded config; pass cfg= (e.g. a known config name)")
        cfg = ckpt_cfg
    elif not isinstance(cfg, CfgNode):
        cfg = load_config(cfg)
    if overrides:
        cfg = load_config(cfg, overrides)
    model = build_model(cfg)
    load_state_dict_strict(model, state, source=str(path))
    return model.eval()
