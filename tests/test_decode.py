"""vidvec.decode: frame selection by presentation time, seeking, resizing, rotation, and error reasons."""

from __future__ import annotations

import hashlib
import json
import math

import av
import numpy as np
import pytest

import media
from vidvec.decode import DecodeError, VideoDecoder, VideoInfo, probe


def _indices(decoder: VideoDecoder, times) -> list[int | None]:
    """The index of the frame given at each time; None where the decoder has no frame."""
    return [None if frame is None else media.frame_index(frame) for _, frame in decoder.frames_at(times)]


def _expected_cfr(times, fps: float, n: int) -> list[int | None]:
    """The frame on screen at each time; before the start the first; None from one frame after the end of
    the last (up to there, the last frame stands for a header that rounds the duration up)."""
    return [None if t * fps >= n + 1 - 1e-6 else min(n - 1, max(0, math.floor(t * fps + 1e-6))) for t in times]


# ---------------------------------------------------------------------------------------------------- CFR


@pytest.mark.parametrize(
    "codec, suffix", [("libx264", ".mp4"), ("libx264", ".mkv"), ("mpeg4", ".avi"), ("mpeg4", ".mp4")]
)
def test_cfr_30fps_picks_the_frame_on_screen(tmp_path, codec, suffix):
    path = media.make_video(tmp_path / f"v{suffix}", frames=60, fps=30, codec=codec)
    # Exact frame starts, just before/after them, mid-frame, before the start and past the end.
    times = [-1.0, 0.0, 0.01, 1 / 30, 2 / 30 - 0.001, 2 / 30, 0.5, 1.0, 1.51, 59 / 30, 1.99, 2.5, 100.0]
    with VideoDecoder(path) as dec:
        got = _indices(dec, times)
        assert dec.info.num_frames in (60, None) and dec.info.fps == pytest.approx(30)  # mkv: no count
    assert got == _expected_cfr(times, 30, 60)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_every_frame_in_order(tmp_path, suffix):
    path = media.make_video(tmp_path / f"v{suffix}", frames=45, fps=30)
    with VideoDecoder(path) as dec:
        items = list(dec.frames())
        # Matroska rounds timestamps to 1 ms (frame 2 at 0.067 > 2/30): i / fps must still find frame i.
        assert _indices(dec, [i / 30 for i in range(45)]) == list(range(45))
    assert [media.frame_index(f) for _, f in items] == list(range(45))
    assert [t for t, _ in items] == pytest.approx([i / 30 for i in range(45)], abs=1e-3)


def test_repeated_frames_are_the_same_object_and_converted_once(tmp_path):
    path = media.make_video(tmp_path / "v.mp4", frames=30, fps=10)
    times = [0.0, 0.02, 0.05, 0.099, 0.1, 0.15, 0.3]
    with VideoDecoder(path) as dec:
        out = [f for _, f in dec.frames_at(times)]
        assert out[0] is out[1] is out[2] is out[3]
        assert out[4] is out[5] and out[4] is not out[3]
        assert [media.frame_index(f) for f in out] == [0, 0, 0, 0, 1, 1, 3]
        # Frame 2 (never asked for) is decoded but not converted to RGB.
        assert dec.frames_converted == 3
    assert out[0].dtype == np.uint8 and out[0].shape == (48, 64, 3) and out[0].flags.c_contiguous


def test_one_frame_video(tmp_path):
    path = media.make_one_frame(tmp_path / "one.mp4", fps=25)
    info = probe(path)
    assert info.num_frames == 1 and info.duration == pytest.approx(1 / 25, abs=1e-3)
    with VideoDecoder(path) as dec:
        out = [f for _, f in dec.frames_at([0.0, 0.03, 0.07, 0.09, 10.0])]
    # Shown for its 0.04 s, and up to one frame more (a duration rounded up); after that there is no frame.
    assert out[0] is out[1] is out[2] and media.frame_index(out[0]) == 0
    assert out[3] is None and out[4] is None


def test_times_must_ascend_and_closed_decoder_refuses(tmp_path):
    path = media.make_video(tmp_path / "v.mp4", frames=5)
    dec = VideoDecoder(path)
    with pytest.raises(ValueError):
        list(dec.frames_at([0.1, 0.0]))
    dec.close()
    with pytest.raises(ValueError):
        list(dec.frames_at([0.0]))


