"""The run ledger: an SQLite file in the output folder recording what happened to each video.

It is what makes a run resumable: a video counts as processed only once its row says
``done``, and that row is committed only after its feature file is in place. Every
``mark_*`` is its own committed transaction, so a SIGKILL loses at most the video in flight.
It also pins the settings a folder was made with, so a re-run with other settings cannot
silently mix two kinds of features in one folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEDGER_NAME = "vidvec-ledger.sqlite"
SCHEMA_VERSION = 1
STATUSES = ("done", "failed", "skipped")
_CONNECT_TIMEOUT_S = 30.0  # how long to wait for another process's write lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS videos (
    key           TEXT PRIMARY KEY,
    video_path    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('done', 'failed', 'skipped')),
    reason        TEXT,
    output_path   TEXT,
    settings_hash TEXT,
    clips         INTEGER NOT NULL DEFAULT 0,
    seconds       REAL NOT NULL DEFAULT 0,
    decode_s      REAL NOT NULL DEFAULT 0,
    model_s       REAL NOT NULL DEFAULT 0,
    wall_s        REAL NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL
);
"""
_COLUMNS = (
    "key, video_path, status, reason, output_path, settings_hash, "
    "clips, seconds, decode_s, model_s, wall_s, updated_at"
)


class SettingsMismatch(Exception):
    """The output folder was made with other settings than this run's.

    ``differences`` holds ``(name, old, new)`` tuples, ``None`` meaning unset.
    """

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences


@dataclass
class VideoRecord:
    """One ledger row. ``seconds`` is the video duration processed; ``updated_at`` is Unix time."""

    key: str
    video_path: str
    status: str
    reason: str | None
    output_path: str | None
    settings_hash: str | None
    clips: int
    seconds: float
    decode_s: float
    model_s: float
    wall_s: float
    updated_at: float


def canonical_settings(settings: Mapping[str, Any]) -> dict:
    """Settings as plain JSON types (paths, tuples, sets, dataclasses, numpy scalars converted)."""
    return json.loads(_canonical_json(settings))


def settings_hash(settings: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the settings' canonical JSON (sorted keys)."""
    return hashlib.sha256(_canonical_json(settings).encode("utf-8")).hexdigest()[:16]


def _canonical_json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=str)
        if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
            return obj.item()
        # No str() fallback: a repr with a memory address would change the hash every run.
        raise TypeError(f"setting of type {type(obj).__name__} cannot be hashed; convert it first")

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True, default=default)


