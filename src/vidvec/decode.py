"""Streaming, bounded-memory video decoding with PyAV, addressed by presentation time.

Times in this module are seconds relative to the first frame (``VideoInfo.start_time``). A frame is "on
screen" at time t when it is the last frame whose timestamp is <= t; :meth:`VideoDecoder.frames_at` returns
exactly those frames, decoding the file once in timestamp order, seeking over long gaps, and converting to
RGB only the frames it returns.
"""

from __future__ import annotations

import bisect
import heapq
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Union

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = ["DecodeError", "VideoInfo", "VideoDecoder", "header_duration", "probe"]

# Tolerance when comparing a wanted time with frame timestamps: times computed as i / fps in float must
# still pick frame i even when its pts rounds a hair above. Coarse time bases widen it (see _tolerance).
_EPS = 1e-4

SizeSpec = Union[None, tuple[int, int], Callable[[int, int], tuple[int, int]]]
# Preprocess interpolation names -> swscale's. swscale widens its filters when it shrinks, so these resize
# like PIL's antialiased filters (how close: docs/benchmarks.md).
SWSCALE_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "area": "AREA", "nearest": "POINT"}


class DecodeError(Exception):
    """A video cannot be decoded. The message is a one-line reason without the path (callers add it)."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video. Sizes are as displayed (after rotation)."""

    path: str
    duration: float  # seconds from the first frame to the end of the last one (metadata estimate)
    fps: float  # average frame rate
    width: int
    height: int
    codec: str
    rotation: int  # clockwise degrees (0, 90, 180, 270) the stored picture is turned for display
    num_frames: int | None  # from container metadata; None when unknown
    start_time: float  # timestamp (s) of the first frame; times in this API are relative to it
    has_audio: bool
    # Exact header values, for samplers that reproduce other tools' frame-index arithmetic (PySlowFast).
    frame_rate: tuple[int, int] | None = None  # the rate ``fps`` comes from, as (num, den)
    time_base: tuple[int, int] | None = None  # seconds per timestamp tick, as (num, den)
    stream_duration: int | None = None  # the stream's duration header, in ticks; None when absent
    start_pts: int | None = None  # timestamp (ticks) of the first frame (dts for AVI, as start_time)
    # Frames do not sit on one grid: the header's base rate differs from the average (phones, screen capture).
    variable_rate: bool = False
    # Ticks from the container's start to the first frame: where the ffmpeg command line, which counts from the
    # container's start, places the first frame (2 for an AVI whose first frame is stamped 2/30 s).
    lead_pts: int = 0

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)


