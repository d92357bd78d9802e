"""The run ledger: an SQLite file in the output folder recording what happened to each video.

It is what makes a run resumable: a video counts as processed only once its row says
``done``, and that row is committed only after its feature file is in place. Every
``mark_*`` is its own committed transaction, so a SIGKILL loses at most the video in flight.
It also pins the settings a folder was made with, so a re-run with other settings cannot
silently mix two kinds of features in one folder, and keeps each source file's fingerprint
(size, mtime) so a file that changed since it was processed is processed again.

Several runs may work on one folder at once (array jobs, a rerun while a run goes on): a run
*claims* each video before working on it (`Ledger.claim`), so every video is done once. A claim
is a lease the run renews while it lives; a claim of a process that is gone (same host, dead
pid) or whose lease ran out is taken over. On network file systems, where SQLite's WAL mode is
unsafe, the ledger uses the rollback journal.

Anything that goes wrong with the ledger file or its folder (not a folder, read-only, not a
database, disk full) raises `LedgerError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

LEDGER_NAME = "vidvec-ledger.sqlite"
SCHEMA_VERSION = 2
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
    updated_at    REAL NOT NULL,
    size          INTEGER,
    mtime_ns      INTEGER,
    partial       TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    key     TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    expires REAL NOT NULL
);
"""
CLAIM_LEASE_S = 600.0  # how long a claim holds without renewal (a run renews its claims every lease / 10)
# File systems where SQLite's WAL mode (shared memory between processes) must not be used.
_NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph",
                                  "glusterfs", "fuse.sshfs", "fuse.glusterfs", "fuse.ceph", "9p", "afs"})
# Schema 2 added these columns; a schema-1 ledger gets them (NULL in its old rows) when opened for writing.
_ADDED_IN_2 = {"size": "INTEGER", "mtime_ns": "INTEGER", "partial": "TEXT"}
_COLUMNS = ("key", "video_path", "status", "reason", "output_path", "settings_hash", "clips", "seconds",
            "decode_s", "model_s", "wall_s", "updated_at", "size", "mtime_ns", "partial")
_INSERT = f"INSERT OR REPLACE INTO videos ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
# SQLite's words for a file that is not a ledger at all (garbage, corrupt, some other database).
_NOT_A_LEDGER = ("file is not a database", "malformed", "no such table")
# Its words when a read-only connection cannot create the -wal/-shm files (read-only folder or medium).
_CANNOT_CREATE_FILES = ("attempt to write a readonly database", "unable to open database file")


class LedgerError(Exception):
    """The ledger cannot be opened, read or written. The message is one line naming the ledger
    file or its folder and the reason (read-only, not a database, disk full, ...), printable as
    it is: bytes of a name that are not UTF-8 appear as ``\\xNN`` escapes."""

    def __init__(self, message: str) -> None:
        super().__init__(_stored_text(message))


class SettingsMismatch(Exception):
    """The output folder was made with other settings than this run's.

    ``differences`` holds ``(name, old, new)`` tuples, ``None`` meaning unset.
    """

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences


@dataclass(frozen=True)
class Fingerprint:
    """What identifies one version of a source file: its size and modification time (ns)."""

    size: int
    mtime_ns: int


