"""The torchvision facts vidvec's cards read from vidvec/data are what the installed torchvision says."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = runpy.run_path(str(ROOT / "scripts" / "snapshot_torchvision.py"))["snapshot"]()


@pytest.mark.parametrize("name", sorted(SNAPSHOT))
def test_data_file_matches_installed_torchvision(name: str) -> None:
    text = (ROOT / "src" / "vidvec" / "data" / name).read_text("utf-8")
    assert text == SNAPSHOT[name], f"{name} is stale: run python scripts/snapshot_torchvision.py"
