import numpy as np
import pytest

from vidvec.sampling import SamplingSpec, plan


def test_frames_at_native_fps_cover_every_frame():
    clips = plan(SamplingSpec("frames"), duration=10.0, native_fps=30.0)
    assert len(clips) == 300
    assert clips[1].times == pytest.approx((1 / 30,))
    assert clips[-1].start == pytest.approx(299 / 30)
    assert not any(c.padded for c in clips)


def test_frames_at_lower_fps_on_non_integer_rate():
    # 355 frames at 981/50 fps, sampled at 1 fps: one frame per second of the 18.09 s video
    duration = 355 / (981 / 50)
    clips = plan(SamplingSpec("frames", fps=1.0), duration=duration, native_fps=981 / 50)
    assert [c.start for c in clips] == pytest.approx(list(range(19)))
    assert clips[0].end == pytest.approx(1.0)


def test_windows_with_frame_stride_overlap():
    spec = SamplingSpec("windows", fps=30, clip_len=32, stride=16)
    clips = plan(spec, duration=10.0, native_fps=30)
    # complete windows only: starts 0, 16, ..., while start + 32 <= 300
    assert len(clips) == (300 - 32) // 16 + 1
    assert clips[1].times[0] == pytest.approx(16 / 30)
    assert len(clips[0].times) == 32
    assert clips[0].end - clips[0].start == pytest.approx(32 / 30)
    assert not any(c.padded for c in clips)


def test_windows_with_stride_in_seconds():
    spec = SamplingSpec("windows", fps=8, clip_len=16, stride_seconds=2.0)
    clips = plan(spec, duration=11.0, native_fps=25)
    assert [c.start for c in clips] == pytest.approx([0, 2, 4, 6, 8])
    assert clips[-1].end == pytest.approx(10.0)


def test_short_video_gives_one_padded_clip_repeating_last_frame():
    spec = SamplingSpec("windows", fps=30, clip_len=64, stride=64)
    clips = plan(spec, duration=49 / 30, native_fps=30)
    assert len(clips) == 1
    clip = clips[0]
    assert clip.padded
    assert len(clip.times) == 64
    last = 48 / 30
    assert max(clip.times) == pytest.approx(last)
    assert clip.times[-16:] == pytest.approx((last,) * 16)
    assert clip.end == pytest.approx(49 / 30)


def test_views_spread_uniformly_from_start_to_end():
    spec = SamplingSpec("views", fps=30, clip_len=30, views=5, crops=3)
    clips = plan(spec, duration=11.0, native_fps=30)
    assert [c.start for c in clips] == pytest.approx([0, 2.5, 5, 7.5, 10])
    assert clips[-1].end == pytest.approx(11.0)
    centre = plan(SamplingSpec("views", fps=30, clip_len=30, views=1), duration=11.0, native_fps=30)
    assert centre[0].start == pytest.approx(5.0)


def test_span_restricts_sampling():
    clips = plan(SamplingSpec("frames", fps=2), duration=60.0, native_fps=30, start=10.0, end=12.0)
    assert [c.start for c in clips] == pytest.approx([10.0, 10.5, 11.0, 11.5])
    with pytest.raises(ValueError, match="nothing to sample"):
        plan(SamplingSpec("frames"), duration=5.0, native_fps=30, start=6.0)


def test_one_frame_video_yields_one_clip():
    clips = plan(SamplingSpec("frames"), duration=1 / 25, native_fps=25)
    assert len(clips) == 1 and clips[0].times == (0.0,)
    window = plan(SamplingSpec("windows", clip_len=8), duration=1 / 25, native_fps=25)
    assert len(window) == 1 and window[0].padded and set(window[0].times) == {0.0}


@pytest.mark.parametrize("bad", [dict(kind="bogus"), dict(fps=0), dict(clip_len=0), dict(crops=2),
                                 dict(kind="frames", clip_len=4), dict(views=0), dict(stride=0)])
def test_invalid_specs_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingSpec(**bad)


def test_overrides_and_hashability():
    base = SamplingSpec("frames")
    spec = base.with_overrides(clip_len=16, fps=15, stride=None)
    assert spec.kind == "windows" and spec.clip_len == 16 and spec.fps == 15
    assert spec.with_overrides(stride_seconds=2.0).stride is None
    assert hash(spec) == hash(SamplingSpec("windows", fps=15, clip_len=16))
    assert "16 frames" in spec.describe()


def test_times_are_ascending_and_within_the_video():
    rng = np.random.default_rng(0)
    for _ in range(50):
        duration = float(rng.uniform(0.05, 30))
        fps = float(rng.choice([7.5, 15, 19.62, 25, 29.97, 30, 60]))
        spec = SamplingSpec("windows", fps=fps, clip_len=int(rng.integers(1, 40)), stride=int(rng.integers(1, 40)))
        for clip in plan(spec, duration, fps):
            times = np.asarray(clip.times)
            assert np.all(np.diff(times) >= 0)
            assert times.min() >= 0 and times.max() < duration


@pytest.mark.parametrize("frames, starts", [
    (39, [0, 7]),        # Ego4D's example: the last window is backed up to end at frame 38
    (40, [0, 8]),
    (48, [0, 16]),       # the complete windows reach the last frame: nothing to add
    (64, [0, 16, 32]),
    (32, [0]),
    (20, [0]),           # shorter than one window: one padded window, nothing to back up
])
def test_backpad_last_adds_a_window_ending_at_the_last_frame(frames, starts):
    spec = SamplingSpec("windows", fps=30, clip_len=32, stride=16, backpad_last=True)
    clips = plan(spec, duration=frames / 30, native_fps=30)
    assert [round(c.start * 30) for c in clips] == starts
    assert [c.index for c in clips] == list(range(len(starts)))
    assert round(clips[-1].times[-1] * 30) == min(frames - 1, starts[-1] + 31)
    complete_only = plan(SamplingSpec("windows", fps=30, clip_len=32, stride=16), frames / 30, 30)
    assert len(complete_only) == (frames - 32) // 16 + 1 if frames >= 32 else len(complete_only) == 1
    with pytest.raises(ValueError, match="backpad_last"):
        SamplingSpec("views", fps=30, clip_len=32, views=2, backpad_last=True)
