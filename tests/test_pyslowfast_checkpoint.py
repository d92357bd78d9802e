"""PySlowFast port: safe checkpoint loading, Caffe2 name conversion, configs and clear mismatch errors."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pyslowfast_fixtures import read_index

from vidvec.models.pyslowfast import build_model, load_checkpoint, load_config, load_pretrained
from vidvec.models.pyslowfast.checkpoint import (
    CheckpointError,
    UnsafePickleError,
    c2_to_pytorch_name,
    load_state_dict_strict,
    safe_pickle_loads,
)
from vidvec.registry import card_from_checkpoint
from vidvec.weights import WeightsError, load_model


# --------------------------------------------------------------------------------- malicious pickles


def _write_flag(path: str) -> None:  # what a malicious pickle would run
    Path(path).write_text("pwned")


class _RunsCode:
    def __init__(self, flag: Path, how: str) -> None:
        self.flag, self.how = str(flag), how

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch '{self.flag}'",))
        if self.how == "exec":
            return (exec, (f"open({self.flag!r}, 'w').write('pwned')",))
        return (_write_flag, (self.flag,))


@pytest.mark.parametrize("how", ["system", "exec", "function"])
def test_code_running_c2_pickle_is_refused(tmp_path: Path, how: str) -> None:
    flag = tmp_path / "flag"
    payload = {"blobs": {"conv1_w": np.zeros((2, 3, 1, 7, 7), np.float32), "pred_b": _RunsCode(flag, how)}}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError, match="refusing to load .* only numpy arrays are allowed"):
        load_checkpoint(path)
    with pytest.raises(UnsafePickleError):
        load_pretrained(path, cfg="Kinetics/c2/I3D_NLN_8x8_R50")
    assert not flag.exists(), "the pickle's code ran"


def _assert_refused_in_one_line(error: Exception, path: Path, culprit: str) -> None:
    assert str(error) == (f"refusing to load {path}: it would run code when loaded (its pickle calls {culprit}); "
                          f"vidvec loads only plain tensors")


def test_code_running_pyth_is_refused(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    path = tmp_path / "evil.pyth"
    torch.save({"epoch": 1, "model_state": {"w": torch.zeros(1)}, "cfg": _RunsCode(flag, "function")}, path)
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    _assert_refused_in_one_line(err.value, path, "test_pyslowfast_checkpoint._write_flag")
    assert not flag.exists(), "the checkpoint's code ran"


@pytest.mark.parametrize("model", [None, "Kinetics/X3D_XS"])
def test_code_running_pyth_is_one_line_for_any_model(tmp_path: Path, model: str | None) -> None:
    """Without a model the cfg inspection (card_from_checkpoint) meets the pickle first; with a PySlowFast model
    the card's reader does. Either way: one line naming the global, no advice to load it unrestricted."""
    flag = tmp_path / "flag"
    path = tmp_path / "evil.pyth"
    cfg = "MODEL:\n  MODEL_NAME: X3D\n"
    torch.save({"epoch": 1, "model_state": {"w": torch.zeros(1)}, "cfg": cfg, "evil": _RunsCode(flag, "system")},
               path)
    with pytest.raises(WeightsError) as err:
        load_model(model, weights=path)
    _assert_refused_in_one_line(err.value, path, "posix.system" if os.name == "posix" else "nt.system")
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    if model is None:  # refused while inferring the model, not after falling back to the default model
        with pytest.raises(WeightsError, match="^refusing to load"):
            card_from_checkpoint(path)
    assert not flag.exists(), "the checkpoint's code ran"


def test_safe_unpickler_still_reads_numpy_arrays() -> None:
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(2.5), "c": np.zeros(0, np.int64)}
    out = safe_pickle_loads(pickle.dumps({"blobs": arrays}, protocol=2))
    np.testing.assert_array_equal(out["blobs"]["a"], arrays["a"])
    assert out["blobs"]["b"] == 2.5


def test_non_checkpoint_pickle_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CheckpointError, match="not a Caffe2 checkpoint"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------ Caffe2 name mapping


def test_c2_names_match_pyslowfast(pyslowfast_ckpt_dir: Path) -> None:
    files = sorted(pyslowfast_ckpt_dir.glob("*.c2_names.json"))
    assert files
    for f in files:
        for blob, key, _shape in json.loads(f.read_text()):
            assert c2_to_pytorch_name(blob) == key, blob


@pytest.mark.parametrize(("blob", "key"), [
    ("t_res4_5_branch2c_bn_subsample_bn_rm", "s4_fuse.bn.running_mean"),
    ("t_res4_5_branch2c_bn_subsample_w", "s4_fuse.conv_f2s.weight"),
    ("nonlocal_conv4_5_theta_w", "s4.pathway0_nonlocal5.conv_theta.weight"),
    ("nonlocal_conv3_1_bn_riv", "s3.pathway0_nonlocal1.bn.running_var"),
    ("res5_2_branch2b_bn_fc1_w", "s5.pathway0_res2.branch2.se.fc1.weight"),
    ("conv1_xy_w", "s1.pathway0_stem.conv_xy.weight"),
    ("conv_5_bn_s", "head.conv_5_bn.weight"),
    ("lin_5_w", "head.lin_5.weight"),
    ("pred_w", "head.projection.weight"),
])
def test_c2_name_rules(blob: str, key: str) -> None:
    assert c2_to_pytorch_name(blob) == key


def test_c2_checkpoint_needs_a_cfg(pyslowfast_ckpt_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="no embedded config"):
        load_pretrained(pyslowfast_ckpt_dir / "i3d_nln_r50_8x8_w8.c2.pkl")


