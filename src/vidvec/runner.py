"""Model side of a run: batches clips across videos, runs each model, assembles per-video results.

Any iterable of decode events (:mod:`vidvec.clips`) drives it: the local executor's DataLoader, a Ray dataset,
a cluster task's own loop, a service queue. A :class:`ModelRunner` holds the loaded models of the run (one per
slot) and turns batches of clips into typed :class:`ClipRow` s; an :class:`Assembler` collects each video's
rows per slot and pools them into a :class:`VideoResult` once the video's last clip is through its model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .clips import (Clip, ClipGroup, Event, Partial, VideoFailed, VideoFinished, VideoRestarted, VideoStarted,
                    VideoTaken, describe_error)
from .allocator import HeapTrimmer, keep_freed_memory
from .decode import VideoInfo
from .optimize import as_channels_last, fold_batch_norms, fold_quick_gelus, to_channels_last
from .sources import VideoSource
from .weights import LoadedModel

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelOptions:
    """How the models of a run compute: clips per batch, device, compute dtype, what to keep besides the vector
    (``top_k`` classes, ``logits``, by-products a model can hand out such as I3D's "flow"), and whether to use
    the fast paths of :mod:`vidvec.optimize` (off: each module runs as loaded, for comparisons)."""

    batch_size: int | None = None  # None: each model's default_batch_size on the device
    device: str = "cpu"
    dtype: str = "float32"
    top_k: int = 0
    logits: bool = False
    extras: tuple[str, ...] = ()
    fast_paths: bool = True  # BatchNorms into convolutions, QuickGELUs as SiLUs, channels-last where the card says
    threads: int | None = None  # torch's intra-op threads while the run computes (None: as they are)
    normalize: tuple[str, ...] = ()  # per slot: "l2" divides each clip's vector by its norm (after the logits)


@dataclass(frozen=True)
class Flush:
    """An event for the runner itself: run every partial batch now (a stream that pauses, e.g. a service whose
    requests have stopped coming for its maximum wait)."""


@dataclass
class ClipRow:
    """One clip (and crop) through its model: its place in the video, its vector and, if asked, its logits."""

    clip: int
    crop: int
    start: float
    end: float
    padded: bool
    stamp: float | None  # the clip's timestamp under rules that define one (video_features)
    latent: np.ndarray
    logits: np.ndarray | None = None


@dataclass
class VideoResult:
    """What one video gave one model (``slot``: the model's position in the run): its arrays (features,
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
    slot: int = 0
    partial: Partial | None = None  # set when the arrays cover only part of the video (decode option partial)
    taken: bool = False  # not worked on here: another run has it (``reason`` says how)

    @property
    def clips(self) -> int:
        return len(self.arrays.get("features", ()))


@dataclass
class _Video:
    """One video's rows for one slot, still arriving or waiting in a batch."""

    source: VideoSource
    info: VideoInfo | None
    began: float
    expected: int | None = None  # known once the video's decoding has finished
    rows: dict[tuple[int, int], ClipRow] = field(default_factory=dict)
    decode_s: float = 0.0
    model_s: float = 0.0
    partial: Partial | None = None


class Assembler:
    """Collects each (video, slot)'s rows and pools them into a VideoResult when the last one is in.

    It follows the decode events of each video (started, restarted, finished, failed); rows come from the
    runner. A (video, slot) gets exactly one result: once it has one it is no longer open and takes no rows."""

    def __init__(self, categories: Sequence[Sequence[str] | None], top_k: int) -> None:
        self._categories, self._top_k = list(categories), top_k
        self._open: dict[tuple[int, int], _Video] = {}

    def is_open(self, video: int, slot: int) -> bool:
        return (video, slot) in self._open

    def started(self, event: VideoStarted) -> None:
        began = time.perf_counter()
        for slot in event.slots:
            self._open[(event.video, slot)] = _Video(event.source, event.info, began)

    def restarted(self, event: VideoRestarted) -> None:
        for slot in event.slots:
            if (event.video, slot) in self._open:
                self._open[(event.video, slot)].rows.clear()

    def finished(self, event: VideoFinished) -> Iterator[VideoResult]:
        # Every slot of the video still open ends here: one without a count sent nothing ("no clips").
        for key, entry in self._open.items():
            if key[0] == event.video:
                entry.expected = event.counts.get(key[1], 0)
                entry.decode_s = event.decode_s
                entry.partial = event.partial.get(key[1])
        return self.completed()

    def failed(self, video: int, slot: int, reason: str) -> VideoResult | None:
        """The (video, slot)'s failure result; None if it already has a result."""
        entry = self._open.pop((video, slot), None)
        if entry is None:
            return None
        return VideoResult(video, entry.source, False, reason, info=entry.info, slot=slot)

    def add(self, video: int, slot: int, rows: Sequence[ClipRow], model_s: float) -> None:
        entry = self._open.get((video, slot))
        if entry is None:  # the video failed after these clips were batched
            return
        for row in rows:
            entry.rows[(row.clip, row.crop)] = row
        entry.model_s += model_s

    def completed(self) -> Iterator[VideoResult]:
        """Results whose clips have all been through their model (few videos are in flight at a time)."""
        done = [k for k, e in self._open.items() if e.expected is not None and len(e.rows) >= e.expected]
        for video, slot in done:
            entry = self._open.pop((video, slot))
            if not entry.rows:  # nothing to pool (e.g. an audio track shorter than one example)
                yield VideoResult(video, entry.source, False, "no clips to extract", info=entry.info, slot=slot)
                continue
            yield VideoResult(video, entry.source, True, info=entry.info,
                              arrays=pool(entry.rows, self._top_k, self._categories[slot]),
                              decode_s=entry.decode_s, model_s=entry.model_s,
                              wall_s=time.perf_counter() - entry.began, slot=slot, partial=entry.partial)


class ModelRunner:
    """The loaded models of a run, one per slot, and how they compute (``options``).

    ``run(events)`` batches each slot's clips across videos and yields one VideoResult per video and slot it
    was started for, in completion order. ``on_batch(n)`` is told each batch's size; by-products named in
    ``options.extras`` go to ``on_extra(video, slot, clip, crop, name, float16 array)`` batch by batch, so they
    are never all held at once."""

    def __init__(self, models: Sequence[LoadedModel], options: ModelOptions,
                 on_batch: Callable[[int], None] | None = None,
                 on_extra: Callable[[int, int, int, int, str, np.ndarray], None] | None = None) -> None:
        self.models, self.options = list(models), options
        self.on_batch, self.on_extra = on_batch, on_extra
        self._device = torch.device(options.device)
        self._dtype = DTYPES[options.dtype]
        self._channels_last = [options.fast_paths and model.card.channels_last and self._device.type == "cpu"
                               for model in self.models]
        for model, flag in zip(self.models, self._channels_last):
            if options.fast_paths:
                fold_batch_norms(model.module)
                fold_quick_gelus(model.module)
            if flag:
                to_channels_last(model.module)
        self.batch_sizes = [options.batch_size or default_batch_size(model.card.input, self._device.type)
                            for model in self.models]
        self._trim_heap = HeapTrimmer()
        keep_freed_memory()

    def run(self, events: Iterable[Event | Flush]) -> Iterator[VideoResult]:
        threads = torch.get_num_threads()
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        try:
            yield from self._run(events)
        finally:
            torch.set_num_threads(threads)

    def _run(self, events: Iterable[Event | Flush]) -> Iterator[VideoResult]:
        assembler = Assembler([m.categories for m in self.models], self.options.top_k)
        batches: dict[int, list[Clip]] = {s: [] for s in range(len(self.models))}
        for event in events:
            if isinstance(event, VideoStarted):
                assembler.started(event)
            elif isinstance(event, (Clip, ClipGroup)):
                clips = event.unpack() if isinstance(event, ClipGroup) else [event]
                slot = clips[0].slot
                batch = batches[slot]
                if batch and batch[0].pixels.shape != clips[0].pixels.shape:  # whole frames of another size
                    batches[slot] = clips
                    yield from self._forward(slot, batch, assembler)
                else:
                    batch.extend(clips)
                size = self.batch_sizes[slot]
                while len(batches[slot]) >= size:
                    batch, batches[slot] = batches[slot][:size], batches[slot][size:]
                    yield from self._forward(slot, batch, assembler)
            elif isinstance(event, VideoFinished):
                yield from assembler.finished(event)
            elif isinstance(event, Flush):
                for slot, batch in batches.items():
                    if batch:
                        batches[slot] = []
                        yield from self._forward(slot, batch, assembler)
            elif isinstance(event, VideoRestarted):  # planned again: what was sent before is void
                assembler.restarted(event)
                for slot in event.slots:
                    batches[slot] = [c for c in batches[slot] if c.video != event.video]
            elif isinstance(event, VideoTaken):
                yield VideoResult(event.video, event.source, False, event.reason, slot=event.slot, taken=True)
            elif isinstance(event, VideoFailed):
                batches[event.slot] = [c for c in batches[event.slot] if c.video != event.video]
                result = assembler.failed(event.video, event.slot, event.reason)
                if result is not None:
                    yield result
        for slot, batch in batches.items():
            if batch:
                yield from self._forward(slot, batch, assembler)
        yield from assembler.completed()

    def _forward(self, slot: int, clips: list[Clip], assembler: Assembler) -> Iterator[VideoResult]:
        """Run one batch; a model error fails the batch's videos, a NaN or Inf row fails its video; then the
        results the batch completed."""
        began = time.perf_counter()
        try:
            latent, logits, extras = self.forward(slot, clips)
        except Exception as error:  # e.g. out of memory on the device: these videos fail, the run goes on
            reason = f"model failed: {describe_error(error)}"
            yield from _fail_firsts(assembler, slot, clips, [True] * len(clips), lambda clip: reason)
            return
        finite = np.isfinite(latent).all(axis=1)
        if logits is not None:
            finite &= np.isfinite(logits).all(axis=1)
        yield from _fail_firsts(assembler, slot, clips, ~finite, lambda clip: (
            f"the model gave NaN or Inf values (clip at {clip.start:.2f} s); check the weights and --dtype"))
        spent = (time.perf_counter() - began) / len(clips)
        rows: dict[int, list[ClipRow]] = {}
        for i, clip in enumerate(clips):
            rows.setdefault(clip.video, []).append(ClipRow(
                clip.clip, clip.crop, clip.start, clip.end, clip.padded, clip.stamp, latent[i],
                None if logits is None else logits[i]))
            if self.on_extra and assembler.is_open(clip.video, slot):
                for name, values in extras.items():
                    self.on_extra(clip.video, slot, clip.clip, clip.crop, name, values[i])
        for video, video_rows in rows.items():
            assembler.add(video, slot, video_rows, spent * len(video_rows))
        if self.on_batch:
            self.on_batch(len(clips))
        self._trim_heap()
        yield from assembler.completed()

    def forward(self, slot: int, clips: Sequence[Clip]) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
        """One batch through one slot's model: float32 latents (N, D), logits (N, C) or None, and the
        by-products ``options.extras`` names that the model has (float16, per clip)."""
        model = self.models[slot]
        pixels = torch.stack([c.pixels for c in clips]).to(self._device, non_blocking=True)
        kind = model.card.input
        names = [n for n in self.options.extras if n in model.module.extras] if self.on_extra else []
        want_logits = self.options.top_k > 0 or self.options.logits
        # A model cast to bf16/fp16 on the CPU also runs under autocast: it casts the inputs of the few ops the CPU
        # has no low-precision kernel for (3-D average pooling) to fp32, and is free for the rest.
        low_precision_cpu = self._device.type == "cpu" and self._dtype != torch.float32
        with torch.inference_mode(), torch.autocast("cpu", dtype=self._dtype, enabled=low_precision_cpu):
            x = (pixels.to(self._dtype) if kind == "audio"
                 else model.preprocess.normalize(pixels, self._dtype, video=kind == "video"))
            if self._channels_last[slot]:
                x = as_channels_last(x)
            latent, extras = model.module.forward_with_extras(x, names) if names else (model.module(x), {})
            logits = model.module.classify(latent) if want_logits else None
        extras = {name: values.to(torch.float16).cpu().numpy() for name, values in extras.items()}
        if kind == "image" and pixels.shape[1] > 1:  # frame-wise model on multi-frame clips: mean over frames
            latent = latent.reshape(len(clips), -1, latent.shape[-1]).mean(1)
            logits = None if logits is None else logits.reshape(len(clips), -1, logits.shape[-1]).mean(1)
        if slot < len(self.options.normalize) and self.options.normalize[slot] == "l2":
            latent = torch.nn.functional.normalize(latent.float(), dim=1)
        return latent.float().cpu().numpy(), None if logits is None else logits.float().cpu().numpy(), extras


def default_batch_size(model_input: str, device_type: str) -> int:
    """Clips per model call when the run does not say: 2 for clip models (video input) on the CPU, where a larger
    batch computes no faster but holds more activations (a GB more at 4 for SlowFast); 16 otherwise
    (docs/benchmarks.md)."""
    return 2 if model_input == "video" and device_type == "cpu" else 16


def _fail_firsts(assembler: Assembler, slot: int, clips: Sequence[Clip], flags: Sequence[bool],
                 reason: Callable[[Clip], str]) -> Iterator[VideoResult]:
    """Fail each video that has a flagged clip, naming its first one."""
    firsts: dict[int, Clip] = {}
    for clip, flag in zip(clips, flags):
        if flag:
            firsts.setdefault(clip.video, clip)
    for video, clip in firsts.items():
        result = assembler.failed(video, slot, reason(clip))
        if result is not None:
            yield result


def pool(rows: dict[tuple[int, int], ClipRow], top_k: int, categories: Sequence[str] | None
         ) -> dict[str, np.ndarray]:
    """A video's arrays from its rows, in (clip, crop) order: features, timestamps, video_vector, padded, and
    where they apply timestamps_ms, crop, logits and the top-k classes."""
    keys = sorted(rows)
    ordered = [rows[k] for k in keys]
    features = np.stack([r.latent for r in ordered]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "features": features,
        "timestamps": np.array([[r.start, r.end] for r in ordered], dtype=np.float64),
        "video_vector": features.mean(0),
        "padded": np.array([r.padded for r in ordered], dtype=bool),
    }
    if ordered[0].stamp is not None:  # a rule with its own clip timestamps (video_features' timestamps_ms)
        arrays["timestamps_ms"] = np.array([r.stamp * 1000.0 for r in ordered], dtype=np.float64)
    if any(crop for _, crop in keys):
        arrays["crop"] = np.array([crop for _, crop in keys], dtype=np.int16)
    if ordered[0].logits is not None:
        logits = np.stack([r.logits for r in ordered]).astype(np.float32)
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
