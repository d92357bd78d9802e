"""Model side of the pipeline: batches clips across videos, runs the model, pools per video.

Decode workers (``clips.VideoEvents`` in DataLoader processes) overlap with the model here;
clips of consecutive videos share batches, and a video's result is complete once its last
clip has been through the model.
"""

from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .clips import (Clip, ClipGroup, Event, Partial, Stream, VideoEvents, VideoFailed, VideoFinished, VideoRestarted,
                    VideoStarted, describe_error)
from .decode import VideoInfo
from .sampling import SamplingSpec
from .sources import VideoSource
from .weights import LoadedModel


@dataclass(frozen=True)
class RunOptions:
    batch_size: int = 16
    num_workers: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    top_k: int = 0
    logits: bool = False
    decoder_threads: int = 0
    extras: tuple[str, ...] = ()  # per-clip by-products to hand to ``on_extra`` (e.g. I3D's "flow")
    partial: bool = False  # keep what a truncated or damaged video holds instead of failing it


@dataclass
class VideoResult:
    """What one video gave one model (``stream``: the model's position in the run): its arrays (features,
    timestamps, video_vector, ...) or a failure reason."""

    index: int
    source: VideoSource
    ok: bool
    reason: str | None = None
    info: VideoInfo | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    decode_s: float = 0.0
    model_s: float = 0.0
    wall_s: float = 0.0
    stream: int = 0
    partial: Partial | None = None  # set when the arrays cover only part of the video (RunOptions.partial)

    @property
    def clips(self) -> int:
        return len(self.arrays.get("features", ()))


@dataclass
class _Pending:
    """One video's clips for one model, still arriving or waiting in a batch."""

    info: VideoInfo | None
    began: float
    expected: int | None = None  # known once the video's decoding has finished
    rows: dict[tuple[int, int], tuple] = field(default_factory=dict)
    decode_s: float = 0.0
    model_s: float = 0.0
    partial: Partial | None = None


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _HeapTrimmer:
    """Hands the heap's free memory back to the OS (glibc's malloc_trim) at most every ``interval`` seconds.

    glibc serves the big blocks a run allocates over and over (batches, activations) from its heap once one has
    been freed, which keeps CPU forwards fast, but fragmentation then creeps a long run's RSS up. Trimming now
    and then bounds that, at the cost of touching the freed pages again once per interval. (Serving big blocks
    with mmap instead, M_MMAP_THRESHOLD 256 KiB, kept RSS flat too but slowed CPU forwards by 35-60%: page faults
    on every activation.)"""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last = time.monotonic()
        self._trim = None
        if sys.platform == "linux":
            try:
                self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
                pass

    def __call__(self) -> None:
        if self._trim is not None and time.monotonic() - self._last >= self.interval:
            self._trim(0)
            self._last = time.monotonic()


Job = tuple[int, VideoSource, Sequence[int]]  # (video index, source, the streams (models) it needs)


def _events(jobs: list[Job], streams: list[Stream], options: RunOptions) -> Iterator[Event]:
    if options.num_workers <= 0 or not jobs:
        return iter(VideoEvents(jobs, streams, options.decoder_threads, partial=options.partial))
    # Workers send clips in groups (fewer inter-process messages); a few groups in flight per worker
    # keep the model fed while bounding memory.
    dataset = VideoEvents(jobs, streams, options.decoder_threads, group=options.batch_size, partial=options.partial)
    workers = min(options.num_workers, len(jobs))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, prefetch_factor=4, worker_init_fn=_quiet_worker,
        in_order=False, pin_memory=options.device.startswith("cuda"), persistent_workers=False)
    return iter(loader)


def _quiet_worker(_: int) -> None:
    """In a decode worker: when the run is stopped (Ctrl-C, SIGTERM) while a batch is being handed over, the
    thread that hands file descriptors to the model process (multiprocessing's resource sharer, which reports
    through sys.excepthook) loses its connection; that is the stop, not an error worth a traceback. (The worker's
    own work never reaches the hook: DataLoader catches and forwards its errors.)"""
    default = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: object) -> None:
        if not issubclass(kind, (EOFError, OSError)):
            default(kind, error, tb)

    sys.excepthook = hook


