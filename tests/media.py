"""Test helpers that write small videos (and broken files) with PyAV.

Every helper writes into a path the caller gives (normally under pytest's ``tmp_path``) and returns it.
Frames produced by :func:`make_video` carry their index as a solid colour, so a test can decode a frame and
recover which source frame it came from with :func:`frame_index`, robustly against lossy compression.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np

# Index colours: three base-16 digits, one per RGB channel. A step of 16 tolerates +-7 levels of codec error
# (measured: <= 3 for libx264 and mpeg4 at these settings) and covers 4096 distinct frame indices.
_STEP = 16
_BASE = 16
MAX_INDEX = _BASE**3 - 1


def index_color(i: int) -> tuple[int, int, int]:
    """RGB colour that encodes frame index ``i`` (0 <= i <= MAX_INDEX)."""
    if not 0 <= i <= MAX_INDEX:
        raise ValueError(f"frame index {i} out of range 0..{MAX_INDEX}")
    digits = (i % _BASE, (i // _BASE) % _BASE, (i // _BASE**2) % _BASE)
    return tuple(_STEP // 2 + _STEP * d for d in digits)  # type: ignore[return-value]


def frame_index(rgb: np.ndarray) -> int:
    """Recover the index :func:`index_color` encoded in a decoded (H, W, 3) frame (centre region only,
    so corner markers and scaling borders do not disturb it)."""
    h, w = rgb.shape[:2]
    centre = rgb[h // 4 : h - h // 4 or h, w // 4 : w - w // 4 or w].reshape(-1, 3).astype(np.float64)
    means = centre.mean(axis=0)
    digits = [int(np.clip(round((m - _STEP // 2) / _STEP), 0, _BASE - 1)) for m in means]
    return digits[0] + digits[1] * _BASE + digits[2] * _BASE**2


def _frame_rgb(i: int, width: int, height: int, pattern: str) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = index_color(i)
    if pattern == "marker":
        # White square in the stored top-left corner: tells a test where that corner ends up after rotation.
        m = max(2, min(width, height) // 4)
        img[:m, :m] = 255
    elif pattern != "index":
        raise ValueError(f"unknown pattern {pattern!r} (use 'index' or 'marker')")
    return img


def marker_corner(rgb: np.ndarray) -> str:
    """Which corner ('top-left', 'top-right', 'bottom-left', 'bottom-right') holds the white marker."""
    h, w = rgb.shape[:2]
    m = max(1, min(h, w) // 8)
    corners = {
        "top-left": rgb[:m, :m],
        "top-right": rgb[:m, w - m :],
        "bottom-left": rgb[h - m :, :m],
        "bottom-right": rgb[h - m :, w - m :],
    }
    return max(corners, key=lambda k: float(corners[k].mean()))


def _rate(fps: float) -> Fraction:
    # Fraction(str()) keeps 19.62 as 981/50 and 29.97 as 2997/100 instead of a binary float approximation.
    return Fraction(str(fps)).limit_denominator(100000)


def _add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    rate: Fraction,
    size: tuple[int, int],
    gop: int | None,
) -> av.video.stream.VideoStream:
    options: dict[str, str] = {}
    if codec == "libx264":
        # scenecut=0: solid-colour frames would otherwise all be "scene cuts" and become keyframes, which
        # would hide seeking behaviour; veryfast keeps B-frames (pts reordering like real files).
        options = {"preset": "veryfast", "x264-params": "scenecut=0"}
    elif codec == "mpeg4":
        options = {"sc_threshold": "1000000000"}
    stream = container.add_stream(codec, rate=rate, options=options)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    if gop is not None:
        stream.codec_context.gop_size = gop
    if codec == "mpeg4":
        # Low quantisers keep the index colours within tolerance.
        stream.codec_context.qmin = 1
        stream.codec_context.qmax = 4
    return stream


def _encode_all(container, stream, frames) -> None:
    for frame in frames:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def make_video(
    path: str | os.PathLike,
    frames: int = 60,
    fps: float = 30,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pattern: str = "index",
    gop: int | None = None,
    rotation: int | None = None,
    display_matrix: Sequence[int] | None = None,
    faststart: bool = False,
) -> Path:
    """Write a constant-frame-rate video of ``frames`` frames; frame i is filled with ``index_color(i)``.

    size is (width, height). pattern: 'index' (solid colour) or 'marker' (plus a white top-left square).
    gop: keyframe interval in frames (default: 2 seconds). rotation: clockwise display rotation in degrees
    written as display-matrix side data (the convention of the legacy 'rotate' tag and of phone videos);
    display_matrix: an explicit 9-int FFmpeg display matrix instead. faststart: mp4 with its index (moov)
    before the media data, as web videos are: the header then describes every frame even when the file is
    cut short.
    """
    path = Path(path)
    rate = _rate(fps)
    width, height = size
    if gop is None:
        gop = max(1, round(2 * float(rate)))
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None) as container:
        stream = _add_video_stream(container, codec, rate, size, gop)
        if display_matrix is not None:
            stream.set_display_matrix(list(display_matrix))
        elif rotation:
            # PyAV's set_display_rotation is counter-clockwise (as VideoFrame.rotation reads it back).
            stream.set_display_rotation(-rotation)
        _encode_all(
            container,
            stream,
            (av.VideoFrame.from_ndarray(_frame_rgb(i, width, height, pattern), format="rgb24") for i in range(frames)),
        )
    return path


def make_rotated_video(
    path: str | os.PathLike,
    rotation: int = 90,
    frames: int = 10,
    size: tuple[int, int] = (64, 32),
    codec: str = "libx264",
) -> Path:
    """A video stored landscape (size=(W, H)) with display-matrix metadata rotating it ``rotation`` degrees
    clockwise, and a white marker in the stored top-left corner (like a phone recording held upright)."""
    return make_video(path, frames=frames, size=size, codec=codec, pattern="marker", rotation=rotation)


# FFmpeg display matrix of a phone video recorded upright (tkhd matrix of iPhone portrait recordings):
# a 90 degree clockwise rotation for display; ffplay and ffmpeg's autorotate apply transpose=clock.
PHONE_PORTRAIT_MATRIX = (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)


def make_vfr_video(
    path: str | os.PathLike,
    pts_ms: Sequence[int] = (0, 40, 50, 200, 210, 220, 500, 533, 900, 1000, 1010, 1400),
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
) -> tuple[Path, list[float]]:
    """Variable frame rate video (time base 1/1000); frame i is shown from pts_ms[i].
    Returns (path, presentation times in seconds relative to the first frame)."""
    path = Path(path)
    tb = Fraction(1, 1000)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = _add_video_stream(container, codec, Fraction(30), size, gop=None)
        stream.codec_context.time_base = tb
        stream.time_base = tb

        def frames():
            for i, pts in enumerate(pts_ms):
                frame = av.VideoFrame.from_ndarray(_frame_rgb(i, width, height, "index"), format="rgb24")
                frame.pts = int(pts)
                frame.time_base = tb
                yield frame

        _encode_all(container, stream, frames())
    return path, [(p - pts_ms[0]) / 1000 for p in pts_ms]


def make_one_frame(path: str | os.PathLike, codec: str = "libx264", fps: float = 30) -> Path:
    """A video with exactly one frame."""
    return make_video(path, frames=1, fps=fps, codec=codec)


def make_audio_only(path: str | os.PathLike, seconds: float = 1.0, rate: int = 44100) -> Path:
    """An AAC-in-mp4 (or whatever the suffix says) file with a sine tone and no video stream."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        chunk = 1024
        n = int(seconds * rate)
        t = np.arange(n) / rate
        samples = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)

        def frames():
            for start in range(0, n, chunk):
                block = samples[start : start + chunk]
                frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                yield frame

        _encode_all(container, stream, frames())
    return path


