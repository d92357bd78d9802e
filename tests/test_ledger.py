"""The ledger: records, resume decisions, settings pinning, crash and concurrency safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from vidvec.ledger import (
    LEDGER_NAME,
    Fingerprint,
    Ledger,
    SettingsMismatch,
    VideoRecord,
    file_fingerprint,
    settings_hash,
)

SETTINGS = {"model": "r3d_18", "fps": 15.0, "sampling": {"kind": "windows", "clip_len": 16}, "out_dtype": "float32"}


@pytest.fixture
def ledger(tmp_path: Path):
    led = Ledger(tmp_path / "out")
    led.bind_settings(settings_hash(SETTINGS), SETTINGS)
    yield led
    led.close()


def test_creates_out_dir_and_wal_file(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with Ledger(out) as led:
        assert (out / LEDGER_NAME).is_file()
        assert led.path == out / LEDGER_NAME
        mode = sqlite3.connect(out / LEDGER_NAME).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_settings_hash_is_canonical() -> None:
    h = settings_hash(SETTINGS)
    assert len(h) == 16 and int(h, 16) >= 0
    reordered = {"out_dtype": "float32", "sampling": {"clip_len": 16, "kind": "windows"}, "fps": 15.0, "model": "r3d_18"}
    assert settings_hash(reordered) == h
    assert settings_hash({**SETTINGS, "fps": 30.0}) != h
    assert settings_hash({"p": Path("/x"), "t": (1, 2)}) == settings_hash({"p": "/x", "t": [1, 2]})
    with pytest.raises(TypeError):
        settings_hash({"obj": object()})


def test_mark_get_records(ledger: Ledger) -> None:
    assert ledger.get("a") is None
    ledger.mark_done("a", "/v/a.mp4", "/o/a.npz", clips=12, seconds=24.5,
                     timings={"decode_s": 1.0, "model_s": 2.0, "wall_s": 3.5})
    ledger.mark_failed("b", "/v/b.mp4", "cannot decode: invalid data")
    ledger.mark_skipped("c", "/v/c.mp4", "shorter than one clip")

    a = ledger.get("a")
    assert isinstance(a, VideoRecord)
    assert (a.key, a.video_path, a.status, a.reason, a.output_path) == ("a", "/v/a.mp4", "done", None, "/o/a.npz")
    assert (a.clips, a.seconds, a.decode_s, a.model_s, a.wall_s) == (12, 24.5, 1.0, 2.0, 3.5)
    assert a.settings_hash == settings_hash(SETTINGS) and a.updated_at > 0
    b = ledger.get("b")
    assert (b.status, b.reason, b.output_path, b.clips) == ("failed", "cannot decode: invalid data", None, 0)
    assert ledger.get("c").status == "skipped"
    assert [r.key for r in ledger.records()] == ["a", "b", "c"]

    # A later mark replaces the row: a retried failure that now works is done.
    ledger.mark_done("b", "/v/b.mp4", "/o/b.npz", 3, 6.0, {"decode": 0.5, "model": 0.5, "wall": 2.5})
    b = ledger.get("b")
    assert (b.status, b.reason, b.clips, b.wall_s) == ("done", None, 3, 2.5)


def test_summary(ledger: Ledger) -> None:
    ledger.mark_done("a", "/v/a.mp4", "/o/a.npz", 10, 20.0, {"decode_s": 1, "model_s": 2, "wall_s": 4})
    ledger.mark_done("b", "/v/b.mp4", "/o/b.npz", 30, 60.0, {"decode_s": 1, "model_s": 2, "wall_s": 6})
    ledger.mark_failed("d", "/v/d.mp4", "no video stream")
    ledger.mark_failed("c", "/v/c.mp4", "truncated file")
    ledger.mark_skipped("e", "/v/e.mp4", "too short")
    s = ledger.summary()
    assert (s["done"], s["failed"], s["skipped"]) == (2, 2, 1)
    assert s["clips"] == 40 and s["seconds"] == 80.0 and s["wall_s"] == 10.0
    assert s["clips_per_s"] == pytest.approx(4.0)
    assert s["failures"] == [("/v/c.mp4", "truncated file"), ("/v/d.mp4", "no video stream")]
    assert s["settings"] == SETTINGS


def test_summary_of_empty_ledger(tmp_path: Path) -> None:
    with Ledger(tmp_path) as led:
        s = led.summary()
    assert (s["done"], s["failed"], s["skipped"], s["clips"], s["clips_per_s"]) == (0, 0, 0, 0, 0.0)
    assert s["failures"] == [] and s["settings"] == {}


def test_should_process_resume_semantics(ledger: Ledger) -> None:
    ledger.mark_done("done", "d.mp4", "d.npz", 1, 1.0, {})
    ledger.mark_failed("failed", "f.mp4", "boom")
    ledger.mark_skipped("skipped", "s.mp4", "too short")
    assert ledger.should_process("new", retry_failed=False)
    assert not ledger.should_process("done", retry_failed=False)
    assert not ledger.should_process("done", retry_failed=True)
    assert not ledger.should_process("failed", retry_failed=False)
    assert ledger.should_process("failed", retry_failed=True)
    assert ledger.should_process("skipped", retry_failed=False)


def test_resume_in_a_new_process_state(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as led:
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)
        led.mark_done("a", "a.mp4", "a.npz", 1, 1.0, {})
    with Ledger(out) as led:  # the re-run
        led.bind_settings(settings_hash(SETTINGS), dict(SETTINGS))
        assert not led.should_process("a", retry_failed=False)
        assert led.should_process("b", retry_failed=False)


def test_settings_mismatch_names_the_differences(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as led:
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)
        led.mark_done("a", "a.mp4", "a.npz", 1, 1.0, {})
    new = {**SETTINGS, "model": "r2plus1d_18", "sampling": {"kind": "windows", "clip_len": 8}, "crops": 3}
    with Ledger(out) as led:
        with pytest.raises(SettingsMismatch) as info:
            led.bind_settings(settings_hash(new), new)
        message = str(info.value)
        assert "model: r3d_18 -> r2plus1d_18" in message
        assert "sampling.clip_len: 16 -> 8" in message
        assert "crops: (unset) -> 3" in message
        assert "fps" not in message and "out_dtype" not in message
        assert "use a different --out, or --overwrite to redo every video with the new settings" in message
        assert ("model", "r3d_18", "r2plus1d_18") in info.value.differences
        # Nothing changed: the old settings and rows are still there.
        assert led.settings() == SETTINGS
        assert led.get("a").status == "done"


def test_overwrite_forgets_old_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as led:
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)
        led.mark_done("a", "a.mp4", "a.npz", 1, 1.0, {})
        led.mark_failed("b", "b.mp4", "boom")
    new = {**SETTINGS, "model": "r2plus1d_18"}
    with Ledger(out) as led:
        led.bind_settings(settings_hash(new), new, overwrite=True)
        assert led.settings() == new
        assert led.should_process("a", retry_failed=False)
        assert led.should_process("b", retry_failed=False)
        assert led.summary()["done"] == 0
        led.mark_done("a", "a.mp4", "a.npz", 2, 2.0, {})
        assert led.get("a").settings_hash == settings_hash(new)
    with Ledger(out) as led:  # and the new settings now stick without --overwrite
        led.bind_settings(settings_hash(new), new)
        assert not led.should_process("a", retry_failed=False)
        with pytest.raises(SettingsMismatch, match="model: r2plus1d_18 -> r3d_18"):
            led.bind_settings(settings_hash(SETTINGS), SETTINGS)


def test_overwrite_with_same_settings_keeps_rows(ledger: Ledger) -> None:
    ledger.mark_done("a", "a.mp4", "a.npz", 1, 1.0, {})
    ledger.bind_settings(settings_hash(SETTINGS), SETTINGS, overwrite=True)
    assert ledger.get("a").status == "done"


def test_second_connection_sees_committed_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer, reader = Ledger(out), Ledger(out)
    try:
        writer.bind_settings(settings_hash(SETTINGS), SETTINGS)
        assert reader.get("a") is None
        writer.mark_done("a", "a.mp4", "a.npz", 5, 10.0, {"wall_s": 1.0})
        assert reader.get("a").clips == 5
        assert reader.summary()["done"] == 1
        assert reader.summary()["settings"] == SETTINGS
        # A reader (e.g. `vidvec status`) is not blocked while a write transaction is open.
        raw = sqlite3.connect(out / LEDGER_NAME, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("UPDATE videos SET clips = 99")
        assert reader.get("a").clips == 5
        raw.execute("ROLLBACK")
        raw.close()
    finally:
        writer.close()
        reader.close()


def test_threads_can_share_one_ledger(ledger: Ledger) -> None:
    def work(start: int) -> None:
        for i in range(start, start + 25):
            ledger.mark_done(f"k{i:03d}", f"{i}.mp4", f"{i}.npz", 1, 1.0, {})

    threads = [threading.Thread(target=work, args=(n * 25,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.summary()["done"] == 100


def test_closed_ledger_refuses_use(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.close()
    led.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        led.get("a")


def test_rows_survive_sigkill(tmp_path: Path) -> None:
    """Kill a process after 3 committed marks and with a 4th write in flight."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import os, signal
        from vidvec.ledger import Ledger, settings_hash
        settings = {SETTINGS!r}
        led = Ledger({str(out)!r})
        led.bind_settings(settings_hash(settings), settings)
        for i in range(3):
            led.mark_done(f"v{{i}}", f"v{{i}}.mp4", f"v{{i}}.npz", i + 1, 2.0, {{"wall_s": 1.0}})
        # Mid-way through the next video's bookkeeping: an uncommitted write.
        led._conn.execute("BEGIN IMMEDIATE")
        led._conn.execute(
            "INSERT INTO videos (key, video_path, status, updated_at) VALUES ('v3', 'v3.mp4', 'done', 0)"
        )
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -signal.SIGKILL

    with Ledger(out) as led:
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)  # the resumed run
        assert [r.key for r in led.records()] == ["v0", "v1", "v2"]
        assert all(r.status == "done" for r in led.records())
        assert led.summary()["clips"] == 1 + 2 + 3
        assert led.should_process("v3", retry_failed=False)
        assert not led.should_process("v1", retry_failed=False)
        led.mark_done("v3", "v3.mp4", "v3.npz", 1, 1.0, {})  # and it is writable again
        assert led.summary()["done"] == 4