def run(jobs: Sequence[Job], models: Sequence[LoadedModel], specs: Sequence[SamplingSpec], options: RunOptions,
        on_batch: Callable[[int], None] | None = None,
        on_extra: Callable[[int, int, int, int, str, np.ndarray], None] | None = None) -> Iterator[VideoResult]:
    """Yield one VideoResult per video and model it needs, in completion order.

    Several models share one decoding pass per video: each is a stream with its own sampling and
    preprocessing, and its own batches (clips of consecutive videos share them). A model's by-products
    that ``options.extras`` names (those it has) go to ``on_extra(video, stream, clip, crop, name, float16
    array)`` as each batch is done, so they are never all held at once.
    """
    trim_heap = _HeapTrimmer()
    streams = [Stream(spec, m.preprocess, m.card.input == "audio") for m, spec in zip(models, specs)]
    jobs = list(jobs)
    by_index = {index: (source, wanted) for index, source, wanted in jobs}
    pending: dict[tuple[int, int], _Pending] = {}
    batches: dict[int, list[Clip]] = {s: [] for s in range(len(models))}
    dtype = DTYPES[options.dtype]
    device = torch.device(options.device)
    want_logits = options.top_k > 0 or options.logits

    def forward(stream: int, clips: list[Clip]) -> Iterator[VideoResult]:
        """Run one batch; yield a failure for each video whose clips the model could not turn into finite
        vectors (a model error fails the batch's videos, a NaN or Inf row fails its video), then the results
        the batch completed."""
        began = time.perf_counter()
        try:
            latent, logits, extras = _forward(models[stream], clips, options, device, dtype, want_logits,
                                              bool(on_extra))
        except Exception as error:  # e.g. out of memory on the device: these videos fail, the run goes on
            for clip in _firsts(clips, [True] * len(clips)):
                if (clip.video, stream) in pending:
                    yield failed(VideoFailed(clip.video, f"model failed: {describe_error(error)}", stream))
            return
        finite = np.isfinite(latent).all(axis=1)
        if logits is not None:
            finite &= np.isfinite(logits).all(axis=1)
        for clip in _firsts(clips, ~finite):
            if (clip.video, stream) in pending:
                yield failed(VideoFailed(clip.video, f"the model gave NaN or Inf values (clip at {clip.start:.2f} "
                                                     "s); check the weights and --dtype", stream))
        spent = (time.perf_counter() - began) / len(clips)
        for i, clip in enumerate(clips):
            entry = pending.get((clip.video, stream))
            if entry is None:  # the video failed after this clip was batched
                continue
            entry.rows[(clip.clip, clip.crop)] = (
                latent[i], None if logits is None else logits[i], clip.start, clip.end, clip.padded, clip.stamp)
            entry.model_s += spent
            for name, values in extras.items():
                on_extra(clip.video, stream, clip.clip, clip.crop, name, values[i])
        if on_batch:
            on_batch(len(clips))
        trim_heap()
        yield from completed()

    def completed() -> Iterator[VideoResult]:
        """Results whose clips have all been through their model (few videos are in flight at a time)."""
        for key in [k for k, e in pending.items() if e.expected is not None and len(e.rows) >= e.expected]:
            video, entry = key[0], pending.pop(key)
            source = by_index[video][0]
            if not entry.rows:  # nothing to pool (e.g. an audio track shorter than one example)
                yield VideoResult(video, source, False, "no clips to extract", info=entry.info, stream=key[1])
                continue
            yield VideoResult(video, source, True, info=entry.info,
                              arrays=_pool(entry, options.top_k, models[key[1]].categories),
                              decode_s=entry.decode_s, model_s=entry.model_s,
                              wall_s=time.perf_counter() - entry.began, stream=key[1], partial=entry.partial)

    def failed(event: VideoFailed) -> VideoResult:
        key = (event.video, event.stream)
        closed.add(key)
        entry = pending.pop(key, None)
        batches[event.stream] = [c for c in batches[event.stream] if c.video != event.video]
        return VideoResult(event.video, by_index[event.video][0], False, event.reason,
                           info=entry.info if entry else None, stream=event.stream)

    closed: set[tuple[int, int]] = set()  # (video, stream) pairs that failed: they get no second result
    for event in _events(jobs, streams, options):
        if isinstance(event, VideoStarted):
            began = time.perf_counter()
            for stream in by_index[event.video][1]:
                if (event.video, stream) not in closed:
                    pending[(event.video, stream)] = _Pending(event.info, began)
        elif isinstance(event, (Clip, ClipGroup)):
            clips = event.unpack() if isinstance(event, ClipGroup) else [event]
            stream = clips[0].stream
            batch = batches[stream]
            if batch and batch[0].pixels.shape != clips[0].pixels.shape:  # whole frames of a video of another size
                batches[stream] = clips
                yield from forward(stream, batch)
            else:
                batch.extend(clips)
            while len(batches[stream]) >= options.batch_size:
                batch = batches[stream]
                batches[stream] = batch[options.batch_size:]
                yield from forward(stream, batch[:options.batch_size])
        elif isinstance(event, VideoFinished):
            # Every stream of the video still open ends here: one without a count sent nothing ("no clips").
            for key in [k for k in pending if k[0] == event.video]:
                pending[key].expected = event.counts.get(key[1], 0)
                pending[key].decode_s = event.decode_s
                pending[key].partial = event.partial.get(key[1])
            yield from completed()
        elif isinstance(event, VideoRestarted):  # planned again: what was sent before is void
            for stream in event.streams:
                if (event.video, stream) in pending:
                    pending[(event.video, stream)].rows.clear()
                    batches[stream] = [c for c in batches[stream] if c.video != event.video]
        elif isinstance(event, VideoFailed):
            yield failed(event)
    for stream in list(batches):
        if batches[stream]:
            batch, batches[stream] = batches[stream], []
            yield from forward(stream, batch)
    yield from completed()