class Ledger:
    """The ledger of one output folder (``out_dir/vidvec-ledger.sqlite``).

    Safe to open from several processes at once (e.g. ``vidvec status`` during a run): WAL
    journal, and a busy timeout so writers wait for each other instead of failing. One
    object may be shared by threads of one process.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / LEDGER_NAME
        self._lock = threading.Lock()
        self._hash: str | None = None
        # isolation_level=None: autocommit, so each mark_* commits by itself and multi-step
        # updates use explicit BEGIN IMMEDIATE.
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=_CONNECT_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            # WAL: readers never block the writer. (Falls back silently on filesystems
            # without shared memory; the rollback journal is just as crash-safe.)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed 'done' survives power loss too, not just a killed process.
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction() as conn:
                # Statement by statement: executescript would COMMIT our transaction early.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                row = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{self.path} was written by a newer vidvec (ledger schema {row[0]}); upgrade vidvec"
                    )
        except BaseException:
            self.close()
            raise

    # -- settings -----------------------------------------------------------------------

    def bind_settings(self, settings_hash: str, settings: Mapping[str, Any], overwrite: bool = False) -> None:
        """Tie this folder to a run's settings.

        First run: store them. Same hash: nothing to do. Different hash: raise
        `SettingsMismatch` naming what changed, unless ``overwrite``: then store the new
        settings and forget every video row (done, failed and skipped were all decided under
        the old settings), so every video is redone.
        """
        new = canonical_settings(settings)
        with self._transaction() as conn:
            stored = dict(conn.execute(
                "SELECT name, value FROM meta WHERE name IN ('settings_hash', 'settings')"
            ).fetchall())
            old_hash = stored.get("settings_hash")
            if old_hash is not None and old_hash != settings_hash:
                if not overwrite:
                    old = json.loads(stored.get("settings", "{}"))
                    raise _mismatch(self.out_dir, old, new, old_hash, settings_hash)
                conn.execute("DELETE FROM videos")
            if old_hash != settings_hash:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('settings_hash', ?)", (settings_hash,))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (json.dumps(new),))
        self._hash = settings_hash

    def settings(self) -> dict | None:
        """The settings stored by `bind_settings`, or None before the first run."""
        row = self._query("SELECT value FROM meta WHERE name='settings'")
        return json.loads(row[0][0]) if row else None

    # -- per video ----------------------------------------------------------------------

    def get(self, key: str) -> VideoRecord | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM videos WHERE key=?", (key,))
        return VideoRecord(*rows[0]) if rows else None

    def mark_done(
        self,
        key: str,
        video_path: str | Path,
        output_path: str | Path,
        clips: int,
        seconds: float,
        timings: Mapping[str, float],
    ) -> None:
        """Record a finished video. Call only after its output file is in its final place.

        ``timings`` may hold ``decode_s``, ``model_s``, ``wall_s`` (or without ``_s``);
        missing ones are 0, others are ignored.
        """
        def timing(name: str) -> float:
            return float(timings.get(f"{name}_s", timings.get(name, 0.0)))

        self._upsert(key, video_path, "done", None, os.fspath(output_path), int(clips),
                     float(seconds), timing("decode"), timing("model"), timing("wall"))

    def mark_failed(self, key: str, video_path: str | Path, reason: str) -> None:
        """Record a video that could not be processed, with a one-line reason."""
        self._upsert(key, video_path, "failed", reason)

    def mark_skipped(self, key: str, video_path: str | Path, reason: str) -> None:
        """Record a video deliberately not processed (e.g. too short), with the reason."""
        self._upsert(key, video_path, "skipped", reason)

    def should_process(self, key: str, retry_failed: bool) -> bool:
        """True unless the video is done, or failed and ``retry_failed`` is off.

        A row written under other settings than the bound ones counts as not processed.
        """
        record = self.get(key)
        if record is None:
            return True
        if self._hash is not None and record.settings_hash not in (None, self._hash):
            return True
        if record.status == "done":
            return False
        if record.status == "failed":
            return retry_failed
        return True

    def records(self) -> list[VideoRecord]:
        """All rows, sorted by key."""
        return [VideoRecord(*row) for row in self._query(f"SELECT {_COLUMNS} FROM videos ORDER BY key")]

    def summary(self) -> dict:
        """Totals over the ledger.

        ``clips``, ``seconds`` (video time), ``wall_s``, ``decode_s`` and ``model_s`` sum the
        done videos; ``clips_per_s`` is ``clips / wall_s`` (0 when no time was recorded);
        ``failures`` lists ``(video_path, reason)`` by key; ``settings`` is the stored dict.
        """
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(dict(self._query("SELECT status, COUNT(*) FROM videos GROUP BY status")))
        clips, seconds, wall, decode, model = self._query(
            "SELECT COALESCE(SUM(clips), 0), COALESCE(SUM(seconds), 0), COALESCE(SUM(wall_s), 0), "
            "COALESCE(SUM(decode_s), 0), COALESCE(SUM(model_s), 0) FROM videos WHERE status='done'"
        )[0]
        failures = [
            (path, reason)
            for path, reason in self._query(
                "SELECT video_path, reason FROM videos WHERE status='failed' ORDER BY key"
            )
        ]
        return {
            **counts,
            "clips": int(clips),
            "seconds": float(seconds),
            "wall_s": float(wall),
            "decode_s": float(decode),
            "model_s": float(model),
            "clips_per_s": float(clips) / wall if wall > 0 else 0.0,
            "failures": failures,
            "settings": self.settings() or {},
        }

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _upsert(
        self,
        key: str,
        video_path: str | Path,
        status: str,
        reason: str | None,
        output_path: str | None = None,
        clips: int = 0,
        seconds: float = 0.0,
        decode_s: float = 0.0,
        model_s: float = 0.0,
        wall_s: float = 0.0,
    ) -> None:
        self._query(
            f"INSERT OR REPLACE INTO videos ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, os.fspath(video_path), status, reason, output_path, self._hash,
             clips, seconds, decode_s, model_s, wall_s, time.time()),
        )

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        # Autocommit mode: a single write statement is committed before this returns.
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"ledger {self.path} is closed")
        return self._conn

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: takes the write lock up front, so a
    read-then-write (as in bind_settings) can't race another process."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __enter__(self) -> sqlite3.Connection:
        self._ledger._lock.acquire()
        try:
            conn = self._ledger._connection()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._ledger._lock.release()
            raise
        return conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        conn = self._ledger._connection()
        try:
            conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self._ledger._lock.release()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted names, so a diff can say ``sampling.fps: 2 -> 4``."""
    if isinstance(value, dict) and (value or not prefix):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


_UNSET = object()  # "no such setting", distinct from a stored null


def _show(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value)


def _mismatch(out_dir: Path, old: dict, new: dict, old_hash: str, new_hash: str) -> SettingsMismatch:
    flat_old, flat_new = _flatten(old), _flatten(new)
    diffs = [
        (name, flat_old.get(name, _UNSET), flat_new.get(name, _UNSET))
        for name in sorted(flat_old.keys() | flat_new.keys())
        if flat_old.get(name, _UNSET) != flat_new.get(name, _UNSET)
    ]
    if diffs:
        what = "; ".join(f"{name}: {_show(a)} -> {_show(b)}" for name, a, b in diffs)
    else:  # same dict but another hash: the hash recipe itself changed
        what = f"settings hash: {old_hash} -> {new_hash}"
    return SettingsMismatch(
        f"{out_dir} holds features made with other settings ({what}); "
        "use a different --out, or --overwrite to redo every video with the new settings",
        [(name, None if a is _UNSET else a, None if b is _UNSET else b) for name, a, b in diffs],
    )
