"""PySlowFast port: outputs equal PySlowFast's own (shared/fixtures/pyslowfast/ckpt) for every non-MViT
small checkpoint, loaded from the .pyth and, where present, from the Caffe2 .pkl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pyslowfast_fixtures import assert_close, fixtures_root, index_or_empty, load_expected, read_index

from vidvec.models.pyslowfast import build_model, load_checkpoint, load_pretrained

_INDEX = index_or_empty("ckpt")
_NAMES = [n for n, v in _INDEX.items() if v["model_class"] != "MViT"]
_C2 = {n for n in _NAMES if (fixtures_root() / "ckpt" / f"{n}.c2.pkl").is_file()}
CASES = [(n, "pyth") for n in _NAMES] + [(n, "c2") for n in sorted(_C2)] or [("<fixtures missing>", "pyth")]


def _inputs(e: np.lib.npyio.NpzFile, prefix: str = "") -> list[torch.Tensor]:
    return [torch.from_numpy(e[f"{prefix}input_{i}"]) for i in range(2) if f"{prefix}input_{i}" in e.files]


@pytest.fixture(scope="module")
def torch_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(min(old, 2))
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_outputs_match_pyslowfast(name: str, fmt: str, pyslowfast_ckpt_dir: Path, torch_threads) -> None:
    entry = read_index(pyslowfast_ckpt_dir)[name]
    if fmt == "pyth":
        model = load_pretrained(pyslowfast_ckpt_dir / f"{name}.pyth")  # builds from the cfg embedded in the checkpoint
    else:
        model = load_pretrained(pyslowfast_ckpt_dir / f"{name}.c2.pkl", cfg=entry["config"],
                                overrides=entry["overrides"])
    assert not model.training
    e = load_expected(pyslowfast_ckpt_dir, name)
    pathways = _inputs(e)
    with torch.no_grad():
        out = model.predict(pathways)
        if "input_raw" in e.files:  # forward packs a raw clip into pathways exactly like PySlowFast
            raw = torch.from_numpy(e["input_raw"])
            for got, ref in zip(model.pack(raw), pathways, strict=True):
                assert torch.equal(got, ref)
            latent = model(raw)
        else:
            latent = model.forward_pathways(pathways)
        logits = model.classify(latent)
    assert_close(out["latent"], e["latent"], "latent")
    assert_close(latent, e["latent"], "forward latent")
    assert_close(out["projection_input"], e["projection_input"], "projection_input")
    assert_close(out["logits"], e["logits"], "logits")
    assert_close(out["probs"], e["probs"], "probs")
    assert_close(logits, e["logits"].mean((1, 2, 3)), "classify(latent)")
    assert_close(model.probabilities(logits), e["probs"], "probabilities(classify(latent))")
    if "fc96_input_0" in e.files:  # fully convolutional testing: the head's pool leaves a 2x2 grid
        with torch.no_grad():
            fc = model.predict(_inputs(e, "fc96_"))
        for key in ("latent", "projection_input", "logits", "probs"):
            assert_close(fc[key], e[f"fc96_{key}"], f"fc96 {key}")


@pytest.mark.parametrize("name", [n for n, fmt in CASES if fmt == "pyth"])
def test_cpu_fast_paths_match_pyslowfast(name: str, pyslowfast_ckpt_dir: Path, torch_threads) -> None:
    # The runner folds BatchNorms into the convolutions and lays PySlowFast's CNNs out channels-last on the CPU
    # (their cards say so): still within the bound.
    from vidvec.optimize import as_channels_last, fold_batch_norms, to_channels_last

    model = load_pretrained(pyslowfast_ckpt_dir / f"{name}.pyth")
    assert fold_batch_norms(model) > 0
    model = to_channels_last(model)
    e = load_expected(pyslowfast_ckpt_dir, name)
    with torch.no_grad():
        out = model.predict([as_channels_last(x) for x in _inputs(e)])
    assert_close(out["latent"], e["latent"], "latent (fast paths)")
    assert_close(out["logits"], e["logits"], "logits (fast paths)")


def test_c2_pickle_loads_the_same_weights_as_pyth(pyslowfast_ckpt_dir: Path) -> None:
    for name in sorted(_C2):
        c2_state, c2_cfg = load_checkpoint(pyslowfast_ckpt_dir / f"{name}.c2.pkl")
        state, cfg = load_checkpoint(pyslowfast_ckpt_dir / f"{name}.pyth")
        assert c2_cfg is None and cfg is not None
        names = json.loads((pyslowfast_ckpt_dir / f"{name}.c2_names.json").read_text())
        assert set(c2_state) == {key for _, key, _ in names}
        for _, key, shape in names:
            np.testing.assert_array_equal(c2_state[key].reshape(shape).numpy(), state[key].numpy())
    assert _C2, "no .c2.pkl fixtures found"


def test_pytorchvideo_layout_computes_the_same(pyslowfast_ckpt_dir: Path, torch_threads) -> None:
    """PTVSlowFast (PyTorchVideo module names) with SlowFast's weights gives SlowFast's outputs."""
    state, cfg = load_checkpoint(pyslowfast_ckpt_dir / "slowfast_r50_8x8_w8.pyth")
    cfg.MODEL.MODEL_NAME = "PTVSlowFast"
    model = build_model(cfg)
    target = model.state_dict()
    assert [tuple(v.shape) for v in target.values()] == [tuple(v.shape) for v in state.values()]
    model.load_state_dict(dict(zip(target, state.values(), strict=True)))
    e = load_expected(pyslowfast_ckpt_dir, "slowfast_r50_8x8_w8")
    with torch.no_grad():
        out = model.predict(_inputs(e))
    for key in ("latent", "logits", "probs"):
        assert_close(out[key], e[key], f"PTV {key}")
