"""A run planned over tasks (``vidvec plan``): what a dataset-scale extraction will cost before it starts, and the
file ``vidvec extract --plan FILE --task I`` executes share by share.

- :func:`read_durations`: every input's duration from its container header, in parallel threads.
- :func:`measure_costs`: seconds of decoding and of each model per second of video, on a few inputs, here.
- :func:`pack`: videos into tasks by longest processing time first (the longest video goes to the least loaded
  task, and so on), with the makespan's lower bound max(longest video, total / tasks).
- :class:`RunPlan`: the spec, the inputs with their durations and tasks, the costs; JSON on disk.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from .decode import DecodeError, header_duration
from .sources import VideoSource
from .spec import RunSpec

PLAN_VERSION = 1


class PlanError(Exception):
    """A plan file that cannot be read, or that does not match the run it is used for (one line)."""


def read_durations(sources: Sequence[VideoSource], threads: int = 0,
                   on_read: Callable[[int], None] | None = None) -> list[tuple[float | None, str | None]]:
    """(duration, None) or (None, reason) per source, in order: header durations read in ``threads`` threads (0:
    twice the cores, at most 32), cut to the source's ``[start, end)``; ``on_read(n)`` is told as files are read."""
    threads = threads or min(32, 2 * (os.cpu_count() or 1))
    def one(source: VideoSource) -> tuple[float | None, str | None]:
        try:
            seconds = header_duration(source.path)
        except DecodeError as error:
            return None, str(error)
        end = seconds if source.end is None else min(source.end, seconds)
        return max(0.0, end - (source.start or 0.0)), None

    results: list[tuple[float | None, str | None]] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for result in pool.map(one, sources, chunksize=64):
            results.append(result)
            if on_read and len(results) % 256 == 0:
                on_read(256)
    if on_read and len(results) % 256:
        on_read(len(results) % 256)
    return results


def pack(durations: Sequence[float], tasks: int) -> tuple[list[int], list[float]]:
    """Longest processing time first: each video, longest first, to the task with the least video so far (ties:
    the lowest task). Returns each video's task and each task's load. Within 4/3 of the best makespan at worst;
    on long-tailed sets within a few percent of :func:`lower_bound`."""
    if tasks < 1:
        raise ValueError(f"tasks must be at least 1, not {tasks}")
    heap = [(0.0, task) for task in range(tasks)]
    assignment = [0] * len(durations)
    loads = [0.0] * tasks
    for index in sorted(range(len(durations)), key=lambda i: -durations[i]):
        load, task = heapq.heappop(heap)
        assignment[index] = task
        loads[task] = load + durations[index]
        heapq.heappush(heap, (loads[task], task))
    return assignment, loads


def lower_bound(durations: Sequence[float], tasks: int) -> float:
    """No assignment finishes before its longest video nor before an equal share of the total."""
    return max(max(durations, default=0.0), sum(durations) / tasks)


@dataclass(frozen=True)
class Costs:
    """Measured here: seconds of decoding per second of video (for every model's clips, one pass), seconds of each
    model per second of video, bytes written per second of video per model, seconds to load the models; and on
    what (``videos``, ``seconds`` of video, ``device``)."""

    decode: float
    models: tuple[float, ...]
    bytes_per_second: tuple[float, ...]
    load: float
    videos: int
    seconds: float
    device: str

    @property
    def per_second(self) -> float:
        """Seconds of one task's time per second of video, decoding inline with the models."""
        return self.decode + sum(self.models)


