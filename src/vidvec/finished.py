"""A finished output folder read back (vidvec's own layout): its settings, each done video's ledger row and
feature file. ``convert`` and the store's ``index`` read folders through it; it needs no model code."""

from __future__ import annotations

from pathlib import Path

from .ledger import Ledger, VideoRecord
from .writers import output_path, read_features


def done_files(out: Path) -> tuple[dict, list[tuple[VideoRecord, Path]]]:
    """An output folder's settings and each done video's ledger row with its feature file (LedgerError when the
    folder has no readable ledger)."""
    with Ledger(Path(out), readonly=True) as ledger:
        settings, records = ledger.settings() or {}, [r for r in ledger.records() if r.status == "done"]
    return settings, [(r, _feature_file(Path(out), r.key, r.output_path, settings.get("format", "npz")))
                      for r in records]


def _feature_file(out: Path, key: str, recorded: str | None, fmt: str) -> Path:
    """The video's file: where the vidvec layout puts it, else (a manifest's output_path) where the ledger says,
    a path relative to where that run was started."""
    canonical = output_path(out, key, fmt)
    return Path(recorded) if recorded and not canonical.is_file() else canonical


def read_done(path: Path, settings_hash: str | None) -> tuple[dict, dict]:
    """The file's arrays and provenance, if its provenance says it is the ledger row's (the same settings)."""
    arrays, provenance = read_features(path)
    if settings_hash is not None and provenance.get("settings_hash") not in (None, settings_hash):
        raise ValueError("its settings are not the folder's (another run's file); rerun vidvec extract on it")
    return arrays, provenance
