"""rule="hero" and the ``hero`` preset: the frames of HERO's SlowFast feature extractor, clip by clip.

HERO (linjieli222/HERO_Video_Feature_Extractor, slowfast/extract_feature) decodes ``ffmpeg -vf fps=fps=30`` to
a raw frame tensor, tiles its last frame up to whole seconds, tiles its last second up to whole chunks of
``--clip_len`` (3/2 s by default), keeps ceil(duration / clip_len) chunks when ffprobe knows nb_frames and the
duration, and feeds SlowFast 32 frames per chunk at float32 linspace(0, 64 * floor(fps) / 30 - 1, 32),
clamped to the chunk. Expected frames are derived by hand below, and cross-checked against a transcription of
HERO's tensor operations on frames that carry their own index.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from vidvec.decode import probe
from vidvec.presets import PRESETS
from vidvec.sampling import SamplingSpec, StreamTiming, hero_chunk_positions, plan
from media import ffmpeg_fps_filter

HERO = PRESETS["hero"].sampling


def frames_of(clip, fps: float = 30.0) -> list[int]:
    """The source frame (of a video at ``fps``) each of the clip's sample times lands in."""
    return [math.floor(t * fps) for t in clip.times]


def mp4_timing(num_frames: int, rate: Fraction, time_base: Fraction) -> StreamTiming:
    """A constant-rate stream whose header counts its frames and gives their total duration."""
    per_frame = 1 / (rate * time_base)
    assert per_frame.denominator == 1
    return StreamTiming(num_frames=num_frames, frame_rate=rate, time_base=time_base,
                        duration=num_frames * int(per_frame))


def hero_reference(labels: list[int], clip_len: str, video_fps: int, duration: float | None) -> list[list[int]]:
    """HERO's Preprocessing("3d") transcribed as tensor operations on frames that carry their label (one
    value per frame instead of H x W x 3 pixels); target 30 fps, NUM_FRAMES 32, SAMPLING_RATE 2."""
    target, num_frames, rate = 30, 32, 2
    video = torch.tensor(labels)
    if len(video) % target:  # _pad_frames(mode="tile")
        video = torch.cat([video, video[-1:].repeat(target - len(video) % target)])
    seconds = video.view(-1, target)
    block = Fraction(clip_len).numerator  # _pad_clips: whole multiples of the fraction's numerator
    if len(seconds) % block:
        seconds = torch.cat([seconds, seconds[-1:].repeat(block - len(seconds) % block, 1)])
    chunks = seconds.reshape(-1, int(float(Fraction(clip_len)) * target))
    if duration is not None and duration > 0:
        chunks = chunks[:int(math.ceil(duration / float(Fraction(clip_len))))]
    size = num_frames * rate * video_fps / target
    delta = max(chunks.shape[1] - size, 0)
    start = delta * 0 / 1  # get_start_end_idx(clip_idx=0, num_clips=1)
    index = torch.linspace(start, start + size - 1, num_frames)
    index = torch.clamp(index, 0, chunks.shape[1] - 1).long()
    return torch.index_select(chunks, 1, index).tolist()


EVERY_2ND = list(range(0, 45, 2)) + [44] * 9  # a 30 fps chunk: linspace(0, 63, 32) = 2k + k/31, clamped to 44


def test_preset_is_hero_rule_at_30_fps_in_1_5_s_chunks():
    assert (HERO.kind, HERO.rule, HERO.fps, HERO.clip_len, HERO.sampling_rate, HERO.stride_seconds) == (
        "windows", "hero", 30.0, 32, 2, 1.5)
    assert HERO.to_dict()["rule"] == "hero" and HERO.to_dict()["sampling_rate"] == 2
    assert "1.5 s chunk" in HERO.describe()


def test_100_frames_at_30_fps_as_derived_from_heros_code():
    # 100 frames: tiled to 120 (4 s) with frame 99, then to 6 s (a multiple of 3/2's numerator 3) with
    # two copies of the last second [90..99, 99 x 20]; 4 chunks of 45 frames; ffprobe's duration 3.333333 s
    # keeps ceil(3.333333 / 1.5) = 3 of them.
    timing = mp4_timing(100, Fraction(30), Fraction(1, 15360))
    clips = plan(HERO, 100 / 30, 30.0, timing=timing)
    assert [frames_of(c) for c in clips] == [
        EVERY_2ND,
        [45 + i for i in EVERY_2ND],
        # positions 90..134: frames 90..99, then frame 99 up to position 119, then the last second again
        [90, 92, 94, 96, 98] + [99] * 10 + [90, 92, 94, 96, 98] + [99] * 12,
    ]
    assert [(c.start, c.end, c.padded) for c in clips] == [(0.0, 1.5, False), (1.5, 3.0, False),
                                                            (3.0, pytest.approx(100 / 30), True)]
    # Without a frame count in the header HERO keeps every padded chunk, the 4th is all padding.
    no_header = plan(HERO, 100 / 30, 30.0, timing=StreamTiming(None, Fraction(30), Fraction(1, 15360)))
    assert len(no_header) == 4
    assert frames_of(no_header[3]) == [99] * 8 + [91, 93, 95, 97] + [99] * 20
    assert (no_header[3].start, no_header[3].end, no_header[3].padded) == (4.5, 6.0, True)
    assert [frames_of(c) for c in plan(HERO, 100 / 30, 30.0)] == [frames_of(c) for c in no_header]


