"""--executor ray on a real local Ray cluster (a head and a worker node, one CPU each), started by each test in a
network namespace of its own holding only loopback, so Ray stays on 127.0.0.1 and reaches nothing else; every Ray
process of a test is stopped by the test (by its own temporary folder), never with `ray stop`.

The run equals a local one (up to float rounding: other thread counts), a bad video fails alone with the local
run's reason, a killed model replica costs its unfinished videos a second try and nothing else, a video whose
workers keep dying fails after --max-retries; no cluster at the address and Ray missing are one line each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import vidvec
from vidvec.extraction import SamplingOverrides
from vidvec.ledger import Ledger

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
VIDEOS = ("v_SoccerJuggling_g23_c01.avi", "R6llTwEh07w.mp4", "TrumanShow_wave_f_nm_np1_fr_med_26.avi")


def on_ray_cluster(cwd: Path, body: str, timeout: float = 400, workers: int = 1) -> subprocess.CompletedProcess:
    """Run the bash ``body`` in a new network namespace holding a Ray head and ``workers`` worker nodes at
    127.0.0.1:6379, one CPU each (scripts/ray-local.sh)."""
    root = tempfile.mkdtemp(prefix="vv-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    return subprocess.run(["unshare", "-n", "bash", str(SCRIPTS / "ray-local.sh"), root, "bash", "-c",
                           textwrap.dedent(body)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_WORKERS": str(workers)})


@pytest.fixture(scope="module")
def videos(tmp_path_factory, shared_dir):
    folder = tmp_path_factory.mktemp("ray-videos")
    for name in VIDEOS:
        shutil.copy(shared_dir / "assets" / "videos" / name, folder / name)
    (folder / "broken.mp4").write_bytes(b"\x00" * 4096)
    return folder


@pytest.fixture(scope="module")
def local(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    outcomes = {o.source.key: o for o in vidvec.extract([videos], out=out, num_workers=0,
                                                        sampling=SamplingOverrides(fps=2.0))}
    assert outcomes["broken"].status == "failed" and outcomes["v_SoccerJuggling_g23_c01"].status == "done"
    return out


def _same_as_local(out: Path, local: Path) -> None:
    with Ledger(out, readonly=True) as ray_ledger, Ledger(local, readonly=True) as local_ledger:
        ray_rows, local_rows = ray_ledger.records_by_key(), local_ledger.records_by_key()
    assert {k: r.status for k, r in ray_rows.items()} == {k: r.status for k, r in local_rows.items()}
    assert ray_rows["broken"].reason == local_rows["broken"].reason  # the same one-line reason
    for key in VIDEOS:
        stem = Path(key).stem
        ours, _ = vidvec.read_features(out / f"{stem}.npz")
        theirs, _ = vidvec.read_features(local / f"{stem}.npz")
        np.testing.assert_array_equal(ours["timestamps"], theirs["timestamps"])
        np.testing.assert_allclose(ours["features"], theirs["features"], rtol=1e-4, atol=1e-4)


def test_a_ray_run_equals_a_local_one_and_a_bad_video_fails_alone(videos, local, tmp_path):
    done = on_ray_cluster(tmp_path, f"""
        timeout 300 vidvec extract {videos} -o out --fps 2 --executor ray --ray-address 127.0.0.1:6379
        echo "exit $?"
        """)
    assert "exit 1" in done.stdout, done.stdout + done.stderr  # one video failed
    assert "done 3, failed 1" in done.stderr and "FAILED" in done.stderr and "broken.mp4" in done.stderr
    _same_as_local(tmp_path / "out", local)


def _killed_midway(videos: Path, kill: str, options: str = "") -> str:
    """Bash: a Ray run of ``videos`` into out/ (its output in run.log), ``kill`` run once its first video is done,
    then the run's exit status printed."""
    return f"""
        timeout 300 vidvec extract {videos} -o out --fps 2 --executor ray --ray-address 127.0.0.1:6379 {options} \\
          > run.log 2>&1 &
        run=$!
        for i in $(seq 600); do grep -q "\\\\[1/4\\\\] done" run.log && break; sleep 0.1; done
        {kill}
        wait $run
        echo "exit $?"
        """


