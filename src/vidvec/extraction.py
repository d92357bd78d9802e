"""The public entry point: sources in, one result per video out, written and recorded.

``extract`` is what the CLI and the Python API both call. It resolves the models and the sampling, asks each
model's ledger which videos still need work, runs them on this machine (decode workers of :mod:`vidvec.local`
feeding :class:`vidvec.runner.ModelRunner`), hands each result to the model's sink (:mod:`vidvec.sinks`) and
records the outcome in the ledger.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import WeightsError
from .clips import Slot
from .ledger import CLAIM_LEASE_S, Claimer, Fingerprint, Ledger, LedgerError, file_fingerprint, run_owner
from .local import DecodeOptions, Job, local_events
from .registry import ModelCard
from .runner import DTYPES, ModelOptions, ModelRunner, VideoResult, default_batch_size
from .sampling import SamplingSpec
from .sinks import (LAYOUTS, Ego4DSink, FileSink, HeroSink, LvsTimelineSink, OutputError, PySlowFastSink, Sink,
                    VideoFeaturesSink, span_seconds, video_features_streams)
from .presets import Preset, laid_over, preset_names
from .ray_executor import RayOptions, run_on_ray
from .replicas import run_replicated
from .presets import resolve as resolve_preset
from .sources import VideoSource, collect_sources
from .spec import NORMALIZATIONS, ModelSpec, OutputSpec, RunSpec, SpecError, plan_model
from .weights import DEFAULT_MODEL, LoadedModel, card_for
from .writers import FORMATS


class ExtractError(Exception):
    """A problem with the run as a whole (bad option, unknown model, settings clash, a ledger that cannot
    be written): one line."""


@dataclass(frozen=True)
class SamplingOverrides:
    """Sampling options given for a run, over each model's default or over a named preset (:mod:`vidvec.presets`),
    resolved per model by :meth:`apply`."""

    kind: str | None = None
    fps: float | None = None
    clip_len: int | None = None
    stride: int | None = None
    stride_seconds: float | None = None
    views: int | None = None
    crops: int | None = None
    backpad_last: bool | None = None
    rule: str | None = None
    sampling_rate: int | None = None
    preset_name: str | None = None  # a named scheme of another tool (presets.preset_names())

    @classmethod
    def preset(cls, name: str, **explicit: object) -> "SamplingOverrides":
        """A named scheme (``ego4d``, ``hero``, ``video_features``); explicit options that are not None win
        over it."""
        if name not in preset_names():
            raise ExtractError(f"unknown sampling preset {name!r}; choose one of {', '.join(preset_names())}")
        return cls(preset_name=name, **{k: v for k, v in explicit.items() if v is not None})

    def preset_for(self, card: ModelCard) -> tuple[Preset, bool] | None:
        """This run's preset for ``card`` and whether it is the card's own (None without a preset)."""
        if self.preset_name is None:
            return None
        try:
            return resolve_preset(card, self.preset_name)
        except KeyError:
            raise ExtractError(f"model {card.name} has no {self.preset_name} preset") from None

    def apply(self, card: ModelCard) -> SamplingSpec:
        """The sampling ``card``'s model gets: its default (or the preset's) with these overrides."""
        spec = card.sampling
        found = self.preset_for(card)
        changes = {k: v for k, v in self.__dict__.items() if k != "preset_name"}
        if found is not None:
            preset, own = found
            spec = preset.sampling if own else laid_over(card.sampling, preset)
            if own and self.clip_len is not None:  # the preset's tool counts the stack
                changes["clip_len"] = self.clip_len + card.stack_extra
        if self.views is not None and self.kind is None and spec.kind != "views":
            changes["kind"] = "views"
        try:
            return spec.with_overrides(**changes)
        except (ValueError, TypeError) as error:
            raise ExtractError(f"bad sampling option for {card.name}: {error}") from None


@dataclass
class Outcome:
    """One video's outcome for one model as the caller sees it: status is done, failed (now, or in an earlier
    run and not retried) or skipped (already done). ``model`` names the model (runs with several models give
    one outcome per video and model)."""

    source: VideoSource
    status: str
    reason: str | None = None
    output: Path | None = None
    result: VideoResult | None = None
    model: str | None = None
    partial: str | None = None  # done, but the output covers only part of the video (``partial`` runs): why

    @property
    def features(self) -> np.ndarray | None:
        return self.result.arrays.get("features") if self.result else None

    @property
    def timestamps(self) -> np.ndarray | None:
        return self.result.arrays.get("timestamps") if self.result else None

    @property
    def video_vector(self) -> np.ndarray | None:
        return self.result.arrays.get("video_vector") if self.result else None


@dataclass(frozen=True)
class ExecutionOptions:
    """How this machine runs a spec: the device, clips per model call (None: each model's default), decode
    worker processes (0: decode in this process) and the threads of both sides (:func:`thread_budget`). Not part
    of the settings: outputs do not depend on them (up to float rounding, see docs/usage.md#reproducibility)."""

    device: str = "cpu"
    batch_size: int | None = None
    num_workers: int | None = None  # None: default_workers(device)
    devices: tuple[str, ...] = ()  # one replica of the models per device (``device`` is the first)
    ray: RayOptions | None = None  # run on a Ray cluster (decode tasks, model replicas as actors) instead

    @property
    def replicas(self) -> tuple[str, ...]:
        """The device of each replica of the models: ``devices``, else ``device`` alone."""
        return self.devices or (self.device,)

    @property
    def workers(self) -> int:
        return default_workers(self.device) if self.num_workers is None else self.num_workers

    @property
    def threads(self) -> tuple[int, int]:
        return thread_budget(self.workers)


@dataclass
class Target:
    """One model of a run: what it computes (its spec, settings), where its results go (its sink) and where they
    are recorded (its ledger); the model itself is loaded when the run starts. A run with one model writes to
    OUT; a run with several gives each its own OUT/<model> folder, each a complete output folder of its own
    (``vidvec status OUT/<model>`` works)."""

    spec: ModelSpec
    settings: dict
    settings_hash: str
    sink: Sink | None = None  # None: results stay in memory
    ledger: Ledger | None = field(default=None, repr=False)
    model: LoadedModel | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def sampling(self) -> SamplingSpec:
        return self.spec.sampling

    @property
    def slot(self) -> Slot:
        """What this model takes from every video (the decode side's view of it)."""
        return Slot(self.spec.sampling, self.spec.preprocess, self.spec.input == "audio")


@dataclass
class Extraction:
    """A prepared run: its spec, the videos, and per model its sink and ledger. Iterate it to run; the models
    load when the first video needs them."""

    spec: RunSpec
    sources: list[VideoSource]
    targets: list[Target]
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    retry_failed: bool = False
    on_clips: Callable[[int], None] | None = None
    # By-products that could not be written, by (video index, model index): those videos are recorded failed.
    _extra_errors: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)
    # Each source file's size and mtime when the run looked at it (by video index): a changed file is redone.
    _fingerprints: dict[int, Fingerprint | None] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, spec: RunSpec, sources: list[VideoSource], execution: ExecutionOptions = ExecutionOptions(),
                  retry_failed: bool = False, overwrite: bool = False, absolute_outputs: bool = False,
                  on_clips: Callable[[int], None] | None = None) -> Extraction:
        """Prepare ``spec`` over ``sources``: each model's sink checks its outputs (outside ``out``, colliding:
        ExtractError before anything is created), then its ledger is opened and bound to its settings."""
        targets = [Target(model, spec.settings(slot), spec.settings_hash(slot)) for slot, model in
                   enumerate(spec.models)]
        for slot, target in enumerate(targets):
            folder = spec.folder(slot)
            if folder is not None:
                target.sink = _sink(spec.output, folder, sources, target, execution)
                try:
                    target.sink.check(sources, absolute_outputs)
                except OutputError as error:
                    raise ExtractError(str(error)) from None
        for target in targets:  # only once every check passed: nothing is created for a refused run
            if target.sink is not None:
                target.ledger = Ledger(target.sink.out)
                target.ledger.bind_settings(target.settings_hash, target.settings, overwrite=overwrite)
                target.sink.clean()
        return cls(spec, sources, targets, execution, retry_failed, on_clips)

    @property
    def model_options(self) -> ModelOptions:
        return ModelOptions(batch_size=self.execution.batch_size, device=self.execution.device,
                            threads=self.execution.threads[1],
                            dtype=self.spec.dtype, top_k=self.spec.top_k, logits=self.spec.logits,
                            extras=tuple(sorted({e for m in self.spec.models for e in m.extras})),
                            normalize=tuple(m.normalize for m in self.spec.models))

    @property
    def decode_options(self) -> DecodeOptions:
        device = torch.device(self.execution.device).type
        group = self.execution.batch_size or max(default_batch_size(m.input, device) for m in self.spec.models)
        return DecodeOptions(num_workers=self.execution.workers, decoder_threads=self.execution.threads[0],
                             group=group, pin_memory=device == "cuda", partial=self.spec.partial)

    def _load_models(self) -> None:
        """Build each model and load its weights (once); ExtractError when a checkpoint cannot be used."""
        for target in self.targets:
            if target.model is None:
                try:
                    target.model = target.spec.load(self.execution.device, self.spec.dtype, text=False)
                except (WeightsError, SpecError, ValueError) as error:
                    raise ExtractError(str(error)) from None

    def output_path(self, source: VideoSource, target: Target | None = None) -> Path:
        """Where ``source``'s output goes for ``target`` (default: the first model, which must write files)."""
        target = target or self.targets[0]
        assert target.sink is not None
        return target.sink.path(source)

    def __iter__(self) -> Iterator[Outcome]:
        """Run: one Outcome per video and model. A ledger that cannot be written (e.g. a full disk) stops the
        run with ExtractError; every file written before stays, and a new run resumes."""
        try:
            yield from self._outcomes()
        except LedgerError as error:
            raise ExtractError(f"{error}; the features written so far are kept: run again to resume") from None
        finally:
            self.close()

    def _outcomes(self) -> Iterator[Outcome]:
        for index, source in enumerate(self.sources):
            self._fingerprints[index] = file_fingerprint(source.path)
        settled = [self._settled(target) for target in self.targets]
        jobs = []
        for index, source in enumerate(self.sources):
            slots = []
            for slot, earlier in enumerate(s[index] for s in settled):
                if earlier is None:
                    slots.append(slot)
                else:
                    yield earlier
            if slots:
                jobs.append((index, source, tuple(slots)))
        if not jobs:
            return
        owner = run_owner()
        claimer = Claimer([t.sink.out if t.ledger else None for t in self.targets],
                          [t.settings_hash for t in self.targets], owner, self.retry_failed)
        with _ClaimsKept([t.ledger for t in self.targets if t.ledger is not None], owner), \
                contextlib.closing(claimer):
            for result in self._results(jobs, claimer):
                yield self._record(result, self.targets[result.slot])

    def _results(self, jobs: list[Job], claimer: Claimer) -> Iterator[VideoResult]:
        """Each video's result per model, computed here (decode workers feeding the models, one replica per
        device) or on a Ray cluster; each video claimed before its work starts."""
        slots = [t.slot for t in self.targets]
        if self.execution.ray is not None:
            for result in run_on_ray([t.spec for t in self.targets], self.spec.dtype, jobs, slots,
                                     self.model_options, self.decode_options, self.execution.ray, claimer):
                if self.on_clips and result.ok:
                    self.on_clips(result.clips)
                yield result
            return
        runners: list[ModelRunner] = []

        def load() -> None:  # while the first videos decode
            self._load_models()
            runners.extend(ModelRunner(models, options, self.on_clips, self._save_extra if options.extras else None)
                           for models, options in self._replicas())

        events = local_events(jobs, slots, self.decode_options, claimer, meanwhile=load)
        yield from runners[0].run(events) if len(runners) == 1 else run_replicated(events, runners)

    def _replicas(self) -> list[tuple[list[LoadedModel], ModelOptions]]:
        """The models and options of each replica: the loaded models on the first device, copies of them (the same
        weights, random ones included) on the others. Replicas on the CPU share its cores: each runs its share of
        the model threads (set in its own thread: torch's intra-op threads are per thread)."""
        devices = self.execution.replicas
        options = self.model_options
        if len(devices) == 1:
            return [([t.model for t in self.targets], options)]
        threads = max(1, self.execution.threads[1] // len(devices))
        replicas = []
        for index, device in enumerate(devices):
            models = [t.model if index == 0 else
                      dataclasses.replace(t.model, module=copy.deepcopy(t.model.module).to(device))
                      for t in self.targets]
            replicas.append((models, dataclasses.replace(options, device=device, threads=threads)))
        return replicas

    def _settled(self, target: Target) -> dict[int, Outcome | None]:
        """Per video index, the outcome an earlier run already settled for ``target``, or None if it needs work:
        done (and unchanged since) is skipped; failed stays failed until ``retry_failed``; a result a killed run
        wrote but did not record is adopted. One ledger query and one sink query for the whole run."""
        if target.ledger is None or target.sink is None:
            return dict.fromkeys(range(len(self.sources)))
        records = target.ledger.records_by_key()
        settled: dict[int, Outcome | None] = {}
        for index, source in enumerate(self.sources):
            settled[index] = None
            if target.ledger.should_process(source.key, self.retry_failed, self._fingerprints[index], records):
                continue
            record = records[source.key]
            if record.status == "failed":
                settled[index] = Outcome(source, "failed", f"failed in an earlier run: {record.reason} "
                                         "(--retry-failed runs it again)", model=target.name)
            else:
                settled[index] = Outcome(source, "skipped", f"already {record.status}", target.sink.path(source),
                                         model=target.name, partial=record.partial)
        open_ = [i for i, outcome in settled.items() if outcome is None]
        written = target.sink.done([self.sources[i] for i in open_],
                                   {self.sources[i].key: self._fingerprints[i] for i in open_})
        for index in open_:
            source = self.sources[index]
            if source.key in written:  # killed between the write and the ledger commit: adopt the file
                found = written[source.key]
                target.ledger.mark_done(source.key, source.path, found.path, found.clips, found.span_seconds, {},
                                        self._fingerprints[index], found.partial)
                settled[index] = Outcome(source, "skipped", "already written", found.path, model=target.name,
                                         partial=found.partial)
        return settled

    def _save_extra(self, video: int, slot: int, clip: int, crop: int, name: str, values: np.ndarray) -> None:
        """A clip's by-product (``--save-flow``) goes to its model's sink as it is computed; a video whose
        by-product cannot be written is recorded failed."""
        target = self.targets[slot]
        if (video, slot) in self._extra_errors or target.sink is None:
            return
        try:
            target.sink.write_extra(self.sources[video], clip, crop, name, values)
        except OutputError as error:
            self._extra_errors[(video, slot)] = str(error)

    def record(self, result: VideoResult) -> Outcome:
        """Record a result computed elsewhere (``result.index``: the video's place in ``sources``, ``result.slot``
        its model's): written through the model's sink and recorded in its ledger, as a run records its own."""
        if result.index not in self._fingerprints:
            self._fingerprints[result.index] = file_fingerprint(self.sources[result.index].path)
        return self._record(result, self.targets[result.slot])

    def close(self) -> None:
        """Close the ledgers and sinks (iterating the run does it at its end)."""
        for target in self.targets:
            if target.ledger is not None:
                target.ledger.close()
            if target.sink is not None:
                target.sink.close()

    def _record(self, result: VideoResult, target: Target) -> Outcome:
        source = result.source
        if result.taken:  # another run has it: its result stands
            return Outcome(source, "skipped", result.reason, target.sink.path(source), model=target.name)
        if result.ok and (result.index, result.slot) in self._extra_errors:
            result.ok, result.reason = False, self._extra_errors.pop((result.index, result.slot))
        if not result.ok:
            return self._failed(result, target, result.reason or "unknown error")
        note = result.partial.note if result.partial else None
        path = None
        if target.sink is not None:
            fingerprint = self._fingerprints.get(result.index)
            try:
                path = target.sink.write(result, fingerprint)
            except OutputError as error:
                return self._failed(result, target, str(error))
            target.ledger.mark_done(source.key, source.path, path, result.clips, span_seconds(result),
                                    {"decode_s": result.decode_s, "model_s": result.model_s,
                                     "wall_s": result.wall_s}, fingerprint, note)
        return Outcome(source, "done", output=path, result=result, model=target.name, partial=note)

    def _failed(self, result: VideoResult, target: Target, reason: str) -> Outcome:
        """Record a failure, unless another run into the same folder finished this video meanwhile (its file
        is in place): then that run's result stands."""
        source = result.source
        if target.ledger is not None and not target.ledger.mark_failed(source.key, source.path, reason,
                                                                       self._fingerprints.get(result.index)):
            return Outcome(source, "skipped", f"done by another run meanwhile (this one: {reason})",
                           target.sink.path(source), model=target.name)
        return Outcome(source, "failed", reason, result=result, model=target.name)


class _ClaimsKept:
    """While a run goes on, renew the claims it holds in its ledgers (a thread, every tenth of the lease); at
    the end, release those it still holds (videos it did not finish are free for the next run)."""

    def __init__(self, ledgers: Sequence[Ledger], owner: str, lease_s: float = CLAIM_LEASE_S) -> None:
        self.ledgers, self.owner, self.lease_s = list(ledgers), owner, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="vidvec-claims", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 10):
            for ledger in self.ledgers:
                try:
                    ledger.renew_claims(self.owner, self.lease_s)
                except LedgerError:  # the run itself will meet it and stop
                    pass

    def __enter__(self) -> _ClaimsKept:
        if self.ledgers:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for ledger in self.ledgers:
            try:
                ledger.release_claims(self.owner)
            except LedgerError:  # a full disk: the claims expire with their lease
                pass


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: str = "cpu") -> int:
    """Decode worker processes when the run does not say. An accelerator is fed by cores - 1 of them (1 to 8).
    On the CPU the model needs the cores: a quarter of them decode, and none below 4 cores, where decoding in
    the model's process, between its batches, was faster than a worker competing with it (docs/benchmarks.md)."""
    return max(1, min(8, cores() - 1)) if device != "cpu" else min(8, cores() // 4)


def thread_budget(workers: int) -> tuple[int, int]:
    """(FFmpeg threads per decoder, torch intra-op threads) for a run with ``workers`` decode workers, so that
    decoding and the model together ask for no more threads than there are cores: each worker's decoder gets one
    thread and the model the other cores; decoding in the model's process alternates with the model, so both
    get every core (0: FFmpeg's one thread per core)."""
    if workers <= 0:
        return 0, cores()
    return 1, max(1, cores() - workers)


def prepare(inputs: Sequence[str | Path] | str | Path = (), model: str | Sequence[str] | None = None,
            out: str | Path | None = None, *, retry_failed: bool = False, overwrite: bool = False,
            absolute_outputs: bool = False, on_clips: Callable[[int], None] | None = None,
            **options: Any) -> Extraction:
    """A run ready to iterate: :func:`specify` with ``options`` (its keyword arguments), then each model's outputs
    checked and its ledger bound (:meth:`Extraction.from_spec`). ``retry_failed`` redoes videos that failed
    before, ``overwrite`` redoes everything when the settings changed, ``absolute_outputs`` lets a manifest's
    ``output_path`` be absolute; ``on_clips(n)`` is told each batch's size."""
    spec, sources, execution = specify(inputs, model, out, **options)
    return Extraction.from_spec(spec, sources, execution, retry_failed=retry_failed, overwrite=overwrite,
                                absolute_outputs=absolute_outputs, on_clips=on_clips)


def specify(
    inputs: Sequence[str | Path] | str | Path = (),
    model: str | Sequence[str] | None = None,
    out: str | Path | None = None,
    *,
    weights: str | Sequence[str | None] | None = None,
    list_file: str | Path | None = None,
    manifest: str | Path | None = None,
    uids: str | Path | None = None,
    fmt: str | None = None,
    layout: str = "vidvec",
    out_dtype: str = "float32",
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str = "cpu",
    devices: str | Sequence[str] | None = None,
    dtype: str = "float32",
    sampling: SamplingOverrides | None = None,
    model_options: Mapping[str, object] | None = None,
    normalize: str | None = None,
    top_k: int = 0,
    logits: bool = False,
    save_flow: bool = False,
    partial: bool = False,
) -> tuple[RunSpec, list[VideoSource], ExecutionOptions]:
    """Resolve everything a run needs, creating nothing: its spec, its videos and how this machine runs it; raises
    ExtractError (or the model/weights/source errors) early.

    ``model`` None: the architecture a ``weights`` checkpoint names itself (a PySlowFast ``.pyth`` with its
    cfg), else ``efficientnet_lite0``. Several models (a list) share one decoding pass per video; each writes
    to its own ``out/<model>`` folder, and ``weights``, when given, is a list with one entry per model.
    ``model_options`` are build options a model declares in its card (e.g. I3D's ``streams``); a model that
    does not declare one is an error. ``normalize`` "l2" stores each clip's vector divided by its L2 norm
    ("none": as the model gives it; None: as the preset says, else "none"). ``layout`` "pyslowfast" writes
    only each video's vector to ``<video folder>/output_vecs/output_latent_vec_<stem>.npy`` (``out`` then holds
    just the ledger); "hero" writes ``out/<key>.npz`` with only ``features`` in float16. ``save_flow`` writes the optical flow a model
    computes (I3D's RAFT flow) clip by clip beside each output, as ``<output stem>.flow/<clip>.npy``.

    A truncated or damaged video fails; ``partial`` keeps what was decoded instead (recorded as partial in
    the ledger and the provenance; see ``clips.video_events``). Outputs stay inside ``out``: a manifest's
    ``output_path`` may not climb out of it (``..``, a symlink) nor be absolute unless ``absolute_outputs``;
    two videos whose outputs would be the same file are refused before any work.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    names = [model] if model is None or isinstance(model, str) else list(model)
    if not names:
        raise ExtractError("give at least one model")
    if len(set(names)) != len(names):
        raise ExtractError(f"a model is named twice: {', '.join(map(str, names))}")
    several = len(names) > 1
    if several and None in names:
        raise ExtractError("name every model when running several")
    if weights is None or isinstance(weights, (str, os.PathLike)):
        if several and weights is not None:
            raise ExtractError("with several models, give --weights once per model (in the same order) or not at all")
        weight_list = [weights] * len(names)
    else:
        weight_list = list(weights)
        if len(weight_list) != len(names):
            raise ExtractError(f"{len(weight_list)} --weights for {len(names)} models: give one per model")
    if layout not in LAYOUTS:
        raise ExtractError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "pyslowfast":
        if fmt not in (None, "npy"):
            raise ExtractError(f"--layout pyslowfast writes .npy vectors; --format {fmt} does not apply")
        if logits:
            raise ExtractError("--layout pyslowfast writes only the video vector (and --top-k predictions); "
                               "--logits needs --layout vidvec")
        if out is None:
            raise ExtractError("--layout pyslowfast needs an output folder (--out) for its ledger")
        if several:
            raise ExtractError("--layout pyslowfast holds one model's vectors; run one model at a time")
    if layout == "lvs-timeline" and (fmt not in (None, "npy") or logits or top_k or out is None or several
                                     or (sampling is not None and sampling.crops not in (None, 1))):
        raise ExtractError("--layout lvs-timeline writes <video folder>/output_vecs/output_latent_vec_<stem>.pk, one "
                           "vector per interval of one model: it needs --out (for the ledger) and takes no --format, "
                           "--logits, --top-k, --crops 3 or second model")
    if layout == "hero" and (fmt not in (None, "npz") or logits or top_k or out is None):
        raise ExtractError("--layout hero writes OUT/<name>.npz with float16 features only: it needs --out and "
                           "takes no --format, --logits or --top-k")
    if layout == "ego4d" and (fmt not in (None, "pt") or logits or top_k or out is None
                              or (sampling is not None and sampling.crops not in (None, 1))):
        raise ExtractError("--layout ego4d writes OUT/<name>.pt holding one (windows, dim) tensor: it needs --out and "
                           "takes no --format, --logits, --top-k or --crops 3")
    if layout == "video_features":
        if fmt not in (None, "npy") or logits or top_k or out is None:
            raise ExtractError("--layout video_features writes OUT/<name>_<feature type>.npy, _fps.npy and "
                               "_timestamps_ms.npy: it needs --out and takes no --format, --logits or --top-k")
        sampling = sampling or SamplingOverrides()
        if sampling.crops not in (None, 1):
            raise ExtractError("--layout video_features holds one vector per clip: it takes no --crops 3")
        if sampling.rule not in (None, "video_features") or sampling.preset_name not in (None,
                                                                                         "video_features"):
            raise ExtractError("--layout video_features stores video_features' timestamps: it takes --preset "
                               "video_features (the default with this layout), not another sampling rule")
        if sampling.preset_name is None and sampling.rule is None:  # the layout's files follow that tool's rules
            sampling = dataclasses.replace(sampling, preset_name="video_features")
    fmt = fmt or {"pyslowfast": "npy", "lvs-timeline": "npy", "video_features": "npy", "ego4d": "pt"}.get(layout, "npz")
    if fmt not in FORMATS:
        raise ExtractError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out_dtype not in ("float32", "float16"):
        raise ExtractError(f"--out-dtype must be float32 or float16, not {out_dtype!r}")
    if dtype not in DTYPES:
        raise ExtractError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if batch_size is not None and batch_size < 1:
        raise ExtractError("--batch-size must be at least 1")
    if top_k < 0:
        raise ExtractError(f"--top-k must be 0 (off) or more, not {top_k}")
    if num_workers is not None and num_workers < 0:
        raise ExtractError(f"--num-workers must be 0 (decode inline) or more, not {num_workers}")
    execution = execution_options(device, devices, batch_size, num_workers)
    sources = collect_sources(inputs, list_file=list_file, manifest=manifest, uids=uids)
    if not sources:
        raise ExtractError("no videos found in the given inputs")
    overrides = sampling or SamplingOverrides()
    options = {k: v for k, v in (model_options or {}).items() if v is not None}
    cards = [card_for(name, w) for name, w in zip(names, weight_list)]
    unused = set(options) - {k for card in cards for k in card.options}
    if unused:
        raise ExtractError(f"no model here takes option(s) {', '.join(sorted(unused))}")
    if normalize not in (None, *NORMALIZATIONS):
        raise ExtractError(f"--normalize must be {' or '.join(NORMALIZATIONS)}, not {normalize!r}")
    spec = RunSpec(tuple(_plan(card, name is None, w, options, overrides, save_flow, normalize)
                         for card, name, w in zip(cards, names, weight_list)),
                   OutputSpec(None if out is None else os.fspath(out), layout, fmt, out_dtype), dtype=dtype,
                   top_k=top_k, logits=logits, partial=partial)
    if save_flow and (out is None or not any(m.extras for m in spec.models)):
        raise ExtractError("--save-flow needs --out and a model that computes optical flow (i3d with streams "
                           "both or flow)")
    return spec, sources, execution


def plan_one(model: str, weights: str | os.PathLike | None = None, sampling: SamplingOverrides | None = None
             ) -> ModelSpec:
    """``model``'s spec as :func:`specify` plans it for a run with these options, without any input (a service
    loads its models before the first video)."""
    return _plan(card_for(model, weights), False, weights, {}, sampling or SamplingOverrides(), False, None)


def _plan(card: ModelCard, unnamed: bool, weights: str | os.PathLike | None, options: Mapping[str, object],
          overrides: SamplingOverrides, save_flow: bool, normalize: str | None) -> ModelSpec:
    """One model's spec: its card (named, or the architecture a checkpoint names), its weights file and hash,
    its build options, sampling, pixels and by-products, as the run's options and preset say. Builds nothing."""
    from_checkpoint = unnamed and card.name != DEFAULT_MODEL
    found = None if card.input == "audio" else overrides.preset_for(card)
    preset = found[0] if found else Preset(card.sampling)
    given = {k: v for k, v in options.items() if k in card.options}
    try:
        build = {} if from_checkpoint else card.check_options({**preset.options, **given})
    except ValueError as error:
        raise ExtractError(str(error)) from None
    # An audio model cuts its own examples: video sampling options do not apply to it.
    sampling = card.sampling if card.input == "audio" else overrides.apply(card)
    extras = card.extras_for(build) if save_flow else ()
    try:
        model = plan_model(card, weights, sampling, build, extras, from_checkpoint, pixels=preset.pixels,
                           normalize=normalize or preset.normalize)
    except ValueError as error:  # pixels a preset sets that this model's preprocessing cannot take
        raise ExtractError(f"{card.name}: {error}") from None
    if sampling.crops > 1 and card.input != "audio" and model.preprocess.crop is None:
        raise ExtractError(f"{card.name} takes whole frames and crops them itself; it has no --crops 3")
    return model


