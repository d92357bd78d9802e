"""A vector store of finished output folders: ``vidvec index OUT --into STORE``, ``vidvec search STORE``, and
``vidvec.Store(STORE)`` in Python.

One Parquet table per model and kind, written in parts, readable without vidvec (pyarrow, DuckDB, pandas:
``STORE/<model>/clips-*.parquet``):

- clips: ``video`` (key), ``source`` (path), ``model``, ``weights_sha256``, ``clip`` (index in its video),
  ``start``, ``end`` (seconds), ``vector`` (fixed-size list of float32, as extracted);
- videos: ``video``, ``source``, ``model``, ``clips``, ``vector`` (the video vector), ``provenance`` (JSON).

``STORE/store.json`` binds each model to one settings hash (a store holds one way of extracting per model) and
lists the parts. Indexing is append-only and idempotent: the videos already in the store are left out, a folder
with other settings for a model is refused. Parts carry Parquet page checksums, verified on reading, so a
damaged file is an error, not a wrong answer. One ``index`` at a time: a second one is refused while the first
holds the store's lock.

Search is exact (cosine: vectors L2-normalised at query time, the stored ones kept raw); a video's score is its
best clip's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .ledger import LedgerError, settings_hash

STORE_VERSION = 1
MANIFEST = "store.json"
PART_CLIPS = 200_000  # clips per part written at once: what indexing holds in memory (about 400 MB at 512-d)


class StoreError(Exception):
    """The store cannot do what was asked (one line)."""


@dataclass(frozen=True)
class Hit:
    """One clip found: its video, place and score (cosine similarity)."""

    video: str
    source: str
    clip: int
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class VideoHit:
    """One video found: its best clip's score, and that clip."""

    video: str
    source: str
    score: float
    best: Hit


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - a dependency
        raise StoreError("the store needs pyarrow: pip install pyarrow") from None
    return pa, pq