def test_a_second_pass_can_go_back(tmp_path):
    path = media.make_video(tmp_path / "v.mp4", frames=90, fps=30, gop=15)
    with VideoDecoder(path) as dec:
        assert _indices(dec, [2.5, 2.9]) == [75, 87]
        assert _indices(dec, [0.0, 0.5]) == [0, 15]
        assert [media.frame_index(f) for _, f in dec.frames()][:3] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------------- VFR


def test_variable_frame_rate_uses_timestamps(tmp_path):
    pts_ms = (0, 40, 50, 200, 210, 220, 500, 533, 900, 1000, 1010, 1400)
    path, starts = media.make_vfr_video(tmp_path / "vfr.mp4", pts_ms=pts_ms)
    times, expected = [], []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else start + 0.05
        for t in (start, (start + end) / 2, end - 0.002):
            times.append(t)
            expected.append(i)
    with VideoDecoder(path) as dec:
        assert _indices(dec, times) == expected
        # A frame counter would say frame 6 is at 6 / average fps; the timestamps say 0.5 s.
        assert _indices(dec, [0.49, 0.5]) == [5, 6]


# ---------------------------------------------------------------------------------------------------- seeking


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """60 s at 30 fps (1800 frames), keyframe every 2 s."""
    return media.make_video(tmp_path_factory.mktemp("long") / "long.mp4", frames=1800, fps=30, size=(48, 32), gop=60)


def test_seeking_decodes_far_fewer_frames(long_video):
    times = [0.0, 0.5, 1.0, 30.0, 30.04, 58.0, 59.0, 59.97, 61.0]
    with VideoDecoder(long_video) as dec:
        assert _indices(dec, times) == _expected_cfr(times, 30, 1800)
        assert dec.seeks >= 2
        assert dec.frames_decoded < 400  # a straight pass would decode all 1800


def test_without_seeking_everything_is_decoded(long_video):
    times = [0.0, 59.0]
    with VideoDecoder(long_video, seek_gap=math.inf) as dec:
        assert _indices(dec, times) == [0, 1770]
        assert dec.frames_decoded >= 1771 and dec.seeks == 0


def test_short_gaps_do_not_seek(long_video):
    times = [i * 2.0 for i in range(10)]  # 2 s apart < seek_gap 3 s
    with VideoDecoder(long_video) as dec:
        assert _indices(dec, times) == [i * 60 for i in range(10)]
        assert dec.seeks == 0


# ---------------------------------------------------------------------------------------------------- size


def test_resize_tuple_and_callable_on_odd_size(tmp_path):
    # mpeg4 accepts odd sizes in 4:2:0 (x264 does not): odd chroma planes are the tricky case.
    path = media.make_video(tmp_path / "odd.avi", frames=10, size=(333, 199), codec="mpeg4")
    info = probe(path)
    assert (info.width, info.height) == (333, 199)
    with VideoDecoder(path) as dec:
        frame = next(dec.frames_at([0.1]))[1]
    assert frame.shape == (199, 333, 3) and media.frame_index(frame) == 3

    def short_side_128(h, w):
        return (128, round(w * 128 / h)) if h <= w else (round(h * 128 / w), 128)

    with VideoDecoder(path, size=short_side_128) as dec:
        frame = next(dec.frames_at([0.2]))[1]
    assert frame.shape == (128, 214, 3) and media.frame_index(frame) == 6
    with VideoDecoder(path, size=(100, 150)) as dec:
        frame = next(dec.frames_at([0.0]))[1]
    assert frame.shape == (100, 150, 3) and frame.flags.c_contiguous
    with VideoDecoder(path, size=(99, 167)) as dec:  # odd output from odd input
        frames = [f for _, f in dec.frames_at([0.0, 0.3])]
    assert frames[0].shape == (99, 167, 3) and [media.frame_index(f) for f in frames] == [0, 9]


