"""Decode worker side: one video in, its clips out (uint8, cropped), in one decoding pass.

This is the stateless CPU map of the pipeline: it runs in the decode worker processes and
ships each clip to the model process as it completes, so a video's frames never pile up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .decode import DecodeError, VideoDecoder, VideoInfo
from .sampling import ClipPlan, SamplingSpec, StreamTiming, plan
from .sources import VideoSource
from .transforms import Preprocess

_TIME_DECIMALS = 6  # clips that overlap ask for the same instants computed two ways; round before merging


@dataclass
class VideoStarted:
    video: int
    info: VideoInfo
    clips: int  # items to expect: clips x crops


@dataclass
class Clip:
    video: int
    clip: int
    crop: int
    pixels: torch.Tensor  # uint8 (T, H, W, 3)
    start: float
    end: float
    padded: bool


@dataclass
class ClipGroup:
    """Consecutive clips of one video stacked into one tensor: one message between processes instead of
    many (per-message costs dominate for small clips such as single frames)."""

    video: int
    clips: list[Clip]  # their pixels are views into ``pixels``
    pixels: torch.Tensor  # uint8 (N, T, H, W, 3)

    def unpack(self) -> list[Clip]:
        for clip, pixels in zip(self.clips, self.pixels):
            clip.pixels = pixels
        return self.clips


@dataclass
class VideoFinished:
    video: int
    decode_s: float


@dataclass
class VideoFailed:
    video: int
    reason: str


Event = VideoStarted | Clip | ClipGroup | VideoFinished | VideoFailed


def assemble(plans: list[ClipPlan], decoder: VideoDecoder,
             transform: Callable[[np.ndarray], np.ndarray] | None = None
             ) -> Iterator[tuple[ClipPlan, np.ndarray]]:
    """Yield each planned clip as (plan, uint8 (T, H, W, 3)) as soon as its last frame is decoded.

    The decoder is asked once for the union of all clips' sample times; a frame is dropped as
    soon as no pending clip can still need it, so memory is bounded by the widest clip.
    ``transform`` (e.g. a torch resize) runs once per distinct decoded frame.
    """
    wanted = [np.round(np.asarray(p.times), _TIME_DECIMALS) for p in plans]
    times = np.unique(np.concatenate(wanted))
    slots = [np.searchsorted(times, w) for w in wanted]
    order = sorted(range(len(plans)), key=lambda i: (int(slots[i].max()), i))
    held: dict[int, np.ndarray] = {}
    pending = 0
    last: tuple[np.ndarray, np.ndarray] | None = None
    for slot, frame in decoder.frames_at(times.tolist()):
        if transform is not None:
            # The decoder hands out the same array for a repeated frame: transform it once.
            if last is None or last[0] is not frame:
                last = (frame, transform(frame))
            frame = last[1]
        held[slot] = frame
        while pending < len(order) and int(slots[order[pending]].max()) == slot:
            i = order[pending]
            yield plans[i], np.stack([held[s] for s in slots[i]])
            pending += 1
        if pending < len(order):
            keep_from = min(int(slots[i].min()) for i in order[pending:pending + 64])
            for old in [s for s in held if s < keep_from]:
                del held[old]


def video_events(index: int, source: VideoSource, spec: SamplingSpec, preprocess: Preprocess,
                 threads: int = 0) -> Iterator[Event]:
    """All events of one video; any failure ends it with one VideoFailed carrying a one-line reason."""
    began = time.perf_counter()
    try:
        with VideoDecoder(source.path, size=preprocess.decoder_size, threads=threads) as decoder:
            info = decoder.info
            plans = plan(spec, info.duration, info.fps, source.start or 0.0, source.end,
                         timing=StreamTiming.from_info(info))
            yield VideoStarted(index, info, len(plans) * spec.crops)
            transform = preprocess.resize_frames if preprocess.decoder_size is None else None
            for clip_plan, frames in assemble(plans, decoder, transform):
                for crop, pixels in enumerate(preprocess.crop_frames(frames, spec.crops)):
                    yield Clip(index, clip_plan.index, crop, torch.from_numpy(pixels),
                               clip_plan.start, clip_plan.end, clip_plan.padded)
    except (DecodeError, ValueError) as error:
        yield VideoFailed(index, str(error))
        return
    except Exception as error:  # a decoder crash on one file must not end the run
        yield VideoFailed(index, f"{type(error).__name__}: {error}")
        return
    yield VideoFinished(index, time.perf_counter() - began)


GROUP_BYTES = 32 * 2**20  # a group never holds more than this (bounded memory with big clips)


def grouped(events: Iterable[Event], size: int, max_bytes: int = GROUP_BYTES) -> Iterator[Event]:
    """Stack runs of up to ``size`` consecutive clips (and ``max_bytes``) into ClipGroups; other events
    pass through in order."""
    run: list[Clip] = []
    held = 0

    def flush() -> Iterator[ClipGroup]:
        nonlocal held
        if run:
            pixels = torch.stack([c.pixels for c in run])
            yield ClipGroup(run[0].video, list(run), pixels)
            run.clear()
            held = 0

    for event in events:
        if isinstance(event, Clip):
            run.append(event)
            held += event.pixels.numel()
            if len(run) >= size or held >= max_bytes:
                yield from flush()
        else:
            yield from flush()
            yield event
    yield from flush()


class VideoEvents(torch.utils.data.IterableDataset):
    """The videos of a run as a stream of events; each DataLoader worker takes every n-th video and
    sends its clips in groups of up to ``group`` clips."""

    def __init__(self, jobs: Iterable[tuple[int, VideoSource]], spec: SamplingSpec,
                 preprocess: Preprocess, threads: int = 0, group: int = 1):
        self.jobs = list(jobs)
        self.spec, self.preprocess, self.threads, self.group = spec, preprocess, threads, group

    def __iter__(self) -> Iterator[Event]:
        worker = torch.utils.data.get_worker_info()
        mine = self.jobs if worker is None else self.jobs[worker.id::worker.num_workers]
        for index, source in mine:
            events = video_events(index, source, self.spec, self.preprocess, self.threads)
            yield from grouped(events, self.group) if self.group > 1 else events
