"""The command line as a user runs it: real subprocesses, exit codes, output lines, SIGKILL and resume."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from vidvec.writers import read_features

VIDVEC = [sys.executable, "-m", "vidvec.cli"]


def vidvec(*args, check=None, **kwargs):
    result = subprocess.run([*VIDVEC, *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


@pytest.fixture
def folder(tmp_path, shared_dir):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    src = shared_dir / "assets" / "videos"
    shutil.copy(src / "TrumanShow_wave_f_nm_np1_fr_med_26.avi", root / "truman.avi")
    shutil.copy(src / "RATRACE_wave_f_nm_np1_fr_goo_37.avi", root / "sub" / "ratrace.avi")
    return root


def test_models_lists_names_dims_and_weights():
    result = vidvec("models", check=0)
    for text in ("efficientnet_lite0", "1280", "r2plus1d_18", "KINETICS400_V1", "resnet50", "mvit_v2_s"):
        assert text in result.stdout


@pytest.mark.slow
def test_extract_status_inspect_and_exit_codes(folder, tmp_path):
    out = tmp_path / "feats"
    result = vidvec("extract", folder, "--out", out, "--fps", 2, "--num-workers", 0, check=0)
    lines = [line for line in result.stderr.splitlines() if "] done " in line]
    assert len(lines) == 2  # one plain line per video when stderr is not a terminal
    assert (out / "sub" / "ratrace.npz").exists()
    inspect = vidvec("inspect", out / "truman.npz", check=0)
    assert "features" in inspect.stdout and "(4, 1280)" in inspect.stdout

    (folder / "broken.mp4").write_bytes(b"\x00" * 1000)
    result = vidvec("extract", folder, "--out", out, "--fps", 2, "--num-workers", 0, check=1)
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "broken.mp4" in failed[0]
    status = vidvec("status", out, check=0)
    assert "broken.mp4" in status.stdout and "failed" in status.stdout

    # Failures stay failures until retried: the rerun still exits 1, says so, and names no output file.
    quiet = vidvec("extract", folder, "--out", out, "--fps", 2, "--quiet", check=1)
    assert "] " not in quiet.stderr  # already done: nothing per video
    (again,) = [line for line in quiet.stderr.splitlines() if line.startswith("FAILED")]
    assert "broken.mp4: failed in an earlier run: " in again and "--retry-failed" in again and "->" not in again
    assert "failed 1, already done 2" in quiet.stderr

    clash = vidvec("extract", folder, "--out", out, "--fps", 3, check=2)
    assert "fps" in clash.stderr and "Traceback" not in clash.stderr


@pytest.mark.slow
def test_usage_errors_are_one_line(tmp_path, folder):
    unknown = vidvec("extract", folder, "--out", tmp_path / "o", "--model", "nope", check=2)
    assert "unknown model" in unknown.stderr and "Traceback" not in unknown.stderr
    stride = vidvec("extract", folder, "--out", tmp_path / "o", "--stride", "abc", check=2)
    assert "--stride" in stride.stderr
    missing = vidvec("status", tmp_path / "nothing", check=2)
    assert "no vidvec ledger" in missing.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)  # whole runs in subprocesses: minutes on a slow machine
def test_sigkill_mid_run_then_resume_finishes_every_video_once(tmp_path, shared_dir):
    videos = tmp_path / "videos"
    videos.mkdir()
    src = shared_dir / "assets" / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    total = 24
    for i in range(total):
        shutil.copy(src, videos / f"v{i:02d}.avi")
    out = tmp_path / "feats"
    args = [*VIDVEC, "extract", str(videos), "--out", str(out), "--fps", "8", "--batch-size", "2",
            "--num-workers", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = out / "vidvec-ledger.sqlite"
    done_before = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.exists():
            try:
                with sqlite3.connect(ledger, timeout=5) as db:
                    done_before = db.execute("select count(*) from videos where status='done'").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        if done_before >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 4 <= done_before < total

    for path in out.rglob("*.npz"):  # whatever exists under a final name is complete
        arrays, _ = read_features(path)
        assert arrays["features"].shape == (14, 1280)

    result = vidvec("extract", videos, "--out", out, "--fps", 8, "--num-workers", 1, check=0)
    redone = [line for line in result.stderr.splitlines() if "] done " in line]
    skipped = [line for line in result.stderr.splitlines() if "] skipped " in line]
    assert len(redone) + len(skipped) == total
    assert len(skipped) >= done_before  # nothing finished before the kill was computed again
    assert sorted(p.name for p in out.rglob("*.npz")) == [f"v{i:02d}.npz" for i in range(total)]
    assert not [p for p in out.rglob("*") if "vidvec-tmp" in p.name]
    with sqlite3.connect(out / "vidvec-ledger.sqlite") as db:
        rows = db.execute("select status, count(*) from videos group by status").fetchall()
    assert rows == [("done", total)]
    reference = read_features(out / "v00.npz")[0]["features"]
    for path in out.rglob("*.npz"):
        np.testing.assert_allclose(read_features(path)[0]["features"], reference, atol=1e-4)


@pytest.mark.slow
def test_progress_bar_on_a_terminal(folder, tmp_path):
    """On a terminal stderr shows a live bar with videos done/total, clips/s and the ETA."""
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([*VIDVEC, "extract", str(folder), "--out", str(tmp_path / "o"), "--fps", "2",
                             "--num-workers", "0"], stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the other end closed: the run is over
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "videos" in screen and "2/2" in screen and "clips/s" in screen and "ETA" in screen
    assert "] done " not in screen  # the per-video plain lines are for non-terminals


@pytest.mark.slow
def test_several_models_write_one_folder_each_and_report_per_model(tmp_path, shared_dir):
    videos = shared_dir / "assets" / "videos"
    out = tmp_path / "out"
    result = vidvec("extract", videos / "v_GGSY1Qvo990.mp4", videos / "TrumanShow_wave_f_nm_np1_fr_med_26.avi",
                    "-m", "efficientnet_lite0", "-m", "vggish", "--weights", "default", "--weights", "random",
                    "--fps", "1", "--num-workers", "1", "-o", out)
    assert result.returncode == 1, result.stderr  # the silent HMDB clip fails for vggish only
    assert "FAILED" in result.stderr and "[vggish]" in result.stderr and "has no audio stream" in result.stderr
    assert "done 3, failed 1" in result.stderr
    assert f"vidvec status {out}" in result.stderr
    status = vidvec("status", out, check=0).stdout
    assert "efficientnet_lite0" in status and "vggish" in status and "has no audio stream" in status
    assert (out / "efficientnet_lite0" / "TrumanShow_wave_f_nm_np1_fr_med_26.npz").exists()
    arrays, provenance = read_features(out / "vggish" / "v_GGSY1Qvo990.npz")
    assert arrays["features"].shape == (18, 128) and provenance["model"] == "vggish"
    np.testing.assert_allclose(arrays["timestamps"][:, 0], np.arange(18) * 0.96, atol=1e-9)
    mismatch = vidvec("extract", videos / "v_GGSY1Qvo990.mp4", "-m", "efficientnet_lite0", "-m", "vggish",
                      "--weights", "random", "-o", tmp_path / "o2")
    assert mismatch.returncode == 2 and "1 --weights for 2 models: give one per model" in mismatch.stderr


@pytest.mark.slow
def test_encode_text_prints_or_writes_vectors(tmp_path):
    import json

    result = vidvec("encode-text", "a dog on a skateboard", "juggling a ball", "-m", "clip_vit_b32",
                    "--weights", "random", check=0)
    payload = json.loads(result.stdout)
    assert payload["model"] == "clip_vit_b32" and len(payload["vectors"]) == 2
    assert len(payload["vectors"][0]) == 512 and payload["vectors"][0] != payload["vectors"][1]
    target = tmp_path / "text.npy"
    vidvec("encode-text", "a dog", "-m", "clip_vit_b32", "--weights", "random", "--out", target, check=0)
    assert np.load(target).shape == (1, 512)
    refused = vidvec("encode-text", "a dog", "-m", "resnet18", "--weights", "random")
    assert refused.returncode == 2 and "has no text encoder" in refused.stderr and "clip_vit_b32" in refused.stderr


def test_save_flow_without_a_flow_model_is_a_clear_error(tmp_path, shared_dir):
    video = shared_dir / "assets" / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    result = vidvec("extract", video, "-o", tmp_path / "o", "--save-flow")
    assert result.returncode == 2
    assert "--save-flow needs --out and a model that computes optical flow" in result.stderr
    assert "Traceback" not in result.stderr
