"""The service's jobs, persisted in SQLite (``DATA/jobs.sqlite``): a job accepted is committed before the client
hears of it, so no accepted job is lost.

A job is one video for one model, owned by the token that sent it: queued, running, done (its result file) or
failed (a one-line reason). An idempotency key makes a retried submission return the first job instead of a
second one. A server that starts finds the jobs its predecessor left running and queues them again (their
extraction resumes from nothing: a job's output is written atomically at its end).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    idempotency_key TEXT,
    model TEXT NOT NULL,
    video TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    result TEXT,
    clips INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (token, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created);
"""


@dataclass(frozen=True)
class Job:
    """One job as the table holds it. ``video``: the file the job reads (an upload under the service's data
    folder, or a path under its roots); ``name``: what the client called it (the upload's file name)."""

    id: str
    token: str
    idempotency_key: str | None
    model: str
    video: str
    name: str
    status: str
    reason: str | None
    result: str | None
    clips: int | None
    created: float
    updated: float


class JobTable:
    """The jobs of one service data folder. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _one(self, sql: str, args: tuple) -> Job | None:
        row = self._conn.execute(sql, args).fetchone()
        return None if row is None else Job(*row)

    def add(self, token: str, model: str, video: str, name: str, key: str | None = None) -> tuple[Job, bool]:
        """Queue a job (committed when this returns); with ``key``, the token's earlier job with that key
        instead if there is one. Returns the job and whether it is new."""
        with self._lock:
            earlier = None if key is None else self._earlier(token, key)
            if earlier is not None:
                return earlier, False
            now = time.time()
            job = Job(secrets.token_hex(8), token, key, model, video, name, "queued", None, None, None, now, now)
            self._conn.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", tuple(job.__dict__.values()))
            return job, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def earlier(self, token: str, key: str) -> Job | None:
        """The token's job with idempotency key ``key``, if any."""
        with self._lock:
            return self._earlier(token, key)

    def _earlier(self, token: str, key: str) -> Job | None:
        return self._one("SELECT * FROM jobs WHERE token=? AND idempotency_key=?", (token, key))

    def take(self) -> Job | None:
        """The oldest queued job, now running."""
        with self._lock:
            job = self._one("SELECT * FROM jobs WHERE status='queued' ORDER BY created LIMIT 1", ())
            if job is not None:
                self._conn.execute("UPDATE jobs SET status='running', updated=? WHERE id=?", (time.time(), job.id))
            return job

    def finish(self, job_id: str, result: str, clips: int) -> None:
        self._set(job_id, status="done", result=result, clips=clips)

    def fail(self, job_id: str, reason: str) -> None:
        self._set(job_id, status="failed", reason=reason)

    def _set(self, job_id: str, **values: object) -> None:
        with self._lock:
            columns = ", ".join(f"{name}=?" for name in values)
            self._conn.execute(f"UPDATE jobs SET {columns}, updated=? WHERE id=?",
                               (*values.values(), time.time(), job_id))

    def requeue_running(self) -> int:
        """At start: the jobs a stopped server left running are queued again; how many."""
        with self._lock:
            return self._conn.execute("UPDATE jobs SET status='queued', updated=? WHERE status='running'",
                                      (time.time(),)).rowcount

    def active(self, token: str) -> int:
        """How many of the token's jobs are queued or running."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM jobs WHERE token=? AND status IN ('queued', 'running')",
                                      (token,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {**dict.fromkeys(STATES, 0), **dict(rows)}

    def close(self) -> None:
        self._conn.close()
