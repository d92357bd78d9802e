"""Which frames each clip needs: pure arithmetic on a video's timing, no I/O.

A `SamplingSpec` says how a model wants to see a video; `plan` turns it plus a video's
duration into clips, each a list of sample times in seconds. The decoder later returns,
for each sample time, the frame on screen at that time (presentation timestamps, so
variable frame rate videos sample correctly).

Besides vidvec's own time-grid sampling (``rule="uniform"``) two rules reproduce PySlowFast's test-time
frame choice exactly (see :mod:`vidvec.models.pyslowfast.preprocessing`): ``"pyslowfast"`` (Kinetics-style
datasets: clips picked by frame index from the container's frame count and duration header) and ``"ssv2"``
(Something-Something v2: frames extracted with ``ffmpeg -r 30``, one frame per segment). They work on frame
indices and turn each chosen frame i into a sample time inside that frame (``(i + 0.5) / fps``), which the
decoder maps back to exactly frame i.

``rule="video_features"`` reproduces v-iashin/video_features the same way: its frame choice (every frame,
or the video re-encoded with ffmpeg's ``fps`` filter), its stacks (incomplete last stack dropped) and its
``timestamps_ms`` (``ClipPlan.stamp``).

``rule="hero"`` reproduces the SlowFast clips of HERO's feature extractor
(linjieli222/HERO_Video_Feature_Extractor): the video re-encoded to a whole frame rate with ffmpeg's ``fps``
filter, cut into fixed-length chunks, a short tail padded the way HERO pads its frame tensor, and one clip
taken from each chunk.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from typing import Any, Literal, NamedTuple, Sequence, get_args

import numpy as np

Kind = Literal["frames", "windows", "views"]
Rule = Literal["uniform", "pyslowfast", "pyslowfast_offset", "ssv2", "charades", "video_features", "hero"]
_RULES = get_args(Rule)
_EPS = 1e-6
# Bounds on what a spec may ask, so that a typo cannot make a worker plan billions of samples: no video has
# more frames per second than MAX_FPS, a clip or a view count beyond these would not fit in memory, and a
# sampling rate may repeat each of a video's frames at most MAX_REPEAT times (a 10 fps video at 15 fps is
# fine; --fps 1e9 is not). Frame sampling never repeats a frame: it takes at most every frame.
MAX_FPS = 1000.0
MAX_CLIP_LEN = 4096
MAX_VIEWS = 1000
MAX_REPEAT = 10
# Fields added after the first release: to_dict() lists them only when they differ from their defaults, so the
# settings hash of a spec that does not use them is what it was before they existed.
_NEW_FIELDS = ("rule", "sampling_rate", "backpad_last")


@dataclass(frozen=True)
class SamplingSpec:
    """How clips are cut from a video. Frozen and hashable: it is part of a run's settings hash.

    - ``frames``: one frame per clip, at ``fps`` (the video's own rate when None).
    - ``windows``: ``clip_len`` frames at ``fps``, a new clip every ``stride`` frames
      (or every ``stride_seconds``); default stride is ``clip_len`` (no overlap).
    - ``views``: ``views`` clips of ``clip_len`` frames at ``fps`` spread uniformly over the
      video (first clip at the start, last at the end; one view sits in the middle).
    ``crops`` is 1 (centre) or 3 (left/centre/right, or top/centre/bottom for portrait).

    ``rule`` picks how ``views`` clips are placed (only ``kind="views"`` takes a rule other than uniform):

    - ``uniform``: the above, on a time grid at ``fps``.
    - ``pyslowfast``: PySlowFast's Kinetics test sampling. ``fps`` is DATA.TARGET_FPS, ``clip_len``
      DATA.NUM_FRAMES, ``sampling_rate`` DATA.SAMPLING_RATE, ``views`` TEST.NUM_ENSEMBLE_VIEWS: view k decodes
      the window starting at frame max(L - W, 0) * k / views of the L frames the header counts and takes
      ``clip_len`` frames at linspace(0, C - 1) in it, C = sampling_rate * clip_len / fps * video fps.
    - ``pyslowfast_offset``: the same with DATA.USE_OFFSET_SAMPLING: window k starts at
      k * floor((L - W) / (views - 1)) (a single view at floor((L - W) / 2)).
    - ``ssv2``: PySlowFast's Something-Something v2 sampling: the video resampled to ``fps`` the way
      ``ffmpeg -r`` does, cut into ``clip_len`` equal segments, the middle frame of each (one view).
    - ``charades``: PySlowFast's Charades sampling: the video resampled to ``fps`` (Charades' frames are
      24 fps), view k starts at round(k * max(L - span, 0) / (views - 1)), span = (clip_len - 1) *
      sampling_rate + 1, and takes every ``sampling_rate``-th frame.

    ``rule="video_features"`` (kind frames or windows) reproduces v-iashin/video_features: ``fps`` is its
    ``extraction_fps`` (None: the video's own frames; else the video re-encoded with ffmpeg's ``fps`` filter),
    ``clip_len`` its ``stack_size`` (I3D: stack_size + 1, as it reads one frame more for the last flow pair)
    and ``stride`` its ``step_size``. Stack k holds frames k * stride .. k * stride + clip_len - 1; an
    incomplete last stack is dropped (a video shorter than one stack raises ValueError). Each clip's
    ``stamp`` is video_features' timestamp: the presentation time of the clip's last frame.

    ``rule="hero"`` (kind windows) reproduces HERO's SlowFast feature extraction: ``fps`` is its
    ``--target_framerate`` (the whole rate ``ffmpeg -vf fps=`` re-encodes the video to), ``stride_seconds`` its
    ``--clip_len`` (one clip per chunk of that many seconds; or ``stride``, the chunk in frames), ``clip_len``
    and ``sampling_rate`` SlowFast's DATA.NUM_FRAMES and DATA.SAMPLING_RATE. The frame list is tiled up to whole
    seconds with its last frame, then up to a whole number of chunks with copies of its last second; each chunk
    gives one clip at float32 linspace(0, C - 1, clip_len), clamped to the chunk, C = clip_len * sampling_rate
    * floor(video's average fps) / fps (every 2nd frame for 30 fps videos); chunks past ceil(duration /
    chunk) are dropped when the header has both a frame count and a duration. See :func:`hero_chunk_positions`.
    """

    kind: Kind = "frames"
    fps: float | None = None
    clip_len: int = 1
    stride: int | None = None
    stride_seconds: float | None = None
    views: int = 1
    crops: int = 1
    rule: Rule = "uniform"
    sampling_rate: int = 1
    # windows: when the complete windows leave frames at the end uncovered, add one more window backed up to
    # end at the last frame (Ego4D's released features; PyTorchVideo's UniformClipSampler(backpad_last=True)).
    backpad_last: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("frames", "windows", "views"):
            raise ValueError(f"sampling kind must be frames, windows or views, not {self.kind!r}")
        if self.fps is not None and not 0 < self.fps <= MAX_FPS:
            raise ValueError(f"fps must be positive and at most {MAX_FPS:g}, not {self.fps}")
        if not 1 <= self.clip_len <= MAX_CLIP_LEN:
            raise ValueError(f"clip length must be 1 to {MAX_CLIP_LEN} frames, not {self.clip_len}")
        if self.kind == "frames" and self.clip_len != 1:
            raise ValueError("frames sampling takes one frame per clip; use windows for clips")
        if self.backpad_last and (self.kind != "windows" or self.rule != "uniform"):
            raise ValueError("backpad_last applies to vidvec's own windows (kind windows, rule uniform)")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be at least 1 frame, not {self.stride}")
        if self.stride_seconds is not None and not 0 < self.stride_seconds < math.inf:
            raise ValueError(f"stride in seconds must be positive and finite, not {self.stride_seconds}")
        if not 1 <= self.views <= MAX_VIEWS:
            raise ValueError(f"views must be 1 to {MAX_VIEWS}, not {self.views}")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, not {self.crops}")
        if self.rule not in _RULES:
            raise ValueError("sampling rule must be uniform, pyslowfast, pyslowfast_offset, ssv2, charades, "
                             f"video_features or hero, not {self.rule!r}")
        if not isinstance(self.sampling_rate, int) or self.sampling_rate < 1:
            raise ValueError(f"sampling rate must be a whole number of frames >= 1, not {self.sampling_rate!r}")
        if self.rule in ("uniform", "ssv2", "video_features") and self.sampling_rate != 1:
            raise ValueError(f"sampling_rate is not used by the {self.rule} rule; set fps instead")
        if self.rule == "video_features":
            if self.kind == "views":
                raise ValueError("the video_features rule cuts frames or windows, not views")
            if self.stride_seconds is not None:
                raise ValueError("the video_features rule steps in frames (its step_size): set stride, "
                                 "not stride_seconds")
        elif self.rule == "hero" and self.kind == "frames":
            if self.fps is not None or not self.stride_seconds:
                raise ValueError("the hero rule takes one frame per stride_seconds (HERO's --clip_len, e.g. "
                                 "--stride 2s), not an fps")
        elif self.rule == "hero":
            if self.kind != "windows":
                raise ValueError("the hero rule cuts windows (one clip per chunk) or frames (one per chunk), "
                                 "not views")
            if self.fps is None or not float(self.fps).is_integer():
                raise ValueError("the hero rule needs a whole fps: HERO's --target_framerate, the rate its "
                                 f"ffmpeg re-encodes the video to, not {self.fps}")
            if not self.stride_seconds and not self.stride:
                raise ValueError("the hero rule needs the chunk length: stride_seconds (HERO's --clip_len) "
                                 "or stride in frames")
            _hero_chunk(self)  # a whole number of frames
        elif self.rule != "uniform":
            if self.kind != "views":
                raise ValueError(f"the {self.rule} rule places views: use kind='views'")
            if self.fps is None:
                raise ValueError(f"the {self.rule} rule needs fps (PySlowFast's DATA.TARGET_FPS)")
        if self.rule == "ssv2" and self.views != 1:
            raise ValueError("the ssv2 rule takes one clip per video (its test views are all the same clip)")

    def with_overrides(self, **overrides: object) -> "SamplingSpec":
        """A copy with the given fields replaced; None values leave a field as it is."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if changes.get("clip_len", 1) > 1 and self.kind == "frames" and "kind" not in changes:
            changes["kind"] = "windows"
        if changes.get("kind", self.kind) != self.kind and "rule" not in changes:
            # Another kind of sampling is vidvec's own: a PySlowFast rule only places views.
            changes.update(rule="uniform", sampling_rate=1)
        if "stride_seconds" in changes:
            changes.setdefault("stride", None)
        elif "stride" in changes:
            changes["stride_seconds"] = None
        return replace(self, **changes)

    def to_dict(self) -> dict:
        out = asdict(self)
        for name in _NEW_FIELDS:
            if out[name] == _DEFAULTS[name]:
                del out[name]
        return out

    def describe(self) -> str:
        fps = f"{self.fps:g} fps" if self.fps else "native fps"
        crops = f" x {self.crops} crops" if self.crops > 1 else ""
        if self.rule in ("pyslowfast", "pyslowfast_offset"):
            return (f"PySlowFast test sampling: {self.views} views of {self.clip_len} frames, every "
                    f"{self.sampling_rate} at {fps}" + crops)
        if self.rule == "charades":
            return (f"PySlowFast Charades sampling: {self.views} views of {self.clip_len} frames, every "
                    f"{self.sampling_rate} at {fps}" + crops)
        if self.rule == "ssv2":
            return f"PySlowFast SSv2 sampling: {self.clip_len} segments of the video at {fps}" + crops
        if self.rule == "hero" and self.kind == "frames":
            return (f"HERO sampling: one frame per {self.stride_seconds:g} s through ffmpeg's fps filter (two "
                    f"per second or more for videos shorter than {self.stride_seconds + 0.1:g} s)" + crops)
        if self.rule == "hero":
            return (f"HERO sampling: one clip of {self.clip_len} frames per {float(_hero_chunk(self)[0]):g} s "
                    f"chunk of the video at {fps}, SlowFast sampling rate {self.sampling_rate}" + crops)
        if self.rule == "video_features":
            if self.kind == "frames":
                return f"video_features sampling: every frame at {fps}" + crops
            return (f"video_features sampling: stacks of {self.clip_len} frames, step "
                    f"{self.stride or self.clip_len}, at {fps}" + crops)
        if self.kind == "frames":
            text = f"frames at {fps}"
        elif self.kind == "windows":
            step = f"{self.stride_seconds:g} s" if self.stride_seconds else f"{self.stride or self.clip_len} frames"
            text = f"windows of {self.clip_len} frames at {fps}, stride {step}"
            if self.backpad_last:
                text += ", last window backed up to the end"
        else:
            text = f"{self.views} views of {self.clip_len} frames at {fps}"
        return text + crops