def measure_costs(spec: RunSpec, sources: Sequence[VideoSource], durations: Sequence[float | None],
                  device: str = "cpu", budget: float = 20.0, most: int = 3) -> Costs:
    """Decode up to ``most`` readable inputs (those of the median duration, each cut to ``budget`` seconds, so the
    sample is typical and quick) and time it, then time each model on the clips decoded: per second of video."""
    import numpy as np
    import torch

    from .clips import Clip, ClipGroup, Slot, video_events
    from .runner import ModelOptions, ModelRunner, default_batch_size

    readable = [(d, s) for d, s in zip(durations, sources) if d]
    median = sorted(d for d, _ in readable)[len(readable) // 2] if readable else 0.0
    readable.sort(key=lambda pair: abs(pair[0] - median))
    sample = [replace(source, end=(source.start or 0.0) + min(budget, seconds)) for seconds, source in
              readable[:most]]
    if not sample:
        raise PlanError("no input could be read: nothing to measure")
    seconds = sum(min(budget, d) for d, _ in readable[:most])
    slots = [Slot(model.sampling, model.preprocess, model.input == "audio") for model in spec.models]
    began = time.perf_counter()
    clips: list[list[Clip]] = [[] for _ in spec.models]
    for index, source in enumerate(sample):
        for event in video_events(index, source, slots):
            for clip in event.unpack() if isinstance(event, ClipGroup) else [event] if isinstance(event, Clip) else []:
                clips[clip.slot].append(clip)
    decode = (time.perf_counter() - began) / seconds
    began = time.perf_counter()
    loaded = [model.load(device, spec.dtype, text=False) for model in spec.models]
    load = time.perf_counter() - began
    runner = ModelRunner(loaded, ModelOptions(device=device, dtype=spec.dtype,
                                              normalize=tuple(m.normalize for m in spec.models)))
    model_costs, sizes = [], []
    item = np.dtype(spec.output.out_dtype).itemsize
    for slot, model in enumerate(spec.models):
        size = default_batch_size(model.input, torch.device(device).type)
        began = time.perf_counter()
        width = 0
        for start in range(0, len(clips[slot]), size):
            latent, _, _ = runner.forward(slot, clips[slot][start:start + size])
            width = latent.shape[1]
        model_costs.append((time.perf_counter() - began) / seconds)
        # each clip's vector and its two timestamps; the video vector is one row more per video
        sizes.append(len(clips[slot]) * (width * item + 16) / seconds)
    return Costs(decode, tuple(model_costs), tuple(sizes), load, len(sample), seconds, device)


@dataclass
class RunPlan:
    """A run over ``tasks`` tasks: its spec, every input (``durations[i]`` None when its header could not be read:
    it fails alone when its task reaches it), each input's task, and the measured costs."""

    spec: RunSpec
    sources: list[VideoSource]
    durations: list[float | None]
    tasks: int
    assignment: list[int]
    costs: Costs | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @classmethod
    def make(cls, spec: RunSpec, sources: list[VideoSource], durations: list[float | None], tasks: int,
             costs: Costs | None = None) -> RunPlan:
        """Pack the inputs into ``tasks`` tasks; an unreadable one counts as no video (it fails at once). Paths
        are made absolute, so that tasks started in other folders (a cluster's) find the same files."""
        assignment, _ = pack([d or 0.0 for d in durations], tasks)
        sources = [replace(s, path=Path(os.path.abspath(s.path))) for s in sources]
        if spec.output.out is not None:
            spec = replace(spec, output=replace(spec.output, out=os.path.abspath(spec.output.out)))
        return cls(spec, sources, durations, tasks, assignment, costs)

    def share(self, task: int) -> list[VideoSource]:
        """The inputs task ``task`` (0 .. tasks - 1) runs, in input order."""
        if not 0 <= task < self.tasks:
            raise PlanError(f"this plan has tasks 0 to {self.tasks - 1}, not {task}")
        return [s for s, t in zip(self.sources, self.assignment) if t == task]

    def estimates(self) -> dict:
        """Video hours, each task's video seconds, the makespan and its lower bound (in video seconds), and with
        costs: wall seconds of the longest task, device-hours in all, bytes written."""
        known = [d or 0.0 for d in self.durations]
        loads = [0.0] * self.tasks
        for seconds, task in zip(known, self.assignment):
            loads[task] += seconds
        out = {"videos": len(self.sources), "unreadable": sum(d is None for d in self.durations),
               "video_hours": sum(known) / 3600, "longest_video_s": max(known, default=0.0),
               "makespan_video_s": max(loads), "lower_bound_video_s": lower_bound(known, self.tasks),
               "task_video_s": loads}
        if self.costs:
            per = self.costs.per_second
            out.update(wall_s=max(loads) * per + self.costs.load,
                       device_hours=(sum(known) * per + self.tasks * self.costs.load) / 3600,
                       output_bytes=sum(known) * sum(self.costs.bytes_per_second))
        return out

    # -- the file ------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "vidvec_plan": PLAN_VERSION, "created": self.created, "tasks": self.tasks,
            "spec": json.loads(self.spec.to_json()),
            "settings_hashes": [self.spec.settings_hash(slot) for slot in range(len(self.spec.models))],
            "costs": asdict(self.costs) if self.costs else None,
            "videos": [{"path": os.fspath(s.path), "key": s.key,
                        "output": None if s.output is None else os.fspath(s.output), "start": s.start, "end": s.end,
                        "duration": d, "task": t}
                       for s, d, t in zip(self.sources, self.durations, self.assignment)],
        })

    def write(self, path: str | os.PathLike) -> Path:
        """Write the plan file atomically."""
        from .writers import atomic_path

        with atomic_path(Path(path)) as tmp:
            tmp.write_text(self.to_json(), encoding="utf-8")
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunPlan:
        """A plan file (PlanError with one line when it is not one, or its settings no longer hash the same)."""
        from .spec import SpecError

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("vidvec_plan") != PLAN_VERSION:
                raise PlanError(f"{path}: not a vidvec plan file (or one of another version)")
            spec = RunSpec.from_json(json.dumps(data["spec"]))
            costs = data["costs"]
            videos = data["videos"]
            plan = cls(spec, [VideoSource(Path(v["path"]), v["key"], None if v["output"] is None else Path(v["output"]),
                                          v["start"], v["end"]) for v in videos],
                       [v["duration"] for v in videos], int(data["tasks"]), [int(v["task"]) for v in videos],
                       None if costs is None else Costs(**{k: tuple(v) if isinstance(v, list) else v
                                                            for k, v in costs.items()}),
                       data["created"])
        except PlanError:
            raise
        except (OSError, ValueError, KeyError, TypeError, SpecError) as error:
            raise PlanError(f"{path}: not a readable vidvec plan file ({error})") from None
        hashes = [spec.settings_hash(slot) for slot in range(len(spec.models))]
        if hashes != data["settings_hashes"] or not all(0 <= t < plan.tasks for t in plan.assignment):
            raise PlanError(f"{path}: its settings no longer hash as written (edited, or another vidvec version)")
        return plan

    def check_matches(self, spec: RunSpec, sources: Sequence[VideoSource]) -> None:
        """PlanError naming the first difference between this plan and a run given on the command line."""
        mine = [self.spec.settings(slot) for slot in range(len(self.spec.models))]
        theirs = [spec.settings(slot) for slot in range(len(spec.models))]
        if len(mine) != len(theirs):
            raise PlanError(f"the plan has {len(mine)} model(s), this run {len(theirs)}")
        for a, b in zip(mine, theirs):
            for key in sorted(set(a) | set(b), key=lambda k: (k not in ("model", "weights"), k)):
                if a.get(key) != b.get(key):
                    raise PlanError(f"the plan's {key} is {a.get(key)!r}, this run's {b.get(key)!r}")
        def absolute(path: str | os.PathLike | None) -> str | None:
            return None if path is None else os.path.abspath(path)

        if absolute(self.spec.output.out) != absolute(spec.output.out):
            raise PlanError(f"the plan writes to {self.spec.output.out}, this run to {absolute(spec.output.out)}")
        planned = {absolute(s.path) for s in self.sources}
        given = {absolute(s.path) for s in sources}
        if planned != given:
            extra, missing = sorted(given - planned), sorted(planned - given)
            what = (f"{len(extra)} input(s) not in the plan (first {extra[0]})" if extra else
                    f"{len(missing)} planned input(s) not given (first {missing[0]})")
            raise PlanError(f"the inputs differ from the plan's: {what}")