def _reason(err: BaseException) -> str:
    """One-line text of an FFmpeg/OS error, without the file name PyAV appends."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


def _check_file(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    if not os.path.exists(p):
        if os.path.islink(p):
            try:
                os.stat(p)
            except OSError as error:  # ELOOP: a symbolic link loop; ENOENT: a link to nothing
                raise DecodeError(f"broken symbolic link: {error.strerror.lower()}") from None
        raise DecodeError("file not found")
    if os.path.isdir(p):
        raise DecodeError("not a file: is a directory")
    if not os.access(p, os.R_OK):
        raise DecodeError("permission denied")
    if os.path.getsize(p) == 0:
        raise DecodeError("empty file (0 bytes)")
    return p


def _open_container(p: str) -> av.container.InputContainer:
    try:
        # metadata_errors='replace': some real files (HMDB-51) carry non-UTF-8 tags that otherwise abort open.
        return av.open(p, mode="r", metadata_errors="replace")
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except (av.error.FFmpegError, OSError) as err:
        raise DecodeError(f"cannot open: {_reason(err)}") from None


def _select_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    attached = av.stream.Disposition.attached_pic
    videos = [s for s in container.streams.video if not (s.disposition & attached)]
    if not videos:
        if container.streams.video:
            raise DecodeError("not a video: only an attached cover picture, no video stream")
        if container.streams.audio:
            raise DecodeError("not a video: no video stream (audio only)")
        raise DecodeError("not a video: no video stream")
    stream = videos[0]
    if stream.codec_context is None:
        # PyAV leaves codec_context unset when FFmpeg has no decoder for the stream's codec id/tag.
        raise DecodeError("unsupported codec: unknown codec tag (no decoder in this FFmpeg build)")
    return stream


class PacketTrack:
    """Which demuxed packets of a stream became good frames. A packet whose frame never comes out (its data
    was damaged, the decoder flagged the frame corrupt, or the file ends inside it) is *lost*: a time it
    should have been on screen at has no decoded frame. Timestamps are in stream ticks (dts for AVI)."""

    def __init__(self, use_dts: bool = False, timestamps: bool = True) -> None:
        self.use_dts = use_dts
        self.timestamps = timestamps  # False: count packets and errors only (audio)
        self.packets = 0  # packets with data
        self.errors = 0  # packets the decoder rejected
        self.corrupt = 0  # frames the decoder flagged corrupt (dropped)
        self._waiting: list[int] = []  # heap: packets not yet matched by a frame
        self._lost: list[int] = []  # sorted

    def packet(self, packet: av.Packet) -> None:
        if packet.size and not packet.is_discard:
            self.packets += 1
            ts = packet.dts if self.use_dts else packet.pts
            if ts is not None and self.timestamps:
                heapq.heappush(self._waiting, int(ts))

    def frame(self, ts: int | None) -> None:
        """A good frame came out: packets before it that produced none are lost (decoders output in
        presentation order)."""
        if ts is None:  # no timestamp to match: it is the oldest waiting packet's frame
            if self._waiting:
                heapq.heappop(self._waiting)
            return
        while self._waiting and self._waiting[0] < ts:
            bisect.insort(self._lost, heapq.heappop(self._waiting))
        if self._waiting and self._waiting[0] == ts:
            heapq.heappop(self._waiting)

    def end(self) -> None:
        """The stream ended: every packet still waiting is lost."""
        while self._waiting:
            bisect.insort(self._lost, heapq.heappop(self._waiting))

    def restart(self) -> None:
        """Decoding starts over elsewhere (a seek): packets demuxed so far will not be matched."""
        self._waiting.clear()

    @property
    def lost(self) -> int:
        return len(self._lost)

    def lost_in(self, after: int, upto: int) -> int:
        """How many lost packets have a timestamp in (after, upto]."""
        return bisect.bisect_right(self._lost, upto) - bisect.bisect_right(self._lost, after)


def decoded_frames(container: av.container.InputContainer, stream, track: PacketTrack | None = None
                   ) -> Iterator[av.VideoFrame | av.AudioFrame]:
    """Decoded frames of ``stream`` (video or audio) from the container's current position; damaged packets
    are skipped (counted in ``track``), a demuxer that gives up mid-file ends the stream with what was decoded."""
    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except av.error.FFmpegError:
            # The demuxer gave up mid-file: drain what the decoder still holds and stop.
            try:
                yield from stream.codec_context.decode(None)
            except av.error.FFmpegError:
                pass
            return
        if track is not None:
            track.packet(packet)
        try:
            frames = packet.decode()
        except av.error.DecoderNotFoundError:
            raise DecodeError(f"unsupported codec: {stream.codec_context.name} (no decoder)") from None
        except av.error.FFmpegError:
            if track is not None:
                track.errors += 1
            continue  # a damaged packet: skip it, later keyframes decode fine
        yield from frames


def good_frames(container: av.container.InputContainer, stream, track: PacketTrack) -> Iterator[av.VideoFrame]:
    """The video frames of :func:`decoded_frames` that can be trusted, each matched in ``track``: frames the
    decoder flags corrupt (error concealment) are dropped, and so is a frame whose timestamp goes backwards
    after damaged data (the decoder lost its place). At the end, packets that gave no frame are lost."""
    last = None
    for frame in decoded_frames(container, stream, track):
        ts = frame.dts if track.use_dts else frame.pts
        if frame.is_corrupt or (track.errors and ts is not None and last is not None and ts < last):
            track.corrupt += 1
            continue
        track.frame(ts)
        last = ts if ts is not None else last
        yield frame
    track.end()


def _rotation_cw(frame: av.VideoFrame) -> int:
    # PyAV's VideoFrame.rotation is the display-matrix angle counter-clockwise in [-180, 180]; report the
    # clockwise angle (the convention of the legacy 'rotate' tag: an upright phone video says 90).
    try:
        ccw = frame.rotation
    except Exception:  # a malformed matrix must not make the video unreadable
        return 0
    if ccw is None or (isinstance(ccw, float) and math.isnan(ccw)):
        return 0
    return int(round(-float(ccw) / 90.0)) * 90 % 360


def _float_or_none(x) -> float | None:
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) and v > 0 else None


class _Opened:
    """An open container positioned after its first decodable frame, with everything probe reports."""

    def __init__(self, path: str | os.PathLike, threads: int | None) -> None:
        p = _check_file(path)
        self.container = _open_container(p)
        try:
            self.stream = _select_stream(self.container)
            if threads is not None:
                # Frame+slice threading; thread_count 0 lets FFmpeg pick one per core.
                self.stream.thread_type = "AUTO"
                self.stream.codec_context.thread_count = threads
            # AVI has no presentation timestamps: the demuxer invents pts from packet order, which is wrong for
            # packed-bitstream B-frames (non-monotonic on the HMDB clips). Its dts are the frame clock there.
            self.use_dts = self.container.format.name == "avi"
            self.track = PacketTrack(self.use_dts)
            self.raw = good_frames(self.container, self.stream, self.track)
            try:
                self.first = next(self.raw, None)
            except av.error.FFmpegError as err:
                raise DecodeError(f"cannot decode: {_reason(err)}") from None
            if self.first is None:
                raise DecodeError("no decodable frames")
            self.info = self._info(p)
        except BaseException:
            self.container.close()
            raise

    def _info(self, p: str) -> VideoInfo:
        s, first = self.stream, self.first
        tb = s.time_base or Fraction(1, 1000000)
        ts = first.dts if self.use_dts else first.pts
        if ts is None:
            ts = first.pts if first.pts is not None else (first.dts if first.dts is not None else 0)
        self.start_ts = int(ts)
        self.time_base = Fraction(tb)
        self.rate: Fraction | None = None
        for r in (s.average_rate, s.guessed_rate, s.base_rate):
            if _float_or_none(r):
                self.rate = Fraction(r)
                break
        fps = float(self.rate) if self.rate else None
        num_frames = int(s.frames) if s.frames and s.frames > 0 else None
        # Duration: end of stream per metadata minus the first frame's pts (pts domain, like the metadata).
        first_pts = first.pts if first.pts is not None else self.start_ts
        duration = None
        if s.duration and s.duration > 0:
            end = (s.start_time if s.start_time is not None else first_pts) + s.duration
            duration = float((end - first_pts) * tb)
        elif self.container.duration and self.container.duration > 0:
            c_start = (self.container.start_time or 0) / av.time_base
            duration = c_start + self.container.duration / av.time_base - float(first_pts * tb)
        if fps is None and num_frames and duration:
            fps = num_frames / duration
        if fps is None:
            fps = 25.0  # nothing in the file says; FFmpeg's own default guess
        if num_frames:
            # Some muxers give the last sample a 1-tick duration (v_GGSY1Qvo990.mp4: 18.04 s for 355 frames
            # at 19.62 fps); frames / average rate is never shorter than the true span.
            duration = max(duration or 0.0, num_frames / fps)
        tail = _last_packet_end(p, s.index, self.use_dts)
        if tail is not None:
            # Metadata can end early (variable frame rate with B-frames, broken muxers): the last packets know.
            duration = max(duration or 0.0, float((tail - first_pts) * tb))
        if duration is None or duration <= 0:
            duration = 1 / fps
        self.fps = fps
        rotation = _rotation_cw(first)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(
            path=p,
            duration=duration,
            fps=fps,
            width=int(w),
            height=int(h),
            codec=s.codec_context.name,
            rotation=rotation,
            num_frames=num_frames,
            start_time=float(self.start_ts * tb),
            has_audio=len(self.container.streams.audio) > 0,
            frame_rate=(self.rate.numerator, self.rate.denominator) if self.rate else None,
            time_base=(self.time_base.numerator, self.time_base.denominator),
            stream_duration=int(s.duration) if s.duration and s.duration > 0 else None,
            start_pts=self.start_ts,
            variable_rate=_variable_rate(s),
            lead_pts=self.start_ts - round(Fraction(self.container.start_time or 0, av.time_base) / tb),
        )


def _variable_rate(stream) -> bool:
    average, base = _float_or_none(stream.average_rate), _float_or_none(stream.base_rate)
    return bool(average and base and abs(base / average - 1) > 1e-3)


def _last_packet_end(path: str, index: int, use_dts: bool) -> int | None:
    """End (in stream ticks) of the latest packet of the video stream, demuxing only from the last keyframe."""
    try:
        with av.open(path, metadata_errors="replace") as container:
            stream = container.streams[index]
            end = None
            if stream.duration and stream.duration > 0:
                container.seek((stream.start_time or 0) + stream.duration, stream=stream, backward=True)
            for packet in container.demux(stream):
                ts = packet.dts if use_dts else packet.pts
                if ts is None:
                    continue
                packet_end = int(ts) + max(int(packet.duration or 0), 1)
                end = packet_end if end is None else max(end, packet_end)
            return end
    except (av.error.FFmpegError, OSError, ValueError):
        return None


def header_duration(path: str | os.PathLike) -> float:
    """A video's duration in seconds as its container header states it, decoding nothing (for planning: about a
    millisecond a file): the video stream's duration, else the container's, else frames / rate. DecodeError with
    a one-line reason when the file cannot be opened, has no video stream or states no duration."""
    container = _open_container(_check_file(path))
    try:
        stream = _select_stream(container)
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration and container.duration > 0:
            return container.duration / av.time_base
        if stream.frames and _float_or_none(stream.average_rate):
            return stream.frames / float(stream.average_rate)
        raise DecodeError("the header states no duration")
    finally:
        container.close()


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's metadata, decoding only its first frame (to learn rotation and the true start).
    Raises DecodeError with a one-line reason when the file is not a decodable video."""
    opened = _Opened(path, threads=None)
    opened.container.close()
    return opened.info