_DEFAULTS = {f.name: f.default for f in fields(SamplingSpec)}


@dataclass(frozen=True)
class StreamTiming:
    """A video stream's header values, exact, as PySlowFast reads them (the frame-index rules need them).

    ``num_frames``: the container's frame count (PySlowFast's video length); ``frame_rate``: the average
    rate; ``time_base``: seconds per tick; ``duration``: the stream duration in ticks; ``start``: the pts of
    the first frame, in ticks (times in vidvec are relative to it; PySlowFast's pts are absolute); ``lead``:
    ticks from the container's start to the first frame (the ffmpeg command line counts from the former).
    """

    num_frames: int | None
    frame_rate: Fraction | None
    time_base: Fraction | None = None
    duration: int | None = None
    start: int = 0
    lead: int = 0

    @classmethod
    def from_info(cls, info: Any) -> "StreamTiming":
        """From a :class:`vidvec.decode.VideoInfo` (fields it lacks count as unknown)."""
        def frac(value: Any) -> Fraction | None:
            if value is None:
                return None
            if isinstance(value, (tuple, list)):
                return Fraction(int(value[0]), int(value[1])) if value[1] else None
            return Fraction(value)

        rate = frac(getattr(info, "frame_rate", None)) or Fraction(info.fps).limit_denominator(1_000_000)
        return cls(num_frames=getattr(info, "num_frames", None), frame_rate=rate,
                   time_base=frac(getattr(info, "time_base", None)),
                   duration=getattr(info, "stream_duration", None),
                   start=int(getattr(info, "start_pts", None) or 0), lead=int(getattr(info, "lead_pts", 0) or 0))


