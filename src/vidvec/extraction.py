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
from typing import Callable, Iterator, Sequence

import av
import numpy as np
import torch

from . import __version__
from .ledger import Ledger, settings_hash
from .pipeline import DTYPES, RunOptions, VideoResult, run
from .sampling import SamplingSpec
from .sources import VideoSource, collect_sources
from .weights import LoadedModel, load_model
from .writers import (FORMATS, LAYOUTS, PYSLOWFAST_DIR, output_path, pyslowfast_paths, read_features,
                      remove_stale_temps, write_features, write_latent_vector)


class ExtractError(Exception):
    """A problem with the run as a whole (bad option, unknown model, settings clash): one line."""


@dataclass(frozen=True)
class SamplingOverrides:
    kind: str | None = None
    fps: float | None = None
    clip_len: int | None = None
    stride: int | None = None
    stride_seconds: float | None = None
    views: int | None = None
    crops: int | None = None

    @classmethod
    def preset(cls, name: str, **explicit: object) -> "SamplingOverrides":
        """A named window scheme (``ego4d``, ``hero``); explicit options that are not None win over it."""
        from .models.pyslowfast.preprocessing import PRESETS

        if name not in PRESETS:
            raise ExtractError(f"unknown sampling preset {name!r}; choose one of {', '.join(PRESETS)}")
        spec = PRESETS[name]
        fields = {"kind": spec.kind, "fps": spec.fps, "clip_len": spec.clip_len, "stride": spec.stride,
                  "stride_seconds": spec.stride_seconds, "crops": spec.crops}
        if explicit.get("stride") is not None or explicit.get("stride_seconds") is not None:
            fields.update(stride=None, stride_seconds=None)
        fields.update({k: v for k, v in explicit.items() if v is not None})
        return cls(**fields)

    def apply(self, spec: SamplingSpec) -> SamplingSpec:
        changes = dict(self.__dict__)
        if self.views is not None and self.kind is None and spec.kind != "views":
            changes["kind"] = "views"
        try:
            return spec.with_overrides(**changes)
        except (ValueError, TypeError) as error:
            raise ExtractError(f"bad sampling option: {error}") from None