@pytest.mark.parametrize("frames", [1, 29, 30, 31, 44, 45, 46, 64, 89, 90, 91, 100, 134, 135, 271])
@pytest.mark.parametrize("clip_len", ["3/2", "2", "1", "5/2"])
@pytest.mark.parametrize("header", [True, False])
def test_30_fps_matches_heros_tensor_operations(frames, clip_len, header):
    spec = HERO.with_overrides(stride_seconds=float(Fraction(clip_len)))
    timing = mp4_timing(frames, Fraction(30), Fraction(1, 15360))
    if not header:
        timing = StreamTiming(None, Fraction(30), Fraction(1, 15360))
    clips = plan(spec, frames / 30, 30.0, timing=timing)
    duration = float(f"{frames / 30:f}") if header else None
    assert [frames_of(c) for c in clips] == hero_reference(list(range(frames)), clip_len, 30, duration)
    chunk = float(Fraction(clip_len))
    assert [c.start for c in clips] == [k * chunk for k in range(len(clips))]


def test_2_second_chunks():
    spec = HERO.with_overrides(stride_seconds=2.0)  # --preset hero --stride 2s
    assert (spec.rule, spec.stride_seconds, spec.stride) == ("hero", 2.0, None)
    clips = plan(spec, 100 / 30, 30.0, timing=mp4_timing(100, Fraction(30), Fraction(1, 15360)))
    # 60-frame chunks: linspace(0, 63, 32) clamped to 59 is 0, 2, .., 58, 59, 59. 100 frames: 4 s, already
    # a multiple of 2 s, so no second is repeated; ceil(3.333333 / 2) = 2 chunks.
    assert [frames_of(c) for c in clips] == [
        list(range(0, 60, 2)) + [59, 59],
        list(range(60, 100, 2)) + [99] * 12,
    ]
    assert [(c.start, c.end) for c in clips] == [(0.0, 2.0), (2.0, pytest.approx(100 / 30))]
    in_frames = HERO.with_overrides(stride=60)  # the chunk given in frames at 30 fps
    assert [c.times for c in plan(in_frames, 100 / 30, 30.0)] == [c.times for c in plan(spec, 100 / 30, 30.0)]


def test_19_62_fps_video_is_resampled_to_30_and_sampled_at_heros_floor_fps(shared_dir):
    # HERO re-encodes with ffmpeg's fps filter to 30 fps, then spans 32 * 2 * floor(19.62) / 30 = 40.53
    # frames of that stream per clip (HERO uses the video's own rate here), so a clip covers 1.35 s, not
    # 2.13 s, at steps of 1 or 2 frames of the 30 fps stream.
    info = probe(shared_dir / "assets" / "videos" / "v_GGSY1Qvo990.mp4")
    timing = StreamTiming.from_info(info)
    assert (timing.num_frames, timing.frame_rate, timing.time_base, timing.duration) == (
        355, Fraction(981, 50), Fraction(1, 981), 17701)
    clips = plan(HERO, info.duration, info.fps, timing=timing)
    # FFmpeg's own filter: 541 frames, as `ffmpeg -i v_GGSY1Qvo990.mp4 -vf fps=fps=30` gives (the file's last
    # frame lasts 1 tick: the stream ends at 17701 ticks, not one whole frame after the last).
    shown = ffmpeg_fps_filter(355, 50, Fraction(1, 981), "30", last=1)
    assert len(shown) == 541
    # ffprobe: duration 17701 / 981 = "18.043833" s, so ceil(12.03) = 13 of the 14 padded chunks (541 frames
    # -> 570 (19 s) -> 630 (21 s) = 14 chunks of 45).
    assert len(clips) == 13
    # floor(k * 39.5333 / 31) for k = 0..31, by hand: never reaches the clamp at 44.
    inner = [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 28, 29, 30, 31, 33,
             34, 35, 36, 38, 39]
    for k, clip in enumerate(clips[:12]):
        assert frames_of(clip, 19.62) == [shown[45 * k + i] for i in inner]
    # The last chunk, positions 540..579: frame 540, its copies up to 569, then the last second.
    tail = [min(p if p < 570 else 540 + (p - 570) % 30, 540) for p in (540 + i for i in inner)]
    assert frames_of(clips[12], 19.62) == [shown[p] for p in tail]
    assert clips[12].padded and not clips[11].padded
    assert [frames_of(c, 19.62) for c in clips] == hero_reference(shown, "3/2", 19, 18.043833)
    assert [c.start for c in clips] == [1.5 * k for k in range(13)]
    assert clips[-1].end == info.duration


