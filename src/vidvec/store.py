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

Search is by cosine similarity (vectors L2-normalised at query time, the stored ones kept raw): exact below
ANN_CLIPS clips of a model, else through an approximate index (faiss IVF-Flat, rebuilt by each ``index`` that adds
videos); the best 50 k (exact) or 20 k (approximate) candidates are ranked, and a video scores as its best clip
among them. A Store keeps what search reads in memory until the store changes.
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
# From this many clips of a model on, `index` also builds an approximate index (faiss IVF-Flat) that search uses:
# below it exact search is fast enough (about 5 ms a query at 200,000 x 512 on 2 cores; 25 ms at a million).
ANN_CLIPS = 200_000
ANN_NPROBE = 16


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
        self._loaded: dict[str, tuple] = {}  # per model: (its parts, what search keeps in memory)

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
            if added and entry["parts"]:
                self._build_ann(manifest, entry, model)
        return {"model": model, "added": added, "already": already, "failed": failed}

    def _build_ann(self, manifest: dict, entry: dict, model: str) -> None:
        """With ANN_CLIPS clips or more, (re)build the model's approximate index over every part: an inverted file
        of 4 sqrt(N) lists holding the L2-normalised vectors (inner product = cosine), trained on a sample."""
        from .writers import atomic_path

        table = self._read(model, "clips", ["vector"])
        if table.num_rows < ANN_CLIPS:
            return
        try:
            import faiss
        except ImportError:  # pragma: no cover - a dependency
            raise StoreError("the approximate index needs faiss: pip install faiss-cpu") from None
        vectors = _unit(_vectors(table))
        lists = int(4 * np.sqrt(len(vectors)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], lists,
                                   faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), 40 * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        with atomic_path(self.path / _folder(model) / "ivf.faiss") as tmp:
            faiss.write_index(index, str(tmp))
        entry["ann"] = {"parts": list(entry["parts"]), "lists": lists, "rows": len(vectors)}
        manifest["models"][model] = entry
        with atomic_path(self.path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")

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

    def _open(self, model: str, entry: dict) -> tuple:
        """What search needs of ``model``, read once and kept while its parts stay the same: the clips' columns
        but the vectors, and the approximate index when it covers every part, else the unit vectors."""
        parts = tuple(entry.get("parts", ()))
        cached = self._loaded.get(model)
        if cached is not None and cached[0] == parts:
            return cached[1]
        ann = entry.get("ann")
        if ann and tuple(ann["parts"]) == parts:
            import faiss

            path = self.path / _folder(model) / "ivf.faiss"
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as error:
                raise StoreError(f"{path} is damaged or missing ({str(error).splitlines()[0]})") from None
            index.nprobe = ANN_NPROBE
            loaded = (self._read(model, "clips", ["video", "source", "clip", "start", "end"]), index, None)
        else:
            table = self._read(model, "clips")
            loaded = (table.drop(["vector"]), None, _unit(_vectors(table)))
        self._loaded[model] = (parts, loaded)
        return loaded

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
        entry = self.manifest()["models"].get(model) or {}
        dim = entry.get("dim")
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if dim is not None and query.shape[0] != dim:
            raise StoreError(f"the query has {query.shape[0]} dimensions, the store's {model} vectors {dim}")
        query = _unit(query[None])[0]
        table, index, unit = self._open(model, entry)
        if index is not None:
            scores, rows = index.search(query[None], max(k * 20, 200))
            keep = rows[0] >= 0
            rows, scores = rows[0][keep], scores[0][keep]
        else:
            scores = unit @ query
            rows = np.arange(len(scores))
            if len(rows) > 50 * k:  # the best candidates only, then sorted
                rows = np.argpartition(-scores, 50 * k)[:50 * k]
                scores = scores[rows]
        order = rows[np.argsort(-scores, kind="stable")]
        scores, candidates = np.full(table.num_rows, -np.inf, dtype=np.float32), scores
        scores[rows] = candidates
        videos, sources, clips = table.column("video"), table.column("source"), table.column("clip")
        starts, ends = table.column("start"), table.column("end")

        def hit(i: int) -> Hit:
            return Hit(videos[i].as_py(), sources[i].as_py(), clips[i].as_py(), starts[i].as_py(), ends[i].as_py(),
                       float(scores[i]))

        best: dict[str, Hit] = {}
        for i in order:
            video = videos[int(i)].as_py()
            if video not in best:
                best[video] = hit(int(i))
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


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _vectors(table) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def _folder(model: str) -> str:
    """A model's folder name in the store (PySlowFast names hold slashes)."""
    return model.replace("/", "__")