def test_interpolation_picks_the_swscale_filter_per_size(shared_dir):
    path = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    size = (224, 297)
    with VideoDecoder(path, size=[size, size, size], interpolation=["bilinear", "bicubic", "bilinear"]) as dec:
        (_, (bilinear, bicubic, same)), = dec.frames_at([1.0])
        assert dec.frames_converted == 2  # the same size and filter converts once
    assert same is bilinear and bicubic.shape == bilinear.shape == (224, 297, 3)
    assert np.abs(bicubic.astype(int) - bilinear.astype(int)).mean() > 0.3
    with VideoDecoder(path, size=size, interpolation="bicubic") as dec:
        alone = next(dec.frames_at([1.0]))[1]
    assert np.array_equal(alone, bicubic)
    # what vidvec computes: swscale's bicubic scale in the decoded YUV, then the conversion to RGB
    with av.open(str(path)) as container:
        frame = next(f for f in container.decode(video=0) if f.time >= 1.0 - 1e-3)
        small = frame.reformat(format=frame.format.name, width=297, height=224, interpolation="BICUBIC")
    assert np.array_equal(small.to_ndarray(format="rgb24"), bicubic)
    with pytest.raises(ValueError, match="interpolation"):
        VideoDecoder(path, size=size, interpolation="lanczos4")


# ---------------------------------------------------------------------------------------------------- rotation


@pytest.mark.parametrize(
    "rotation, corner",
    [(90, "top-right"), (180, "bottom-right"), (270, "bottom-left"), (0, "top-left")],
)
def test_rotation_metadata_is_applied(tmp_path, rotation, corner):
    path = media.make_rotated_video(tmp_path / "rot.mp4", rotation=rotation, size=(64, 32))
    info = probe(path)
    assert info.rotation == rotation
    expect_wh = (32, 64) if rotation in (90, 270) else (64, 32)
    assert (info.width, info.height) == expect_wh
    with VideoDecoder(path) as dec:
        frame = next(dec.frames_at([0.0]))[1]
    assert frame.shape == (expect_wh[1], expect_wh[0], 3)
    assert media.marker_corner(frame) == corner


def test_phone_portrait_matrix_comes_out_upright(tmp_path):
    # The tkhd matrix of an upright phone recording: ffplay turns it 90 degrees clockwise, so the stored
    # top-left corner ends at the top right.
    path = media.make_video(
        tmp_path / "phone.mp4", frames=3, size=(64, 32), pattern="marker", display_matrix=media.PHONE_PORTRAIT_MATRIX
    )
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).rotation == -90  # PyAV's own (counter-clockwise) reading
    # The resize callable sees the displayed (portrait) size.
    seen = []

    def half(h, w):
        seen.append((h, w))
        return h // 2, w // 2

    with VideoDecoder(path, size=half) as dec:
        assert (dec.info.rotation, dec.info.width, dec.info.height) == (90, 32, 64)
        frame = next(dec.frames_at([0.0]))[1]
    assert seen == [(64, 32)]
    assert frame.shape == (32, 16, 3) and media.marker_corner(frame) == "top-right"


# ---------------------------------------------------------------------------------------------------- errors


def _missing(tmp_path):
    return tmp_path / "missing.mp4"


@pytest.mark.parametrize(
    "make, words",
    [
        (_missing, "file not found"),
        (lambda p: media.make_zero_byte(p / "zero.mp4"), "empty file (0 bytes)"),
        (lambda p: media.make_text_as_mp4(p / "text.mp4"), "cannot open: Invalid data"),
        (lambda p: media.make_truncated_mp4(p / "cut.mp4"), "cannot open: Invalid data"),
        (lambda p: media.make_audio_only(p / "audio.m4a"), "not a video: no video stream (audio only)"),
        (lambda p: media.make_unsupported_codec(p / "zzzz.avi"), "unsupported codec"),
        (lambda p: media.make_undecodable(p / "garbage.mp4"), "no decodable frames"),
        (lambda p: p, "not a file"),
    ],
    ids=["missing", "zero-byte", "text", "truncated", "audio-only", "unsupported-codec", "undecodable", "directory"],
)
def test_bad_inputs_raise_decode_error_with_reason(tmp_path, make, words):
    path = make(tmp_path)
    for open_it in (probe, VideoDecoder):
        with pytest.raises(DecodeError) as err:
            open_it(path)
        message = str(err.value)
        assert message.startswith(words), message
        assert "\n" not in message and str(path) not in message


def test_corrupt_packets_mid_stream_are_skipped(tmp_path):
    path = media.make_corrupt_middle(tmp_path / "bad.avi", frames=90, bad=(30, 31, 45, 60))
    with VideoDecoder(path) as dec:
        got = [media.frame_index(f) for _, f in dec.frames()]
    assert len(got) >= 80 and got == sorted(got)
    assert got[:30] == list(range(30)) and got[-20:] == list(range(70, 90))


# ---------------------------------------------------------------------------------------------------- real videos