# A worker node's raylet (the first worker's sockets are named raylet.1), by its command line.
RAYLET_1 = "^/.*/raylet/raylet .*sockets/raylet[.]1 "


def test_a_killed_model_replica_costs_its_videos_a_second_try_only(videos, local, tmp_path):
    done = on_ray_cluster(tmp_path, _killed_midway(videos, 'pkill -9 -f "^ray::_Replica" && echo "killed"',
                                                   "--decode-cpus 1") + "cat run.log")
    assert "killed" in done.stdout and "exit 1" in done.stdout, done.stdout + done.stderr
    assert "done 3, failed 1" in done.stdout, done.stdout
    assert "its model replica died" in done.stdout and "given out again (try 2 of 3)" in done.stdout
    _same_as_local(tmp_path / "out", local)


def test_a_killed_worker_node_costs_its_videos_a_second_try_only(videos, local, tmp_path):
    done = on_ray_cluster(tmp_path, _killed_midway(videos, f'pkill -9 -f "{RAYLET_1}" && echo "killed"')
                          + "cat run.log", workers=2)
    assert "killed" in done.stdout and "exit 1" in done.stdout, done.stdout + done.stderr
    assert "done 3, failed 1" in done.stdout, done.stdout
    _same_as_local(tmp_path / "out", local)


def test_a_cluster_too_small_to_go_on_stops_with_one_line_and_the_next_run_resumes(videos, local, tmp_path):
    done = on_ray_cluster(tmp_path, _killed_midway(videos, f'pkill -9 -f "{RAYLET_1}" && echo "killed"') + f"""
        grep "^error:" run.log
        timeout 60 ray start --address=127.0.0.1:6379 --node-ip-address=127.0.0.1 --num-cpus=1 > /dev/null 2>&1
        timeout 300 vidvec extract {videos} -o out --fps 2 --executor ray --ray-address 127.0.0.1:6379 -q
        echo "exit $?"
        """)
    assert "killed" in done.stdout and "exit 2" in done.stdout, done.stdout + done.stderr
    assert "CPU(s) and 0 GPU(s) left: too few for a model replica" in done.stdout
    assert "exit 1" in done.stdout.split("exit 2")[1] and "already done" in done.stderr, done.stdout + done.stderr
    _same_as_local(tmp_path / "out", local)


def test_a_video_whose_workers_keep_dying_fails_after_max_retries(videos, tmp_path):
    done = on_ray_cluster(tmp_path, f"""
        timeout 300 vidvec extract {videos}/{VIDEOS[1]} -o out --fps 2 --executor ray \\
          --ray-address 127.0.0.1:6379 --max-retries 1 > run.log 2>&1 &
        run=$!
        while kill -0 $run 2>/dev/null; do pkill -9 -f "^ray::_decode"; sleep 0.05; done
        wait $run
        echo "exit $?"
        cat run.log
        """)
    assert "exit 1" in done.stdout, done.stdout + done.stderr
    with Ledger(tmp_path / "out", readonly=True) as ledger:
        row = ledger.records_by_key()["R6llTwEh07w"]
    assert row.status == "failed" and row.reason.startswith("its worker died 2 times (last: its decode task died")


def test_no_cluster_at_the_address_is_one_line(videos, tmp_path):
    done = subprocess.run([str(BIN / "vidvec"), "extract", str(videos / VIDEOS[2]), "-o", str(tmp_path / "out"),
                           "--executor", "ray", "--ray-address", "127.0.0.1:9"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: no Ray cluster answers at 127.0.0.1:9" in done.stderr, done.stderr


def test_ray_missing_is_an_install_hint(videos, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from vidvec.cli import main; sys.argv = ['vidvec', 'extract', "
            f"{str(videos / VIDEOS[2])!r}, '-o', {str(tmp_path / 'out')!r}, '--executor', 'ray']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--executor ray needs Ray: pip install 'vidvec[ray]'" in done.stderr, done.stderr