def test_29_97_fps_counts_as_29():
    # HERO floors ffprobe's avg_frame_rate: 30000/1001 gives 29, so C = 61.87 and the clip is
    # floor(k * 60.8667 / 31) = 0, 1, 3, 5, .., 43, then 44 (clamped) for k >= 23.
    timing = mp4_timing(300, Fraction(30000, 1001), Fraction(1, 30000))
    clips = plan(HERO, 10.01, 30000 / 1001, timing=timing)
    shown = ffmpeg_fps_filter(300, 1001, Fraction(1, 30000), "30")
    assert shown == list(range(300))  # frame i lands on slot round(1.001 i) = i while i < 500
    inner = [0, 1] + list(range(3, 44, 2)) + [44] * 9
    assert len(inner) == 32
    ntsc = 30000 / 1001
    assert frames_of(clips[0], ntsc) == [shown[i] for i in inner]
    assert [frames_of(c, ntsc) for c in clips] == hero_reference(shown, "3/2", 29, 10.01)
    assert len(clips) == 7  # 300 frames -> 10 s -> 12 s = 8 chunks; ceil(10.01 / 1.5) = 7


def test_span_is_a_shorter_video_cut_at_its_frames():
    timing = mp4_timing(300, Fraction(30), Fraction(1, 15360))
    clips = plan(HERO, 10.0, 30.0, start=1.0, end=3.0, timing=timing)
    # frames 30..89: 2 s, tiled to 3 s with the last second (60..89), 2 chunks; ceil(2 / 1.5) = 2
    assert [frames_of(c) for c in clips] == hero_reference(list(range(30, 90)), "3/2", 30, 2.0)
    assert [(c.start, c.end) for c in clips] == [(1.0, 2.5), (2.5, 3.0)]


def test_chunk_positions_helper_reports_padding():
    clips = hero_chunk_positions(45, 30, Fraction(3, 2), 32, 2, 30)
    assert len(clips) == 2  # 45 frames -> 2 s -> 3 s: a second chunk of padding (no duration known)
    assert clips[0] == (EVERY_2ND, False)
    # positions 45..59 are frame 44's copies, 60..89 repeat second 1 (frames 30..44, then 44 x 15)
    assert clips[1] == ([44] * 8 + list(range(31, 44, 2)) + [44] * 17, True)


@pytest.mark.parametrize("bad, message", [
    (dict(kind="views", views=1), "cuts windows"),
    (dict(fps=None), "whole fps"),
    (dict(fps=29.97), "whole fps"),
    (dict(stride_seconds=None), "chunk length"),
    (dict(stride_seconds=1.55), "whole frames"),
    (dict(fps=15.0, stride_seconds=1.5), "whole frames"),  # 22.5 frames: HERO asserts the same
])
def test_bad_hero_specs_are_rejected(bad, message):
    fields = dict(kind="windows", fps=30.0, clip_len=32, sampling_rate=2, stride_seconds=1.5, rule="hero")
    fields.update(bad)
    with pytest.raises(ValueError, match=message):
        SamplingSpec(**fields)


def test_other_kinds_leave_the_hero_rule():
    assert HERO.with_overrides(kind="frames", clip_len=1).rule == "uniform"
    assert HERO.with_overrides(clip_len=16).rule == "hero"


def _hero_load_npz(slowfast_fname, resnet_fname):
    """HERO's scripts: collect_video_feature_paths.py counts a video's frames as the shorter of its two feature files,
    and convert_videodb.py's load_npz reads each npz's ``features`` (float16 made float32), cuts both to that
    length and concatenates (ResNet first): what its LMDB holds, transcribed."""
    import numpy as np

    slowfast = np.load(slowfast_fname, allow_pickle=True)["features"]
    resnet = np.load(resnet_fname, allow_pickle=True)["features"]
    nframes = min(len(slowfast), len(resnet))
    if nframes == 0:
        raise ValueError("wrong ndim")
    return np.concatenate((resnet.astype(np.float32)[:nframes], slowfast.astype(np.float32)[:nframes]), axis=1)


def test_heros_loader_reads_vidvec_hero_files(tmp_path, shared_dir):
    import vidvec
    from vidvec.extraction import SamplingOverrides

    video = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    hero = SamplingOverrides.preset("hero")
    (slowfast,) = vidvec.extract([video], "Kinetics/c2/SLOWFAST_8x8_R50", tmp_path / "slowfast_features",
                                 weights="random", layout="hero", sampling=hero, num_workers=0)
    (resnet,) = vidvec.extract([video], "resnet18", tmp_path / "resnet_features", weights="random", layout="hero",
                               sampling=SamplingOverrides(fps=1 / 1.5), num_workers=0)
    assert slowfast.status == resnet.status == "done"
    combined = _hero_load_npz(slowfast.output, resnet.output)
    assert combined.dtype.name == "float32" and combined.shape[1] == 512 + 2304
    assert len(combined) == min(len(slowfast.features), len(resnet.features)) == 7  # 10.1 s in 1.5 s chunks
