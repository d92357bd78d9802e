"""The Ray executor (``vidvec extract --executor ray``): videos decoded by Ray tasks on the cluster's CPUs, the
models held by a pool of Ray actors (one replica per GPU, or ``--model-replicas`` on CPUs), every result recorded
by the driver, the only writer of the ledger and the outputs.

The driver claims each video in the ledger, then hands videos in bundles to idle replicas. A replica starts one
decode task per video of its bundle (:func:`vidvec.local.job_events`, as a local decode worker runs it); each
task streams its events back in blocks (clips grouped as local workers group them), at most BACKPRESSURE blocks
unread, so what the object store holds does not grow with a video's length. The replica runs them through the
same :class:`~vidvec.runner.ModelRunner` the local executor uses and streams each video's result back as soon as
it is pooled. A decode task or replica that dies loses only its unfinished videos: the driver gives them to a
live replica again (a new one replaces a dead replica), up to ``max_retries`` times, then records them failed.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from .clips import Slot, VideoFailed
from .local import Claim, DecodeOptions, Job, job_events
from .runner import ModelOptions, ModelRunner, VideoResult
from .spec import ModelSpec
from .startup import trim_imports

BACKPRESSURE = 4  # blocks a decode task may have ready and unread before it waits
CAPACITY_CHECK_S = 10.0  # with no result for this long, the driver checks the cluster can still run the work
log = logging.getLogger(__name__)


class RayExecutorError(Exception):
    """Ray cannot run this: not installed, no cluster at the address (one line)."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the run goes: the cluster's ``address`` ("auto": the one this machine belongs to),
    model ``replicas`` (None: one per GPU of the cluster with a CUDA device, else 1), decode tasks at once across
    the cluster (``decode_cpus``; None: the cluster's CPUs the replicas leave, at least 1) and how often a video
    whose worker died is given out again (``max_retries``)."""

    address: str = "auto"
    replicas: int | None = None
    decode_cpus: int | None = None
    max_retries: int = 2


def import_ray():
    """The ray module, or RayExecutorError with the install line."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise RayExecutorError("--executor ray needs Ray: pip install 'vidvec[ray]'") from None
    return ray


def connect(address: str) -> dict:
    """Join the Ray cluster at ``address`` (host:port of its head, ray://host:port, or "auto"); its resources."""
    ray = import_ray()
    host, _, port = address.rpartition(":")
    if address != "auto" and not address.startswith("ray://") and port.isdigit():
        try:  # an address nobody answers at: one line now, rather than Ray's reconnection attempts
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except OSError as error:
            raise RayExecutorError(f"no Ray cluster answers at {address} ({error.strerror or error})") from None
    try:
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayExecutorError(f"cannot join a Ray cluster at {address}: {str(error).splitlines()[0]}") from None
    return ray.cluster_resources()


def run_on_ray(models: Sequence[ModelSpec], dtype: str, jobs: Sequence[Job], slots: Sequence[Slot],
               model_options: ModelOptions, decode: DecodeOptions, options: RayOptions,
               claim: Claim | None = None) -> Iterator[VideoResult]:
    """Every result of ``jobs`` (one per video and slot, in no particular order), computed on the cluster.
    ``claim`` (the driver's Claimer) is asked before each video is given out, as local decode workers ask it."""
    ray = import_ray()
    resources = connect(options.address)
    gpu = model_options.device.startswith("cuda")
    replicas = options.replicas or (max(1, int(resources.get("GPU", 0))) if gpu else 1)
    cpus = int(resources.get("CPU", 1))
    largest = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]), default=1)
    model_cpus = 1 if gpu else max(1, min(largest, (cpus - (options.decode_cpus or max(1, cpus // 4))) // replicas))
    decode_cpus = options.decode_cpus or max(1, cpus - replicas * model_cpus)
    per_bundle = max(1, -(-decode_cpus // replicas))
    decode = replace(decode, num_workers=0, decoder_threads=1)
    model_options = replace(model_options, threads=model_cpus, device="cuda" if gpu else "cpu")
    replica_class = ray.remote(_Replica).options(num_cpus=model_cpus, num_gpus=1 if gpu else 0, max_restarts=0,
                                                 max_task_retries=0)

    def new_replica():
        return replica_class.remote(tuple(models), dtype, model_options, tuple(slots), decode)

    def check_capacity() -> None:
        """The cluster left (nodes die) must hold a replica and a decode task, else nothing would ever run."""
        left = ray.cluster_resources()
        if left.get("CPU", 0) < (1 if gpu else model_cpus) + 1 or (gpu and left.get("GPU", 0) < 1):
            raise RayExecutorError(
                f"the Ray cluster has {left.get('CPU', 0):g} CPU(s) and {left.get('GPU', 0):g} GPU(s) left: too few "
                f"for a model replica ({model_cpus} CPU{', 1 GPU' if gpu else ''}) and a decode task (1 CPU); the "
                "videos done are recorded: run the same command again when the cluster is back")

    idle = [new_replica() for _ in range(replicas)]
    pending: deque[Job] = deque()
    for job in jobs:
        index, source, wanted = job
        refused = claim(source.key, source.path, wanted) if claim is not None else {}
        for slot, reason in refused.items():
            yield VideoResult(index, source, False, reason, slot=slot, taken=True)
        wanted = tuple(s for s in wanted if s not in refused)
        if wanted:
            pending.append((index, source, wanted))
    tries: dict[int, int] = {}
    running: dict = {}  # a replica's stream of results -> (the replica, the slots of each video not reported yet)

    def lost(job: Job, slots_left: Sequence[int], reason: str) -> Iterator[VideoResult]:
        """A video whose worker died: out again, or failed once it has been out max_retries + 1 times."""
        tries[job[0]] = tries.get(job[0], 0) + 1
        if tries[job[0]] <= options.max_retries:
            log.warning("vidvec: %s: %s; given out again (try %d of %d)", job[1].path, reason, tries[job[0]] + 1,
                        options.max_retries + 1)
            pending.appendleft((job[0], job[1], tuple(slots_left)))
            return
        for slot in slots_left:
            yield VideoResult(job[0], job[1], False, f"its worker died {tries[job[0]]} times (last: {reason})",
                              slot=slot)

    try:
        while pending or running:
            while idle and pending:
                bundle = [pending.popleft() for _ in range(min(per_bundle, len(pending)))]
                replica = idle.pop()
                stream = replica.run.options(num_returns="streaming").remote(bundle)
                running[stream] = (replica, {job[0]: (job, list(job[2])) for job in bundle})
            ready, _ = ray.wait(list(running), num_returns=1, timeout=CAPACITY_CHECK_S)
            if not ready:
                check_capacity()
            for stream in ready:
                replica, left = running[stream]
                try:
                    result, died = ray.get(next(stream))
                except StopIteration:
                    del running[stream]
                    idle.append(replica)
                    for job, slots_left in left.values():  # (none: a replica reports every video it is given)
                        yield from lost(job, slots_left, "its model replica gave no result for it")
                    continue
                except ray.exceptions.RayError as error:
                    del running[stream]
                    ray.kill(replica)
                    check_capacity()
                    idle.append(new_replica())
                    reason = f"its model replica died: {str(error).splitlines()[0]}"
                    for job, slots_left in left.values():
                        yield from lost(job, slots_left, reason)
                    continue
                job, slots_left = left[result.index]
                slots_left.remove(result.slot)
                if not slots_left:
                    del left[result.index]
                if died is None:
                    yield result
                else:
                    yield from lost(job, [result.slot], died)
    finally:
        for replica, _ in running.values():
            ray.kill(replica)
        for replica in idle:
            ray.kill(replica)


class _Replica:
    """One replica of the run's models (a Ray actor): takes bundles of videos, decodes each in a Ray task of its
    own and streams back ``(result, None)``, or ``(result, why)`` for a video whose decode task died."""

    def __init__(self, models: tuple[ModelSpec, ...], dtype: str, options: ModelOptions, slots: tuple[Slot, ...],
                 decode: DecodeOptions) -> None:
        import ray

        trim_imports()  # the actor's process is the run's own
        self.runner = ModelRunner([m.load(options.device, dtype, text=False) for m in models], options)
        self.slots, self.decode = slots, decode
        self.decode_task = ray.remote(_decode).options(num_cpus=1, num_returns="streaming", max_retries=0,
                                                       _generator_backpressure_num_objects=BACKPRESSURE)

    def run(self, bundle: list[Job]) -> Iterator[tuple[VideoResult, str | None]]:
        import ray

        streams = [self.decode_task.remote(job, self.slots, self.decode) for job in bundle]
        died: dict[int, str] = {}

        def events():
            for (index, _, wanted), stream in zip(bundle, streams):
                try:
                    for block in stream:
                        yield ray.get(block)
                except ray.exceptions.RayError as error:
                    died[index] = f"its decode task died: {str(error).splitlines()[0]}"
                    for slot in wanted:  # what it sent is dropped; the driver gives the video out again
                        yield VideoFailed(index, died[index], slot)

        reported = set()
        for result in self.runner.run(events()):
            reported.add((result.index, result.slot))
            yield result, died.get(result.index)
        for index, source, wanted in bundle:  # died before the model saw any of it: nothing was pooled
            for slot in wanted:
                if index in died and (index, slot) not in reported:
                    yield VideoResult(index, source, False, died[index], slot=slot), died[index]


def _decode(job: Job, slots: tuple[Slot, ...], decode: DecodeOptions):
    """A decode task: one video's events, clips grouped as local decode workers group them."""
    yield from job_events(job, slots, decode.decoder_threads, decode.group, decode.partial)