def file_fingerprint(path: str | os.PathLike) -> Fingerprint | None:
    """The `Fingerprint` of ``path`` (symlinks followed), or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None
    return Fingerprint(st.st_size, st.st_mtime_ns)


@dataclass
class VideoRecord:
    """One ledger row. ``seconds`` is the video duration processed; ``updated_at`` is Unix time.

    ``size`` and ``mtime_ns`` are the source file's fingerprint when it was processed (None when
    unknown, e.g. rows of a schema-1 ledger). ``partial`` is None for a complete result, else a
    note saying why the output covers only part of the video. Texts are as stored: bytes of a
    file name that are not UTF-8 appear as ``\\xNN`` escapes.
    """

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
    size: int | None = None
    mtime_ns: int | None = None
    partial: str | None = None

    @property
    def fingerprint(self) -> Fingerprint | None:
        """The stored `Fingerprint`, or None when the row has none."""
        if self.size is None or self.mtime_ns is None:
            return None
        return Fingerprint(self.size, self.mtime_ns)


class Claimer:
    """Claims videos for one run in the ledgers of its models, from whichever process asks: what an executor
    calls before working on a video. Picklable and fork-safe: each process opens its own connections.

    ``folders[slot]`` is the folder of model ``slot``'s ledger (None: that model writes nothing, so there is
    nothing to claim), ``hashes[slot]`` its bound settings hash."""

    def __init__(self, folders: Sequence[Path | None], hashes: Sequence[str], owner: str,
                 retry_failed: bool = False) -> None:
        self.folders, self.hashes, self.owner, self.retry_failed = list(folders), list(hashes), owner, retry_failed
        self._pid: int | None = None
        self._ledgers: dict[int, Ledger] = {}

    def __call__(self, key: str, path: str | os.PathLike, slots: Sequence[int]) -> dict[int, str]:
        """Claim ``key`` (the video at ``path``) for each of ``slots``; the slots refused, with the reason."""
        fingerprint = file_fingerprint(path)
        refused = {}
        for slot in slots:
            ledger = self._ledger(slot)
            reason = None if ledger is None else ledger.claim(key, self.owner, self.retry_failed, fingerprint)
            if reason is not None:
                refused[slot] = reason
        return refused

    def _ledger(self, slot: int) -> Ledger | None:
        if self._pid != os.getpid():  # a forked worker must not use its parent's connections
            self._pid, self._ledgers = os.getpid(), {}
        if self.folders[slot] is None:
            return None
        if slot not in self._ledgers:
            ledger = Ledger(self.folders[slot])
            ledger.assume_settings(self.hashes[slot])
            self._ledgers[slot] = ledger
        return self._ledgers[slot]

    def close(self) -> None:
        """Close the connections this process opened (a ledger's WAL is folded back into it when its last
        connection closes)."""
        if self._pid == os.getpid():
            for ledger in self._ledgers.values():
                ledger.close()
        self._ledgers = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None, "_ledgers": {}}


def run_owner() -> str:
    """A name for this run's claims: host, process id and a random token."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _owner_gone(owner: str) -> bool:
    """Whether the process that holds a claim is known to be gone (it ran on this host and its pid is dead)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host: only its lease says
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


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

    Opening for writing creates the folder and the ledger if needed and migrates a schema-1
    ledger to schema 2. ``readonly=True`` (for ``vidvec status``) creates and migrates nothing
    and works on read-only folders and media. Problems raise `LedgerError`.
    """

    def __init__(self, out_dir: Path, readonly: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LEDGER_NAME
        self._lock = threading.Lock()
        self._hash: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._columns: frozenset[str] = frozenset()  # the videos columns this file has
        self._tables: frozenset[str] = frozenset()
        try:
            if readonly:
                self._open_readonly()
            else:
                self._open_for_writing()
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
        """The row of ``key``, or None."""
        rows = self._select("WHERE key=?", (_stored_text(key),))
        return rows[0] if rows else None

    def mark_done(
        self,
        key: str,
        video_path: str | Path,
        output_path: str | Path,
        clips: int,
        seconds: float,
        timings: Mapping[str, float],
        fingerprint: Fingerprint | None = None,
        partial: str | None = None,
    ) -> None:
        """Record a finished video. Call only after its output file is in its final place.

        ``timings`` may hold ``decode_s``, ``model_s``, ``wall_s`` (or without ``_s``);
        missing ones are 0, others are ignored. ``fingerprint``: the source file's
        `file_fingerprint` when it was read. ``partial``: None for a complete result, else a
        one-line note saying why the output covers only part of the video.
        """
        def timing(name: str) -> float:
            return float(timings.get(f"{name}_s", timings.get(name, 0.0)))

        row = self._row(key, video_path, "done", None, fingerprint, output_path=output_path, clips=int(clips),
                        seconds=float(seconds), decode_s=timing("decode"), model_s=timing("model"),
                        wall_s=timing("wall"), partial=partial)
        with self._transaction() as conn:
            conn.execute(_INSERT, row)
            conn.execute("DELETE FROM claims WHERE key=?", (row[0],))

    def mark_failed(self, key: str, video_path: str | Path, reason: str,
                    fingerprint: Fingerprint | None = None) -> bool:
        """Record a video that could not be processed, with a one-line reason; return True.

        A failure never replaces a valid result: when the row is already ``done`` under the
        bound settings and its output file exists (another process finished the video
        meanwhile), nothing changes and this returns False. Check and write are one transaction.
        """
        row = self._row(key, video_path, "failed", reason, fingerprint)
        with self._transaction() as conn:
            done = conn.execute(
                "SELECT output_path FROM videos WHERE key=? AND status='done' AND settings_hash IS ?",
                (_stored_text(key), self._hash),
            ).fetchone()
            if done is not None and done[0] is not None and os.path.exists(done[0]):
                return False
            conn.execute(_INSERT, row)
            conn.execute("DELETE FROM claims WHERE key=?", (row[0],))
        return True

    def mark_skipped(self, key: str, video_path: str | Path, reason: str) -> None:
        """Record a video deliberately not processed (e.g. too short), with the reason."""
        self._query(_INSERT, self._row(key, video_path, "skipped", reason), doing="write")

    def should_process(self, key: str, retry_failed: bool, fingerprint: Fingerprint | None = None,
                       records: Mapping[str, VideoRecord] | None = None) -> bool:
        """True unless the video is done, or failed and ``retry_failed`` is off.

        A row counts as not processed when it was written under other settings than the bound
        ones, or when its stored fingerprint differs from ``fingerprint`` (the file changed
        since: it was still being written, or was replaced); a row without a stored fingerprint
        (schema 1), or ``fingerprint=None``, skips that check. ``records`` (`records_by_key`)
        answers from that snapshot instead of one query per video.
        """
        record = records.get(_stored_text(key)) if records is not None else self.get(key)
        return _settled_by(record, self._hash, retry_failed, fingerprint) is None

    # -- claims -------------------------------------------------------------------------

    def assume_settings(self, settings_hash: str) -> None:
        """Work under settings a run already bound to this folder (`bind_settings`), without writing them:
        what another process of the same run (a decode worker claiming videos) does."""
        self._hash = settings_hash

    def claim(self, key: str, owner: str, retry_failed: bool = False, fingerprint: Fingerprint | None = None,
              lease_s: float = CLAIM_LEASE_S) -> str | None:
        """Take ``key`` for ``owner`` (`run_owner`) before working on it; None when taken, else why not, in
        words: another run finished it (or it failed, without ``retry_failed``: as `should_process`), or
        another live run holds it. One transaction: of two runs asking at once, one gets it."""
        stored = _stored_text(key)
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute(f"SELECT {self._columns_sql()} FROM videos WHERE key=?", (stored,)).fetchone()
            settled = _settled_by(VideoRecord(*row) if row else None, self._hash, retry_failed, fingerprint)
            if settled is not None:
                return f"{settled} by another run"
            held = conn.execute("SELECT owner, expires FROM claims WHERE key=?", (stored,)).fetchone()
            if held is not None and held[0] != owner and held[1] > now and not _owner_gone(held[0]):
                return f"being processed by another run ({held[0].rsplit(':', 1)[0]})"
            conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (stored, owner, now + lease_s))
        return None

    def renew_claims(self, owner: str, lease_s: float = CLAIM_LEASE_S) -> None:
        """Extend every claim ``owner`` holds by ``lease_s`` from now (a live run calls this regularly)."""
        self._query("UPDATE claims SET expires=? WHERE owner=?", (time.time() + lease_s, owner), doing="write")

    def release_claims(self, owner: str) -> None:
        """Drop every claim ``owner`` still holds (the run ends; its unfinished videos are free again)."""
        self._query("DELETE FROM claims WHERE owner=?", (owner,), doing="write")

    def records(self) -> list[VideoRecord]:
        """All rows, sorted by key."""
        return self._select("ORDER BY key")

    def records_by_key(self) -> dict[str, VideoRecord]:
        """All rows in one query (for resuming a big run), by stored key.

        Looking up an original key works too, also one holding bytes that are not UTF-8.
        """
        return _RecordsByKey((record.key, record) for record in self._select())

    def summary(self) -> dict:
        """Totals over the ledger.

        ``clips``, ``seconds`` (video time), ``wall_s``, ``decode_s`` and ``model_s`` sum the
        done videos; ``clips_per_s`` is ``clips / wall_s`` (0 when no time was recorded);
        ``failures`` lists ``(video_path, reason)`` by key; ``partial`` counts the done videos
        whose output covers only part of the video and ``partials`` lists them as
        ``(video_path, note)`` by key; ``in_progress`` counts the videos runs hold claims on;
        ``settings`` is the stored dict.
        """
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(dict(self._query("SELECT status, COUNT(*) FROM videos GROUP BY status")))
        clips, seconds, wall, decode, model = self._query(
            "SELECT COALESCE(SUM(clips), 0), COALESCE(SUM(seconds), 0), COALESCE(SUM(wall_s), 0), "
            "COALESCE(SUM(decode_s), 0), COALESCE(SUM(model_s), 0) FROM videos WHERE status='done'"
        )[0]
        failures = self._query("SELECT video_path, reason FROM videos WHERE status='failed' ORDER BY key")
        claims = self._query("SELECT COUNT(*) FROM claims WHERE expires > ?", (time.time(),)) \
            if "claims" in self._tables else [(0,)]
        partial = self._column("partial")
        partials = self._query(
            f"SELECT video_path, {partial} FROM videos WHERE status='done' AND {partial} IS NOT NULL ORDER BY key"
        )
        return {
            **counts,
            "clips": int(clips),
            "seconds": float(seconds),
            "wall_s": float(wall),
            "decode_s": float(decode),
            "model_s": float(model),
            "clips_per_s": float(clips) / wall if wall > 0 else 0.0,
            "failures": failures,
            "partial": len(partials),
            "partials": partials,
            "in_progress": int(claims[0][0]),
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

    def _open_for_writing(self) -> None:
        _prepare_folder(self.out_dir)
        with self._sqlite_errors("open"):
            # isolation_level=None: autocommit, so each mark_* commits by itself and multi-step
            # updates use explicit BEGIN IMMEDIATE.
            self._conn = sqlite3.connect(self.path, timeout=_CONNECT_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
            # WAL: readers never block the writer. Not on network file systems: its shared-memory index
            # would be corrupted between hosts; the rollback journal is just as crash-safe.
            journal = "DELETE" if network_filesystem(self.out_dir) else "WAL"
            _when_unlocked(lambda: self._conn.execute(f"PRAGMA journal_mode={journal}"))
            # FULL: a committed 'done' survives power loss too, not just a killed process.
            self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction() as conn:
            # Statement by statement: executescript would COMMIT our transaction early.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            version = self._schema_version(conn)
            if version is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif version < SCHEMA_VERSION:
                present = _table_columns(conn)
                for name, kind in _ADDED_IN_2.items():
                    if name not in present:
                        conn.execute(f"ALTER TABLE videos ADD COLUMN {name} {kind}")
                conn.execute("UPDATE meta SET value=? WHERE name='schema'", (str(SCHEMA_VERSION),))
            self._columns = _table_columns(conn)
            self._tables = _tables(conn)

    def _open_readonly(self) -> None:
        _refuse_file(self.out_dir)
        if not self.path.is_file():
            raise LedgerError(f"{self.out_dir} has no vidvec ledger ({LEDGER_NAME})")
        uri = "file:" + quote(os.fsencode(self.path))
        with self._sqlite_errors("open"):
            try:
                self._connect_readonly(uri + "?mode=ro")
            except sqlite3.OperationalError as error:
                if not any(words in str(error) for words in _CANNOT_CREATE_FILES):
                    raise
                # mode=ro must still create the -shm file of a WAL ledger, which a read-only folder
                # or medium cannot hold. immutable=1 reads the file as it is, without locks (rows
                # only in a -wal file, i.e. of a run killed or still going, are not seen).
                self.close()
                self._connect_readonly(uri + "?immutable=1")

    def _connect_readonly(self, uri: str) -> None:
        self._conn = sqlite3.connect(uri, uri=True, timeout=_CONNECT_TIMEOUT_S, isolation_level=None,
                                     check_same_thread=False)
        self._schema_version(self._conn)
        self._columns = _table_columns(self._conn)
        self._tables = _tables(self._conn)

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise LedgerError(f"{self.path} was written by a newer vidvec (ledger schema {row[0]}); upgrade vidvec")
        return None if row is None else int(row[0])

    def _column(self, name: str) -> str:
        """``name`` for SQL, or NULL when this file lacks that column (a schema-1 ledger opened read-only)."""
        return name if name in self._columns else "NULL"

    def _columns_sql(self) -> str:
        """A VideoRecord's columns for SELECT (NULL for those this file lacks)."""
        return ", ".join(self._column(name) for name in _COLUMNS)

    def _select(self, where: str = "", params: tuple = ()) -> list[VideoRecord]:
        return [VideoRecord(*row) for row in self._query(f"SELECT {self._columns_sql()} FROM videos {where}", params)]

    def _row(
        self,
        key: str,
        video_path: str | Path,
        status: str,
        reason: str | None,
        fingerprint: Fingerprint | None = None,
        output_path: str | Path | None = None,
        clips: int = 0,
        seconds: float = 0.0,
        decode_s: float = 0.0,
        model_s: float = 0.0,
        wall_s: float = 0.0,
        partial: str | None = None,
    ) -> tuple:
        """A row for `_INSERT`, in `_COLUMNS` order, under the bound settings."""
        size, mtime_ns = (fingerprint.size, fingerprint.mtime_ns) if fingerprint is not None else (None, None)
        return (_stored_text(key), _stored_text(video_path), status, _stored_text(reason),
                _stored_text(output_path), self._hash, clips, seconds, decode_s, model_s, wall_s, time.time(),
                size, mtime_ns, _stored_text(partial))

    def _query(self, sql: str, params: tuple = (), doing: str = "read") -> list[tuple]:
        # Autocommit mode: a single write statement is committed before this returns.
        with self._lock, self._sqlite_errors(doing):
            return self._connection().execute(sql, params).fetchall()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"ledger {self.path} is closed")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception): takes the write
        lock up front, so a read-then-write (bind_settings, mark_failed) can't race another process."""
        with self._lock, self._sqlite_errors("write"):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _sqlite_errors(self, doing: str) -> Iterator[None]:
        """Any sqlite3 error as a one-line `LedgerError` naming this ledger."""
        try:
            yield
        except sqlite3.Error as error:
            reason = str(error)
            if any(words in reason for words in _NOT_A_LEDGER):
                raise LedgerError(f"{self.path} is not a vidvec ledger ({reason})") from error
            raise LedgerError(f"cannot {doing} ledger {self.path}: {reason}") from error