# --- schema 2: fingerprints, partial results, migration, bulk reads, non-UTF-8 names ---

# The schema vidvec wrote before schema 2, verbatim.
V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE videos (
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


def make_v1_ledger(out: Path) -> None:
    """A ledger as vidvec wrote it with schema 1: settings, a done and a failed row."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(out / LEDGER_NAME)
    db.executescript(V1_SCHEMA)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema", "1"), ("settings_hash", settings_hash(SETTINGS)), ("settings", json.dumps(SETTINGS))])
    db.executemany(
        "INSERT INTO videos (key, video_path, status, reason, output_path, settings_hash, clips, seconds, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("a", "/v/a.mp4", "done", None, "/o/a.npz", settings_hash(SETTINGS), 4, 8.0, 1.0),
         ("b", "/v/b.mp4", "failed", "no video stream", None, settings_hash(SETTINGS), 0, 0.0, 2.0)])
    db.commit()
    db.close()


def schema_of(out: Path) -> tuple[str, list[str]]:
    db = sqlite3.connect(out / LEDGER_NAME)
    version = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()[0]
    columns = [row[1] for row in db.execute("PRAGMA table_info(videos)")]
    db.close()
    return version, columns


def test_v1_ledger_is_migrated_in_place_keeping_rows_and_settings(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_v1_ledger(out)
    assert schema_of(out)[0] == "1" and len(schema_of(out)[1]) == 12
    with Ledger(out) as led:
        version, columns = schema_of(out)
        assert version == "2" and columns[12:] == ["size", "mtime_ns", "partial"]
        assert led.settings() == SETTINGS
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)  # same settings: no mismatch
        a = led.get("a")
        assert (a.status, a.clips, a.output_path, a.fingerprint, a.partial) == ("done", 4, "/o/a.npz", None, None)
        assert led.get("b").reason == "no video stream"
        # A v1 row has no fingerprint: it stays done whatever the file looks like now.
        assert not led.should_process("a", retry_failed=False, fingerprint=Fingerprint(1, 2))
        led.mark_done("c", "/v/c.mp4", "/o/c.npz", 1, 1.0, {}, Fingerprint(10, 20), "truncated: ends at 2 s")
        assert led.get("c").fingerprint == Fingerprint(10, 20)
    with Ledger(out) as led:  # opening again changes nothing
        assert [r.key for r in led.records()] == ["a", "b", "c"]
        assert led.summary()["partial"] == 1
    assert schema_of(out)[0] == "2"


def test_file_fingerprint(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"12345")
    fp = file_fingerprint(video)
    assert fp == Fingerprint(5, os.stat(video).st_mtime_ns)
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    assert file_fingerprint(link) == fp  # the video's, not the link's
    assert file_fingerprint(tmp_path / "missing.mp4") is None
    assert file_fingerprint(str(video)) == fp
    with pytest.raises(AttributeError):
        fp.size = 6  # frozen: usable as a value


def test_should_process_notices_a_changed_file(ledger: Ledger) -> None:
    ledger.mark_done("done", "d.mp4", "d.npz", 1, 1.0, {}, fingerprint=Fingerprint(100, 5))
    ledger.mark_failed("failed", "f.mp4", "truncated", fingerprint=Fingerprint(50, 5))
    assert ledger.get("done").fingerprint == Fingerprint(100, 5)
    assert (ledger.get("done").size, ledger.get("done").mtime_ns) == (100, 5)
    assert not ledger.should_process("done", retry_failed=False, fingerprint=Fingerprint(100, 5))
    assert not ledger.should_process("done", retry_failed=False)  # no fingerprint given: not compared
    assert ledger.should_process("done", retry_failed=False, fingerprint=Fingerprint(200, 5))  # still growing
    assert ledger.should_process("done", retry_failed=False, fingerprint=Fingerprint(100, 6))  # replaced
    assert not ledger.should_process("failed", retry_failed=False, fingerprint=Fingerprint(50, 5))
    assert ledger.should_process("failed", retry_failed=False, fingerprint=Fingerprint(80, 9))
    ledger.mark_done("plain", "p.mp4", "p.npz", 1, 1.0, {})  # no fingerprint stored: never compared
    assert not ledger.should_process("plain", retry_failed=False, fingerprint=Fingerprint(1, 1))


def test_partial_results_are_done_with_a_note(ledger: Ledger) -> None:
    note = "truncated: data ends at 2.03 s of the 14.00 s the header claims"
    ledger.mark_done("b", "/v/b.mp4", "/o/b.npz", 2, 2.03, {}, partial=note)
    ledger.mark_done("a", "/v/a.mp4", "/o/a.npz", 5, 10.0, {})
    ledger.mark_done("c", "/v/c.mp4", "/o/c.npz", 1, 1.0, {}, partial="first stream only")
    ledger.mark_failed("d", "/v/d.mp4", "no video stream")
    assert ledger.get("b").partial == note and ledger.get("a").partial is None
    assert not ledger.should_process("b", retry_failed=False)  # partial is done: not redone as is
    s = ledger.summary()
    assert (s["done"], s["partial"], s["failed"]) == (3, 2, 1)
    assert s["partials"] == [("/v/b.mp4", note), ("/v/c.mp4", "first stream only")]
    assert s["failures"] == [("/v/d.mp4", "no video stream")]
    ledger.mark_done("b", "/v/b.mp4", "/o/b.npz", 7, 14.0, {})  # the complete file, later
    assert ledger.summary()["partials"] == [("/v/c.mp4", "first stream only")]


def test_a_failure_never_replaces_a_valid_done_row(ledger: Ledger, tmp_path: Path) -> None:
    output = tmp_path / "a.npz"
    output.write_bytes(b"features")
    ledger.mark_done("a", "a.mp4", output, 3, 6.0, {})
    assert ledger.mark_failed("a", "a.mp4", "cannot decode") is False
    assert (ledger.get("a").status, ledger.get("a").clips) == ("done", 3)
    output.unlink()  # a done row whose file is gone is not valid: the failure is recorded
    assert ledger.mark_failed("a", "a.mp4", "cannot decode") is True
    assert (ledger.get("a").status, ledger.get("a").reason) == ("failed", "cannot decode")
    assert ledger.mark_failed("new", "new.mp4", "boom") is True


def test_a_failure_replaces_a_done_row_of_other_settings(ledger: Ledger, tmp_path: Path) -> None:
    output = tmp_path / "a.npz"
    output.write_bytes(b"features")
    db = sqlite3.connect(ledger.path)  # a done row made under other settings
    db.execute("INSERT INTO videos (key, video_path, status, output_path, settings_hash, updated_at) "
               "VALUES ('a', 'a.mp4', 'done', ?, 'otherhash', 0)", (str(output),))
    db.commit()
    db.close()
    assert ledger.mark_failed("a", "a.mp4", "boom") is True
    assert ledger.get("a").status == "failed"


def test_mark_failed_checks_and_writes_in_one_transaction(ledger: Ledger, tmp_path: Path) -> None:
    """Another process commits 'done' while our failure waits for the write lock: the done row wins."""
    output = tmp_path / "a.npz"
    output.write_bytes(b"features")
    other = sqlite3.connect(ledger.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO videos (key, video_path, status, output_path, settings_hash, updated_at) "
                  "VALUES ('a', 'a.mp4', 'done', ?, ?, 0)", (str(output), settings_hash(SETTINGS)))
    answer = []
    thread = threading.Thread(target=lambda: answer.append(ledger.mark_failed("a", "a.mp4", "boom")))
    thread.start()
    time.sleep(0.3)  # mark_failed now waits for the lock (a check before it would have seen no row)
    other.execute("COMMIT")
    other.close()
    thread.join(timeout=30)
    assert answer == [False]
    assert ledger.get("a").status == "done"


def test_records_by_key_reads_every_row_at_once(ledger: Ledger) -> None:
    ledger.mark_done("a", "a.mp4", "a.npz", 1, 1.0, {}, Fingerprint(1, 2))
    ledger.mark_failed("b", "b.mp4", "boom")
    statements = []
    ledger._conn.set_trace_callback(statements.append)
    records = ledger.records_by_key()
    ledger._conn.set_trace_callback(None)
    assert len(statements) == 1
    assert sorted(records) == ["a", "b"]
    assert records["a"] == ledger.get("a") and records["a"].fingerprint == Fingerprint(1, 2)
    assert records.get("missing") is None and "missing" not in records
    with pytest.raises(KeyError):
        records["missing"]
    # should_process can answer from the snapshot: the same decision, no query per video.
    statements.clear()
    ledger._conn.set_trace_callback(statements.append)
    decisions = [ledger.should_process(k, retry_failed=False, records=records) for k in ("a", "b", "new")]
    ledger._conn.set_trace_callback(None)
    assert decisions == [False, False, True] and statements == []
    assert ledger.should_process("a", False, Fingerprint(9, 9), records=records)


NON_UTF8 = os.fsdecode(b"bad_\xff\xfe.mp4")  # what os.listdir gives for a name that is not UTF-8


def test_names_that_are_not_utf8(tmp_path: Path) -> None:
    assert NON_UTF8 == "bad_\udcff\udcfe.mp4"
    video = tmp_path / NON_UTF8
    video.write_bytes(b"video")  # a real file with such a name
    out = tmp_path / "out"
    with Ledger(out) as led:
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)
        fp = file_fingerprint(video)
        led.mark_done(NON_UTF8, video, out / (NON_UTF8 + ".npz"), 2, 4.0, {}, fp, f"truncated: {NON_UTF8}")
        led.mark_failed("x/" + NON_UTF8, video, f"cannot decode {video}")
        led.mark_skipped("y/" + NON_UTF8, video, "too short")
        led.mark_done("caf\u00e9.mp4", "caf\u00e9.mp4", "caf\u00e9.npz", 1, 1.0, {})
    with Ledger(out) as led:  # lookups by the original name, in a later run
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)
        record = led.get(NON_UTF8)
        assert record.key == "bad_\\xff\\xfe.mp4"  # stored escaped, the same every time
        assert record.video_path == str(tmp_path) + "/bad_\\xff\\xfe.mp4"
        assert record.partial == "truncated: bad_\\xff\\xfe.mp4"
        assert not led.should_process(NON_UTF8, retry_failed=False, fingerprint=fp)
        assert not led.should_process("x/" + NON_UTF8, retry_failed=False)
        assert led.get("x/" + NON_UTF8).reason.startswith("cannot decode")
        records = led.records_by_key()
        assert records[NON_UTF8] == record and NON_UTF8 in records and records.get(NON_UTF8) == record
        assert not led.should_process(NON_UTF8, retry_failed=False, records=records)
        assert led.get("caf\u00e9.mp4").key == "caf\u00e9.mp4"  # UTF-8 names are stored as they are
        assert led.summary()["partials"] == [(record.video_path, record.partial)]
