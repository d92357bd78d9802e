"""PySlowFast port: every known non-MViT config builds a model with PySlowFast's exact state_dict
(keys and shapes, from shared/fixtures/pyslowfast/keys) and the same conv/pool/norm/linear layers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from pyslowfast_fixtures import index_or_empty, read_index

from vidvec.models.pyslowfast import build_model, known_config_names, load_config

_INDEX = index_or_empty("keys")
# MViT configs belong to test_pyslowfast_mvit.py; configs PySlowFast itself cannot build have no keys.
CONFIGS = [name for name, v in _INDEX.items() if v.get("status") == "ok" and v.get("model_class") != "MViT"] \
    or ["<fixtures missing>"]


_KINDS = "Conv3d|MaxPool3d|AvgPool3d|AdaptiveAvgPool3d|BatchNorm3d|NaiveSyncBatchNorm3d|Linear"
_LAYER = re.compile(rf"^(\s*)\((\S+)\): ({_KINDS})\((.*)\)$")
_NODE = re.compile(r"^(\s*)\((\S+)\): ")


def _layers(text: str) -> list[tuple[str, str]]:
    """(qualified name, normalised repr) of the layers in a printed module tree."""
    out, stack = [], []
    for line in text.splitlines():
        node = _NODE.match(line)
        if not node:
            continue
        depth = len(node.group(1)) // 2 - 1
        stack[depth:] = [node.group(2)]
        m = _LAYER.match(line)
        if m:
            args = m.group(4).replace("[", "(").replace("]", ")")
            # Synchronised BN (SSv2 configs) is BatchNorm3d at inference; compare the arguments.
            kind = "BatchNorm3d" if m.group(3).endswith("BatchNorm3d") else m.group(3)
            out.append((".".join(stack), f"{kind}({args})"))
    return out


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_matches_pyslowfast(config: str, pyslowfast_keys_dir: Path) -> None:
    entry = read_index(pyslowfast_keys_dir)[config]
    keys = json.loads((pyslowfast_keys_dir.parent / entry["keys_file"]).read_text())
    expected = {k: tuple(shape) for k, shape, _ in keys}
    model = build_model(config)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    wrong = [(k, got[k], expected[k]) for k in expected if got[k] != expected[k]]
    assert not wrong, wrong[:5]
    assert list(got) == list(expected)  # same order too (PySlowFast's print and save order)
    assert model.embed_dim == entry["latent_dim"]
    assert model.num_classes == entry["num_classes_out"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    if "pytorchvideo" not in config:  # PyTorchVideo's ModuleLists print compacted ("(1-2): 2 x ResBlock")
        ref = _layers((pyslowfast_keys_dir.parent / entry["modules_file"]).read_text())
        mine = _layers(repr(model))
        assert mine == ref, next(((a, b) for a, b in zip(mine, ref) if a != b), (len(mine), len(ref)))


def test_every_fixture_config_is_known() -> None:
    assert _INDEX, "fixtures/pyslowfast/keys/index.json not found (set VIDVEC_SHARED)"
    assert set(CONFIGS) <= set(known_config_names())


@pytest.mark.parametrize("config", CONFIGS)
def test_cfg_values_match_resolved_pyslowfast_cfg(config: str, pyslowfast_keys_dir: Path) -> None:
    resolved = read_index(pyslowfast_keys_dir)[config]["cfg"]
    cfg = load_config(config)
    for section, values in resolved.items():
        for key, value in values.items():
            assert cfg[section][key] == value, f"{section}.{key}"


def test_meta_device_build_allocates_nothing() -> None:
    with torch.device("meta"):
        model = build_model("Kinetics/c2/SLOWFAST_8x8_R101_101_101")
    assert next(model.parameters()).is_meta