@dataclass
class Outcome:
    """One video's outcome as the caller sees it: status is done, failed or skipped (already done)."""

    source: VideoSource
    status: str
    reason: str | None = None
    output: Path | None = None
    result: VideoResult | None = None

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
class Extraction:
    """A prepared run: what will be processed, with which model and settings. Iterate it to run."""

    sources: list[VideoSource]
    model: LoadedModel
    spec: SamplingSpec
    options: RunOptions
    out: Path | None
    fmt: str
    out_dtype: str
    settings: dict
    settings_hash: str
    retry_failed: bool = False
    on_clips: Callable[[int], None] | None = None
    ledger: Ledger | None = field(default=None, repr=False)
    layout: str = "vidvec"
    # --layout pyslowfast: each source's vector file, next to the video (by source key).
    layout_paths: dict[str, Path] = field(default_factory=dict, repr=False)

    def output_path(self, source: VideoSource) -> Path:
        """Where ``source``'s output goes (``out`` must be set): ``OUT/<key>.<format>`` (layout vidvec), or
        ``<video folder>/output_vecs/output_latent_vec_<stem>.npy`` (layout pyslowfast). A manifest's
        ``output_path`` wins in both layouts."""
        assert self.out is not None
        if self.layout == "pyslowfast" and source.output is None:
            return self.layout_paths[source.key]
        return output_path(self.out, source.key, self.fmt, source.output)

    def __iter__(self) -> Iterator[Outcome]:
        jobs: list[tuple[int, VideoSource]] = []
        for index, source in enumerate(self.sources):
            skipped = self._already_done(source)
            if skipped is not None:
                yield skipped
            else:
                jobs.append((index, source))
        try:
            for result in run(jobs, self.model, self.spec, self.options, self.on_clips):
                yield self._record(result)
        finally:
            if self.ledger is not None:
                self.ledger.close()

    def _already_done(self, source: VideoSource) -> Outcome | None:
        if self.ledger is None:
            return None
        path = self.output_path(source)
        if not self.ledger.should_process(source.key, self.retry_failed):
            record = self.ledger.get(source.key)
            return Outcome(source, "skipped", f"already {record.status}", path)
        # A pyslowfast-layout .npy has no provenance to prove its settings: such a file is simply redone.
        provenance = self._provenance_of(path) if self.layout == "vidvec" and path.exists() else None
        if provenance is not None and provenance.get("settings_hash") == self.settings_hash:
            # Killed between the write and the ledger commit: the file is complete, adopt it.
            self.ledger.mark_done(source.key, str(source.path), str(path), int(provenance.get("clips", 0)),
                                  float(provenance.get("span_seconds", 0.0)), {})
            return Outcome(source, "skipped", "already written", path)
        return None

    @staticmethod
    def _provenance_of(path: Path) -> dict | None:
        try:
            return read_features(path)[1]
        except Exception:  # unreadable leftovers are simply redone
            return None

    def _record(self, result: VideoResult) -> Outcome:
        source = result.source
        if not result.ok:
            if self.ledger is not None:
                self.ledger.mark_failed(source.key, str(source.path), result.reason or "unknown error")
            return Outcome(source, "failed", result.reason, result=result)
        path = None
        if self.out is not None:
            path = self.output_path(source)
            try:
                if self.layout == "pyslowfast":
                    write_latent_vector(path, result.arrays["video_vector"], self.out_dtype,
                                        _video_predictions(result.arrays))
                else:
                    write_features(path, self.fmt, result.arrays, self._provenance(result), self.out_dtype)
            except OSError as error:
                reason = f"cannot write {path}: {error.strerror or error}"
                self.ledger.mark_failed(source.key, str(source.path), reason)
                return Outcome(source, "failed", reason, result=result)
            self.ledger.mark_done(source.key, str(source.path), str(path), result.clips,
                                  _span_seconds(result), {"decode_s": result.decode_s, "model_s": result.model_s,
                                   "wall_s": result.wall_s})
        return Outcome(source, "done", output=path, result=result)

    def _provenance(self, result: VideoResult) -> dict:
        return {
            "vidvec_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": str(result.source.path),
            "span": [result.source.start, result.source.end],
            "span_seconds": _span_seconds(result),
            "clips": result.clips,
            "video": result.info.to_dict() if result.info else None,
            "settings_hash": self.settings_hash,
            **self.settings,
            "device": self.options.device,
            "batch_size": self.options.batch_size,
            "software": {"torch": torch.__version__, "av": av.__version__, "python": platform.python_version()},
        }


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
    model: str | None = None,
    out: str | Path | None = None,
    *,
    weights: str | None = None,
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
    top_k: int = 0,
    logits: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    on_clips: Callable[[int], None] | None = None,
) -> Extraction:
    """Resolve everything a run needs; raises ExtractError (or the model/weights/source errors) early.

    ``model`` None: the architecture a ``weights`` checkpoint names itself (a PySlowFast ``.pyth`` with its
    cfg), else ``efficientnet_lite0``. ``layout`` "pyslowfast" writes only each video's vector to
    ``<video folder>/output_vecs/output_latent_vec_<stem>.npy``; ``out`` then holds just the ledger.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
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
    fmt = fmt or ("npy" if layout == "pyslowfast" else "npz")
    if fmt not in FORMATS:
        raise ExtractError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out_dtype not in ("float32", "float16"):
        raise ExtractError(f"--out-dtype must be float32 or float16, not {out_dtype!r}")
    if dtype not in DTYPES:
        raise ExtractError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if batch_size < 1:
        raise ExtractError("--batch-size must be at least 1")
    device = _check_device(device)
    sources = collect_sources(inputs, list_file=list_file, manifest=manifest)
    if not sources:
        raise ExtractError("no videos found in the given inputs")
    loaded = load_model(model, weights=weights, device=device, dtype=DTYPES[dtype])
    spec = (sampling or SamplingOverrides()).apply(loaded.card.sampling)
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
    layout_paths: dict[str, Path] = {}
    if layout != "vidvec":  # only then: folders made before layouts existed keep their settings hash
        settings["layout"] = layout
        layout_paths = dict(zip([s.key for s in sources], pyslowfast_paths([s.path for s in sources])))
    digest = settings_hash(settings)
    ledger = None
    if out is not None:
        out = Path(out)
        ledger = Ledger(out)
        ledger.bind_settings(digest, settings, overwrite=overwrite)
        remove_stale_temps(out)
        for folder in {p.parent for p in layout_paths.values()}:
            if folder.name == PYSLOWFAST_DIR:
                remove_stale_temps(folder)
    options = RunOptions(batch_size=batch_size, num_workers=default_workers() if num_workers is None else num_workers,
                         device=device, dtype=dtype, top_k=top_k, logits=logits)
    return Extraction(sources, loaded, spec, options, out, fmt, out_dtype, settings, digest,
                      retry_failed=retry_failed, on_clips=on_clips, ledger=ledger, layout=layout,
                      layout_paths=layout_paths)


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
