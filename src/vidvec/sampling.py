"""Which frames each clip needs: pure arithmetic on a video's timing, no I/O.

A `SamplingSpec` says how a model wants to see a video; `plan` turns it plus a video's
duration into clips, each a list of sample times in seconds. The decoder later returns,
for each sample time, the frame on screen at that time (presentation timestamps, so
variable frame rate videos sample correctly).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

Kind = Literal["frames", "windows", "views"]
_EPS = 1e-6


@dataclass(frozen=True)
class SamplingSpec:
    """How clips are cut from a video. Frozen and hashable: it is part of a run's settings hash.

    - ``frames``: one frame per clip, at ``fps`` (the video's own rate when None).
    - ``windows``: ``clip_len`` frames at ``fps``, a new clip every ``stride`` frames
      (or every ``stride_seconds``); default stride is ``clip_len`` (no overlap).
    - ``views``: ``views`` clips of ``clip_len`` frames at ``fps`` spread uniformly over the
      video (first clip at the start, last at the end; one view sits in the middle).
    ``crops`` is 1 (centre) or 3 (left/centre/right, or top/centre/bottom for portrait).
    """

    kind: Kind = "frames"
    fps: float | None = None
    clip_len: int = 1
    stride: int | None = None
    stride_seconds: float | None = None
    views: int = 1
    crops: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("frames", "windows", "views"):
            raise ValueError(f"sampling kind must be frames, windows or views, not {self.kind!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, not {self.fps}")
        if self.clip_len < 1:
            raise ValueError(f"clip length must be at least 1 frame, not {self.clip_len}")
        if self.kind == "frames" and self.clip_len != 1:
            raise ValueError("frames sampling takes one frame per clip; use windows for clips")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be at least 1 frame, not {self.stride}")
        if self.stride_seconds is not None and not self.stride_seconds > 0:
            raise ValueError(f"stride in seconds must be positive, not {self.stride_seconds}")
        if self.views < 1:
            raise ValueError(f"views must be at least 1, not {self.views}")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, not {self.crops}")

    def with_overrides(self, **overrides: object) -> "SamplingSpec":
        """A copy with the given fields replaced; None values leave a field as it is."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if changes.get("clip_len", 1) > 1 and self.kind == "frames" and "kind" not in changes:
            changes["kind"] = "windows"
        if "stride_seconds" in changes:
            changes.setdefault("stride", None)
        elif "stride" in changes:
            changes["stride_seconds"] = None
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        fps = f"{self.fps:g} fps" if self.fps else "native fps"
        if self.kind == "frames":
            text = f"frames at {fps}"
        elif self.kind == "windows":
            step = f"{self.stride_seconds:g} s" if self.stride_seconds else f"{self.stride or self.clip_len} frames"
            text = f"windows of {self.clip_len} frames at {fps}, stride {step}"
        else:
            text = f"{self.views} views of {self.clip_len} frames at {fps}"
        return text + (f" x {self.crops} crops" if self.crops > 1 else "")


@dataclass(frozen=True)
class ClipPlan:
    """One clip: the sample times it needs (seconds, ascending) and the span it covers."""

    index: int
    times: tuple[float, ...]
    start: float
    end: float
    padded: bool = False


def plan(
    spec: SamplingSpec,
    duration: float,
    native_fps: float,
    start: float = 0.0,
    end: float | None = None,
) -> list[ClipPlan]:
    """Cut ``[start, end)`` of a video of ``duration`` seconds into clips.

    A span shorter than one clip gives one clip whose missing frames repeat the last frame
    (``padded=True``); an empty span (or an unknown frame rate) raises ``ValueError``.
    """
    fps = spec.fps or native_fps
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise ValueError("the video has no usable frame rate")
    t0 = max(0.0, start or 0.0)
    t1 = duration if end is None else min(end, duration)
    if not t1 > t0:
        raise ValueError(f"nothing to sample: span {t0:.3f}-{t1:.3f} s of a {duration:.3f} s video")
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
        return [clip(i, t0 + i * step) for i in range(max(1, complete))]
    # views: uniformly spread; a single view is centred.
    slack = max(0.0, (t1 - t0) - span)
    if spec.views == 1:
        starts = [t0 + slack / 2]
    else:
        starts = [t0 + slack * i / (spec.views - 1) for i in range(spec.views)]
    return [clip(i, s) for i, s in enumerate(starts)]
