"""The public entry point: sources in, one result per video out, written and recorded.

``extract`` is what the CLI and the Python API both call. It resolves the model and the
sampling, asks the ledger which videos still need work, runs the pipeline, writes each
video's features atomically with their provenance, and records the outcome in the ledger.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import av
import numpy as np
import torch

from . import __version__
from .ledger import Fingerprint, Ledger, LedgerError, VideoRecord, file_fingerprint, settings_hash
from .pipeline import DTYPES, RunOptions, VideoResult, run
from .registry import ModelCard, get_card
from .sampling import SamplingSpec
from .sources import VideoSource, collect_sources
from .weights import LoadedModel, load_model
from .writers import (FORMATS, LAYOUTS, PYSLOWFAST_DIR, extra_path, output_path, pyslowfast_paths, read_features,
                      remove_stale_temps, write_array, write_features, write_hero_features, write_latent_vector)


class ExtractError(Exception):
    """A problem with the run as a whole (bad option, unknown model, settings clash, a ledger that cannot
    be written): one line."""


# Presets that are per model: the card's own spec under this name in ``card.extra`` (e.g. the window scheme
# v-iashin/video_features uses for that model), rather than one scheme for every model.
MODEL_PRESETS = ("video_features",)


@dataclass(frozen=True)
class SamplingOverrides:
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
    base: str | None = None  # a per-model preset (MODEL_PRESETS) to start from instead of the model's default

    @classmethod
    def preset(cls, name: str, **explicit: object) -> "SamplingOverrides":
        """A named window scheme (``ego4d``, ``hero``, or per model ``video_features``); explicit options that
        are not None win over it."""
        from .models.pyslowfast.preprocessing import PRESETS

        if name in MODEL_PRESETS:
            return cls(base=name, **{k: v for k, v in explicit.items() if v is not None})
        if name not in PRESETS:
            raise ExtractError(f"unknown sampling preset {name!r}; choose one of {', '.join([*PRESETS, *MODEL_PRESETS])}")
        spec = PRESETS[name]
        fields = {"kind": spec.kind, "fps": spec.fps, "clip_len": spec.clip_len, "stride": spec.stride,
                  "stride_seconds": spec.stride_seconds, "crops": spec.crops, "backpad_last": spec.backpad_last,
                  "rule": spec.rule, "sampling_rate": spec.sampling_rate}
        if explicit.get("stride") is not None or explicit.get("stride_seconds") is not None:
            fields.update(stride=None, stride_seconds=None)
        fields.update({k: v for k, v in explicit.items() if v is not None})
        return cls(**fields)

    def apply(self, card: ModelCard) -> SamplingSpec:
        """The sampling ``card``'s model gets: its default (or its ``base`` preset) with these overrides."""
        spec = card.sampling
        if self.base is not None:
            spec = card.extra.get(self.base)
            if not isinstance(spec, SamplingSpec):
                raise ExtractError(f"model {card.name} has no {self.base} preset")
        changes = {k: v for k, v in self.__dict__.items() if k != "base"}
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


@dataclass
class Target:
    """One model of a run: what it computes (model, sampling, settings) and where its outputs and its ledger
    go. A run with one model writes to OUT; a run with several gives each its own OUT/<model> folder, each a
    complete output folder of its own (``vidvec status OUT/<model>`` works)."""

    model: LoadedModel
    spec: SamplingSpec
    settings: dict
    settings_hash: str
    out: Path | None
    ledger: Ledger | None = field(default=None, repr=False)
    # --layout pyslowfast: each source's vector file, next to the video (by source key).
    layout_paths: dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.model.card.name


