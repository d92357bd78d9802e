"""A real single-node SLURM listening on 127.0.0.1 only (scripts/slurm-local.sh: Debian's slurmctld, slurmd and
munge): a plan as a plain job array, each task finding its share in $SLURM_ARRAY_TASK_ID; --executor slurm with a
task cancelled mid-run and submitted again; --no-wait and status; an unreachable SLURM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vidvec
from vidvec.cli import app
from vidvec.extraction import SamplingOverrides
from vidvec.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a cluster to start and jobs to wait for


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a running local cluster (started here, and stopped after, unless one was running)."""
    folder = os.environ.get("VIDVEC_SLURM_DIR", "/tmp/vidvec-slurm")
    script = REPO / "scripts" / "slurm-local.sh"
    started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "VIDVEC_SLURM_DIR": folder})
    assert started.returncode == 0, f"the local SLURM did not start: {started.stderr[-2000:]}"
    # The jobs' own processes (srun, which listens for its steps) bind to the loopback address too.
    yield {**os.environ, "SLURM_CONF": f"{folder}/slurm.conf", "LD_PRELOAD": f"{folder}/loopback-bind.so"}
    if "(running)" not in started.stdout:
        subprocess.run(["bash", str(script), "stop"], env={**os.environ, "VIDVEC_SLURM_DIR": folder}, timeout=60)


def _wait(job: str, env: dict, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env, timeout=30)
        if queued.returncode == 0 and not queued.stdout.strip():
            return
        time.sleep(1.0)
    subprocess.run(["scancel", job], env=env, timeout=30)
    pytest.fail(f"job {job} did not finish in {timeout:.0f} s")


def test_a_plan_runs_as_a_job_array_each_video_once(slurm, tmp_path, shared_dir):
    videos = shared_dir / "assets" / "videos"
    result = CliRunner().invoke(app, ["plan", str(videos), "-m", "efficientnet_lite0", "--fps", "1", "-o",
                                      str(tmp_path / "out"), "--tasks", "3", "--no-measure"])
    assert result.exit_code == 0, result.output
    command = f"{sys.executable} -m vidvec.cli extract --plan {tmp_path / 'out' / 'plan.json'} -q"
    submitted = subprocess.run(["sbatch", "--parsable", "--array=0-2", "-c", "1", "--mem=2000",
                                "-o", str(tmp_path / "task-%a.log"), "--wrap", command],
                               capture_output=True, text=True, env=slurm, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    _wait(submitted.stdout.strip().split(";")[0], slurm)
    logs = [(tmp_path / f"task-{i}.log").read_text() for i in range(3)]
    shares = [int(log.split("done ")[1].split(",")[0]) for log in logs]
    assert sum(shares) == 11 and all(shares), logs  # each task its own share
    with Ledger(tmp_path / "out", readonly=True) as ledger:
        summary = ledger.summary()
    assert (summary["done"], summary["failed"]) == (11, 0)
    (local,) = vidvec.extract([videos / "R6llTwEh07w.mp4"], "efficientnet_lite0", None,
                              sampling=SamplingOverrides(fps=1.0), num_workers=0)
    with np.load(tmp_path / "out" / "R6llTwEh07w.npz") as stored:
        np.testing.assert_allclose(stored["features"], local.features, rtol=1e-5, atol=1e-6)


def _state(job: str, env: dict) -> str:
    shown = subprocess.run(["squeue", "-h", "-r", "-o", "%i %t", "-j", job.split("_")[0]], capture_output=True,
                           text=True, env=env, timeout=30)
    return dict(line.split() for line in shown.stdout.splitlines()).get(job, "")


def test_the_slurm_executor_resubmits_a_cancelled_task_and_each_video_is_done_once(slurm, tmp_path, shared_dir):
    videos = shared_dir / "assets" / "videos"
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vidvec.cli", "extract", str(videos), "-m", "efficientnet_lite0", "--fps", "5",
               "-o", str(out), "--executor", "slurm", "--tasks", "3", "--cpus-per-task", "1", "--mem-gb", "2", "-q"]
    waiting = subprocess.Popen(command, env=slurm, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        jobs = out / ".vidvec-slurm" / "jobs.json"
        while not jobs.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        victim = json.loads(jobs.read_text())["attempts"]["1"][0]
        while _state(victim, slurm) != "R" and time.monotonic() < deadline:
            time.sleep(0.2)
        subprocess.run(["scancel", victim], env=slurm, timeout=30, check=True)  # mid-run
        output, _ = waiting.communicate(timeout=300)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, output
    attempts = json.loads(jobs.read_text())["attempts"]
    assert len(attempts["1"]) == 2 and len(attempts["0"]) == len(attempts["2"]) == 1  # task 1 submitted again
    with Ledger(out, readonly=True) as ledger:
        summary = ledger.summary()
    assert (summary["done"], summary["failed"]) == (11, 0), output
    shown = CliRunner().invoke(app, ["status", str(out)], env=slurm)
    assert "no task queued or running" in shown.output and "slurm job(s)" in shown.output
    local = {o.source.key: o.features for o in vidvec.extract([videos], "efficientnet_lite0", None, num_workers=0,
                                                               sampling=SamplingOverrides(fps=5.0))}
    for key, features in local.items():
        with np.load(out / f"{key}.npz") as stored:
            np.testing.assert_allclose(stored["features"], features, rtol=1e-5, atol=1e-6)


def test_an_unreachable_slurm_is_one_line(tmp_path, shared_dir):
    env = {**os.environ, "SLURM_CONF": str(tmp_path / "nowhere.conf")}
    (tmp_path / "nowhere.conf").write_text("ClusterName=none\nSlurmctldHost=localhost(127.0.0.9)\n")
    result = subprocess.run([sys.executable, "-m", "vidvec.cli", "extract", str(shared_dir / "assets" / "videos" /
                                                                               "R6llTwEh07w.mp4"),
                             "-o", str(tmp_path / "out"), "--executor", "slurm"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot submit to SLURM" in result.stderr


def test_no_wait_returns_after_submitting_and_status_follows(slurm, tmp_path, shared_dir):
    video = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    result = subprocess.run([sys.executable, "-m", "vidvec.cli", "extract", str(video), "-o", str(tmp_path / "out"),
                             "--fps", "1", "--executor", "slurm", "--no-wait", "--cpus-per-task", "1", "--mem-gb", "2"],
                            capture_output=True, text=True, env=slurm, timeout=120)
    assert result.returncode == 0 and "follow it with: vidvec status" in result.stderr, result.stderr
    job = json.loads((tmp_path / "out" / ".vidvec-slurm" / "jobs.json").read_text())["attempts"]["0"][0]
    _wait(job, slurm)
    shown = CliRunner().invoke(app, ["status", str(tmp_path / "out")], env=slurm)
    assert "done           1" in shown.output and "no task queued or running" in shown.output, shown.output