@dataclass(frozen=True)
class ClipPlan:
    """One clip: the sample times it needs (seconds; ascending except in the hero rule, whose padding can
    loop back to the video's last second) and the span it covers.

    ``stamp`` (video_features rule only, else None): video_features' timestamp of the clip in seconds, the
    float its ``timestamps_ms`` holds divided by 1000 (``stamp * 1000`` gives that value bit for bit).
    """

    index: int
    times: tuple[float, ...]
    start: float
    end: float
    padded: bool = False
    stamp: float | None = None


def plan(
    spec: SamplingSpec,
    duration: float,
    native_fps: float,
    start: float = 0.0,
    end: float | None = None,
    timing: StreamTiming | None = None,
    frame_times: Sequence[float] | None = None,
) -> list[ClipPlan]:
    """Cut ``[start, end)`` of a video of ``duration`` seconds into clips.

    ``frame_times`` (every frame's presentation time, for variable frame rate videos): frame sampling that
    takes every frame (see :func:`every_frame`) takes exactly these frames, each clip spanning its frame's
    display time, instead of a grid at the average rate.

    A span shorter than one clip gives one clip whose missing frames repeat the last frame
    (``padded=True``); an empty span (or an unknown frame rate) raises ``ValueError``.
    ``timing`` (the stream's header values) is used by the frame-index rules (pyslowfast, ssv2, charades,
    video_features); without it they assume ``round(duration * native_fps)`` frames and PySlowFast's
    decode-everything path. The video_features rule never pads: it raises ``ValueError`` when the video is
    shorter than one stack. The hero rule (frame index arithmetic too) pads as HERO does.
    """
    if spec.rule == "hero":
        return _plan_hero(spec, duration, native_fps, start, end, timing)
    if spec.rule == "video_features":
        return _plan_video_features(spec, duration, native_fps, start, end, timing)
    if spec.rule != "uniform":
        return _plan_by_index(spec, duration, native_fps, start, end, timing)
    if not native_fps or not math.isfinite(native_fps) or native_fps <= 0:
        raise ValueError("the video has no usable frame rate")
    t0 = max(0.0, start or 0.0)
    t1 = duration if end is None else min(end, duration)
    if not t1 > t0:
        raise ValueError(f"nothing to sample: span {t0:.3f}-{t1:.3f} s of a {duration:.3f} s video")
    if spec.kind == "frames":
        if frame_times is not None and every_frame(spec, native_fps):
            return _plan_every_frame(frame_times, t0, t1)
        fps = min(spec.fps or native_fps, native_fps)  # never a frame twice
    else:
        fps = spec.fps or native_fps
        if fps > MAX_REPEAT * native_fps:
            raise ValueError(f"sampling at {fps:g} fps repeats each frame of this {native_fps:g} fps video "
                             f"{fps / native_fps:.0f} times (at most {MAX_REPEAT}); lower --fps")
    # Sample times sit on a grid of 1/fps from t0; the last usable one is the last that starts before t1.
    last = t0 + max(0, math.ceil((t1 - t0) * fps - _EPS) - 1) / fps
    span = spec.clip_len / fps

    def clip(index: int, clip_start: float) -> ClipPlan:
        raw = clip_start + np.arange(spec.clip_len) / fps
        times = np.minimum(raw, last)
        padded = bool(raw[-1] > last + _EPS)
        return ClipPlan(index, tuple(float(t) for t in times), float(clip_start),
                        float(min(clip_start + span, t1)), padded)

    if spec.kind == "frames":
        count = int(round((last - t0) * fps)) + 1
        return [clip(i, t0 + i / fps) for i in range(count)]
    if spec.kind == "windows":
        step = spec.stride_seconds if spec.stride_seconds else (spec.stride or spec.clip_len) / fps
        complete = int(math.floor((t1 - t0 - span) / step + _EPS)) + 1 if t1 - t0 >= span - _EPS else 0
        clips = [clip(i, t0 + i * step) for i in range(max(1, complete))]
        backed_up = last - (spec.clip_len - 1) / fps  # the window whose last frame is the last frame
        if spec.backpad_last and complete and backed_up > clips[-1].start + _EPS:
            clips.append(clip(complete, backed_up))
        return clips
    # views: uniformly spread; a single view is centred.
    slack = max(0.0, (t1 - t0) - span)
    if spec.views == 1:
        starts = [t0 + slack / 2]
    else:
        starts = [t0 + slack * i / (spec.views - 1) for i in range(spec.views)]
    return [clip(i, s) for i, s in enumerate(starts)]