class Store:
    """A store folder (created by the first :meth:`index`). Nothing is read until asked."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # -- the manifest ------------------------------------------------------------------------------------------
    def manifest(self) -> dict:
        path = self.path / MANIFEST
        if not path.exists():
            return {"vidvec_store": STORE_VERSION, "models": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise StoreError(f"{path}: not a readable store manifest ({error})") from None
        if data.get("vidvec_store") != STORE_VERSION:
            raise StoreError(f"{path}: not a vidvec store (or one of another version)")
        return data

    def models(self) -> list[str]:
        return sorted(self.manifest()["models"])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.path} is being indexed by another process; try again when it is done") \
                    from None
            yield

    # -- indexing ------------------------------------------------------------------------------------------------
    def index(self, out: str | os.PathLike) -> dict:
        """Add the done videos of output folder ``out`` (vidvec's own layout) that the store does not hold yet;
        returns ``{"model", "added", "already", "failed": [(key, reason)]}``."""
        from .convert import done_files, read_done

        out = Path(out)
        try:
            settings, found = done_files(out)
        except LedgerError as error:
            raise StoreError(str(error)) from None
        if settings.get("layout", "vidvec") != "vidvec":
            raise StoreError(f"{out} is in the {settings['layout']} layout; index a folder of vidvec's own layout")
        model = str(settings.get("model"))
        digest = settings_hash(settings)
        with self._locked():
            manifest = self.manifest()
            entry = manifest["models"].get(model)
            if entry is not None and entry["settings_hash"] != digest:
                raise StoreError(f"the store holds {model} extracted with other settings (hash {entry['settings_hash']}"
                                 f", {out} has {digest}): one store holds one way of extracting per model")
            entry = entry or {"settings_hash": digest, "settings": settings, "dim": None, "parts": []}
            held = self._keys(model, entry)
            batch = _Batch(model, (settings.get("weights") or {}).get("sha256"))
            added, already, failed = 0, 0, []
            for record, path in found:
                if record.key in held:
                    already += 1
                    continue
                try:
                    arrays, provenance = read_done(path, record.settings_hash)
                except (OSError, ValueError, KeyError) as error:
                    failed.append((record.key, f"{path}: {error}"))
                    continue
                features = np.asarray(arrays["features"], dtype=np.float32)
                if features.ndim != 2 or entry["dim"] not in (None, features.shape[1]):
                    failed.append((record.key, f"{path}: vectors of shape {features.shape}, not (clips, "
                                                f"{entry['dim']})"))
                    continue
                entry["dim"] = int(features.shape[1])
                batch.add(record.key, record.video_path, features, arrays, provenance)
                added += 1
                if batch.clips >= PART_CLIPS:  # memory stays bounded: the part is written, the next one begins
                    self._write_part(manifest, entry, batch)
                    batch = _Batch(model, batch.weights)
            if batch.clips:
                self._write_part(manifest, entry, batch)
        return {"model": model, "added": added, "already": already, "failed": failed}

    def _write_part(self, manifest: dict, entry: dict, batch: _Batch) -> None:
        """Write one batch as a clips and a videos part, then the manifest naming them (so a crash in between
        leaves files no manifest names, never a manifest naming a missing file)."""
        from .writers import atomic_path

        pa, pq = _pyarrow()
        dim, model = entry["dim"], batch.model
        part = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{len(entry['parts'])}"
        clip_table = pa.table({**batch.columns, "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate(batch.vectors).reshape(-1)), dim)})
        video_table = pa.table({
            "video": [v[0] for v in batch.videos], "source": [v[1] for v in batch.videos],
            "model": [model] * len(batch.videos), "clips": [v[2] for v in batch.videos],
            "provenance": [v[3] for v in batch.videos],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(batch.video_vectors)), dim)})
        for kind, table in (("clips", clip_table), ("videos", video_table)):
            with atomic_path(self.path / _folder(model) / f"{kind}-{part}.parquet") as tmp:
                pq.write_table(table, tmp, write_page_checksum=True)
        entry["parts"].append(part)
        manifest["models"][model] = entry
        with atomic_path(self.path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")

    def _keys(self, model: str, entry: dict) -> set[str]:
        if not entry["parts"]:
            return set()
        return set(self._read(model, "videos", ["video"]).column("video").to_pylist())

    # -- reading -------------------------------------------------------------------------------------------------
    def _read(self, model: str, kind: str, columns: list[str] | None = None):
        pa, pq = _pyarrow()
        entry = self.manifest()["models"].get(model)
        if entry is None:
            raise StoreError(f"the store has no {model} vectors (it has {', '.join(self.models()) or 'none'})")
        tables = []
        for part in entry["parts"]:
            path = self.path / _folder(model) / f"{kind}-{part}.parquet"
            try:
                tables.append(pq.read_table(path, columns=columns, page_checksum_verification=True))
            except (OSError, pa.ArrowException) as error:
                raise StoreError(f"{path} is damaged or missing ({error}); index its folders again into a new "
                                 "store") from None
        return pa.concat_tables(tables)

    def to_arrow(self, model: str | None = None, kind: str = "clips"):
        """The clips (or ``kind="videos"``) of ``model`` (the only one when not named) as a pyarrow Table."""
        return self._read(self.model_name(model), kind)

    def model_name(self, model: str | None) -> str:
        models = self.models()
        if model is not None:
            return model
        if len(models) != 1:
            raise StoreError(f"the store holds {len(models)} models ({', '.join(models) or 'none'}): name one")
        return models[0]

    def vector_of(self, video: str, at: float, model: str | None = None) -> np.ndarray:
        """The stored vector of ``video``'s clip that spans ``at`` seconds (else the nearest one)."""
        table = self.to_arrow(model)
        mask = np.asarray(table.column("video").to_pylist()) == video
        if not mask.any():
            raise StoreError(f"no video {video!r} in the store")
        starts = table.column("start").to_numpy()[mask]
        ends = table.column("end").to_numpy()[mask]
        inside = (starts <= at) & (at < ends)
        index = int(np.argmax(inside)) if inside.any() else int(np.argmin(np.abs((starts + ends) / 2 - at)))
        return _vectors(table)[np.flatnonzero(mask)[index]]

    def search(self, vector: np.ndarray, k: int = 10, model: str | None = None) -> tuple[list[Hit], list[VideoHit]]:
        """The ``k`` clips most similar to ``vector`` (cosine), and the ``k`` best videos (each by its best clip)."""
        model = self.model_name(model)
        table = self.to_arrow(model)
        stored = _vectors(table)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != stored.shape[1]:
            raise StoreError(f"the query has {query.shape[0]} dimensions, the store's {model} vectors "
                             f"{stored.shape[1]}")
        norms = np.linalg.norm(stored, axis=1)
        scores = stored @ (query / max(float(np.linalg.norm(query)), 1e-12)) / np.maximum(norms, 1e-12)
        order = np.argsort(-scores, kind="stable")
        videos, sources = table.column("video").to_pylist(), table.column("source").to_pylist()
        clips = table.column("clip").to_numpy()
        starts, ends = table.column("start").to_numpy(), table.column("end").to_numpy()

        def hit(i: int) -> Hit:
            return Hit(videos[i], sources[i], int(clips[i]), float(starts[i]), float(ends[i]), float(scores[i]))

        best: dict[str, Hit] = {}
        for i in order:
            if videos[i] not in best:
                best[videos[i]] = hit(int(i))
                if len(best) == k:
                    break
        return ([hit(int(i)) for i in order[:k]],
                [VideoHit(h.video, h.source, h.score, h) for h in best.values()])


class _Batch:
    """The rows of one part, gathered video by video."""

    def __init__(self, model: str, weights: str | None) -> None:
        self.model, self.weights = model, weights
        self.columns: dict[str, list] = {name: [] for name in ("video", "source", "model", "weights_sha256", "clip",
                                                                "start", "end")}
        self.vectors: list[np.ndarray] = []
        self.videos: list[tuple[str, str, int, str]] = []
        self.video_vectors: list[np.ndarray] = []
        self.clips = 0

    def add(self, key: str, source: str, features: np.ndarray, arrays: dict, provenance: dict) -> None:
        spans = np.asarray(arrays["timestamps"], dtype=np.float64).reshape(-1, 2)
        n = len(features)
        self.columns["video"] += [key] * n
        self.columns["source"] += [source] * n
        self.columns["model"] += [self.model] * n
        self.columns["weights_sha256"] += [self.weights] * n
        self.columns["clip"] += list(range(n))
        self.columns["start"] += spans[:, 0].tolist()
        self.columns["end"] += spans[:, 1].tolist()
        self.vectors.append(features)
        self.videos.append((key, source, n, json.dumps(provenance, default=str)))
        self.video_vectors.append(np.asarray(arrays["video_vector"], dtype=np.float32).reshape(-1))
        self.clips += n


def _vectors(table) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def _folder(model: str) -> str:
    """A model's folder name in the store (PySlowFast names hold slashes)."""
    return model.replace("/", "__")
