"""Bad or awkward input, as a new user meets it (issue 12): no vector is ever computed from a frame that was not
decoded, nothing is written outside --out, and every problem is one line for one video while the run goes on."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import media
import vidvec
from vidvec.runner import ModelRunner
from typer.testing import CliRunner

from vidvec.cli import app
from vidvec.clips import Clip, Slot, VideoFailed, VideoFinished, VideoRestarted, video_events
from vidvec.decode import VideoDecoder
from vidvec.extraction import ExtractError, SamplingOverrides
from vidvec.ledger import Ledger
from vidvec.sampling import SamplingSpec
from vidvec.sources import VideoSource
from vidvec.transforms import Preprocess
from vidvec.writers import read_features

MODEL = "efficientnet_lite0"
VIDVEC = [sys.executable, "-m", "vidvec.cli"]
PRE = Preprocess(resize=(32,), crop=(32, 32), mean=(0, 0, 0), std=(1, 1, 1))


def run(inputs, out, **options):
    options.setdefault("num_workers", 0)
    return list(vidvec.extract(inputs, MODEL, out, **options))


def cli(*args, check=None):
    """Run the command line in this process (a subprocess would spend seconds importing torch)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if check is not None:
        assert result.exit_code == check, result.output + repr(result.exception)
    return result