# From shared/README.md: file, codec, width, height, fps, frames, length, audio
REAL = [
    ("v_GGSY1Qvo990.mp4", "h264", 320, 240, 19.62, 355, 18.16, True),
    ("R6llTwEh07w.mp4", "h264", 340, 256, 30.0, 303, 10.10, True),
    ("SOX5yA1l24A.mp4", "h264", 340, 256, 29.97, 332, 11.08, True),
    ("v_SoccerJuggling_g23_c01.avi", "mpeg4", 320, 240, 29.97, 240, 8.01, False),
    ("RATRACE_wave_f_nm_np1_fr_goo_37.avi", "mpeg4", 560, 240, 30.0, 73, 2.43, False),
    ("hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", "mpeg4", 320, 240, 30.0, 84, 2.80, False),
    ("TrumanShow_wave_f_nm_np1_fr_med_26.avi", "mpeg4", 432, 240, 30.0, 49, 1.63, False),
    ("v_ZNVhz7ctTq0.mp4", "h264", 480, 360, 30.0, 420, 14.05, True),
]


@pytest.mark.parametrize("name, codec, width, height, fps, frames, length, audio", REAL, ids=[r[0][:20] for r in REAL])
def test_probe_matches_the_readme_table(shared_dir, name, codec, width, height, fps, frames, length, audio):
    info = probe(shared_dir / "assets" / "videos" / name)
    assert (info.codec, info.width, info.height, info.rotation) == (codec, width, height, 0)
    assert info.fps == pytest.approx(fps, abs=0.005)
    assert info.num_frames == frames and info.has_audio is audio
    # The table's length is the container's (audio included); video alone may end up to ~0.07 s earlier.
    assert info.duration == pytest.approx(length, abs=0.08)
    assert json.loads(json.dumps(info.to_dict()))["path"] == str(shared_dir / "assets" / "videos" / name)
    assert isinstance(info, VideoInfo)


def _reference(path):
    """(time, sha1 of the rgb24 frame) for every frame, straight from PyAV."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            out.append((float(f.pts * s.time_base), hashlib.sha1(f.to_ndarray(format="rgb24").tobytes()).digest()))
    return out


def test_real_19_62_fps_video_selects_by_pts(shared_dir):
    path = shared_dir / "assets" / "videos" / "v_GGSY1Qvo990.mp4"
    ref = _reference(path)
    assert len(ref) == 355
    assert [t for t, _ in ref] == pytest.approx([k * 50 / 981 for k in range(355)], abs=1e-9)
    # Sample at 30 fps (not the native rate): each time must get the last frame that started before it, up to
    # one frame after the last one ends (18.094 s + 1 / 19.62 s).
    times = [k / 30 for k in range(int(18.14 * 30))]
    with VideoDecoder(path) as dec:
        got = [hashlib.sha1(f.tobytes()).digest() for _, f in dec.frames_at(times)]
        assert dec.frames_converted == 355  # every frame is on screen at some 30 fps instant
    expected = [ref[min(354, math.floor(t * 19.62 + 1e-6))][1] for t in times]
    assert got == expected


def test_real_video_seeking_matches_a_straight_pass(shared_dir):
    # 30 fps h264 with B-frames, keyframes every 2 s: sparse times force seeks into GOPs.
    path = shared_dir / "assets" / "videos" / "v_ZNVhz7ctTq0.mp4"
    times = [0.1, 0.5, 4.3, 4.31, 9.0, 13.95, 14.02]
    with VideoDecoder(path, seek_gap=math.inf) as dec:
        straight = [f.copy() for _, f in dec.frames_at(times)]
    with VideoDecoder(path, seek_gap=1.0) as dec:
        seeking = [f for _, f in dec.frames_at(times)]
        assert dec.seeks >= 2 and dec.frames_decoded < 300
    assert all(np.array_equal(a, b) for a, b in zip(straight, seeking))


def test_real_avi_with_packed_b_frames_has_monotonic_times(shared_dir):
    # HMDB clips store DivX packed B-frames: the pts PyAV attaches to frames go backwards; decode times
    # must still advance one frame per 1/30 s.
    path = shared_dir / "assets" / "videos" / "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"
    with VideoDecoder(path, size=(60, 80)) as dec:
        times = [t for t, _ in dec.frames()]
    assert len(times) == 83  # 84 in the header, one of them a placeholder (N-VOP) packet
    assert times == pytest.approx([k / 30 for k in range(83)], abs=1e-6)
