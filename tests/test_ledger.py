"""The ledger: records, resume decisions, settings pinning, crash and concurrency safety."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from vidvec.ledger import LEDGER_NAME, Ledger, SettingsMismatch, VideoRecord, settings_hash

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
