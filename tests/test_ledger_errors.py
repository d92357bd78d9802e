"""The ledger's one-line errors (LedgerError) and `vidvec status` on read-only folders and broken ledgers."""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_ledger import NON_UTF8, SETTINGS, make_v1_ledger, schema_of
from vidvec.cli import app
from vidvec.ledger import LEDGER_NAME, Ledger, LedgerError, settings_hash

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOTE = "truncated: data ends at 2.03 s of the 14.00 s the header claims"
GARBAGE = bytes(range(256)) * 16


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch):
    """``read_only(folder)`` makes ``folder`` read-only: chmod 0o500; or, for root, whom permissions
    do not stop, the answers a read-only file system gives: mkdir fails with EROFS, os.access and
    statvfs say read-only, and SQLite opens the ledger only as immutable (it cannot create the
    -wal and -shm files there)."""
    chmodded: list[Path] = []

    def make(folder: Path) -> None:
        if not AS_ROOT:
            folder.chmod(0o500)
            chmodded.append(folder)
            return
        real_mkdir, real_access, real_statvfs, real_connect = os.mkdir, os.access, os.statvfs, sqlite3.connect

        def inside(path) -> bool:  # the folder, anything in it, or an SQLite URI of a file in it
            return str(folder) in os.fsdecode(path)

        def mkdir(path, *args, **kwargs):
            if inside(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
            return real_mkdir(path, *args, **kwargs)

        def access(path, mode, *args, **kwargs):
            return not (mode & os.W_OK and inside(path)) and real_access(path, mode, *args, **kwargs)

        def statvfs(path):
            return types.SimpleNamespace(f_flag=os.ST_RDONLY) if inside(path) else real_statvfs(path)

        def connect(database, *args, **kwargs):
            if inside(database) and "immutable=1" not in os.fsdecode(database):
                raise sqlite3.OperationalError("attempt to write a readonly database")
            return real_connect(database, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "access", access)
        monkeypatch.setattr(os, "statvfs", statvfs)
        monkeypatch.setattr(sqlite3, "connect", connect)

    yield make
    for folder in chmodded:
        folder.chmod(0o700)


def disk_full_after(monkeypatch: pytest.MonkeyPatch, pages: int) -> None:
    """Ledgers opened from now on hold at most ``pages`` pages: SQLite then answers a write with
    its real SQLITE_FULL, "database or disk is full", as on a full disk."""
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.execute(f"PRAGMA max_page_count={pages}")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)


def make_run(out: Path) -> None:
    """An output folder after a run: one complete, one partial and one failed video."""
    with Ledger(out) as led:
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)
        led.mark_done("a", "/v/a.mp4", out / "a.npz", 5, 10.0, {"wall_s": 2.0})
        led.mark_done("b", "/v/b.mp4", out / "b.npz", 1, 2.03, {"wall_s": 1.0}, partial=NOTE)
        led.mark_failed("c", "/v/c.mp4", "no video stream")


# --- LedgerError: one line naming the ledger or folder, and why ---


@pytest.mark.parametrize("readonly", [False, True])
def test_out_that_is_a_file(tmp_path: Path, readonly: bool) -> None:
    out = tmp_path / "feats"
    out.write_text("not a folder")
    with pytest.raises(LedgerError) as info:
        Ledger(out, readonly=readonly)
    assert str(info.value) == f"{out} is a file, not a folder"


def test_messages_are_printable_whatever_the_name(tmp_path: Path) -> None:
    out = tmp_path / NON_UTF8
    out.write_bytes(b"")
    with pytest.raises(LedgerError) as info:
        Ledger(out)
    assert str(info.value) == f"{tmp_path}/bad_\\xff\\xfe.mp4 is a file, not a folder"
    str(info.value).encode("utf-8")  # any terminal can print it


def test_out_that_cannot_be_created(tmp_path: Path, read_only) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    read_only(parent)
    with pytest.raises(LedgerError) as info:
        Ledger(parent / "feats")
    assert str(info.value) in (f"cannot create {parent / 'feats'}: Permission denied",
                               f"cannot create {parent / 'feats'}: Read-only file system")


@pytest.mark.parametrize("with_ledger", [False, True])
def test_out_that_cannot_be_written(tmp_path: Path, read_only, with_ledger: bool) -> None:
    out = tmp_path / "feats"
    if with_ledger:
        make_run(out)
    else:
        out.mkdir()
    read_only(out)
    with pytest.raises(LedgerError) as info:
        Ledger(out)
    assert str(info.value) in (f"cannot write to {out}: permission denied",
                               f"cannot write to {out}: read-only file system")


@pytest.mark.parametrize("readonly", [False, True])
def test_ledger_that_is_not_a_database(tmp_path: Path, readonly: bool) -> None:
    out = tmp_path / "feats"
    out.mkdir()
    (out / LEDGER_NAME).write_bytes(GARBAGE)
    with pytest.raises(LedgerError) as info:
        Ledger(out, readonly=readonly)
    assert str(info.value) == f"{out / LEDGER_NAME} is not a vidvec ledger (file is not a database)"
    assert (out / LEDGER_NAME).read_bytes() == GARBAGE  # left as it was


@pytest.mark.parametrize("readonly", [False, True])
def test_corrupt_ledger(tmp_path: Path, readonly: bool) -> None:
    out = tmp_path / "feats"
    make_run(out)
    with open(out / LEDGER_NAME, "r+b") as f:  # the header survives, the schema page does not
        f.seek(100)
        f.write(b"\xab" * 3996)
    with pytest.raises(LedgerError) as info:
        Ledger(out, readonly=readonly)
    assert str(info.value) == f"{out / LEDGER_NAME} is not a vidvec ledger (database disk image is malformed)"