@dataclass
class Extraction:
    """A prepared run: what will be processed, with which models and settings. Iterate it to run."""

    sources: list[VideoSource]
    targets: list[Target]
    options: RunOptions
    fmt: str
    out_dtype: str
    retry_failed: bool = False
    on_clips: Callable[[int], None] | None = None
    layout: str = "vidvec"
    # By-products that could not be written, by (video index, model index): those videos are recorded failed.
    _extra_errors: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)
    # Each source file's size and mtime when the run looked at it (by video index): a changed file is redone.
    _fingerprints: dict[int, Fingerprint | None] = field(default_factory=dict, repr=False)

    def output_path(self, source: VideoSource, target: Target | None = None) -> Path:
        """Where ``source``'s output goes for ``target`` (default: the first model; its ``out`` must be set):
        ``OUT/<key>.<format>`` (layouts vidvec and hero), or ``<video folder>/output_vecs/
        output_latent_vec_<stem>.npy`` (layout pyslowfast). A manifest's ``output_path`` wins in all layouts."""
        target = target or self.targets[0]
        assert target.out is not None
        if self.layout == "pyslowfast" and source.output is None:
            return target.layout_paths[source.key]
        return output_path(target.out, source.key, self.fmt, source.output)

    def __iter__(self) -> Iterator[Outcome]:
        """Run: one Outcome per video and model. A ledger that cannot be written (e.g. a full disk) stops the
        run with ExtractError; every file written before stays, and a new run resumes."""
        try:
            yield from self._outcomes()
        except LedgerError as error:
            raise ExtractError(f"{error}; the features written so far are kept: run again to resume") from None
        finally:
            for target in self.targets:
                if target.ledger is not None:
                    target.ledger.close()

    def _outcomes(self) -> Iterator[Outcome]:
        jobs: list[tuple[int, VideoSource, tuple[int, ...]]] = []
        records = [t.ledger.records_by_key() if t.ledger is not None else {} for t in self.targets]
        for index, source in enumerate(self.sources):
            self._fingerprints[index] = file_fingerprint(source.path)
            wanted = []
            for t, target in enumerate(self.targets):
                earlier = self._earlier(index, source, target, records[t])
                if earlier is not None:
                    yield earlier
                else:
                    wanted.append(t)
            if wanted:
                jobs.append((index, source, tuple(wanted)))
        results = run(jobs, [t.model for t in self.targets], [t.spec for t in self.targets], self.options,
                      self.on_clips, self._save_extra if self.options.extras else None)
        for result in results:
            yield self._record(result, self.targets[result.stream])

    def _earlier(self, index: int, source: VideoSource, target: Target, records: Mapping[str, VideoRecord]
                 ) -> Outcome | None:
        """The outcome an earlier run already settled for this video and model, or None if it needs work: done
        (and unchanged since) is skipped; failed stays failed until ``retry_failed``."""
        if target.ledger is None:
            return None
        path = self.output_path(source, target)
        fingerprint = self._fingerprints[index]
        if not target.ledger.should_process(source.key, self.retry_failed, fingerprint, records):
            record = records[source.key]
            if record.status == "failed":
                return Outcome(source, "failed", f"failed in an earlier run: {record.reason} (--retry-failed runs "
                               "it again)", model=target.name)
            return Outcome(source, "skipped", f"already {record.status}", path, model=target.name,
                           partial=record.partial)
        # pyslowfast and hero files have no provenance to prove their settings: such a file is simply redone.
        provenance = self._provenance_of(path) if self.layout == "vidvec" and path.exists() else None
        if (provenance is not None and provenance.get("settings_hash") == target.settings_hash
                and _fingerprint_of(provenance) in (None, fingerprint)):
            # Killed between the write and the ledger commit: the file is complete, adopt it.
            note = (provenance.get("partial") or {}).get("note")
            target.ledger.mark_done(source.key, source.path, path, int(provenance.get("clips", 0)),
                                    float(provenance.get("span_seconds", 0.0)), {}, fingerprint, note)
            return Outcome(source, "skipped", "already written", path, model=target.name, partial=note)
        return None

    @staticmethod
    def _provenance_of(path: Path) -> dict | None:
        try:
            return read_features(path)[1]
        except Exception:  # unreadable leftovers are simply redone
            return None

    def _save_extra(self, video: int, stream: int, clip: int, crop: int, name: str, values: np.ndarray) -> None:
        """Write one clip's by-product (``--save-flow``) beside the video's output, as it is computed."""
        if (video, stream) in self._extra_errors:
            return
        path = extra_path(self.output_path(self.sources[video], self.targets[stream]), name, clip, crop)
        try:
            write_array(path, values)
        except OSError as error:
            self._extra_errors[(video, stream)] = f"cannot write {path}: {error.strerror or error}"

    def _record(self, result: VideoResult, target: Target) -> Outcome:
        source = result.source
        ledger = target.ledger
        fingerprint = self._fingerprints.get(result.index)
        if result.ok and (result.index, result.stream) in self._extra_errors:
            result.ok, result.reason = False, self._extra_errors.pop((result.index, result.stream))
        note = result.partial.note if result.partial else None
        if result.ok and self.layout == "hero" and result.partial and "clips_left_out" in result.partial.detail:
            result.ok, result.reason = False, f"{note} (--layout hero keeps one row per chunk: none may be missing)"
        if not result.ok:
            return self._failed(result, target, result.reason or "unknown error")
        path = None
        if target.out is not None:
            path = self.output_path(source, target)
            try:
                if self.layout == "pyslowfast":
                    write_latent_vector(path, result.arrays["video_vector"], self.out_dtype,
                                        _video_predictions(result.arrays))
                elif self.layout == "hero":
                    write_hero_features(path, result.arrays["features"])
                else:
                    write_features(path, self.fmt, result.arrays, self._provenance(result, target), self.out_dtype)
            except OSError as error:
                return self._failed(result, target, f"cannot write {path}: {error.strerror or error}")
            ledger.mark_done(source.key, source.path, path, result.clips, _span_seconds(result),
                             {"decode_s": result.decode_s, "model_s": result.model_s, "wall_s": result.wall_s},
                             fingerprint, note)
        return Outcome(source, "done", output=path, result=result, model=target.name, partial=note)

    def _failed(self, result: VideoResult, target: Target, reason: str) -> Outcome:
        """Record a failure, unless another run into the same folder finished this video meanwhile (its file
        is in place): then that run's result stands."""
        source = result.source
        if target.ledger is not None and not target.ledger.mark_failed(source.key, source.path, reason,
                                                                       self._fingerprints.get(result.index)):
            return Outcome(source, "skipped", f"done by another run meanwhile (this one: {reason})",
                           self.output_path(source, target), model=target.name)
        return Outcome(source, "failed", reason, result=result, model=target.name)

    def _provenance(self, result: VideoResult, target: Target) -> dict:
        return {
            "vidvec_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": str(result.source.path),
            "span": [result.source.start, result.source.end],
            "span_seconds": _span_seconds(result),
            "clips": result.clips,
            "video": result.info.to_dict() if result.info else None,
            "source_file": _fingerprint_dict(self._fingerprints.get(result.index)),
            **({"partial": {"note": result.partial.note, **result.partial.detail}} if result.partial else {}),
            "weights_trust": target.model.weights_trust,
            "settings_hash": target.settings_hash,
            **target.settings,
            "device": self.options.device,
            "batch_size": self.options.batch_size,
            "software": {"torch": torch.__version__, "av": av.__version__, "python": platform.python_version()},
        }