def _firsts(clips: list[Clip], flags: Sequence[bool]) -> list[Clip]:
    """The first flagged clip of each video, in order."""
    firsts: dict[int, Clip] = {}
    for clip, flag in zip(clips, flags):
        if flag:
            firsts.setdefault(clip.video, clip)
    return list(firsts.values())


def _forward(model: LoadedModel, clips: list[Clip], options: RunOptions, device: torch.device, dtype: torch.dtype,
             want_logits: bool, want_extras: bool) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """One batch through one model: float32 latents (N, D), logits (N, C) or None, and the by-products
    ``options.extras`` names that the model has (float16, per clip)."""
    pixels = torch.stack([c.pixels for c in clips]).to(device, non_blocking=True)
    kind = model.card.input
    names = [n for n in options.extras if n in model.module.extras] if want_extras else []
    with torch.inference_mode():
        x = pixels.to(dtype) if kind == "audio" else model.preprocess.normalize(pixels, dtype, video=kind == "video")
        latent, extras = model.module.forward_with_extras(x, names) if names else (model.module(x), {})
        logits = model.module.classify(latent) if want_logits else None
    extras = {name: values.to(torch.float16).cpu().numpy() for name, values in extras.items()}
    if kind == "image" and pixels.shape[1] > 1:  # frame-wise model on multi-frame clips: mean over frames
        latent = latent.reshape(len(clips), -1, latent.shape[-1]).mean(1)
        logits = None if logits is None else logits.reshape(len(clips), -1, logits.shape[-1]).mean(1)
    return latent.float().cpu().numpy(), None if logits is None else logits.float().cpu().numpy(), extras


def _pool(entry: _Pending, top_k: int, categories: Sequence[str] | None) -> dict[str, np.ndarray]:
    keys = sorted(entry.rows)
    rows = [entry.rows[k] for k in keys]
    features = np.stack([r[0] for r in rows]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "features": features,
        "timestamps": np.array([[r[2], r[3]] for r in rows], dtype=np.float64),
        "video_vector": features.mean(0),
        "padded": np.array([r[4] for r in rows], dtype=bool),
    }
    if rows[0][5] is not None:  # a rule with its own clip timestamps (video_features' timestamps_ms)
        arrays["timestamps_ms"] = np.array([r[5] * 1000.0 for r in rows], dtype=np.float64)
    if any(k[1] for k in keys):
        arrays["crop"] = np.array([k[1] for k in keys], dtype=np.int16)
    if rows[0][1] is not None:
        logits = np.stack([r[1] for r in rows]).astype(np.float32)
        arrays["logits"] = logits
        if top_k > 0:
            arrays.update(_top_k(logits, top_k, categories))
    return arrays


def _top_k(logits: np.ndarray, k: int, categories: Sequence[str] | None) -> dict[str, np.ndarray]:
    probs = torch.from_numpy(logits).softmax(-1)
    k = min(k, probs.shape[-1])
    scores, indices = probs.topk(k, dim=-1)
    video_scores, video_indices = probs.mean(0).topk(k)
    out = {"topk_indices": indices.numpy().astype(np.int32), "topk_scores": scores.numpy(),
           "video_topk_indices": video_indices.numpy().astype(np.int32), "video_topk_scores": video_scores.numpy()}
    if categories:
        names = np.asarray(categories)
        out["topk_labels"] = names[out["topk_indices"]]
        out["video_topk_labels"] = names[out["video_topk_indices"]]
    return out