@pytest.mark.parametrize("readonly", [False, True])
def test_ledger_of_a_newer_vidvec(tmp_path: Path, readonly: bool) -> None:
    out = tmp_path / "feats"
    make_run(out)
    db = sqlite3.connect(out / LEDGER_NAME)
    db.execute("UPDATE meta SET value='99' WHERE name='schema'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError) as info:
        Ledger(out, readonly=readonly)
    assert str(info.value) == f"{out / LEDGER_NAME} was written by a newer vidvec (ledger schema 99); upgrade vidvec"


def test_disk_full_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk_full_after(monkeypatch, pages=1)
    out = tmp_path / "feats"
    with pytest.raises(LedgerError) as info:
        Ledger(out)
    assert str(info.value) == f"cannot write ledger {out / LEDGER_NAME}: database or disk is full"


def test_disk_full_during_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk_full_after(monkeypatch, pages=8)
    out = tmp_path / "feats"
    with Ledger(out) as led:
        led.bind_settings(settings_hash(SETTINGS), SETTINGS)
        written = 0
        with pytest.raises(LedgerError) as info:
            for written in range(1000):
                led.mark_done(f"v{written:04d}", "v.mp4", "v.npz", 1, 1.0, {}, partial="p" * 300)
        assert str(info.value) == f"cannot write ledger {led.path}: database or disk is full"
        assert 0 < written < 1000
        with pytest.raises(LedgerError, match="database or disk is full"):
            led.mark_failed("big", "big.mp4", "r" * 8000)  # the check-then-write transaction too
        with pytest.raises(LedgerError, match="database or disk is full"):
            led.mark_skipped("big", "big.mp4", "r" * 8000)
        # What was committed before is intact, and the ledger still answers.
        assert len(led.records()) == written and led.get("big") is None
        assert not led.should_process("v0000", retry_failed=False)


def test_readonly_creates_and_migrates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    make_v1_ledger(out)
    files = sorted(os.listdir(out))
    with Ledger(out, readonly=True) as led:
        summary = led.summary()
        assert (summary["done"], summary["failed"], summary["partial"], summary["partials"]) == (1, 1, 0, [])
        assert led.get("a").fingerprint is None and led.get("a").partial is None
        assert led.records_by_key()["b"].reason == "no video stream"
        with pytest.raises(LedgerError, match=f"cannot write ledger {re.escape(str(led.path))}: "):
            led.mark_done("c", "c.mp4", "c.npz", 1, 1.0, {})
    assert schema_of(out) == ("1", schema_of(out)[1]) and len(schema_of(out)[1]) == 12
    assert sorted(os.listdir(out)) == files
    with pytest.raises(LedgerError) as info:
        Ledger(tmp_path / "none", readonly=True)
    assert str(info.value) == f"{tmp_path / 'none'} has no vidvec ledger ({LEDGER_NAME})"
    assert not (tmp_path / "none").exists()


# --- vidvec status: read-only, partial videos, one-line errors ---


def status(folder: Path):
    return CliRunner().invoke(app, ["status", str(folder)])


def table_row(stdout: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+(\S+)\s*$", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def test_status_of_a_read_only_copy(tmp_path: Path, read_only) -> None:
    make_run(tmp_path / "feats")
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "feats", copy)
    files = sorted(os.listdir(copy))
    read_only(copy)
    result = status(copy)
    assert result.exit_code == 0, result.output
    assert [table_row(result.stdout, name) for name in ("done", "partial", "failed")] == ["2", "1", "1"]
    lines = result.stdout.splitlines()
    assert f"PARTIAL /v/b.mp4: {NOTE}" in lines
    assert "FAILED /v/c.mp4: no video stream" in lines
    assert sorted(os.listdir(copy)) == files  # nothing created


@pytest.mark.parametrize("on_read_only_folder", [True, False])
def test_status_shows_a_v1_ledger_without_migrating_it(
    tmp_path: Path, read_only, monkeypatch: pytest.MonkeyPatch, on_read_only_folder: bool
) -> None:
    out = tmp_path / "v1"
    make_v1_ledger(out)
    if on_read_only_folder:
        read_only(out)
    result = status(out)
    assert result.exit_code == 0, result.output
    assert [table_row(result.stdout, name) for name in ("done", "partial", "failed")] == ["1", "0", "1"]
    assert "FAILED /v/b.mp4: no video stream" in result.stdout.splitlines()
    monkeypatch.undo()  # (root) let this test's own sqlite3.connect read the schema
    assert schema_of(out)[0] == "1" and len(schema_of(out)[1]) == 12


def test_status_of_a_broken_ledger_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "feats"
    out.mkdir()
    (out / LEDGER_NAME).write_bytes(GARBAGE)
    result = status(out)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {out / LEDGER_NAME} is not a vidvec ledger (file is not a database)"]
    assert result.stdout == ""


def test_status_of_several_model_folders_prints_their_names_as_they_are(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for model in ("m[bold]", "n[red]x"):  # not rich markup
        make_run(out / model)
    result = status(out)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert str(out / "m[bold]") in lines and str(out / "n[red]x") in lines
    assert lines.count(f"PARTIAL /v/b.mp4: {NOTE}") == 2
