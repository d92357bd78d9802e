"""Helpers shared by the PySlowFast port tests (test_pyslowfast_*.py).

The fixtures live in shared/fixtures/pyslowfast (made by running upstream PySlowFast): ``keys/`` (state_dict
keys and resolved configs of every known config) and ``ckpt/`` (small checkpoints with their expected outputs),
each with an ``index.json``. The ``pyslowfast_keys_dir`` / ``pyslowfast_ckpt_dir`` fixtures (conftest.py) give
the folders and fail when they are missing; :func:`index_or_empty` reads an index at collection time, for
parametrisation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4  # max abs diff <= TOL * max |reference|; PySlowFast's own fp32-vs-fp64 gap is ~3e-7

_WHAT = {"keys": "key", "ckpt": "checkpoint"}


def fixtures_root(shared_dir: Path | None = None) -> Path:
    """shared/fixtures/pyslowfast; without ``shared_dir``, under VIDVEC_SHARED (default <repo>/../shared)."""
    if shared_dir is None:
        shared_dir = Path(os.environ.get("VIDVEC_SHARED", REPO_ROOT.parent / "shared"))
    return shared_dir / "fixtures" / "pyslowfast"


def read_index(folder: Path) -> dict[str, Any]:
    """A fixture folder's index.json."""
    return json.loads((folder / "index.json").read_text())


def index_or_empty(kind: str) -> dict[str, Any]:
    """The index.json of fixtures/pyslowfast/``kind`` ("keys" or "ckpt"), or {} when it cannot be read (then
    the tests fail through the folder fixture, not at collection)."""
    try:
        return read_index(fixtures_root() / kind)
    except OSError:
        return {}


def fixture_dir(shared_dir: Path, kind: str) -> Path:
    """fixtures/pyslowfast/``kind`` under ``shared_dir``; a test failure when its index.json is missing."""
    d = fixtures_root(shared_dir) / kind
    if not (d / "index.json").is_file():
        pytest.fail(f"PySlowFast {_WHAT.get(kind, kind)} fixtures not found: {d / 'index.json'}", pytrace=False)
    return d


def load_expected(ckpt_dir: Path, name: str) -> np.lib.npyio.NpzFile:
    """The outputs upstream PySlowFast gave for checkpoint ``name`` (``<name>.expected.npz``)."""
    return np.load(ckpt_dir / f"{name}.expected.npz")


def assert_close(got: torch.Tensor, ref: np.ndarray, what: str, tol: float = TOL) -> None:
    """Same shape, and max |got - ref| <= ``tol`` * max |ref| (relative to the reference's largest value),
    computed in float64."""
    got_np = got.detach().numpy()
    assert got_np.shape == ref.shape, f"{what}: shape {got_np.shape} vs {ref.shape}"
    err = float(np.abs(got_np.astype(np.float64) - ref).max())
    bound = tol * float(np.abs(ref).max())
    assert err <= bound, f"{what}: max abs diff {err:.3g} > {bound:.3g}"