def _fingerprint_dict(fingerprint: Fingerprint | None) -> dict | None:
    return None if fingerprint is None else {"size": fingerprint.size, "mtime_ns": fingerprint.mtime_ns}


def _fingerprint_of(provenance: dict) -> Fingerprint | None:
    """The source file's fingerprint a feature file records (None for files made before it was recorded)."""
    known = provenance.get("source_file")
    return Fingerprint(int(known["size"]), int(known["mtime_ns"])) if isinstance(known, dict) else None


def _video_predictions(arrays: dict) -> dict | None:
    """The video-level top-k (mean of the clips' probabilities), or None when top-k was not asked for."""
    if "video_topk_indices" not in arrays:
        return None
    return {"indices": arrays["video_topk_indices"].tolist(), "scores": arrays["video_topk_scores"].tolist(),
            "labels": arrays["video_topk_labels"].tolist() if "video_topk_labels" in arrays else None}


def _span_seconds(result: VideoResult) -> float:
    stamps = result.arrays.get("timestamps")
    if stamps is None or not len(stamps):
        return 0.0
    return float(stamps[:, 1].max() - stamps[:, 0].min())


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def prepare(
    inputs: Sequence[str | Path] | str | Path = (),
    model: str | Sequence[str] | None = None,
    out: str | Path | None = None,
    *,
    weights: str | Sequence[str | None] | None = None,
    list_file: str | Path | None = None,
    manifest: str | Path | None = None,
    fmt: str | None = None,
    layout: str = "vidvec",
    out_dtype: str = "float32",
    batch_size: int = 16,
    num_workers: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    sampling: SamplingOverrides | None = None,
    model_options: Mapping[str, object] | None = None,
    top_k: int = 0,
    logits: bool = False,
    save_flow: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    partial: bool = False,
    absolute_outputs: bool = False,
    on_clips: Callable[[int], None] | None = None,
) -> Extraction:
    """Resolve everything a run needs; raises ExtractError (or the model/weights/source errors) early.

    ``model`` None: the architecture a ``weights`` checkpoint names itself (a PySlowFast ``.pyth`` with its
    cfg), else ``efficientnet_lite0``. Several models (a list) share one decoding pass per video; each writes
    to its own ``out/<model>`` folder, and ``weights``, when given, is a list with one entry per model.
    ``model_options`` are build options a model declares in its card (e.g. I3D's ``streams``); a model that
    does not declare one is an error. ``layout`` "pyslowfast" writes only each video's vector to
    ``<video folder>/output_vecs/output_latent_vec_<stem>.npy`` (``out`` then holds just the ledger); "hero"
    writes ``out/<key>.npz`` with only ``features`` in float16. ``save_flow`` writes the optical flow a model
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
    if layout == "hero" and (fmt not in (None, "npz") or logits or top_k or out is None):
        raise ExtractError("--layout hero writes OUT/<name>.npz with float16 features only: it needs --out and "
                           "takes no --format, --logits or --top-k")
    fmt = fmt or ("npy" if layout == "pyslowfast" else "npz")
    if fmt not in FORMATS:
        raise ExtractError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out_dtype not in ("float32", "float16"):
        raise ExtractError(f"--out-dtype must be float32 or float16, not {out_dtype!r}")
    if dtype not in DTYPES:
        raise ExtractError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if batch_size < 1:
        raise ExtractError("--batch-size must be at least 1")
    if top_k < 0:
        raise ExtractError(f"--top-k must be 0 (off) or more, not {top_k}")
    if num_workers is not None and num_workers < 0:
        raise ExtractError(f"--num-workers must be 0 (decode inline) or more, not {num_workers}")
    device = _check_device(device)
    sources = collect_sources(inputs, list_file=list_file, manifest=manifest)
    if not sources:
        raise ExtractError("no videos found in the given inputs")
    overrides = sampling or SamplingOverrides()
    options = {k: v for k, v in (model_options or {}).items() if v is not None}
    loaded = [_load(name, w, options, device, dtype) for name, w in zip(names, weight_list)]
    unused = set(options) - {k for m in loaded for k in m.card.extra.get("options", {})}
    if unused:
        raise ExtractError(f"no model here takes option(s) {', '.join(sorted(unused))}")
    if save_flow and (out is None or not any("flow" in m.module.extras for m in loaded)):
        raise ExtractError("--save-flow needs --out and a model that computes optical flow (i3d with streams "
                           "both or flow)")
    root = Path(out) if out is not None else None
    targets = []
    for m in loaded:
        # An audio model cuts its own examples: video sampling options do not apply to it.
        spec = m.card.sampling if m.card.input == "audio" else overrides.apply(m.card)
        if spec.crops > 1 and m.card.input != "audio" and m.preprocess.crop is None:
            raise ExtractError(f"{m.card.name} takes whole frames and crops them itself; it has no --crops 3")
        target_out = root / m.card.name if root is not None and several else root
        targets.append(_target(m, spec, sources, target_out, layout, fmt, dtype, out_dtype, top_k, logits,
                               _options_for(m.card, options), save_flow and "flow" in m.module.extras))
    run_options = RunOptions(batch_size=batch_size,
                             num_workers=default_workers() if num_workers is None else num_workers,
                             device=device, dtype=dtype, top_k=top_k, logits=logits,
                             extras=("flow",) if save_flow else (), partial=partial)
    extraction = Extraction(sources, targets, run_options, fmt, out_dtype, retry_failed=retry_failed,
                            on_clips=on_clips, layout=layout)
    outputs = [t for t in targets if t.out is not None]
    for target in outputs:
        _check_outputs(extraction, target, absolute_outputs)
    for target in outputs:
        _open_ledger(target, overwrite)
    return extraction


def _check_outputs(extraction: Extraction, target: Target, absolute_outputs: bool) -> None:
    """Refuse, before any work, outputs that would land outside ``target.out`` or on each other."""
    inside = os.path.realpath(target.out)
    taken: dict[str, VideoSource] = {}
    for source in extraction.sources:
        path = extraction.output_path(source, target)
        given = source.output
        if given is not None:
            if ".." in Path(given).parts:
                raise ExtractError(f"{source.path}: output_path {given} climbs out of --out with '..'; give a "
                                   "path inside it")
            if Path(given).is_absolute() and not absolute_outputs:
                raise ExtractError(f"{source.path}: output_path {given} is absolute, outside --out "
                                   f"{target.out}; give a path inside --out, or --absolute-outputs to allow it")
        beside_video = extraction.layout == "pyslowfast" and given is None  # the layout's own place
        if not beside_video and not (given is not None and Path(given).is_absolute()):
            real = os.path.realpath(path)
            if os.path.commonpath([inside, real]) != inside:
                raise ExtractError(f"{source.path}: its output {path} would be written to {real}, outside --out "
                                   "(through a symbolic link); refusing")
        other = taken.setdefault(os.path.normpath(os.path.abspath(path)), source)
        if other is not source:
            raise ExtractError(f"{other.path} and {source.path} would both be written to {path}; give them "
                               "different output_path values")


def _options_for(card: ModelCard, options: Mapping[str, object]) -> dict:
    declared = card.extra.get("options", {})
    return {k: v for k, v in options.items() if k in declared}


def _load(name: str | None, weights: str | None, options: Mapping[str, object], device: str, dtype: str
          ) -> LoadedModel:
    card = get_card(name) if name is not None else None
    build = _options_for(card, options) if card is not None else {}
    if card is not None:
        for key, value in build.items():
            allowed = card.extra["options"][key]
            if value not in allowed:
                raise ExtractError(f"model {card.name}: {key} must be one of {', '.join(map(str, allowed))}, "
                                   f"not {value!r}")
    return load_model(name, weights=weights, device=device, dtype=DTYPES[dtype], build_options=build)


def _target(loaded: LoadedModel, spec: SamplingSpec, sources: list[VideoSource], out: Path | None, layout: str,
            fmt: str, dtype: str, out_dtype: str, top_k: int, logits: bool, build: dict,
            save_flow: bool = False) -> Target:
    settings = {
        "model": loaded.card.name,
        "weights": {
            "name": loaded.weights.name if loaded.weights else ("random" if loaded.weights_path is None else "file"),
            "sha256": loaded.weights_sha256,
            "url": loaded.weights.url if loaded.weights else None,
        },
        "sampling": spec.to_dict(),
        "preprocess": loaded.preprocess.to_dict(),
        "latent": loaded.card.latent,
        "dtype": dtype,
        "format": fmt,
        "out_dtype": out_dtype,
        "top_k": top_k,
        "logits": bool(logits or top_k),
    }
    if build:  # only then: folders made before model options existed keep their settings hash
        settings["model_options"] = dict(sorted(build.items()))
    if save_flow:  # (the same)
        settings["save_flow"] = True
    layout_paths: dict[str, Path] = {}
    if layout != "vidvec":  # only then: folders made before layouts existed keep their settings hash
        settings["layout"] = layout
        if layout == "pyslowfast":
            layout_paths = dict(zip([s.key for s in sources], pyslowfast_paths([s.path for s in sources])))
    return Target(loaded, spec, settings, settings_hash(settings), out, None, layout_paths)


def _open_ledger(target: Target, overwrite: bool) -> None:
    """Open the target's ledger, tie its folder to the settings, and remove temp files killed runs left."""
    assert target.out is not None
    target.ledger = Ledger(target.out)
    target.ledger.bind_settings(target.settings_hash, target.settings, overwrite=overwrite)
    remove_stale_temps(target.out)
    for folder in {p.parent for p in target.layout_paths.values()}:
        if folder.name == PYSLOWFAST_DIR:
            remove_stale_temps(folder)


def extract(inputs: Sequence[str | Path] | str | Path = (), model: str | None = None,
            out: str | Path | None = None, **options) -> Iterator[Outcome]:
    """Extract features; yields one Outcome per video (done, failed or skipped).

    With ``out`` the features are written there (one file per video) and recorded in its ledger,
    so re-running resumes; without it nothing is written and results come back in memory.
    ``model`` None: the model a ``weights=`` PySlowFast checkpoint names in its cfg, else efficientnet_lite0.
    ``layout="pyslowfast"`` writes each video's vector next to the video instead (see ``prepare``).
    """
    yield from prepare(inputs, model, out, **options)


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