# ----------------------------------------------------------------------------------------- mismatches


def test_key_mismatch_is_one_clear_error_with_a_suggestion(pyslowfast_ckpt_dir: Path) -> None:
    state, _ = load_checkpoint(pyslowfast_ckpt_dir / "slow_r50_8x8_w8.pyth")
    model = build_model("Kinetics/c2/SLOWFAST_8x8_R50")
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, state, source="slow.pyth")
    msg = str(err.value)
    assert "slow.pyth does not match the model" in msg
    assert "missing: s1.pathway1_stem.conv.weight" in msg
    assert "closest known configs: Kinetics/c2/SLOW_8x8_R50" in msg
    assert "RESNET.WIDTH_PER_GROUP 8?" in msg


def test_load_pretrained_refuses_non_finite_weights(tmp_path: Path) -> None:
    cfg = load_config("Kinetics/c2/SLOW_8x8_R50", ["RESNET.WIDTH_PER_GROUP", 2, "MODEL.NUM_CLASSES", 3])
    state = build_model(cfg).state_dict()
    state["head.projection.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pyth"
    torch.save({"epoch": 1, "model_state": state, "cfg": ""}, path)
    with pytest.raises(WeightsError, match=rf"^{path} has NaN/Inf values in 1 of {len(state)} tensors "
                                           r"\(e.g. head.projection.weight\); refusing to load it$"):
        load_pretrained(path, cfg=cfg)


def test_exact_suggestion_for_a_full_size_state_dict() -> None:
    state = build_model("Kinetics/X3D_L").state_dict()
    with pytest.raises(CheckpointError, match=r"closest known configs: Kinetics/X3D_L,"):
        load_state_dict_strict(build_model("Kinetics/X3D_XS"), state)


# ---------------------------------------------------------------------------------------------- config


def test_pyth_cfg_is_the_named_config_plus_overrides(pyslowfast_ckpt_dir: Path) -> None:
    """The cfg PySlowFast embedded in each .pyth agrees with our named config + the fixture's overrides on
    every value the keys fixture records as inference-relevant."""
    index = read_index(pyslowfast_ckpt_dir)
    resolved = read_index(pyslowfast_ckpt_dir.parent / "keys")
    for name, entry in index.items():
        if entry["model_class"] == "MViT":
            continue
        _, cfg = load_checkpoint(pyslowfast_ckpt_dir / f"{name}.pyth")
        ours = load_config(entry["config"], entry["overrides"])
        for section, values in resolved[entry["config"]]["cfg"].items():
            for key in values:
                assert cfg[section][key] == ours[section][key], (name, section, key)


def test_yaml_with_relative_base_and_string_overrides(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("_BASE_: Kinetics/c2/SLOWFAST_8x8_R50.yaml\nDATA:\n  NUM_FRAMES: 64\n")
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("_BASE_: ../base.yaml\nMODEL:\n  NUM_CLASSES: 174\n")
    cfg = load_config(child, ["RESNET.WIDTH_PER_GROUP", "8", "DATA.MEAN", "[0.5, 0.5, 0.5]"])
    assert cfg.SLOWFAST.ALPHA == 4 and cfg.SLOWFAST.FUSION_KERNEL_SZ == 7  # from the named base
    assert cfg.DATA.NUM_FRAMES == 64 and cfg.MODEL.NUM_CLASSES == 174
    assert cfg.RESNET.WIDTH_PER_GROUP == 8 and cfg.DATA.MEAN == [0.5, 0.5, 0.5]


def test_config_errors() -> None:
    with pytest.raises(KeyError, match="RESNET.WIDTH"):
        load_config("Kinetics/X3D_M", ["RESNET.WIDTH", 8])
    with pytest.raises(FileNotFoundError, match="neither a YAML file nor a known config"):
        load_config("Kinetics/NOPE")
    with pytest.raises(KeyError, match="MODEL.NUM_CLASES"):
        load_config("MODEL:\n  NUM_CLASES: 3\n", strict=True)
    assert load_config("configs/Kinetics/X3D_M.yaml").X3D.DEPTH_FACTOR == 2.2


def test_unsupported_model_names_are_clear() -> None:
    with pytest.raises(NotImplementedError, match="ResNet_nopool"):
        build_model(load_config("Kinetics/C2D_8x8_R50", ["MODEL.MODEL_NAME", "ResNet_nopool"]))


def test_x3d_latent_and_probs_shapes() -> None:
    model = build_model(load_config("Kinetics/X3D_XS", ["DATA.TRAIN_CROP_SIZE", 64, "MODEL.NUM_CLASSES", 5]))
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 4, 64, 64))
        latent = model(torch.randn(2, 3, 4, 64, 64))
    assert out["probs"].shape == (1, 5) and torch.allclose(out["probs"].sum(1), torch.ones(1))
    assert latent.shape == (2, model.embed_dim) == (2, 2048)
    assert model.classify(latent).shape == (2, 5)


def test_ava_detection_model_gives_a_whole_clip_latent() -> None:
    """AVA models keep PySlowFast's keys; without person boxes the latent is the whole clip's average."""
    model = build_model(load_config("AVA/c2/SLOWFAST_32x2_R101_50_50", ["RESNET.WIDTH_PER_GROUP", 8]))
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 32, 64, 64))
    assert out["latent"].shape == (1, 288) and out["probs"].shape == (1, 80)
    assert torch.all((out["probs"] > 0) & (out["probs"] < 1))  # sigmoid head