class _RecordsByKey(dict):
    """`Ledger.records_by_key`'s answer: keyed by the stored key, and found by the original key too."""

    def __missing__(self, key: str) -> VideoRecord:
        stored = _stored_text(key)
        if stored == key:
            raise KeyError(key)
        return self[stored]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, _stored_text(key))


def _stored_text(value: str | os.PathLike | None) -> str | None:
    """``value`` as the ledger stores it: plain text unchanged; a file name holding bytes that are
    not UTF-8 (Python gives them as lone surrogates, which SQLite refuses) with those bytes as
    ``\\xNN`` escapes, the same every time, so lookups by the original name find it."""
    if value is None:
        return None
    text = os.fspath(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the file name's own bytes
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")  # lone surrogates of another origin: any stable spelling
    return raw.decode("utf-8", "backslashreplace")


def _when_unlocked(statement: Callable[[], object], patience_s: float = _CONNECT_TIMEOUT_S) -> None:
    """Run ``statement`` again while SQLite answers "database is locked" at once, for up to ``patience_s``:
    switching the journal mode while another process creates or opens the same ledger does not wait on the busy
    timeout (two runs started together)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _settled_by(record: VideoRecord | None, settings_hash: str | None, retry_failed: bool,
                fingerprint: Fingerprint | None) -> str | None:
    """Why ``record`` needs no work ('done', or 'failed' without ``retry_failed``), or None when it does: no
    row, a row of other settings, or of a file that changed since (its fingerprint differs)."""
    if record is None:
        return None
    if settings_hash is not None and record.settings_hash not in (None, settings_hash):
        return None
    if fingerprint is not None and record.fingerprint not in (None, fingerprint):
        return None
    if record.status == "done" or (record.status == "failed" and not retry_failed):
        return record.status
    return None


def network_filesystem(folder: Path) -> str | None:
    """The type of the network file system ``folder`` is on (nfs, lustre, cifs, ...), or None (local, or
    unknown: Linux's /proc/self/mountinfo is read)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(folder)
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount = fields[4].replace("\\040", " ")
        fstype = line.split(" - ", 1)[1].split()[0]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind if kind in _NETWORK_FILESYSTEMS else None


def _tables(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))


def _table_columns(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(row[1] for row in conn.execute("PRAGMA table_info(videos)"))


def _refuse_file(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise LedgerError(f"{folder} is a file, not a folder")


def _prepare_folder(folder: Path) -> None:
    """Create ``folder`` if needed; `LedgerError` unless a ledger can be written there."""
    _refuse_file(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LedgerError(f"cannot create {folder}: {error.strerror or error}") from error
    if not os.access(folder, os.W_OK):
        raise LedgerError(f"cannot write to {folder}: {_why_not_writable(folder)}")


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (AttributeError, OSError):  # no statvfs on Windows
        pass
    return "permission denied"


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