def _target_size(size: SizeSpec, height: int, width: int) -> tuple[int, int]:
    if size is None:
        return height, width
    h, w = size(height, width) if callable(size) else size
    h, w = int(h), int(w)
    if h <= 0 or w <= 0:
        raise ValueError(f"output size must be positive, got {(h, w)}")
    return h, w


class _ScaleFilter:
    """FFmpeg's ``scale`` filter, then rgb24, on one frame at a time: what ``ffmpeg -vf scale=W:H:flags=F
    -pix_fmt rgb24`` makes of it (swscale set up by the filter, which also reads the frame's chroma siting)."""

    def __init__(self, frame: av.VideoFrame, width: int, height: int, interpolation: str) -> None:
        self._graph = av.filter.Graph()
        self._source = self._graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                              time_base=Fraction(1, 1))
        chain = [self._source, self._graph.add("scale", f"w={width}:h={height}:flags={interpolation}"),
                 self._graph.add("format", "rgb24"), self._graph.add("buffersink")]
        for upstream, downstream in zip(chain, chain[1:]):
            upstream.link_to(downstream)
        self._sink = chain[-1]
        self._graph.configure()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        self._source.push(frame)
        return self._sink.pull().to_ndarray()


class VideoDecoder:
    """Decode one video by presentation time. Use as a context manager or call :meth:`close`.

    size: None (displayed size), (height, width), or a callable (h, w) -> (h, w) applied to the displayed
    size. Frames are resized by swscale before the YUV -> RGB conversion, so no full-size copy is made.
    A list of sizes gives each frame at every size (several models fed from one decoding pass): ``frames_at``
    then yields a tuple of arrays, one per size.
    interpolation: swscale's filter for the resize (``bilinear``, ``bicubic``, ``area``, ``nearest``; or
    ``scale:NAME``, resized by FFmpeg's scale filter with that flag), one for all sizes or a list with one per size.
    threads: decoder threads (0 = one per core). seek_gap: seconds ahead beyond which frames_at seeks to a
    keyframe instead of decoding through.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: SizeSpec = None,
        threads: int = 0,
        seek_gap: float = 3.0,
        interpolation: str | list[str] = "bilinear",
    ) -> None:
        self._path = path
        self._threads = threads
        self.seek_gap = float(seek_gap)
        self._adopt(_Opened(path, threads))
        self.info: VideoInfo = self._opened.info
        self._several = isinstance(size, list)
        sizes = [_target_size(s, self.info.height, self.info.width) for s in (size if self._several else [size])]
        if not sizes:
            raise ValueError("give at least one output size")
        self.out_height, self.out_width = sizes[0]
        filters = interpolation if isinstance(interpolation, list) else [interpolation] * len(sizes)
        if len(filters) != len(sizes) or any(f.removeprefix("scale:") not in SWSCALE_FILTERS for f in filters):
            raise ValueError(f"interpolation must be one of {sorted(SWSCALE_FILTERS)} (or scale:NAME, FFmpeg's "
                             f"scale filter) per output size, got {interpolation!r}")
        # np.rot90 turns counter-clockwise for positive k; the info rotation is clockwise.
        self._rot_k = (-self.info.rotation // 90) % 4
        # What swscale produces per output, before rotation: (width, height, filter). Equal ones convert once.
        self._conv = [((h, w) if self._rot_k % 2 else (w, h))
                      + (f if f.startswith("scale:") else SWSCALE_FILTERS[f],) for (h, w), f in zip(sizes, filters)]
        # Matroska stores milliseconds, so frame 2 at 30 fps sits at 0.067 s, 0.33 ms after 2/30: when frame
        # times are not whole ticks they were rounded, so allow half a tick (if small next to a frame).
        # Whole ticks per frame (mp4 1/15360 at 30 fps, 1/981 at 19.62 fps, AVI 1/30) are exact: no widening.
        self._tolerance = _EPS
        rate = self._opened.rate
        if rate:
            ticks_per_frame = 1 / (rate * self._tb)
            half_tick = float(self._tb) / 2
            if ticks_per_frame.denominator != 1 and half_tick <= 0.1 / float(rate):
                self._tolerance = max(_EPS, 1.01 * half_tick)
        # Reformatters are kept per output so their SwsContext stays cached: frame.to_ndarray(width=...)
        # builds a new one per call, which costs more than the conversion itself (docs/benchmarks.md).
        self._reformatters = {conv: (VideoReformatter(), VideoReformatter()) for conv in self._conv}
        self._scale_filters: dict[tuple, _ScaleFilter] = {}  # per output and input geometry
        self._scale_in_yuv = True
        # Spans (start, end; end None: to the end of the data) where frames_at found no decoded frame.
        self.gaps: list[tuple[float, float | None]] = []
        self.data_end: float | None = None  # where the decoded data ends (s), once the end was reached
        self.frames_decoded = 1  # the first frame, decoded while opening
        self.frames_converted = 0
        self.seeks = 0

    # -- state -----------------------------------------------------------------------------------------
    def _adopt(self, opened: _Opened) -> None:
        self._opened = opened
        self._container = opened.container
        self._stream = opened.stream
        self._raw = opened.raw
        self._track = opened.track
        self._tb = opened.time_base
        self._tick_seconds = float(opened.time_base)
        self._start_ts = opened.start_ts
        self._use_dts = opened.use_dts
        self._fps = opened.fps
        self._last_t: float | None = 0.0
        self._prev: tuple[float, av.VideoFrame] | None = None  # last frame at or before the wanted time
        self._prev_rgb: dict[tuple[int, int, str], np.ndarray] = {}  # the current frame per output
        self._pending: tuple[float, av.VideoFrame] | None = (0.0, opened.first)  # read ahead, not yet due
        self._eof = False
        self._fresh = True  # nothing consumed yet: frames() can start here without reopening

    def _reset_after_seek(self) -> None:
        self._track.restart()
        self._raw = good_frames(self._container, self._stream, self._track)
        self._prev = None
        self._prev_rgb = {}
        self._pending = None
        self._eof = False
        self._last_t = None

    def _restart(self) -> None:
        """Back to the first frame by reopening: exact, and cheap next to decoding."""
        self._container.close()
        self._adopt(_Opened(self._path, self._threads))
        self.frames_decoded += 1
        self.seeks += 1

    def _frame_time(self, frame: av.VideoFrame) -> float:
        ts = self._timestamp(frame)
        if ts is None:
            t = (self._last_t if self._last_t is not None else 0.0) + 1.0 / self._fps
        else:
            t = float((ts - self._start_ts) * self._tb)
            # Output order is display order, so a timestamp going backwards is broken metadata, not a
            # reordering; continue the clock at the nominal rate instead of jumping back.
            if self._last_t is not None and t < self._last_t:
                t = self._last_t + 1.0 / self._fps
        self._last_t = t
        return t

    def _next(self) -> tuple[float, av.VideoFrame] | None:
        frame = next(self._raw, None)
        if frame is None:
            return None
        self.frames_decoded += 1
        return self._frame_time(frame), frame

    def _position(self) -> float | None:
        if self._pending is not None:
            return self._pending[0]
        if self._prev is not None:
            return self._prev[0]
        return None

    def _seek_helps(self, target: float, pos: float) -> bool:
        """False when the index says the keyframe before ``target`` is not after ``pos`` (seeking would
        decode the same frames again)."""
        entries = self._stream.index_entries
        try:
            if entries is None or len(entries) == 0:
                return True
            ts = self._start_ts + int(math.floor(target / self._tb))
            i = entries.search_timestamp(ts, backward=True)
            if i < 0:
                return True
            key_t = float((entries[i].timestamp - self._start_ts) * self._tb)
        except Exception:  # index access is an optimisation only
            return True
        return key_t > pos + 1.0 / self._fps

    def _seek(self, target: float) -> None:
        """Position so that the next decoded frame is at or before ``target`` (a keyframe)."""
        back = 0.0
        for _ in range(8):
            seek_t = target - back
            if seek_t <= 0:
                break
            ts = self._start_ts + int(math.floor(seek_t / self._tb))
            try:
                self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                break
            self.seeks += 1
            self._reset_after_seek()
            first = self._next()
            if first is not None and first[0] <= target:
                self._pending = first
                return
            # Landed after the target (or past the end): the demuxer's keyframe guess was too late.
            back = max(2 * back, self.seek_gap, 1.0) + (first[0] - target if first is not None else 0.0)
        self._restart()

    # -- public ----------------------------------------------------------------------------------------
    def _advance(self, target: float) -> None:
        """Make ``_prev`` the frame on screen at ``target``."""
        self._fresh = False
        held = self._prev if self._prev is not None else self._pending
        if held is not None and held[0] > target and held[0] > 0:
            self._seek(target)  # a new pass that starts earlier than where we are
        pos = self._position()
        if pos is not None and target - pos > self.seek_gap and not self._eof and self._seek_helps(target, pos):
            self._seek(target)
        while True:
            if self._pending is None:
                if self._eof:
                    break
                self._pending = self._next()
                if self._pending is None:
                    self._at_end()
                    break
            t = self._pending[0]
            if t <= target or self._prev is None:
                self._prev, self._pending = self._pending, None
                self._prev_rgb = {}
                if t > target:
                    break  # before the first frame: the first frame is on screen
            else:
                break

    def _rgb(self, needed: Sequence[int] | None = None) -> np.ndarray | tuple[np.ndarray | None, ...]:
        """The current frame at the output size (a tuple over the sizes when several were asked for; sizes
        not in ``needed`` are None). Repeated frames are the same array objects."""
        arrays = tuple(self._rgb_at(conv) if needed is None or k in needed else None
                       for k, conv in enumerate(self._conv))
        return arrays if self._several else arrays[0]

    def _rgb_at(self, conv: tuple[int, int, str]) -> np.ndarray:
        if conv not in self._prev_rgb:
            assert self._prev is not None
            arr = self._to_rgb(self._prev[1], conv)
            if self._rot_k:
                arr = np.rot90(arr, self._rot_k)
            # PyAV hands out a view of padded rows for widths whose line size is not aligned; callers stack
            # and hand these to torch, which wants plain contiguous arrays (copies only when needed).
            arr = np.ascontiguousarray(arr)
            self._prev_rgb[conv] = arr
            self.frames_converted += 1
        return self._prev_rgb[conv]

    def _to_rgb(self, frame: av.VideoFrame, conv: tuple[int, int, str]) -> np.ndarray:
        w, h, interpolation = conv
        if interpolation.startswith("scale:"):
            key = (conv, frame.width, frame.height, frame.format.name)
            if key not in self._scale_filters:
                self._scale_filters[key] = _ScaleFilter(frame, w, h, interpolation.removeprefix("scale:"))
            return self._scale_filters[key](frame)
        scaler, reformatter = self._reformatters[conv]
        if (frame.width, frame.height) != (w, h) and self._scale_in_yuv:
            # Scaling in the decoder's own (planar YUV) format, then converting the small picture, is faster
            # than swscale's scaled path straight to packed rgb24 and within half a level of it on average
            # (docs/benchmarks.md).
            try:
                small = scaler.reformat(frame, format=frame.format.name, width=w, height=h,
                                        interpolation=interpolation)
                return reformatter.reformat(small, format="rgb24").to_ndarray()
            except (av.error.FFmpegError, ValueError):
                self._scale_in_yuv = False  # a pixel format swscale cannot output: use the direct path
        return reformatter.reformat(frame, format="rgb24", width=w, height=h,
                                    interpolation=interpolation).to_ndarray()

    def frames_at(self, times: Sequence[float], needed: Sequence[Sequence[int]] | None = None
                  ) -> Iterator[tuple[int, np.ndarray | tuple[np.ndarray | None, ...] | None]]:
        """Yield (i, frame) for each ascending time (seconds from the first frame): the (H, W, 3) uint8 RGB
        frame on screen at times[i] (a tuple of them, one per size, when a list of sizes was given; with
        ``needed``, only the sizes needed[i] lists are converted, the others are None).

        frame is None when no decoded frame is on screen at that time: the frame that should be was lost
        (damaged data), or the time is past the end of the data (more than one frame after the last decoded
        frame ends; a header can claim more than the file holds); ``gaps`` lists the spans without frames.
        Repeated frames are the same array object; a time before the first frame gets the first frame."""
        wanted = [float(t) for t in times]
        if any(b < a for a, b in zip(wanted, wanted[1:])):
            raise ValueError("times must be in ascending order")
        if self._container is None:
            raise ValueError("decoder is closed")
        eps = self._tolerance
        for i, t in enumerate(wanted):
            self._advance(t + eps)
            if self._missing(t):
                yield i, None
            else:
                yield i, self._rgb(None if needed is None else needed[i])

    def _missing(self, t: float) -> bool:
        """Whether no decoded frame is on screen at ``t`` (see frames_at); records the span in ``gaps``.

        The held frame (the last one at or before t) stands for t within its own duration. Past that it
        stands for t only if no packet between it and t was lost and, at the end of the stream, t is less
        than one frame after the data's end (a header's duration rounded up)."""
        assert self._prev is not None
        frame = self._prev[1]
        nominal = 1.0 / self._fps
        shown_until = self._shown_until(self._prev)
        if t < shown_until - self._tolerance:
            return False
        held_ts = self._timestamp(frame)
        lost = 0 if held_ts is None else self._track.lost_in(
            held_ts, self._start_ts + math.floor((t + self._tolerance) / self._tb))
        ended = self._pending is None and self._eof
        if not lost and not (ended and t >= shown_until + nominal - self._tolerance):
            return False
        gap = (shown_until, None if ended else self._pending[0])
        if not self.gaps or self.gaps[-1] != gap:
            self.gaps.append(gap)
        return True

    def _shown_until(self, held: tuple[float, av.VideoFrame]) -> float:
        """When a decoded frame's own display ends: its duration, at least one nominal frame."""
        return held[0] + max(1.0 / self._fps, self._seconds(held[1].duration))

    def _at_end(self) -> None:
        self._eof = True
        if self._prev is not None:
            self.data_end = self._shown_until(self._prev)

    def _timestamp(self, frame: av.VideoFrame) -> int | None:
        return frame.dts if self._use_dts else frame.pts

    def _seconds(self, ticks: int | None) -> float:
        return ticks * self._tick_seconds if ticks else 0.0

    @property
    def damage(self) -> dict[str, int]:
        """Packets with data, packets the decoder rejected, frames it flagged corrupt, and packets that gave
        no good frame, in the passes so far."""
        return {"packets": self._track.packets, "rejected": self._track.errors, "corrupt": self._track.corrupt,
                "lost": self._track.lost}

    def frame_times(self) -> list[float]:
        """The presentation time of every frame the file holds (seconds from the first frame, ascending), read
        from its packets without decoding them: the times at which :meth:`frames_at` gives each frame once."""
        times = set()
        with av.open(os.fspath(self._path), metadata_errors="replace") as container:
            for packet in container.demux(container.streams[self._stream.index]):
                ts = packet.dts if self._use_dts else packet.pts
                if packet.size and not packet.is_discard and ts is not None and ts >= self._start_ts:
                    times.add(int(ts))
        return [float((ts - self._start_ts) * self._tb) for ts in sorted(times)]

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Yield (time, frame) for every frame from the start, in timestamp order."""
        if self._container is None:
            raise ValueError("decoder is closed")
        if not self._fresh:
            self._restart()
        self._fresh = False
        while True:
            item, self._pending = (self._pending or self._next()), None
            if item is None:
                self._at_end()
                return
            self._prev, self._prev_rgb = item, {}
            yield item[0], self._rgb()

    def close(self) -> None:
        """Release the file and decoder."""
        if self._container is not None:
            self._container.close()
            self._container = None  # type: ignore[assignment]
            self._prev = self._pending = None
            self._prev_rgb = {}

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
