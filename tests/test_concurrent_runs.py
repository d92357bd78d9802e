"""Several runs on one output folder at once (array jobs, a rerun while a run goes on): every video is done
exactly once, nothing is lost or torn, and no run crashes on the other's locks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import media
import numpy as np
import pytest

from vidvec.ledger import Claimer, Ledger, network_filesystem, run_owner
from vidvec.writers import read_features

VIDVEC = [sys.executable, "-m", "vidvec.cli"]


@pytest.mark.slow
@pytest.mark.timeout(300)  # whole runs in subprocesses: minutes on a slow machine
def test_two_processes_on_the_same_inputs_do_each_video_once(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(16):
        media.make_video(videos / f"{i:02d}.mp4", frames=12, fps=10)
    out = tmp_path / "feats"
    command = [*VIDVEC, "extract", str(videos), "--out", str(out), "--num-workers", "0", "--batch-size", "4"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [run.communicate(timeout=600)[1] for run in runs]
    for run, log in zip(runs, logs):
        assert run.returncode == 0, log
        assert "Traceback" not in log and "locked" not in log
    done = [line for log in logs for line in log.splitlines() if "] done " in line]
    taken = [line for log in logs for line in log.splitlines() if "] skipped " in line]
    names = sorted(line.split(" -> ")[0].rsplit("/", 1)[1] for line in done)
    assert names == [f"{i:02d}.mp4" for i in range(16)]  # each video done once, by one of the two
    assert len(taken) == 16  # the other one saw it taken (in progress, or already done)
    assert all("by another run" in line for line in taken)
    with Ledger(out, readonly=True) as ledger:
        summary = ledger.summary()
    assert summary["done"] == 16 and summary["failed"] == 0 and summary["in_progress"] == 0
    for i in range(16):
        arrays, _ = read_features(out / f"{i:02d}.npz")
        assert arrays["features"].shape == (12, 1280) and np.isfinite(arrays["features"]).all()
    assert not [p for p in out.rglob("*") if ".vidvec-tmp" in p.name]


def test_a_claim_holds_against_other_runs_until_done_released_or_gone(tmp_path):
    out = tmp_path / "feats"
    with Ledger(out) as ledger:
        ledger.bind_settings("h", {"x": 1})
        me, other = run_owner(), run_owner()
        assert ledger.claim("a", me) is None
        assert ledger.claim("a", me) is None  # again: still mine
        assert ledger.claim("a", other).startswith("being processed by another run")
        with Ledger(out, readonly=True) as reader:
            assert reader.summary()["in_progress"] == 1
        ledger.mark_done("a", "/v/a.mp4", out / "a.npz", 1, 1.0, {})
        assert ledger.claim("a", other) == "done by another run"
        assert ledger.claim("b", me) is None
        ledger.release_claims(me)
        assert ledger.claim("b", other) is None
        # A claim whose lease ran out is free; so is one of a process of this host that is gone.
        assert ledger.claim("c", me, lease_s=-1) is None
        assert ledger.claim("c", other) is None
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        assert ledger.claim("d", f"{socket.gethostname()}:{gone}:dead") is None
        assert ledger.claim("d", other) is None
        assert ledger.claim("e", f"elsewhere:{os.getpid()}:x") is None  # another host: its lease decides
        assert ledger.claim("e", other).startswith("being processed by another run (elsewhere:")


def test_a_failed_video_is_not_claimed_again_unless_retried(tmp_path):
    out = tmp_path / "feats"
    with Ledger(out) as ledger:
        ledger.bind_settings("h", {"x": 1})
        ledger.mark_failed("a", "/v/a.mp4", "broken")
        assert ledger.claim("a", run_owner()) == "failed by another run"
        assert ledger.claim("a", run_owner(), retry_failed=True) is None


def test_claimer_opens_its_own_connections_in_each_process(tmp_path):
    import pickle

    out = tmp_path / "feats"
    with Ledger(out) as ledger:
        ledger.bind_settings("h", {"x": 1})
    video = media.make_video(tmp_path / "a.mp4", frames=2)
    claimer = Claimer([out, None], ["h", "h"], run_owner())
    assert claimer("a", video, [0, 1]) == {}
    copy = pickle.loads(pickle.dumps(claimer))  # as a spawned worker gets it
    assert copy("a", video, [0]) == {}  # same owner
    other = Claimer([out], ["h"], run_owner())
    assert other("a", video, [0])[0].startswith("being processed by another run")


@pytest.mark.parametrize("fstype, network", [("ext4", False), ("nfs4", True), ("lustre", True)])
def test_network_file_systems_are_recognised(tmp_path, monkeypatch, fstype, network):
    from pathlib import Path

    real = Path.read_text
    line = f"99 1 0:99 / {tmp_path} rw,relatime - {fstype} server:/export rw\n"

    def mountinfo(self, *args, **kwargs):
        return real(self, *args, **kwargs) + line if str(self) == "/proc/self/mountinfo" else real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", mountinfo)
    assert (network_filesystem(tmp_path / "feats") == fstype) is network
    with Ledger(tmp_path / "feats") as ledger:
        mode = ledger._query("PRAGMA journal_mode")[0][0]
    assert mode == ("delete" if network else "wal")


def _open_when_told(folder, barrier, errors):
    barrier.wait()
    try:
        with Ledger(folder) as ledger:
            ledger.bind_settings("h", {"x": 1})
    except Exception as error:  # reported to the test
        errors.put(repr(error))


def test_runs_that_create_one_ledger_together_both_open_it(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for attempt in range(40):
        barrier = context.Barrier(4)
        workers = [context.Process(target=_open_when_told, args=(tmp_path / f"o{attempt}", barrier, errors))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    assert errors.empty(), errors.get()