def one_line_error(result) -> str:
    """The single error line of a failed command (no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# Videos of 30 frames at 10 fps (frame i shows index_color(i)), every frame a keyframe so that damage stays local.
def truncated(path: Path) -> Path:
    """A faststart mp4 (index first, as web videos are) cut to 60% of its bytes, like ``head -c``: the header
    still describes 3 s, the data holds 1.2 s."""
    return media.cut_short(media.make_video(path, frames=30, fps=10, size=(160, 120), gop=1, faststart=True), 0.6)


def damaged(path: Path) -> Path:
    """A faststart mp4 with random bytes over a fifth of it: frames 0.6-1.5 s do not decode."""
    return media.scramble(media.make_video(path, frames=30, fps=10, size=(160, 120), gop=1, faststart=True), 0.45, 0.65)


def events(path: Path, spec: SamplingSpec = SamplingSpec(), partial: bool = False) -> list:
    return list(video_events(0, VideoSource(path, "x"), [Slot(spec, PRE)], partial=partial))


# ------------------------------------------------------------------------------------------ 1. past the data end


def test_decoder_gives_no_frame_past_the_end_of_the_data(tmp_path):
    path = truncated(tmp_path / "cut.mp4")
    with VideoDecoder(path) as decoder:
        assert decoder.info.duration == pytest.approx(3.0)  # what the header claims
        got = [frame for _, frame in decoder.frames_at([i / 10 for i in range(30)])]
        assert decoder.data_end == pytest.approx(1.2)
        assert decoder.gaps[0][1] is None  # to the end
    assert [media.frame_index(f) for f in got[:12]] == list(range(12))
    # Frame 12's packet is cut in half (lost), and the rest is gone: no frame there, not copies of frame 11.
    assert all(f is None for f in got[12:])


@pytest.mark.parametrize("make", [
    truncated,
    lambda p: media.remux_shifted(media.make_video(p.with_name("g.mp4"), frames=30, fps=10, gop=10), p, -0.7),
    lambda p: media.remux_shifted(media.make_video(p.with_name("g.mp4"), frames=30, fps=10, gop=10), p, -1.25, 1.25),
], ids=["head-c", "itsoffset", "ss-copy"])
def test_truncated_video_fails_with_one_line_and_no_clip_past_the_data(tmp_path, make):
    path = make(tmp_path / "v.mp4")
    got = events(path)
    (failure,) = [e for e in got if isinstance(e, VideoFailed)]
    assert failure.reason.startswith("truncated: data ends at ")
    assert "the header claims" in failure.reason and "\n" not in failure.reason
    with VideoDecoder(path) as decoder:
        last = list(decoder.frames())[-1][0]
    # Every clip sent samples a decoded frame, or the last one within one frame after its end (rounding).
    assert all(c.start < last + 0.2 - 1e-6 for c in got if isinstance(c, Clip))


def test_truncated_message_names_where_the_data_ends(tmp_path):
    (failure,) = [e for e in events(truncated(tmp_path / "cut.mp4")) if isinstance(e, VideoFailed)]
    assert failure.reason == "truncated: data ends at 1.20 s of the 3.00 s the header claims (12 of 30 frames)"


@pytest.mark.parametrize("spec", [SamplingSpec(), SamplingSpec(kind="views", views=3, clip_len=4)],
                         ids=["frames", "views"])
def test_partial_plans_a_truncated_video_again_on_what_it_holds(tmp_path, spec):
    got = events(truncated(tmp_path / "cut.mp4"), spec, partial=True)
    restart = [i for i, e in enumerate(got) if isinstance(e, VideoRestarted)]
    assert len(restart) == 1
    clips = [e for e in got[restart[0]:] if isinstance(e, Clip)]
    assert clips and max(c.end for c in clips) == pytest.approx(1.2)
    if spec.kind == "views":  # spread over 1.2 s, not over the 3 s the header claims
        assert [c.start for c in clips] == pytest.approx([0.0, 0.4, 0.8])
    (finished,) = [e for e in got if isinstance(e, VideoFinished)]
    note = finished.partial[0]
    assert note.note.startswith("truncated: data ends at 1.20 s of the 3.00 s")
    assert note.detail["truncated"]["header_frames"] == 30 and note.detail["truncated"]["frames"] == 12


# ------------------------------------------------------------------------------------------ 2. damaged middle


def test_decoder_gives_no_frame_where_packets_were_lost(tmp_path):
    path = damaged(tmp_path / "mid.mp4")
    with VideoDecoder(path) as decoder:
        got = [frame for _, frame in decoder.frames_at([i / 10 for i in range(30)])]
        assert decoder.damage["lost"] >= 5 and decoder.gaps
    missing = [i for i, f in enumerate(got) if f is None]
    assert missing and missing == list(range(missing[0], missing[-1] + 1))  # one span
    for i, frame in enumerate(got):
        if frame is not None:  # every frame given is the frame of that time: never a stale copy
            assert media.frame_index(frame) == i


def test_damaged_video_fails_by_default_and_partial_leaves_those_clips_out(tmp_path):
    path = damaged(tmp_path / "mid.mp4")
    (failure,) = [e for e in events(path) if isinstance(e, VideoFailed)]
    assert failure.reason.startswith("damaged: no decodable frame at ")
    got = events(path, partial=True)
    assert not [e for e in got if isinstance(e, (VideoFailed, VideoRestarted))]
    clips = [e for e in got if isinstance(e, Clip)]
    (finished,) = [e for e in got if isinstance(e, VideoFinished)]
    detail = finished.partial[0].detail
    assert len(clips) + detail["clips_left_out"] == detail["clips_planned"] == 30
    gap_start, gap_end = detail["gaps"][0]
    assert all(not (gap_start <= c.start < gap_end) for c in clips)
    assert finished.partial[0].note.startswith(f"damaged: {detail['clips_left_out']} of 30 clips left out")


def test_partial_run_records_partial_in_ledger_provenance_and_status(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    truncated(videos / "cut.mp4")
    damaged(videos / "mid.mp4")
    media.make_video(videos / "good.mp4", frames=20, fps=10)
    out = tmp_path / "feats"
    strict = {o.source.path.name: o for o in run([videos], out)}
    assert strict["good.mp4"].status == "done"
    assert strict["cut.mp4"].status == strict["mid.mp4"].status == "failed"
    assert not (out / "cut.npz").exists()
    kept = {o.source.path.name: o for o in run([videos], out, partial=True, retry_failed=True)}
    assert kept["cut.mp4"].status == "done" and kept["cut.mp4"].partial.startswith("truncated")
    assert kept["mid.mp4"].status == "done" and kept["mid.mp4"].partial.startswith("damaged")
    arrays, prov = read_features(out / "cut.npz")
    assert arrays["timestamps"][:, 1].max() == pytest.approx(1.2)
    assert prov["partial"]["truncated"]["data_end"] == pytest.approx(1.2)
    assert "partial" not in read_features(out / "good.npz")[1]
    with Ledger(out, readonly=True) as ledger:
        summary = ledger.summary()
    assert summary["partial"] == 2 and summary["done"] == 3
    status = cli("status", out, check=0)
    partial_lines = [line for line in status.stdout.splitlines() if line.startswith("PARTIAL")]
    assert len(partial_lines) == 2 and any("cut.mp4: truncated: data ends at 1.20 s" in x for x in partial_lines)


def test_hero_layout_refuses_a_partial_result_with_holes(tmp_path):
    path = damaged(tmp_path / "mid.mp4")
    (outcome,) = run([path], tmp_path / "hero", partial=True, layout="hero",
                     sampling=SamplingOverrides(kind="windows", clip_len=2))
    assert outcome.status == "failed" and "one row per chunk" in outcome.reason


def test_damaged_audio_fails_or_keeps_the_sound_before_the_damage(tmp_path):
    from vidvec.audio import AudioFrontend

    path = media.make_audio_only(tmp_path / "sound.m4a", seconds=6.0)
    media.scramble(path, 0.5, 0.6)
    slot = Slot(SamplingSpec(), AudioFrontend(), audio=True)
    strict = list(video_events(0, VideoSource(path, "x"), [slot]))
    (failure,) = [e for e in strict if isinstance(e, VideoFailed)]
    assert failure.reason.startswith("damaged audio: a packet could not be decoded after ")
    kept = list(video_events(0, VideoSource(path, "x"), [slot], partial=True))
    clips = [e for e in kept if isinstance(e, Clip)]
    (finished,) = [e for e in kept if isinstance(e, VideoFinished)]
    at = finished.partial[0].detail["audio_damaged_at"]
    assert clips and 1.0 < at < 5.0 and all(c.end <= at + 1e-6 for c in clips)


# ------------------------------------------------------------------------------------------ 3. changed files


def test_a_file_that_changed_since_it_was_done_is_done_again(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    growing = media.make_video(videos / "rec.mp4", frames=10, fps=10)
    out = tmp_path / "feats"
    assert [o.status for o in run([videos], out)] == ["done"]
    assert read_features(out / "rec.npz")[0]["features"].shape[0] == 10
    assert [o.status for o in run([videos], out)] == ["skipped"]
    media.make_video(tmp_path / "longer.mp4", frames=25, fps=10)
    os.replace(tmp_path / "longer.mp4", growing)  # the recording went on
    (again,) = run([videos], out)
    assert again.status == "done"
    arrays, prov = read_features(out / "rec.npz")
    assert arrays["features"].shape[0] == 25
    assert prov["source_file"]["size"] == growing.stat().st_size


# ------------------------------------------------------------------------------------------ 4. failed stays failed
# (tests/test_cli.py::test_extract_status_inspect_and_exit_codes and test_extract.py::test_bad_videos_fail_alone...)


# ------------------------------------------------------------------------------------------ 5 and 7. outputs


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_path", "output_path"])
        writer.writerows(rows)
    return path


def test_colliding_outputs_are_refused_before_any_work(tmp_path):
    a = media.make_video(tmp_path / "a.mp4", frames=5)
    b = media.make_video(tmp_path / "b.mp4", frames=5)
    long = media.make_video(tmp_path / "longv.mp4", frames=5)
    out = tmp_path / "feats"
    for rows in ([(a, "same"), (long, "same")], [(a, "b"), (b, "")]):
        manifest = write_manifest(tmp_path / "m.csv", rows)
        with pytest.raises(ExtractError, match="would both be written to"):
            run([], out, manifest=manifest)
    assert not list(out.rglob("*.npz"))
    result = cli("extract", "--manifest", tmp_path / "m.csv", "--out", out, check=2)
    assert "a.mp4 and " in one_line_error(result)


@pytest.mark.parametrize("given", ["../../victim/settings", "sub/../../escape"])
def test_output_path_cannot_climb_out_of_out(tmp_path, given):
    video = media.make_video(tmp_path / "a.mp4", frames=5)
    manifest = write_manifest(tmp_path / "m.csv", [(video, given)])
    result = cli("extract", "--manifest", manifest, "--out", tmp_path / "o" / "feats", "--format", "npy", check=2)
    assert "climbs out of --out" in one_line_error(result)
    assert not (tmp_path / "victim").exists() and not (tmp_path / "o" / "escape.npy").exists()


def test_absolute_and_home_output_paths_need_the_flag(tmp_path):
    video = media.make_video(tmp_path / "a.mp4", frames=5)
    home = tmp_path / "home"
    home.mkdir()
    os.environ["HOME"], old_home = str(home), os.environ.get("HOME")
    try:
        for given in (str(tmp_path / "elsewhere" / "x"), "~/x"):
            manifest = write_manifest(tmp_path / "m.csv", [(video, given)])
            result = cli("extract", "--manifest", manifest, "--out", tmp_path / "feats", check=2)
            assert "--absolute-outputs" in one_line_error(result)
    finally:
        if old_home is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old_home
    assert not list(home.iterdir()) and not (tmp_path / "elsewhere").exists()


def test_a_symlink_inside_out_cannot_carry_outputs_elsewhere(tmp_path):
    video = media.make_video(tmp_path / "a.mp4", frames=5)
    out, elsewhere = tmp_path / "feats", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere)
    manifest = write_manifest(tmp_path / "m.csv", [(video, "link/x")])
    with pytest.raises(ExtractError, match="through a symbolic link"):
        run([], out, manifest=manifest)
    assert not list(elsewhere.iterdir())


# ------------------------------------------------------------------------------------------ 8 and 14. sampling bounds


@pytest.mark.parametrize("fps", ["1e9", "inf", "nan", "-2"])
def test_absurd_fps_is_one_line_before_any_work(tmp_path, fps):
    video = media.make_video(tmp_path / "a.mp4", frames=5)
    result = cli("extract", video, "--out", tmp_path / "feats", "--fps", fps, check=2)
    assert "fps must be positive and at most 1000" in one_line_error(result)


def test_frame_sampling_never_takes_a_frame_twice():
    from vidvec.sampling import plan

    clips = plan(SamplingSpec(fps=1000.0), duration=3.0, native_fps=10.0)
    assert len(clips) == 30  # every frame, once
    with pytest.raises(ValueError, match="repeats each frame"):
        plan(SamplingSpec(kind="windows", clip_len=8, fps=1000.0), duration=3.0, native_fps=10.0)


def test_every_failure_has_a_reason():
    from vidvec.clips import describe_error

    assert describe_error(MemoryError()) == "out of memory"
    assert describe_error(RuntimeError()) == "RuntimeError"
    assert describe_error(ValueError("bad  \n thing")) == "bad thing"


# ------------------------------------------------------------------------------------------ 9. non-finite vectors


def test_nan_vectors_fail_their_video_and_the_run_goes_on(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    media.make_video(videos / "a.mp4", frames=6, fps=10)
    media.make_video(videos / "b.mp4", frames=6, fps=10)
    real = ModelRunner.forward

    def poisoned(self, slot, clips):
        latent, logits, extras = real(self, slot, clips)
        for i, clip in enumerate(clips):
            if clip.video == 0 and clip.clip == 3:
                latent[i, 5] = np.nan
        return latent, logits, extras

    monkeypatch.setattr(ModelRunner, "forward", poisoned)
    outcomes = {o.source.path.name: o for o in run([videos], tmp_path / "feats", batch_size=4)}
    assert outcomes["a.mp4"].status == "failed" and "NaN or Inf" in outcomes["a.mp4"].reason
    assert "0.30 s" in outcomes["a.mp4"].reason
    assert outcomes["b.mp4"].status == "done" and np.isfinite(outcomes["b.mp4"].features).all()
    assert not (tmp_path / "feats" / "a.npz").exists()


def test_a_model_error_fails_the_batch_and_the_run_goes_on(tmp_path, monkeypatch):
    media.make_video(tmp_path / "a.mp4", frames=4, fps=10)

    def broken(*args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ModelRunner, "forward", broken)
    (outcome,) = run([tmp_path / "a.mp4"], None)
    assert outcome.status == "failed" and outcome.reason.startswith("model failed: RuntimeError: CUDA out of memory")


# ------------------------------------------------------------------------------------------ 10. weights provenance


def test_provenance_says_how_the_weights_are_known(tmp_path):
    video = media.make_video(tmp_path / "a.mp4", frames=3)
    run([video], tmp_path / "real")
    assert read_features(tmp_path / "real" / "a.npz")[1]["weights_trust"] == "published"
    run([video], tmp_path / "random", weights="random")
    assert read_features(tmp_path / "random" / "a.npz")[1]["weights_trust"] == "random"


# ------------------------------------------------------------------------------------------ 11 and 12. names and links


def test_a_file_name_that_is_not_utf8_is_processed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"bad_\xff\xfe.mp4")
    media.make_video(folder / name, frames=3)
    media.make_video(folder / "good.mp4", frames=3)
    out = tmp_path / "feats"
    result = cli("extract", folder, "--out", out, check=0)
    assert "Traceback" not in result.stderr and "bad_\\xff\\xfe.mp4" in result.stderr
    assert (out / os.fsdecode(b"bad_\xff\xfe.npz")).exists()
    assert "already done 2" in cli("extract", folder, "--out", out, check=0).stderr
    assert "done" in cli("status", out, check=0).stdout


def test_a_symlink_loop_fails_alone(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").symlink_to(folder / "b.mp4")
    (folder / "b.mp4").symlink_to(folder / "a.mp4")
    media.make_video(folder / "c.mp4", frames=3)
    outcomes = {o.source.path.name: o for o in run([folder], tmp_path / "feats")}
    assert outcomes["c.mp4"].status == "done"
    assert outcomes["a.mp4"].status == "failed" and "symbolic link" in outcomes["a.mp4"].reason


# ------------------------------------------------------------------------------------------ 13. the output folder


def test_out_that_is_a_file_or_a_broken_ledger_is_one_line(tmp_path):
    video = media.make_video(tmp_path / "a.mp4", frames=3)
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in one_line_error(cli("extract", video, "--out", tmp_path / "file", check=2))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "vidvec-ledger.sqlite").write_bytes(os.urandom(4096))
    assert "not a vidvec ledger" in one_line_error(cli("extract", video, "--out", broken, check=2))
    assert "not a vidvec ledger" in one_line_error(cli("status", broken, check=2))


def test_a_full_disk_when_recording_stops_the_run_in_one_line_and_the_rerun_recovers(tmp_path, monkeypatch):
    import sqlite3

    from vidvec import ledger as ledger_module

    video = media.make_video(tmp_path / "a.mp4", frames=3)
    out = tmp_path / "feats"

    def full(self, *args, **kwargs):
        raise ledger_module.LedgerError(f"cannot write {self.path}: database or disk is full")

    monkeypatch.setattr(ledger_module.Ledger, "mark_done", full)
    with pytest.raises(ExtractError, match="disk is full; the features written so far are kept"):
        run([video], out)
    monkeypatch.undo()
    assert (out / "a.npz").exists()  # written before the ledger failed
    (again,) = run([video], out)
    assert again.status == "skipped" and again.reason == "already written"  # adopted, not recomputed
    with sqlite3.connect(out / "vidvec-ledger.sqlite") as conn:
        assert conn.execute("SELECT status FROM videos").fetchall() == [("done",)]


# ------------------------------------------------------------------------------------------ 17. option values


@pytest.mark.parametrize("option, value, words", [("--top-k", "-5", "--top-k must be 0"),
                                                   ("--num-workers", "-1", "--num-workers must be 0")])
def test_negative_counts_are_refused(tmp_path, option, value, words):
    video = media.make_video(tmp_path / "a.mp4", frames=3)
    assert words in one_line_error(cli("extract", video, "--out", tmp_path / "o", option, value, check=2))


# ------------------------------------------------------------------------------------------ 18. variable frame rate


def test_native_fps_on_a_variable_frame_rate_video_takes_every_frame_once(tmp_path):
    path, starts = media.make_vfr_video(tmp_path / "vfr.mp4")
    clips = [e for e in events(path) if isinstance(e, Clip)]
    assert [c.start for c in clips] == pytest.approx(starts)
    assert [media.frame_index(c.pixels[0].numpy()) for c in clips] == list(range(len(starts)))
    assert [c.end for c in clips[:-1]] == pytest.approx(starts[1:])


# ------------------------------------------------------------------------------------------ 19. signals


@pytest.mark.slow
def test_sigterm_and_sighup_say_how_to_resume(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(80):  # far more than either run finishes before its signal, even on a loaded machine
        media.make_video(videos / f"{i:02d}.mp4", frames=20, fps=10)
    out = tmp_path / "feats"
    for sig in (signal.SIGTERM, signal.SIGHUP):
        process = subprocess.Popen([*VIDVEC, "extract", videos, "--out", out, "--num-workers", "1", "--batch-size",
                                    "2"], stderr=subprocess.PIPE, text=True)
        before = len(list(out.glob("*.npz")))
        deadline = time.monotonic() + 300
        while len(list(out.glob("*.npz"))) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 128 + sig, stderr
        assert f"interrupted ({signal.Signals(sig).name}): finished videos are saved; run the same command again " \
               "to resume" in stderr
        assert "Traceback" not in stderr
    with Ledger(out, readonly=True) as ledger:
        summary = ledger.summary()
    assert summary["failed"] == 0 and 0 < summary["done"] < 80
    assert summary["done"] == len(list(out.glob("*.npz")))  # every recorded video has its file, no extra