def make_zero_byte(path: str | os.PathLike) -> Path:
    """An empty file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_text_as_mp4(path: str | os.PathLike) -> Path:
    """A plain text file with a video suffix."""
    path = Path(path)
    path.write_text("this is not a video, just some text pretending to be one\n" * 20)
    return path


def make_truncated_mp4(path: str | os.PathLike, keep: float = 0.5) -> Path:
    """A real mp4 cut to ``keep`` of its size. PyAV writes the moov atom at the end, so the cut file has
    media data but no index and cannot be opened."""
    path = Path(path)
    make_video(path, frames=60)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_unsupported_codec(path: str | os.PathLike) -> Path:
    """An AVI whose video stream has a FourCC no FFmpeg decoder knows ('ZZZZ'): PyAV opens the container but
    the stream has no codec context (no decoder)."""
    path = Path(path)
    if path.suffix.lower() != ".avi":
        raise ValueError("make_unsupported_codec writes AVI; give a .avi path")
    make_video(path, frames=5, codec="mpeg4")
    data = path.read_bytes()
    # mpeg4 in AVI is tagged FMP4 in the stream header (fccHandler) and in BITMAPINFOHEADER (biCompression).
    if data.count(b"FMP4") != 2:
        raise RuntimeError("unexpected AVI layout: FourCC FMP4 not found exactly twice")
    path.write_bytes(data.replace(b"FMP4", b"ZZZZ"))
    return path


def _packet_payloads(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of each video packet's payload inside the file (AVI or mp4)."""
    data = path.read_bytes()
    spans = []
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size == 0 or packet.pos is None or packet.pos < 0:
                continue
            # Make sure pos really is the payload offset for this container before overwriting anything.
            if data[packet.pos : packet.pos + packet.size] != bytes(packet):
                raise RuntimeError(f"packet at {packet.pos} is not stored contiguously; use .mp4 or .avi")
            spans.append((packet.pos, packet.size))
    return spans