def _sink(output: OutputSpec, folder: Path, sources: list[VideoSource], target: Target,
          execution: ExecutionOptions) -> Sink:
    if output.layout == "pyslowfast":
        return PySlowFastSink(folder, output.out_dtype, sources)
    if output.layout == "lvs-timeline":
        return LvsTimelineSink(folder, output.out_dtype, sources)
    if output.layout == "hero":
        return HeroSink(folder)
    if output.layout == "ego4d":
        return Ego4DSink(folder)
    if output.layout == "video_features":
        return VideoFeaturesSink(folder, video_features_streams(target.spec.name, dict(target.spec.options)),
                                 target.spec.sampling.fps, target.spec.input == "audio")
    provenance = {"weights_trust": target.spec.weights.trust, "settings_hash": target.settings_hash,
                  **target.settings, "device": execution.device, "batch_size": execution.batch_size
                  or default_batch_size(target.spec.input, torch.device(execution.device).type)}
    return FileSink(folder, output.format, output.out_dtype, provenance)


def extract(inputs: Sequence[str | Path] | str | Path = (), model: str | None = None,
            out: str | Path | None = None, **options) -> Iterator[Outcome]:
    """Extract features; yields one Outcome per video (done, failed or skipped).

    With ``out`` the features are written there (one file per video) and recorded in its ledger,
    so re-running resumes; without it nothing is written and results come back in memory.
    ``model`` None: the model a ``weights=`` PySlowFast checkpoint names in its cfg, else efficientnet_lite0.
    ``layout="pyslowfast"`` writes each video's vector next to the video instead (see ``prepare``).
    """
    yield from prepare(inputs, model, out, **options)


