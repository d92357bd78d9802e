"""Shared pytest fixtures for vidvec."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared/ test material (env VIDVEC_SHARED, default <repo>/../shared).
    Missing material is a failure, not a skip: tests that need it would otherwise silently stop running."""
    root = Path(os.environ.get("VIDVEC_SHARED", REPO_ROOT.parent / "shared"))
    if not (root / "assets" / "videos").is_dir():
        pytest.fail(
            f"shared test material not found: {root / 'assets' / 'videos'} does not exist "
            "(set VIDVEC_SHARED to the shared/ folder)",
            pytrace=False,
        )
    return root


# PySlowFast port fixture folders (helpers in pyslowfast_fixtures.py): fail, never skip, when missing.


@pytest.fixture(scope="module")
def pyslowfast_keys_dir(shared_dir: Path) -> Path:
    """shared/fixtures/pyslowfast/keys: state_dict keys, module trees and resolved configs per known config."""
    from pyslowfast_fixtures import fixture_dir

    return fixture_dir(shared_dir, "keys")


@pytest.fixture(scope="module")
def pyslowfast_ckpt_dir(shared_dir: Path) -> Path:
    """shared/fixtures/pyslowfast/ckpt: small checkpoints and PySlowFast's outputs for them."""
    from pyslowfast_fixtures import fixture_dir

    return fixture_dir(shared_dir, "ckpt")