def every_frame(spec: SamplingSpec, native_fps: float) -> bool:
    """Whether ``spec`` takes every frame of a video whose average rate is ``native_fps`` (vidvec's own frame
    sampling at the video's rate or above): on a variable frame rate video, :func:`plan` then needs the
    frames' own times."""
    return (spec.kind == "frames" and spec.rule == "uniform"
            and (spec.fps is None or spec.fps >= native_fps - _EPS))


def _plan_every_frame(frame_times: Sequence[float], t0: float, t1: float) -> list[ClipPlan]:
    times = [t for t in frame_times if t0 - _EPS <= t < t1]
    if not times:
        raise ValueError(f"nothing to sample: no frame starts in {t0:.3f}-{t1:.3f} s")
    ends = times[1:] + [t1]
    return [ClipPlan(k, (t,), t, end) for k, (t, end) in enumerate(zip(times, ends))]


# -- PySlowFast's frame-index rules -------------------------------------------------------------------------

def _frame_time(index: int, fps: float) -> float:
    """A sample time inside frame ``index`` of a constant-rate video: its middle, never a boundary, so the
    decoder's "frame on screen at t" is frame ``index`` even when timestamps are rounded or jitter."""
    return (index + 0.5) / fps


def _torch_linspace_indices(start: float, end: float, steps: int, count: int) -> list[int]:
    """PySlowFast's ``temporal_sampling`` index: float32 ``torch.linspace(start, end, steps)``, clamped to
    [0, count - 1], truncated by ``.long()`` (torch itself, so float32 rounding matches to the bit)."""
    import torch  # local: the rest of this module is plain arithmetic

    index = torch.linspace(start, end, steps)
    return torch.clamp(index, 0, count - 1).long().tolist()


def _start_index(delta: float, clip_index: int, num_clips: int, use_offset: bool) -> float:
    """``get_start_end_idx``'s start for a test clip (delta = max(video_size - clip_size, 0))."""
    if not use_offset:
        return delta * clip_index / num_clips
    if num_clips == 1:
        return math.floor(delta / 2)
    return clip_index * math.floor(delta / (num_clips - 1))


def pyslowfast_window(num_frames: int, duration_ticks: int, frame_ticks: Fraction, start_ticks: int,
                      window: float, clip_index: int, num_clips: int,
                      use_offset: bool = False) -> tuple[int, int]:
    """First and last frame index PySlowFast's pyav ``pyav_decode`` returns for one test clip.

    It places a window of ``window`` frames at ``get_start_end_idx(num_frames, window, k, num_clips)``, turns
    its ends into pts with ``int(idx * duration / num_frames)``, and keeps the frames with
    start_pts <= pts <= end_pts plus the first frame after end_pts (``buffer_size=0`` still keeps one).
    Frame i has pts ``start_ticks + i * frame_ticks`` (constant frame rate).
    """
    delta = max(num_frames - window, 0)
    start_idx = _start_index(delta, clip_index, num_clips, use_offset)
    end_idx = start_idx + window - 1
    per_frame = duration_ticks / num_frames  # PySlowFast's "timebase": ticks per frame from the header
    start_pts, end_pts = int(start_idx * per_frame), int(end_idx * per_frame)
    first = max(0, math.ceil(Fraction(start_pts - start_ticks) / frame_ticks))
    last_inside = math.floor(Fraction(end_pts - start_ticks) / frame_ticks)
    last = min(last_inside + 1, num_frames - 1)
    first = min(first, num_frames - 1)
    return first, max(first, last)