def execution_options(device: str = "cpu", devices: str | Sequence[str] | None = None, batch_size: int | None = None,
                      num_workers: int | None = None) -> ExecutionOptions:
    """How this machine runs a spec, checked: ``device``, or with ``devices`` one replica per device."""
    replicas = _check_devices(devices, device) if devices else ()
    return ExecutionOptions(device=replicas[0] if replicas else _check_device(device), batch_size=batch_size,
                            num_workers=num_workers, devices=replicas)


def _check_devices(devices: str | Sequence[str], device: str) -> tuple[str, ...]:
    """``--devices``: a comma-separated list (``cuda:0,cuda:1``, ``cpu,cpu``) or ``all`` (every CUDA device), each
    checked; one replica of the models runs on each."""
    if device != "cpu":
        raise ExtractError("give --device or --devices, not both")
    names = devices.split(",") if isinstance(devices, str) else list(devices)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        if not torch.cuda.is_available():
            raise ExtractError("--devices all: CUDA is not available on this machine")
        names = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if not names:
        raise ExtractError("--devices takes a comma-separated list of devices, e.g. cuda:0,cuda:1, or all")
    checked = tuple(_check_device(name) for name in names)
    if len({torch.device(d).type for d in checked}) > 1:
        raise ExtractError(f"--devices {','.join(names)}: mixes CPU and GPU replicas; give devices of one kind")
    if any(torch.device(d).type == "cuda" and torch.device(d).index is None for d in checked):
        raise ExtractError("--devices: name each GPU with its index (cuda:0,cuda:1) or give all")
    if len(set(checked)) != len(checked) and torch.device(checked[0]).type == "cuda":
        raise ExtractError(f"--devices {','.join(names)}: a GPU is named twice")
    return checked


def _check_device(device: str) -> str:
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ExtractError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ExtractError(f"--device {device}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ExtractError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    elif parsed.type != "cpu":
        raise ExtractError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return str(parsed)
