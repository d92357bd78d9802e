"""Where one model's per-video results go: a sink per output layout, all with the same small protocol.

- :class:`FileSink` (layout ``vidvec``): ``OUT/<key>.<format>`` holding every array and the provenance.
- :class:`PySlowFastSink` (layout ``pyslowfast``): ``<video folder>/output_vecs/output_latent_vec_<stem>.npy``,
  the video vector only (plus ``output_topk_<stem>.json`` with top-k), as PySlowFast latent-vector scripts read.
- :class:`HeroSink` (layout ``hero``): ``OUT/<key>.npz`` holding only ``features`` in float16, as HERO reads it.

A sink writes atomically (:mod:`vidvec.writers`), writes the provenance if its format holds one, refuses
outputs that would land outside ``out`` or on each other before any work (``check``), and says in bulk which
results are already written with this run's settings (``done``), so that a run killed between writing a file
and recording it adopts that file. Another store (Parquet, Lance) is one more class with these methods.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from . import __version__
from .ledger import Fingerprint
from .registry import get_card
from .runner import VideoResult
from .sources import VideoSource
from .writers import (PYSLOWFAST_DIR, extra_path, output_path, pyslowfast_paths, read_features, remove_stale_temps,
                      write_array, write_ego4d_features, write_features, write_hero_features, write_latent_vector,
                      write_lvs_timeline)

LAYOUTS = ("vidvec", "pyslowfast", "lvs-timeline", "hero", "video_features", "ego4d")


class OutputError(Exception):
    """An output cannot be written where asked (outside ``out``, onto another video's output, a full disk, a
    result the layout cannot hold): one line."""


@dataclass(frozen=True)
class Written:
    """A result already in the sink: where, and what its provenance says (clips, span, partial note)."""

    path: Path
    clips: int
    span_seconds: float
    partial: str | None


class Sink(Protocol):
    """What a run needs from an output store, for one model."""

    layout: str

    def path(self, source: VideoSource) -> Path: ...
    def check(self, sources: Sequence[VideoSource], absolute_outputs: bool) -> None: ...
    def clean(self) -> None: ...
    def done(self, sources: Sequence[VideoSource], fingerprints: Mapping[str, Fingerprint | None]
             ) -> dict[str, Written]: ...
    def write(self, result: VideoResult, fingerprint: Fingerprint | None) -> Path: ...
    def write_extra(self, source: VideoSource, clip: int, crop: int, name: str, values: np.ndarray) -> None: ...
    def close(self) -> None: ...


class _Files:
    """What the file layouts share: one path per video inside ``out`` (a manifest's ``output_path`` wins),
    the checks on those paths, temp cleaning and by-products beside each output."""

    layout = ""
    suffix = ""
    row = ""  # what one row stands for where rows are positional (HERO's chunks): then none may be missing

    def __init__(self, out: Path) -> None:
        self.out = Path(out)

    def path(self, source: VideoSource) -> Path:
        return output_path(self.out, source.key, self.suffix, source.output)

    def _in_out(self, source: VideoSource) -> bool:
        """Whether this layout puts the output inside ``out`` (all but PySlowFast's own place)."""
        return True

    def check(self, sources: Sequence[VideoSource], absolute_outputs: bool) -> None:
        """Refuse outputs outside ``out`` (a manifest's ``..``, a symlink; absolute ones unless
        ``absolute_outputs``) and two videos with one output, before any work."""
        inside = os.path.realpath(self.out)
        taken: dict[str, VideoSource] = {}
        for source in sources:
            path = self.path(source)
            given = source.output
            if given is not None:
                if ".." in Path(given).parts:
                    raise OutputError(f"{source.path}: output_path {given} climbs out of --out with '..'; give a "
                                      "path inside it")
                if Path(given).is_absolute() and not absolute_outputs:
                    raise OutputError(f"{source.path}: output_path {given} is absolute, outside --out {self.out}; "
                                      "give a path inside --out, or --absolute-outputs to allow it")
            if self._in_out(source) and not (given is not None and Path(given).is_absolute()):
                real = os.path.realpath(path)
                if os.path.commonpath([inside, real]) != inside:
                    raise OutputError(f"{source.path}: its output {path} would be written to {real}, outside "
                                      "--out (through a symbolic link); refusing")
            other = taken.setdefault(os.path.normpath(os.path.abspath(path)), source)
            if other is not source:
                raise OutputError(f"{other.path} and {source.path} would both be written to {path}; give them "
                                  "different output_path values")

    def clean(self) -> None:
        """Remove the temp files killed runs left in ``out`` (only those no live writer holds)."""
        remove_stale_temps(self.out)

    def done(self, sources: Sequence[VideoSource], fingerprints: Mapping[str, Fingerprint | None]
             ) -> dict[str, Written]:
        return {}  # no provenance in the file to prove its settings: such a file is simply redone

    def write_extra(self, source: VideoSource, clip: int, crop: int, name: str, values: np.ndarray) -> None:
        """Write one clip's by-product (``--save-flow``) beside the video's output, as it is computed."""
        path = extra_path(self.path(source), name, clip, crop)
        try:
            write_array(path, values)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None

    def write(self, result: VideoResult, fingerprint: Fingerprint | None) -> Path:
        if self.row and result.partial and "clips_left_out" in result.partial.detail:
            raise OutputError(f"{result.partial.note} (--layout {self.layout} keeps one row per {self.row}: none may "
                              "be missing)")
        path = self.path(result.source)
        try:
            self._write(path, result, fingerprint)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
        return path

    def _write(self, path: Path, result: VideoResult, fingerprint: Fingerprint | None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileSink(_Files):
    """``OUT/<key>.<format>`` (npz, npy + JSON sidecar, or pt) with every array and the provenance: this run's
    ``provenance`` (settings, settings hash, device, ...) plus each video's own (source, span, video metadata,
    source file fingerprint, partial note)."""

    layout = "vidvec"

    def __init__(self, out: Path, fmt: str, out_dtype: str, provenance: Mapping[str, object]) -> None:
        super().__init__(out)
        self.suffix, self.out_dtype, self.provenance = fmt, out_dtype, dict(provenance)

    def done(self, sources: Sequence[VideoSource], fingerprints: Mapping[str, Fingerprint | None]
             ) -> dict[str, Written]:
        """The outputs already written with this run's settings hash from the same source file (a run killed
        between writing a file and recording it): they need no work."""
        found = {}
        for source in sources:
            path = self.path(source)
            provenance = _provenance_of(path) if path.exists() else None
            if (provenance is not None and provenance.get("settings_hash") == self.provenance["settings_hash"]
                    and _fingerprint_of(provenance) in (None, fingerprints.get(source.key))):
                found[source.key] = Written(path, int(provenance.get("clips", 0)),
                                            float(provenance.get("span_seconds", 0.0)),
                                            (provenance.get("partial") or {}).get("note"))
        return found

    def _write(self, path: Path, result: VideoResult, fingerprint: Fingerprint | None) -> None:
        write_features(path, self.suffix, result.arrays, self._provenance(result, fingerprint), self.out_dtype)

    def _provenance(self, result: VideoResult, fingerprint: Fingerprint | None) -> dict:
        return {
            "vidvec_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": str(result.source.path),
            "span": [result.source.start, result.source.end],
            "span_seconds": span_seconds(result),
            "clips": result.clips,
            "video": result.info.to_dict() if result.info else None,
            "source_file": None if fingerprint is None else {"size": fingerprint.size,
                                                             "mtime_ns": fingerprint.mtime_ns},
            **({"partial": {"note": result.partial.note, **result.partial.detail}} if result.partial else {}),
            **self.provenance,
            "software": _software(),
        }


class PySlowFastSink(_Files):
    """``<video folder>/output_vecs/output_latent_vec_<stem>.npy``: the video vector only, written where
    PySlowFast latent-vector scripts look (beside the video, not in ``out``; a manifest's ``output_path``
    still wins). Two videos of one folder that differ only by extension keep it in the name. With top-k the
    video's classes go to ``output_topk_<stem>.json`` first."""

    layout = "pyslowfast"
    suffix = "npy"

    def __init__(self, out: Path, out_dtype: str, sources: Sequence[VideoSource]) -> None:
        super().__init__(out)
        self.out_dtype = out_dtype
        self._beside = dict(zip([s.key for s in sources], pyslowfast_paths([s.path for s in sources])))

    def path(self, source: VideoSource) -> Path:
        return super().path(source) if source.output is not None else self._beside[source.key]

    def _in_out(self, source: VideoSource) -> bool:
        return source.output is not None

    def clean(self) -> None:
        super().clean()
        for folder in {p.parent for p in self._beside.values()}:
            if folder.name == PYSLOWFAST_DIR:
                remove_stale_temps(folder)

    def _write(self, path: Path, result: VideoResult, fingerprint: Fingerprint | None) -> None:
        write_latent_vector(path, result.arrays["video_vector"], self.out_dtype, _video_predictions(result.arrays))


class LvsTimelineSink(PySlowFastSink):
    """The Latent Vectors Service's dense timeline (its Social-IQ form): ``<video folder>/output_vecs/
    output_latent_vec_<stem>.pk`` beside the video (a manifest's ``output_path`` wins, its suffix made ``.pk``),
    a pickle of ``{stem: {"features": (N, D), "intervals": (N, 2) seconds}}``, every vector with its own interval
    (clips left out leave no row and no interval)."""

    layout = "lvs-timeline"
    suffix = "pk"

    def path(self, source: VideoSource) -> Path:
        if source.output is not None:
            return (self.out / source.output).with_suffix(".pk")
        return self._beside[source.key].with_suffix(".pk")

    def _write(self, path: Path, result: VideoResult, fingerprint: Fingerprint | None) -> None:
        write_lvs_timeline(path, Path(result.source.path).stem, result.arrays["features"],
                           result.arrays["timestamps"], self.out_dtype)


class HeroSink(_Files):
    """``OUT/<key>.npz`` with only ``features`` (float16), one row per chunk, as HERO's loaders read it: a
    result with clips left out (``partial``) cannot be written, rows would shift."""

    layout = "hero"
    suffix = "npz"
    row = "chunk"

    def _write(self, path: Path, result: VideoResult, fingerprint: Fingerprint | None) -> None:
        write_hero_features(path, result.arrays["features"])


class Ego4DSink(_Files):
    """``OUT/<key>.pt``: one float32 tensor (N, D), one row per window, as Ego4D's feature tool saves each video
    uid (``torch.save(features, f"{out_path}/{uid}.pt")``); a result with clips left out cannot be written."""

    layout = "ego4d"
    suffix = "pt"
    row = "window"

    def _write(self, path: Path, result: VideoResult, fingerprint: Fingerprint | None) -> None:
        write_ego4d_features(path, result.arrays["features"])


# video_features' feature_type for the families it has (its file names: <stem>_<feature_type>.npy).
VIDEO_FEATURES_TYPES = {"clip": "clip", "s3d": "s3d", "torchvision-video": "r21d", "r2plus1d": "r21d",
                        "torchvision-image": "resnet", "vggish": "vggish"}


def video_features_streams(model: str, options: Mapping[str, object]) -> list[tuple[str, slice]]:
    """The files video_features splits a model's vector into: (name, columns); I3D by stream."""
    card = get_card(model)
    streams = options.get("streams", card.options.get("streams", (None,))[0])
    if streams == "both":  # I3D: [rgb, flow]
        width = card.option_dims["streams"]["rgb"]
        return [("rgb", slice(0, width)), ("flow", slice(width, 2 * width))]
    if streams is not None:
        return [(str(streams), slice(None))]
    return [(VIDEO_FEATURES_TYPES.get(card.family, model.replace("/", "_")), slice(None))]


class VideoFeaturesSink(_Files):
    """v-iashin/video_features' files (its ``make_path``: ``<stem>_<key>.npy`` in its output folder): per video
    ``OUT/<key>_<feature_type>.npy`` (float32, one row per clip; I3D's streams as ``_rgb`` and ``_flow``, columns
    ``streams`` names), and, as it writes them for every model but VGGish, ``<key>_fps.npy`` (the frame rate the
    clips were cut at, a 0-d float64) and ``<key>_timestamps_ms.npy``. The first stream's file is written last:
    it is the video's output."""

    layout = "video_features"
    suffix = "npy"
    row = "stack"

    def __init__(self, out: Path, streams: Sequence[tuple[str, slice]], fps: float | None, audio: bool) -> None:
        super().__init__(out)
        self.streams, self.fps, self.audio = list(streams), fps, audio

    def path(self, source: VideoSource) -> Path:
        return self._file(source, self.streams[0][0])

    def _file(self, source: VideoSource, name: str) -> Path:
        base = output_path(self.out, source.key, self.suffix, source.output)
        return base.with_name(f"{base.name[:-len(self.suffix) - 1]}_{name}.{self.suffix}")

    def _write(self, path: Path, result: VideoResult, fingerprint: Fingerprint | None) -> None:
        source, features = result.source, result.arrays["features"].astype(np.float32)
        if not self.audio:
            fps = self.fps or (result.info.fps if result.info else float("nan"))
            write_array(self._file(source, "fps"), np.array(fps, dtype=np.float64))
            write_array(self._file(source, "timestamps_ms"), result.arrays["timestamps_ms"])
        for name, columns in reversed(self.streams):
            write_array(self._file(source, name), features[:, columns])


def span_seconds(result: VideoResult) -> float:
    """How much of the video the result's clips cover, from the first start to the last end."""
    stamps = result.arrays.get("timestamps")
    if stamps is None or not len(stamps):
        return 0.0
    return float(stamps[:, 1].max() - stamps[:, 0].min())


def _video_predictions(arrays: dict) -> dict | None:
    """The video-level top-k (mean of the clips' probabilities), or None when top-k was not asked for."""
    if "video_topk_indices" not in arrays:
        return None
    return {"indices": arrays["video_topk_indices"].tolist(), "scores": arrays["video_topk_scores"].tolist(),
            "labels": arrays["video_topk_labels"].tolist() if "video_topk_labels" in arrays else None}


def _provenance_of(path: Path) -> dict | None:
    try:
        return read_features(path)[1]
    except Exception:  # unreadable leftovers are simply redone
        return None


def _fingerprint_of(provenance: dict) -> Fingerprint | None:
    """The source file's fingerprint a feature file records (None for files made before it was recorded)."""
    known = provenance.get("source_file")
    return Fingerprint(int(known["size"]), int(known["mtime_ns"])) if isinstance(known, dict) else None


def _software() -> dict:
    import av
    import torch

    return {"torch": torch.__version__, "av": av.__version__, "python": platform.python_version()}
