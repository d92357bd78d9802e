"""rule="video_features": clip counts and timestamps_ms exactly as v-iashin/video_features produced them.

Ground truth: video_features' own reference outputs on v_GGSY1Qvo990.mp4 (shared/fixtures/video_features),
compared bit for bit (``stamp * 1000 == timestamps_ms``), and FFmpeg's own ``fps`` filter (run through
PyAV) for the frame choice behind ``extraction_fps``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidvec.decode import probe
from vidvec.sampling import (SamplingSpec, StreamTiming, ffmpeg_fps_filter_frames, mp4_timescale, plan)
from media import ffmpeg_fps_filter
from video_features_fixtures import load_reference

VIDEO = "v_GGSY1Qvo990"


@pytest.fixture(scope="module")
def references(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "video_features" / "tests"


@pytest.fixture(scope="module")
def video(shared_dir: Path):
    info = probe(shared_dir / "assets" / "videos" / f"{VIDEO}.mp4")
    return info, StreamTiming.from_info(info)


def vf(kind: str = "windows", fps: float | None = None, stack: int = 1, step: int | None = None) -> SamplingSpec:
    return SamplingSpec(kind, fps=fps, clip_len=stack, stride=step, rule="video_features")


FRAMES = "frames"
# (folder, run name in the file names, vidvec spec, feature keys whose row count is the clip count).
# I3D reads stack_size + 1 frames per clip (its last flow pair needs the next frame): clip_len = stack + 1.
# Its defaults: stack 64, step 64, native fps. R(2+1)D: stack = step = 16, 32 or 8 by model, native fps.
# S3D: stack 64, step 64, extraction_fps 25 when unset. CLIP, ResNet, RAFT: every frame, native fps.
CASES = [
    ("i3d", "None_raft_None_None_None", vf(stack=65, step=64), ("rgb", "flow")),
    ("i3d", "None_pwc_None_None_None", vf(stack=65, step=64), ("rgb", "flow")),
    ("i3d", "rgb_raft_None_None_None", vf(stack=65, step=64), ("rgb",)),
    ("i3d", "rgb_pwc_None_None_None", vf(stack=65, step=64), ("rgb",)),
    ("i3d", "flow_raft_None_None_None", vf(stack=65, step=64), ("flow",)),
    ("i3d", "flow_pwc_None_None_None", vf(stack=65, step=64), ("flow",)),
    ("i3d", "None_raft_24_24_25", vf(fps=25, stack=25, step=24), ("rgb", "flow")),
    ("i3d", "None_pwc_24_24_25", vf(fps=25, stack=25, step=24), ("rgb", "flow")),
    ("i3d", "None_raft_24_12_15", vf(fps=15, stack=25, step=12), ("rgb", "flow")),
    ("i3d", "None_pwc_24_12_15", vf(fps=15, stack=25, step=12), ("rgb", "flow")),
    ("r21d", "r2plus1d_18_16_kinetics_None_None_None", vf(stack=16, step=16), ("r21d",)),
    ("r21d", "r2plus1d_34_32_ig65m_ft_kinetics_None_None_None", vf(stack=32, step=32), ("r21d",)),
    ("r21d", "r2plus1d_34_8_ig65m_ft_kinetics_None_None_None", vf(stack=8, step=8), ("r21d",)),
    ("r21d", "r2plus1d_34_8_ig65m_ft_kinetics_None_None_1", vf(fps=1, stack=8, step=8), ("r21d",)),
    ("s3d", "None_None_None", vf(fps=25, stack=64, step=64), ("s3d",)),
    ("s3d", "32_32_20", vf(fps=20, stack=32, step=32), ("s3d",)),
    ("clip", "ViT-B_32_1_None", vf(FRAMES), ("clip",)),
    ("clip", "ViT-B_32_128_None", vf(FRAMES), ("clip",)),
    ("clip", "ViT-B_32_1_5", vf(FRAMES, fps=5), ("clip",)),
    ("resnet", "resnet34_64_None", vf(FRAMES), ("resnet",)),
    ("resnet", "resnet50_1_None", vf(FRAMES), ()),
    ("resnet", "resnet101_1_1", vf(FRAMES, fps=1), ("resnet",)),
    # RAFT keeps one timestamp per frame (its N - 1 flows sit between them): the frames rule.
    ("raft", "kitti_1_256_True_1", vf(FRAMES, fps=1), ()),
    ("raft", "sintel_16_256_False_1", vf(FRAMES, fps=1), ()),
    ("raft", "sintel_1_256_False_1", vf(FRAMES, fps=1), ()),
    ("raft", "sintel_1_None_True_1", vf(FRAMES, fps=1), ()),
]
HAS_TIMESTAMPS = ("i3d", "clip", "resnet", "raft")  # R(2+1)D and S3D save features only


@pytest.mark.parametrize("family, run, spec, keys", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_clip_count_and_timestamps_match_video_features(references, video, family, run, spec, keys):
    info, timing = video
    clips = plan(spec, info.duration, info.fps, timing=timing)
    folder = references / family / "reference"
    for key in keys:
        assert len(clips) == load_reference(folder / f"{VIDEO}_{run}_{key}.pt").shape[0], key
    if family in HAS_TIMESTAMPS:
        expected = load_reference(folder / f"{VIDEO}_{run}_timestamps_ms.pt")
        # Bit for bit: the same double arithmetic as OpenCV's CAP_PROP_POS_MSEC, no tolerance needed.
        assert np.array_equal(np.array([c.stamp * 1000 for c in clips]), expected)
        # its `fps` output: the extraction rate, else the video's own (OpenCV's CAP_PROP_FPS)
        assert float(load_reference(folder / f"{VIDEO}_{run}_fps.pt")) == (spec.fps or float(timing.frame_rate))


def test_i3d_clips_are_stacks_of_stack_plus_one_frames_stamped_at_their_last(video):
    info, timing = video
    clips = plan(vf(stack=65, step=64), info.duration, info.fps, timing=timing)
    frames = [[round(t * 19.62 - 0.5) for t in c.times] for c in clips]
    assert [f[0] for f in frames] == [0, 64, 128, 192, 256] and all(len(f) == 65 for f in frames)
    assert [c.stamp for c in clips] == [(f[-1] * 50) * (1 / 981) for f in frames]  # frame i has pts 50 i
    assert not any(c.padded for c in clips)
    # 355 frames: the sixth stack (320..384) is incomplete and dropped
    assert clips[-1].end == pytest.approx(321 / 19.62)


# -- ffmpeg's fps filter (extraction_fps) ------------------------------------------------------------------

@pytest.mark.parametrize("num_frames, ticks, time_base, rate", [
    (355, 50, Fraction(1, 981), "1"),  # the reference video (19.62 fps) down to 1, 5, 15, 25 fps
    (355, 50, Fraction(1, 981), "5"),
    (355, 50, Fraction(1, 981), "15"),
    (355, 50, Fraction(1, 981), "25"),
    (355, 50, Fraction(1, 981), "60"),  # and up to 60
    (300, 1001, Fraction(1, 30000), "24"),  # NTSC 29.97 fps
    (300, 1001, Fraction(1, 30000), "29.97"),
    (300, 1001, Fraction(1, 30000), "60"),
])
def test_fps_filter_model_matches_ffmpeg(num_frames, ticks, time_base, rate):
    pts = [i * ticks for i in range(num_frames)]
    model = ffmpeg_fps_filter_frames(pts, num_frames * ticks, time_base,
                                     Fraction(float(rate)).limit_denominator(2**31 - 1))
    assert model == ffmpeg_fps_filter(num_frames, ticks, time_base, rate)


def test_mp4_timescale_is_the_encoder_rate_doubled_past_10000():
    assert [mp4_timescale(Fraction(r)) for r in (1, 5, 15, 25, 60)] == [16384, 10240, 15360, 12800, 15360]
    assert mp4_timescale(Fraction(2997, 100)) == 11988
    assert mp4_timescale(Fraction(30000, 1001)) == 30000


# -- edge cases ----------------------------------------------------------------------------------------------

def test_video_shorter_than_one_stack_raises(shared_dir):
    # video_features saves an empty array for it (no complete stack); vidvec reports the video instead
    info = probe(shared_dir / "assets" / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi")  # 49 frames
    timing = StreamTiming.from_info(info)
    with pytest.raises(ValueError, match="49 frames at its native 30 fps, fewer than one stack of 65"):
        plan(vf(stack=65, step=64), info.duration, info.fps, timing=timing)
    with pytest.raises(ValueError, match="41 frames at 25 fps, fewer than one stack of 64"):
        plan(vf(fps=25, stack=64, step=64), info.duration, info.fps, timing=timing)
    assert len(plan(vf(stack=49, step=64), info.duration, info.fps, timing=timing)) == 1  # exactly one stack


def test_fps_above_native_repeats_frames_on_the_new_grid(video):
    info, timing = video
    clips = plan(vf(FRAMES, fps=60), info.duration, info.fps, timing=timing)
    assert len(clips) == 1083  # round(17701 / 981 s * 60): the stream ends 1 tick after its last frame starts
    shown = [round(c.times[0] * 19.62 - 0.5) for c in clips]
    assert shown == ffmpeg_fps_filter(355, 50, Fraction(1, 981), "60", last=1)
    assert set(np.bincount(shown)) == {3, 4}  # every source frame, 3 or 4 times
    assert [c.stamp for c in clips[:4]] == [k * 256 * (1 / 15360) for k in range(4)]  # mp4 track at 15360/s
    windows = plan(vf(fps=60, stack=64, step=32), info.duration, info.fps, timing=timing)
    assert len(windows) == (1083 - 64) // 32 + 1
    assert windows[1].stamp == clips[32 + 63].stamp


def test_step_longer_than_stack_skips_frames():
    timing = StreamTiming(num_frames=100, frame_rate=Fraction(25), time_base=Fraction(1, 12800))
    clips = plan(vf(stack=10, step=25), 4.0, 25.0, timing=timing)
    assert [round(c.times[0] * 25 - 0.5) for c in clips] == [0, 25, 50, 75]  # video_features' form_slices
    assert [c.stamp for c in clips] == [(k * 25 + 9) * 512 * (1 / 12800) for k in range(4)]


def test_span_cuts_the_video_and_keeps_its_clock(video):
    info, timing = video
    whole = plan(vf(FRAMES), info.duration, info.fps, timing=timing)
    part = plan(vf(FRAMES), info.duration, info.fps, start=1.0, end=2.0, timing=timing)
    assert [c.stamp for c in part] == [c.stamp for c in whole[20:40]]  # frames 20..39 start in [1, 2) s
    resampled = plan(vf(FRAMES, fps=5), info.duration, info.fps, start=1.0, end=2.0, timing=timing)
    assert len(resampled) == 5 and resampled[0].stamp == whole[20].stamp


def test_without_a_time_base_stamps_are_index_over_fps():
    # video_features' later frame-wise loader writes i / fps * 1000 (within one ulp of the pts values)
    timing = StreamTiming(num_frames=355, frame_rate=Fraction(981, 50))
    clips = plan(vf(FRAMES), 355 / 19.62, 19.62, timing=timing)
    assert [c.stamp * 1000 for c in clips] == [i / 19.62 * 1000 for i in range(355)]


def test_other_rules_carry_no_stamp_and_spec_checks():
    assert plan(SamplingSpec("frames", fps=1.0), 3.0, 30.0)[0].stamp is None
    with pytest.raises(ValueError, match="steps in frames"):
        SamplingSpec("windows", clip_len=16, stride_seconds=1.0, rule="video_features")
    with pytest.raises(ValueError, match="frames or windows"):
        SamplingSpec("views", clip_len=16, rule="video_features")
    text = vf(fps=25, stack=64, step=64).describe()
    assert text == "video_features sampling: stacks of 64 frames, step 64, at 25 fps"