def pyslowfast_clip_indices(spec: SamplingSpec, num_frames: int, fps: float,
                            header: tuple[int, Fraction, int] | None) -> list[list[int]]:
    """Frame indices (in decoding order) of each of PySlowFast's ``spec.views`` test clips.

    ``header`` is (duration in ticks, ticks per frame, first pts) for the selective-decoding path; None
    takes PySlowFast's decode-the-whole-video path (a stream without a duration header).
    """
    r, t, target = spec.sampling_rate, spec.clip_len, spec.fps
    assert target is not None
    use_offset = spec.rule == "pyslowfast_offset"
    clip_size = max(1.0, r * t / target * fps)  # PySlowFast's left-to-right float64 evaluation
    clips = []
    for k in range(spec.views):
        if header is None:
            start_idx = _start_index(max(num_frames - clip_size, 0), k, spec.views, use_offset)
            clips.append(_torch_linspace_indices(start_idx, start_idx + clip_size - 1, t, num_frames))
            continue
        duration_ticks, frame_ticks, start_ticks = header
        window = max(1.0, float(math.ceil(r * (t - 1) / target * fps)))
        first, last = pyslowfast_window(num_frames, duration_ticks, frame_ticks, start_ticks, window, k,
                                        spec.views, use_offset)
        inner = _torch_linspace_indices(0.0, 0.0 + clip_size - 1, t, last - first + 1)
        clips.append([first + i for i in inner])
    return clips


def _lrint(x: float) -> int:
    """C's lrint under the default rounding mode: halves go to the even neighbour (as Python's round)."""
    return int(round(x))


def ffmpeg_rate_frames(num_frames: int, fps: float, out_fps: float) -> list[int]:
    """Which source frame each output frame of ``ffmpeg -i VIDEO -r out_fps`` shows (image sequence output).

    Models ffmpeg 5.1's constant-frame-rate conversion (``do_video_out`` with vsync cfr, no filters): frame i
    of a constant-rate input sits at i * out_fps / fps output ticks with a duration of lrint(out_fps / fps)
    ticks; a frame is dropped when it falls more than 1.1 ticks behind, repeated when it covers more than
    1.1 ticks. Verified frame by frame against ffmpeg 5.1's jpgs for 19.62 and 30 fps inputs.
    """
    step = out_fps / fps
    nominal = _lrint(step)
    base = float(nominal) if nominal > 0 else min(step, 1.0)
    out: list[int] = []
    sync = 0
    for i in range(num_frames):
        delta0 = i * step - sync
        duration = base
        delta = delta0 + duration
        if delta0 < 0 < delta:
            duration += delta0
            delta0 = 0.0
        count, repeat_previous = 1, 0
        if delta < -1.1:
            count = 0
        elif delta > 1.1:
            count = _lrint(delta)
            if delta0 > 1.1:
                repeat_previous = min(_lrint(delta0 - 0.6), count)
        for j in range(count):
            out.append(i - 1 if j < repeat_previous and i > 0 else i)
        sync += count
    return out


