"""The local executor: decode workers on this machine (torch DataLoader processes) feeding the model process.

Each worker takes every n-th video of the run and sends its events (:func:`vidvec.clips.video_events`), clips
stacked in groups; the model process consumes them as one stream (:meth:`vidvec.runner.ModelRunner.run`). This
is the only module that knows about DataLoader: another executor (a cluster task, Ray) produces the same events
its own way, one video at a time with :func:`job_events`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .allocator import keep_freed_memory
from .clips import Clip, ClipGroup, Event, Slot, VideoTaken, grouped, video_events
from .sources import VideoSource

Job = tuple[int, VideoSource, Sequence[int]]  # (video index, source, the slots (models) it is needed for)
# Claims a video (key, path) for slots before its work starts: the slots refused, with why (another run has them).
Claim = Callable[[str, Path, Sequence[int]], dict[int, str]]
# Pixels decoded in this process ahead of the models, while they load (read_ahead): a few batches of any model.
READ_AHEAD_BYTES = 64 << 20


@dataclass(frozen=True)
class DecodeOptions:
    """How videos are decoded: ``num_workers`` worker processes (0: in this process), FFmpeg threads per decoder
    (0: one per core), clips per group sent between processes, pinned memory for a CUDA model, and whether a
    truncated or damaged video keeps what was decoded (``partial``, see :func:`vidvec.clips.video_events`)."""

    num_workers: int = 1
    decoder_threads: int = 0
    group: int = 16
    pin_memory: bool = False
    partial: bool = False


class VideoEvents(torch.utils.data.IterableDataset):
    """The videos of a run as a stream of events; each DataLoader worker takes every n-th video and sends its
    clips in groups of up to ``group`` clips."""

    def __init__(self, jobs: Iterable[Job], slots: Sequence[Slot], threads: int = 0, group: int = 1,
                 partial: bool = False, claim: Claim | None = None):
        self.jobs = list(jobs)
        self.slots, self.threads, self.group, self.partial, self.claim = list(slots), threads, group, partial, claim

    def __iter__(self) -> Iterator[Event]:
        worker = torch.utils.data.get_worker_info()
        mine = self.jobs if worker is None else self.jobs[worker.id::worker.num_workers]
        for job in mine:
            yield from job_events(job, self.slots, self.threads, self.group, self.partial, self.claim)


def job_events(job: Job, slots: Sequence[Slot], threads: int = 0, group: int = 1, partial: bool = False,
               claim: Claim | None = None) -> Iterator[Event]:
    """One video's events, as a decode worker sends them: claimed first when ``claim`` is given (the slots another
    run has are answered with VideoTaken), clips stacked in groups of up to ``group``."""
    index, source, wanted = job
    refused = claim(source.key, source.path, wanted) if claim is not None else {}
    for slot, reason in refused.items():
        yield VideoTaken(index, source, slot, reason)
    wanted = [slot for slot in wanted if slot not in refused]
    if wanted:
        events = video_events(index, source, slots, threads, wanted, partial)
        yield from grouped(events, group) if group > 1 else events


def local_events(jobs: Sequence[Job], slots: Sequence[Slot], options: DecodeOptions,
                 claim: Claim | None = None, meanwhile: Callable[[], None] | None = None) -> Iterator[Event]:
    """Every event of ``jobs``, decoded in this process or in ``options.num_workers`` worker processes (in no
    particular order across videos; each video's own events stay in order). With ``claim`` (e.g. a
    :class:`vidvec.ledger.Claimer`), each video is claimed just before its work starts, and the slots another
    run has are answered with VideoTaken instead. ``meanwhile`` (loading the models) runs in this thread before
    this returns, while the first videos are already decoding: in the workers, or in this process ahead of the
    models (:func:`read_ahead`)."""
    jobs = list(jobs)
    keep_freed_memory()  # before this process's threads (reading ahead, FFmpeg's) allocate: one heap for all
    if options.num_workers <= 0 or not jobs:
        events = iter(VideoEvents(jobs, slots, options.decoder_threads, partial=options.partial, claim=claim))
        return read_ahead(events, meanwhile) if meanwhile is not None else events
    # Workers send clips in groups (fewer inter-process messages); a few groups in flight per worker keep the
    # model fed while bounding memory.
    dataset = VideoEvents(jobs, slots, options.decoder_threads, group=options.group, partial=options.partial,
                          claim=claim)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=min(options.num_workers, len(jobs)), prefetch_factor=4,
        worker_init_fn=_worker_init, in_order=False, pin_memory=options.pin_memory, persistent_workers=False)
    events = iter(loader)  # the workers start now, before the models are in this process's memory
    if meanwhile is not None:
        meanwhile()
    return events


def read_ahead(events: Iterator[Event], meanwhile: Callable[[], None], limit: int = READ_AHEAD_BYTES
               ) -> Iterator[Event]:
    """Run ``meanwhile`` in this thread while another takes events from ``events`` until their clips hold
    ``limit`` bytes of pixels; then return the events taken followed by the rest of ``events``, which this
    thread takes from there on. An error ``events`` raised in the other thread is raised in its place in the
    stream; one ``meanwhile`` raises, once the other thread has stopped."""
    taken: list[Event] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def take() -> None:
        held = 0
        try:
            while held < limit and not stop.is_set():
                event = next(events)
                taken.append(event)
                held += event.pixels.nbytes if isinstance(event, (Clip, ClipGroup)) else 0
        except StopIteration:
            pass
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread, in stream order
            failed.append(error)

    thread = threading.Thread(target=take, name="vidvec-read-ahead", daemon=True)
    thread.start()
    try:
        meanwhile()
    finally:
        stop.set()
        thread.join()
    return _then(taken, failed, events)


def _then(taken: list[Event], failed: list[BaseException], events: Iterator[Event]) -> Iterator[Event]:
    yield from taken
    if failed:
        raise failed[0]
    yield from events


def _worker_init(_: int) -> None:
    keep_freed_memory()
    _quiet_worker()


def _quiet_worker() -> None:
    """In a decode worker: when the run is stopped (Ctrl-C, SIGTERM) while a batch is being handed over, the
    thread that hands file descriptors to the model process (multiprocessing's resource sharer, which reports
    through sys.excepthook) loses its connection; that is the stop, not an error worth a traceback. (The worker's
    own work never reaches the hook: DataLoader catches and forwards its errors.)"""
    default = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: object) -> None:
        if not issubclass(kind, (EOFError, OSError)):
            default(kind, error, tb)

    sys.excepthook = hook
