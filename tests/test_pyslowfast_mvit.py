"""PySlowFast MViT port: exact state_dict keys for the full-size configs, and output parity with PySlowFast on a
reduced MViTv2-S checkpoint (fixtures in shared/fixtures/pyslowfast, made by running upstream PySlowFast)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from pyslowfast_fixtures import assert_close, load_expected, read_index

from vidvec.models.base import FeatureModel
from vidvec.models.pyslowfast.mvit import MViTSpec, build_mvit


def _mvit_configs(keys_dir: Path) -> dict[str, dict[str, Any]]:
    index = read_index(keys_dir)
    found = {name: entry for name, entry in index.items() if entry["cfg"]["MODEL"]["ARCH"] == "mvit"}
    assert {"Kinetics/MVITv2_S_16x4", "Kinetics/MVITv2_B_32x3"} <= set(found), sorted(found)
    return found


def _namespace(value: Any) -> Any:
    """A nested dict as attribute-style objects (like yacs' CfgNode attribute access)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def _build_meta(cfg: Any):
    with torch.device("meta"):  # full-size models: shapes only, no memory or init time
        return build_mvit(cfg)


def test_full_size_state_dict_keys_and_shapes(pyslowfast_keys_dir: Path) -> None:
    for name, entry in _mvit_configs(pyslowfast_keys_dir).items():
        reference = json.loads((pyslowfast_keys_dir.parent / entry["keys_file"]).read_text())
        expected = {key: tuple(shape) for key, shape, _dtype in reference}
        assert len(expected) == entry["num_state_dict_entries"]
        cfg = copy.deepcopy(entry["cfg"])
        model = _build_meta(cfg)
        got = {key: tuple(t.shape) for key, t in model.state_dict().items()}
        assert set(got) == set(expected), (name, sorted(set(got) ^ set(expected))[:20])
        wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
        assert not wrong, (name, wrong)
        assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"], name
        assert model.latent_dim == entry["latent_dim"] == 768
        assert model.num_classes == entry["num_classes_out"]
        assert cfg == entry["cfg"], "build_mvit must not modify the cfg it is given"
        # The same config given as attribute-style objects builds the same net.
        same = _build_meta(_namespace(copy.deepcopy(entry["cfg"])))
        assert {k: tuple(t.shape) for k, t in same.state_dict().items()} == got


def test_full_size_block_geometry(pyslowfast_keys_dir: Path) -> None:
    """Per-block widths, heads, pooling kernels and strides (incl. POOL_KV_STRIDE_ADAPTIVE) as PySlowFast derived."""
    for name, entry in _mvit_configs(pyslowfast_keys_dir).items():
        derived = entry["mvit_derived"]
        spec = MViTSpec.from_cfg(entry["cfg"])
        assert list(spec.patch_dims) == derived["patch_dims_THW"], name
        for block, ref in zip(spec.blocks, derived["per_block"], strict=True):
            got = {"dim": block.dim, "dim_out": block.dim_out, "num_heads": block.num_heads,
                   "kernel_q": list(block.kernel_q), "stride_q": list(block.stride_q),
                   "kernel_kv": list(block.kernel_kv), "stride_kv": list(block.stride_kv)}
            assert got == {k: ref[k] for k in got}, (name, ref["block"])


def test_tiny_mvitv2_s_parity_with_pyslowfast(pyslowfast_ckpt_dir: Path) -> None:
    ckpt = torch.load(pyslowfast_ckpt_dir / "mvitv2_s_16x4_tiny.pyth", map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"model_state", "cfg"}
    cfg = yaml.safe_load(ckpt["cfg"])
    model = build_mvit(cfg)
    assert isinstance(model, FeatureModel)
    model.load_state_dict(ckpt["model_state"], strict=True)
    model.eval()
    expected = load_expected(pyslowfast_ckpt_dir, "mvitv2_s_16x4_tiny")
    info = read_index(pyslowfast_ckpt_dir)["mvitv2_s_16x4_tiny"]

    # Per-block output statistics, to say where a port diverges.
    stats: dict[str, torch.Tensor] = {}
    hooks = [model.patch_embed.register_forward_hook(lambda m, i, o: stats.__setitem__("patch_embed", o[0]))]
    for n, blk in enumerate(model.blocks):
        hooks.append(blk.register_forward_hook(lambda m, i, o, n=n: stats.__setitem__(f"blocks.{n}", o[0])))
    x = torch.from_numpy(expected["input_0"])
    with torch.no_grad():
        latent = model(x)
        logits = model.classify(latent)
        probs = model.probabilities(logits)
        predicted = model.predict(x)
    for h in hooks:
        h.remove()

    for stage in [str(s) for s in expected["stage_order"]]:
        mean, std = expected[f"stage__{stage}__p0"]
        shape = expected[f"shape__{stage}__p0"]
        out = stats[stage].double()
        assert list(out.shape) == list(shape[:3]), stage
        assert abs(out.mean().item() - mean) <= 1e-4 * max(abs(mean), std), stage
        assert abs(out.std().item() - std) <= 1e-4 * std, stage

    assert tuple(latent.shape) == tuple(info["latent_shape"]) == (2, 128)
    for key, got in (("latent", latent), ("logits", logits), ("probs", probs), ("probs", predicted)):
        assert got.dtype == torch.float32
        assert_close(got, expected[key], key)
    assert_close(latent, expected["projection_input"], "projection_input")
    # PySlowFast's calling convention (a list of pathways) gives the same latent.
    with torch.no_grad():
        assert torch.equal(model([x]), latent)


def test_input_size_must_match_config(pyslowfast_ckpt_dir: Path) -> None:
    cfg = yaml.safe_load(torch.load(pyslowfast_ckpt_dir / "mvitv2_s_16x4_tiny.pyth", map_location="cpu",
                                    weights_only=True)["cfg"])
    x = torch.randn(1, 3, 8, 64, 64)  # config says 16 frames
    with pytest.raises(ValueError, match="16 frames at 64x64"):
        build_mvit(cfg)(x)
    loose = build_mvit(cfg, strict_input_size=False)  # interpolated relative positions: runs, no reference
    with torch.no_grad():
        assert loose(x).shape == (1, 128)
        assert loose(torch.randn(1, 3, 16, 96, 96)).shape == (1, 128)


def test_unsupported_options_raise() -> None:
    base = {"DATA": {"NUM_FRAMES": 16, "TRAIN_CROP_SIZE": 64, "TEST_CROP_SIZE": 64, "INPUT_CHANNEL_NUM": [3]},
            "MODEL": {"ARCH": "mvit"}, "MVIT": {"DEPTH": 2, "EMBED_DIM": 16}}
    build_mvit(base)  # defaults fill every other field (an MViTv1-style net with an absolute pos_embed)
    assert "pos_embed" in build_mvit(base).state_dict()
    # yacs-style string literals (as in the published YAML files) are decoded.
    literal = copy.deepcopy(base)
    literal["MVIT"].update({"PATCH_KERNEL": "(3, 7, 7)", "PATCH_STRIDE": "(2, 4, 4)", "PATCH_PADDING": "(1, 3, 3)"})
    assert build_mvit(literal).patch_embed.proj.padding == (1, 3, 3)
    for patch, error in (({"MVIT": {"REV": {"ENABLE": True}}}, NotImplementedError),
                         ({"MODEL": {"MODEL_NAME": "PTVMViT"}}, ValueError),
                         ({"DETECTION": {"ENABLE": True}}, NotImplementedError),
                         ({"DATA": {"TEST_CROP_SIZE": 96}}, ValueError)):
        cfg = copy.deepcopy(base)
        for section, values in patch.items():
            cfg.setdefault(section, {}).update(values)
        with pytest.raises(error):
            build_mvit(cfg)