def ssv2_segment_positions(length: int, num_samples: int) -> list[int]:
    """PySlowFast's ``Ssv2.get_seq_frames`` at test time: ``num_samples`` segments of (length - 1) / n frames,
    the middle of each as (round(seg * k) + round(seg * (k + 1))) // 2 with numpy's half-to-even rounding."""
    seg = float(length - 1) / num_samples
    return [(int(np.round(seg * k)) + int(np.round(seg * (k + 1)))) // 2 for k in range(num_samples)]


def charades_clip_positions(length: int, num_samples: int, sampling_rate: int, num_clips: int) -> list[list[int]]:
    """PySlowFast's ``Charades.get_seq_frames`` at test time, for every clip: positions in the frame list."""
    span = (num_samples - 1) * sampling_rate + 1
    gap = float(max(length - span, 0)) / (num_clips - 1) if num_clips > 1 else 0.0
    clips = []
    for k in range(num_clips):
        start = int(round(gap * k))
        clips.append([max(min(start + i * sampling_rate, length - 1), 0) for i in range(num_samples)])
    return clips


def _index_span(total: int, fps: float, duration: float, start: float,
                end: float | None) -> tuple[float, float, int, int]:
    """``[start, end)`` clipped to the video, and the frames that start inside it: a span is a shorter video
    made of frames f0 .. f1 - 1 of ``total``. Raises ValueError when no frame starts inside it."""
    t0 = max(0.0, start or 0.0)
    t1 = duration if end is None else min(end, duration)
    if not t1 > t0:
        raise ValueError(f"nothing to sample: span {t0:.3f}-{t1:.3f} s of a {duration:.3f} s video")
    f0 = min(total, max(0, math.ceil(t0 * fps - 1e-6)))
    f1 = min(total, max(f0, math.ceil(t1 * fps - 1e-6)))
    if f1 <= f0:
        raise ValueError(f"nothing to sample: no frame starts in {t0:.3f}-{t1:.3f} s")
    return t0, t1, f0, f1


def _plan_by_index(spec: SamplingSpec, duration: float, native_fps: float, start: float,
                   end: float | None, timing: StreamTiming | None) -> list[ClipPlan]:
    rate = timing.frame_rate if timing and timing.frame_rate else None
    fps = float(rate) if rate else native_fps
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise ValueError("the video has no usable frame rate")
    header_frames = timing.num_frames if timing and timing.num_frames and timing.num_frames > 0 else None
    total = header_frames or max(1, int(round(duration * fps)))
    t0, t1, f0, f1 = _index_span(total, fps, duration, start, end)
    count = f1 - f0
    whole = f0 == 0 and f1 == total

    if spec.rule in ("pyslowfast", "pyslowfast_offset"):
        header = None
        if (whole and header_frames and timing and timing.duration and timing.duration > 0
                and timing.time_base and rate):
            header = (int(timing.duration), 1 / (rate * timing.time_base), int(timing.start))
        clips = pyslowfast_clip_indices(spec, count, fps, header)
        window = max(1.0, float(math.ceil(spec.sampling_rate * (spec.clip_len - 1) / spec.fps * fps)))
        padded = count < (window if header else max(1.0, spec.sampling_rate * spec.clip_len / spec.fps * fps))
    else:  # ssv2, charades: a frame list made at a fixed rate
        resampled = ffmpeg_rate_frames(count, fps, float(spec.fps))
        if not resampled:
            raise ValueError("the video resampled to the target rate has no frames")
        if spec.rule == "ssv2":
            positions = [ssv2_segment_positions(len(resampled), spec.clip_len)]
            padded = len(resampled) < spec.clip_len
        else:
            positions = charades_clip_positions(len(resampled), spec.clip_len, spec.sampling_rate, spec.views)
            padded = len(resampled) < (spec.clip_len - 1) * spec.sampling_rate + 1
        clips = [[resampled[p] for p in pos] for pos in positions]
    plans = []
    for k, indices in enumerate(clips):
        frames = [f0 + i for i in indices]
        plans.append(ClipPlan(k, tuple(_frame_time(i, fps) for i in frames), min(frames) / fps,
                              min((max(frames) + 1) / fps, t1), bool(padded)))
    return plans


# -- v-iashin/video_features' rule --------------------------------------------------------------------------

def ffmpeg_fps_filter_frames(pts: Sequence[int], end: int, time_base: Fraction,
                             out_rate: Fraction) -> list[int]:
    """Which input frame each output frame of ``ffmpeg -i VIDEO -filter:v fps=fps=R OUT`` shows.

    ``pts``: the input frames' timestamps in ``time_base`` ticks, ascending; ``end``: where the input ends
    (ffmpeg closes the filter's input at the last frame's timestamp plus its duration). Models the ``fps``
    filter (its 2018 rewrite, in FFmpeg 4.x to 8; defaults ``round=near``, ``eof_action=round``): input
    frame j lands on output slot round(pts_j * time_base * R), halves up; slots from the first frame's up to
    round(end * time_base * R), exclusive, each show the last input frame whose slot is not after them, so a
    frame is dropped when the next one rounds to the same slot and repeated when the next one is more than a
    slot later. ffmpeg's constant-rate output stage keeps these frames as they are (they already sit on its
    grid). Checked against FFmpeg's own filter in the tests.
    """
    if not pts:
        return []
    scale = time_base * out_rate
    num, den = scale.numerator, scale.denominator
    slots = [(2 * p * num + den) // (2 * den) for p in pts]  # integer rounding, as av_rescale_q_rnd
    stop = (2 * end * num + den) // (2 * den)
    out: list[int] = []
    current = 0
    for slot in range(slots[0], stop):
        while current + 1 < len(slots) and slots[current + 1] <= slot:
            current += 1
        out.append(current)
    return out


def mp4_timescale(rate: Fraction) -> int:
    """Ticks per second of the video track ffmpeg's mp4 muxer writes for a stream encoded at ``rate`` fps: the
    encoder's time base is 1/rate, and the muxer doubles its denominator until it reaches 10000."""
    scale = rate.numerator
    while scale < 10000:
        scale *= 2
    return scale


class _FrameClock:
    """Frame i's timestamp in a constant-rate stream, and the float OpenCV reports for it.

    With a time base, frame i sits round(i * ticks per frame) ticks after the first frame, and OpenCV's
    CAP_PROP_POS_MSEC is ``ticks * (num / den) * 1000`` in double arithmetic, in that order; without one, ticks
    are frames (``unit`` = 1 / rate) and the stamp is video_features' own later formula ``i / fps * 1000``.
    """

    def __init__(self, rate: Fraction, time_base: Fraction | None) -> None:
        self.unit = time_base or 1 / rate
        per_frame = 1 / (rate * self.unit)
        self._num, self._den = per_frame.numerator, per_frame.denominator
        self._tick_seconds = time_base.numerator / time_base.denominator if time_base else None
        self._fps = float(rate)

    def ticks(self, index: int) -> int:
        return (2 * index * self._num + self._den) // (2 * self._den)

    def stamp(self, index: int) -> float:
        if self._tick_seconds is None:
            return index / self._fps
        return self.ticks(index) * self._tick_seconds


class _FrameGrid(NamedTuple):
    """A constant-rate video's frames as the tools that count frames see them (see :func:`_frame_grid`)."""

    rate: Fraction
    fps: float
    header_frames: int | None
    total: int
    t0: float
    t1: float
    f0: int
    f1: int
    clock: _FrameClock


def _frame_grid(duration: float, native_fps: float, start: float, end: float | None,
                timing: StreamTiming | None) -> _FrameGrid:
    """The exact frame rate (the header's, else ``native_fps``), the frame count (the header's, else from the
    duration), the span's frames f0 .. f1 - 1 and the stream's clock."""
    rate = timing.frame_rate if timing and timing.frame_rate else None
    if rate is None and native_fps and math.isfinite(native_fps) and native_fps > 0:
        rate = Fraction(native_fps).limit_denominator(1_000_000)
    if not rate or rate <= 0:
        raise ValueError("the video has no usable frame rate")
    fps = float(rate)
    header_frames = timing.num_frames if timing and timing.num_frames and timing.num_frames > 0 else None
    total = header_frames or max(1, int(round(duration * fps)))
    t0, t1, f0, f1 = _index_span(total, fps, duration, start, end)
    return _FrameGrid(rate, fps, header_frames, total, t0, t1, f0, f1,
                      _FrameClock(rate, timing.time_base if timing else None))


def _plan_video_features(spec: SamplingSpec, duration: float, native_fps: float, start: float,
                         end: float | None, timing: StreamTiming | None) -> list[ClipPlan]:
    """v-iashin/video_features: every frame of the video (or of its ``fps``-filtered re-encode) in order,
    cut into stacks of ``clip_len`` every ``stride`` frames; each clip stamped with its last frame's time.

    Its extractors read frames with OpenCV (or torchvision for R(2+1)D and S3D, same frames) and stamp each
    stack with CAP_PROP_POS_MSEC after reading the stack's last frame: that frame's presentation time. With
    ``extraction_fps`` the video is first re-encoded to mp4 with ``-filter:v fps=fps=N``, so the frames are
    the filter's and the times those of the new file (frame k at k / N s, counted in ticks of its mp4 track's
    timescale). A span ``[start, end)`` is treated as a shorter video cut at its frames, stamps staying on the
    source video's clock.
    """
    grid = _frame_grid(duration, native_fps, start, end, timing)
    rate, fps, header_frames, total, t0, t1, f0, f1, clock = grid

    if spec.fps is None:
        frames = list(range(f0, f1))
        stamps = [clock.stamp(i) for i in frames]
    else:
        out_rate = Fraction(spec.fps).limit_denominator(2**31 - 1)  # ffmpeg's av_d2q of the filter's rate
        frames = [f0 + j for j in _fps_filtered(grid, out_rate, timing)]
        scale = mp4_timescale(out_rate)
        ticks = scale * out_rate.denominator // out_rate.numerator  # one output frame, in track ticks
        offset = clock.stamp(f0) if f0 else 0.0
        stamps = [offset + (k * ticks) * (1 / scale) for k in range(len(frames))]

    length = spec.clip_len if spec.kind == "windows" else 1
    step = (spec.stride or spec.clip_len) if spec.kind == "windows" else 1
    count = (len(frames) - length) // step + 1 if len(frames) >= length else 0
    if count == 0:
        rate_text = f"{spec.fps:g} fps" if spec.fps else f"its native {fps:g} fps"
        raise ValueError(f"too short for video_features sampling: {len(frames)} frames at {rate_text}, "
                         f"fewer than one stack of {length} (video_features drops incomplete stacks)")
    plans = []
    for k in range(count):
        stack = frames[k * step:k * step + length]
        plans.append(ClipPlan(k, tuple(_frame_time(i, fps) for i in stack), min(stack) / fps,
                              min((max(stack) + 1) / fps, t1), padded=False, stamp=stamps[k * step + length - 1]))
    return plans


# -- HERO's SlowFast feature extractor ----------------------------------------------------------------------

def _hero_chunk(spec: SamplingSpec) -> tuple[Fraction, int]:
    """A HERO chunk's length in seconds (its ``--clip_len`` fraction) and in frames at ``spec.fps``."""
    rate = int(spec.fps or 0)
    if spec.stride_seconds:
        seconds = Fraction(spec.stride_seconds).limit_denominator(1000)
    else:
        seconds = Fraction(spec.stride or 0, rate)
    frames = seconds * rate
    if frames.denominator != 1:
        raise ValueError(f"HERO's chunks are whole frames: {float(seconds):g} s at {rate} fps is "
                         f"{float(frames):g} frames")
    return seconds, int(frames)


def hero_chunk_positions(length: int, rate: int, chunk_seconds: Fraction, num_frames: int, sampling_rate: int,
                         video_fps: int, duration: float | None = None) -> list[tuple[list[int], bool]]:
    """HERO's SlowFast clips (its ``Preprocessing`` for "3d") from ``length`` frames decoded at ``rate`` fps:
    for each chunk, the positions in that frame list of the clip's ``num_frames`` frames, and whether the clip
    reaches into the padding.

    HERO tiles the frame tensor's last frame up to a whole number of seconds, then tiles its last second (a
    whole block of ``rate`` frames) up to a multiple of the chunk fraction's numerator in seconds, so a last
    partial chunk loops back through the video's last second; it cuts chunks of ``chunk_seconds * rate``
    frames and keeps the first ceil(duration / chunk_seconds) when it knows the ``duration`` (ffprobe's).
    Every chunk gives the same clip: ``get_start_end_idx`` with one clip starts at 0 and spans
    C = num_frames * sampling_rate * video_fps / rate frames (``video_fps`` is HERO's floor of the video's
    average rate, not ``rate``), and ``temporal_sampling`` takes float32 linspace(0, C - 1, num_frames),
    clamped to the chunk, truncated.
    """
    seconds = -(-length // rate)
    block = chunk_seconds.numerator  # HERO pads whole chunks in units of the fraction's numerator (seconds)
    padded_seconds = -(-seconds // block) * block
    chunk = int(chunk_seconds * rate)
    count = padded_seconds * rate // chunk
    if duration is not None and duration > 0:
        count = min(count, math.ceil(duration / float(chunk_seconds)))
    span = num_frames * sampling_rate * video_fps / rate  # left to right, as HERO evaluates it
    inner = _torch_linspace_indices(0.0, 0.0 + span - 1, num_frames, chunk)

    def source(position: int) -> int:
        if position >= seconds * rate:  # a copy of the last second
            position = (seconds - 1) * rate + (position - seconds * rate) % rate
        return min(position, length - 1)  # the last frame's copies up to a whole second

    clips = []
    for k in range(count):
        positions = [k * chunk + i for i in inner]
        clips.append(([source(p) for p in positions], max(positions) >= length))
    return clips


def _plan_hero(spec: SamplingSpec, duration: float, native_fps: float, start: float, end: float | None,
               timing: StreamTiming | None) -> list[ClipPlan]:
    """HERO's SlowFast and S3D extractors: ``ffmpeg -i VIDEO -vf fps=fps=R,scale,crop`` to raw frames, cut into
    chunks by :func:`hero_chunk_positions`. Each clip spans its chunk: HERO's feature k stands for seconds
    [k * chunk, (k + 1) * chunk). Kind frames: its ResNet extractor (:func:`_plan_hero_frames`). A span
    ``[start, end)`` is treated as a shorter video cut at its frames (its length in place of the header duration).
    """
    grid = _frame_grid(duration, native_fps, start, end, timing)
    known = _hero_duration(grid, timing)
    if spec.kind == "frames":
        return _plan_hero_frames(spec, grid, known, timing)
    rate, fps, t0, t1, f0 = grid.rate, grid.fps, grid.t0, grid.t1, grid.f0
    target = int(spec.fps or 0)
    shown = _fps_filtered(grid, Fraction(target), timing)
    chunk_seconds, _ = _hero_chunk(spec)
    video_fps = math.floor(rate.numerator / rate.denominator)  # HERO: floor(avg_frame_rate), e.g. 29.97 -> 29
    clips = hero_chunk_positions(len(shown), target, chunk_seconds, spec.clip_len, spec.sampling_rate,
                                 video_fps, known)
    chunk = float(chunk_seconds)
    plans = []
    for k, (positions, padded) in enumerate(clips):
        begin = t0 + k * chunk
        finish = min(begin + chunk, t1) if begin < t1 else begin + chunk  # a chunk of padding only: nominal
        times = tuple(_frame_time(f0 + shown[p], fps) for p in positions)
        plans.append(ClipPlan(k, times, begin, finish, padded))
    return plans


def _hero_duration(grid: _FrameGrid, timing: StreamTiming | None) -> float | None:
    """The duration HERO's loaders read: ffprobe's stream duration (printed "%f"), known only when the header
    has both it and a frame count; a span [start, end) counts as a video of its length."""
    if grid.f0 > 0 or grid.f1 < grid.total:
        return grid.t1 - grid.t0
    if grid.header_frames and timing and timing.duration and timing.duration > 0 and timing.time_base:
        tb = timing.time_base
        return float(f"{timing.duration * (tb.numerator / tb.denominator):f}")
    return None


def _fps_filtered(grid: _FrameGrid, rate: Fraction, timing: StreamTiming | None) -> list[int]:
    """The span's frames (offsets from f0) that ``ffmpeg -vf fps=fps=rate`` outputs; ValueError when none.
    ffmpeg reads the span's frames and ends where the stream ends: its header duration for a whole video
    (some muxers give the last frame a 1-tick duration), else one frame after the span's last (at frame f1).
    It counts time from the container's start, so a video whose first frame comes later (``timing.lead``)
    keeps that lead (a span is a video cut at its first frame)."""
    whole = grid.f0 == 0 and grid.f1 == grid.total
    origin = grid.clock.ticks(grid.f0) - (timing.lead if timing and grid.f0 == 0 else 0)
    pts = [grid.clock.ticks(i) - origin for i in range(grid.f0, grid.f1)]
    end = grid.clock.ticks(grid.f1) - origin
    if whole and timing and timing.time_base and timing.duration and timing.duration > 0:
        end = timing.lead + timing.duration
    shown = ffmpeg_fps_filter_frames(pts, end, grid.clock.unit, rate)
    if not shown:
        raise ValueError(f"nothing to sample: the video re-encoded to {float(rate):g} fps has no frames")
    return shown


def _plan_hero_frames(spec: SamplingSpec, grid: _FrameGrid, known: float | None,
                      timing: StreamTiming | None) -> list[ClipPlan]:
    """HERO's ResNet extractor (resnets/video_loader.py): ``ffmpeg -vf fps=fps=1/clip_len``, where clip_len is
    ``stride_seconds``; a video whose known duration d is under clip_len + 0.1 s is read at 2 / max(int(d), 1)
    fps instead. One frame per output frame of the filter; frame k stands for [k, k + 1) output periods."""
    framerate = 1 / float(spec.stride_seconds or 0)  # as HERO computes it
    rate = Fraction(framerate).limit_denominator(1_001_000)  # ffmpeg reads the rate's text with av_d2q
    if known is not None and 0 < known < 1 / framerate + 0.1:
        rate = Fraction(2, max(int(known), 1))
    shown = _fps_filtered(grid, rate, timing)
    period = 1 / float(rate)
    return [ClipPlan(k, (_frame_time(grid.f0 + j, grid.fps),), grid.t0 + k * period,
                     min(grid.t0 + (k + 1) * period, grid.t1) if grid.t0 + k * period < grid.t1
                     else grid.t0 + (k + 1) * period)
            for k, j in enumerate(shown)]