def make_undecodable(path: str | os.PathLike, frames: int = 10) -> Path:
    """An h264 mp4 whose container is intact but whose every packet payload is zeroed: it opens and
    reports a video stream, but no frame decodes."""
    path = Path(path)
    make_video(path, frames=frames, codec="libx264")
    data = bytearray(path.read_bytes())
    for start, size in _packet_payloads(path):
        data[start : start + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


def make_corrupt_middle(path: str | os.PathLike, frames: int = 90, bad: Sequence[int] = (30, 31, 45, 60)) -> Path:
    """An mpeg4 AVI (keyframe every 10 frames) whose packets ``bad`` have random payloads: decoding should
    skip or conceal them and go on."""
    path = Path(path)
    make_video(path, frames=frames, codec="mpeg4", gop=10)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    spans = _packet_payloads(path)
    for k in bad:
        start, size = spans[k]
        data[start : start + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def cut_short(path: str | os.PathLike, keep: float) -> Path:
    """Keep only the first ``keep`` fraction of a file's bytes (``head -c``), in place."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def scramble(path: str | os.PathLike, start: float, end: float, seed: int = 1) -> Path:
    """Overwrite the bytes between fractions ``start`` and ``end`` of a file with random bytes, in place."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def remux_shifted(src: str | os.PathLike, dst: str | os.PathLike, shift: float, start: float | None = None) -> Path:
    """Copy a video's packets into a new mp4 with every timestamp moved by ``shift`` seconds, like
    ``ffmpeg -itsoffset SHIFT -i SRC -c copy DST``; with ``start``, only from the keyframe at or before it, like
    ``ffmpeg -ss START -i SRC -c copy DST`` (the frames before START get negative times and an edit list hides
    them). Either way the header still counts the frames it no longer shows."""
    dst = Path(dst)
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        stream = source.streams.video[0]
        target = out.add_stream_from_template(stream)
        packets = [p for p in source.demux(stream) if p.dts is not None]
        if start is not None:
            key = max(p.dts for p in packets if p.is_keyframe and p.pts * stream.time_base <= start)
            packets = [p for p in packets if p.dts >= key]
        ticks = int(round(shift / stream.time_base))
        for packet in packets:
            packet.pts += ticks
            packet.dts += ticks
            packet.stream = target
            out.mux(packet)
    return dst


def ffmpeg_fps_filter(num_frames: int, ticks: int, time_base: Fraction, rate: str, last: int | None = None
                      ) -> list[int]:
    """Run FFmpeg's own fps filter on tiny grey frames that carry their index; which index each output
    frame shows. Each frame lasts ``ticks`` (the last one ``last`` when given: some muxers give it 1 tick),
    and the input ends where the last frame does (as ffmpeg.c)."""
    graph = av.filter.Graph()
    source = graph.add_buffer(width=2, height=2, format="gray", time_base=time_base)
    fps = graph.add("fps", fps=rate)
    sink = graph.add("buffersink")
    source.link_to(fps)
    fps.link_to(sink)
    graph.configure()
    shown: list[int] = []

    def drain() -> None:
        while True:
            try:
                pixels = sink.pull().to_ndarray()
            except (av.BlockingIOError, av.EOFError):
                return
            shown.append(int(pixels[0, 0]) * 256 + int(pixels[0, 1]))

    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(np.array([[i // 256, i % 256], [0, 0]], np.uint8), format="gray")
        frame.pts, frame.time_base = i * ticks, time_base
        frame.duration = last if last is not None and i == num_frames - 1 else ticks
        source.push(frame)
        drain()
    source.push(None)
    drain()
    return shown
