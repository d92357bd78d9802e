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
ANN_CLIPS clips of a model, else through an approximate index (faiss IVF holding float16 vectors, rebuilt by each
``index`` that adds videos); the best 50 k (exact) or 20 k (approximate) candidates are ranked, and a video scores
as its best clip among them. A Store keeps what search reads in memory until the store changes.
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
PART_CLIPS = 1_000_000  # clips per part (per pair of files)
ROW_GROUP_CLIPS = 20_000  # clips per Parquet row group: what indexing holds in memory at a time (40 MB at 512-d)
# From this many clips of a model on, `index` also builds an approximate index (faiss IVF, float16 vectors) that
# search uses: below it exact search is fast enough (docs/usage.md#vidvec-index-and-vidvec-search).
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
    def check_settings(self, settings: dict, out: str | os.PathLike, manifest: dict | None = None) -> dict | None:
        """StoreError unless the store can take an output folder ``out`` bound to ``settings``: vidvec's own
        layout, and for a model the store holds, the same settings hash. Returns the model's entry (None: new)."""
        if settings.get("layout", "vidvec") != "vidvec":
            raise StoreError(f"{out} is in the {settings['layout']} layout; index a folder of vidvec's own layout")
        model, digest = str(settings.get("model")), settings_hash(settings)
        entry = (manifest or self.manifest())["models"].get(model)
        if entry is not None and entry["settings_hash"] != digest:
            raise StoreError(f"the store holds {model} extracted with other settings (hash {entry['settings_hash']}, "
                             f"{out} has {digest}): one store holds one way of extracting per model")
        return entry

    def index(self, out: str | os.PathLike, approximate: bool = True) -> dict:
        """Add the done videos of output folder ``out`` (vidvec's own layout) that the store does not hold yet;
        returns ``{"model", "added", "already", "failed": [(key, reason)]}``. ``approximate`` False leaves the
        approximate index as it is (search is exact while it does not cover every part; a run indexing as it goes
        builds it once, at its end)."""
        from .finished import done_files, read_done

        out = Path(out)
        try:
            settings, found = done_files(out)
        except LedgerError as error:
            raise StoreError(str(error)) from None
        model = str(settings.get("model"))
        digest = settings_hash(settings)
        with self._locked():
            manifest = self.manifest()
            entry = self.check_settings(settings, out, manifest) or {
                "settings_hash": digest, "settings": settings, "dim": None, "parts": []}
            held = self._keys(model, entry)
            weights = (settings.get("weights") or {}).get("sha256")
            added, already, failed = 0, 0, []
            part: _Part | None = None
            try:
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
                    part = part or self._new_part(entry, model, weights)
                    part.add(record.key, record.video_path, features, arrays, provenance)
                    added += 1
                    if part.clips >= PART_CLIPS:  # the part is done, the next one begins
                        self._finish_part(manifest, entry, part)
                        part = None
                if part is not None:
                    self._finish_part(manifest, entry, part)
                    part = None
            finally:
                if part is not None:  # an error: its files are removed, the manifest never named them
                    part.abort()
            if approximate and entry["parts"] and (added or not self._ann_fresh(model, entry)):
                self._build_ann(manifest, entry, model)
        return {"model": model, "added": added, "already": already, "failed": failed}

    def _build_ann(self, manifest: dict, entry: dict, model: str) -> None:
        """With ANN_CLIPS clips or more, (re)build the model's approximate index over every part: an inverted file
        of 4 sqrt(N) lists holding the L2-normalised vectors in float16 (inner product = cosine), trained on a
        sample, then filled a row group at a time (what it holds besides the index is one row group's vectors).
        Its sha256 goes in the manifest, checked when search opens it."""
        from .checkpoints import sha256_file
        from .writers import atomic_path

        total = self._count(model, entry)
        if total < ANN_CLIPS:
            return
        paths = [self._part(model, "clips", part) for part in entry["parts"]]
        try:
            import faiss
        except ImportError:  # pragma: no cover - a dependency
            raise StoreError("the approximate index needs faiss: pip install faiss-cpu") from None
        dim, lists = entry["dim"], int(4 * np.sqrt(total))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        share = min(1.0, 40 * lists / total)  # the training sample: the same share of every part
        sample = [vectors[np.sort(rng.choice(len(vectors), max(1, round(share * len(vectors))), replace=False))]
                  for vectors in self._part_vectors(model, paths)]
        index.train(np.concatenate(sample))
        del sample
        for vectors in self._part_vectors(model, paths):
            index.add(vectors)
        path = self.path / _folder(model) / "ivf.faiss"
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
        entry["ann"] = {"parts": list(entry["parts"]), "lists": lists, "rows": total, "sha256": sha256_file(path)}
        manifest["models"][model] = entry
        with atomic_path(self.path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")

    def _ann_fresh(self, model: str, entry: dict) -> bool:
        """Whether the model's approximate index covers every part and is the file the manifest records (or the
        model has too few clips for one)."""
        from .checkpoints import sha256_file

        ann = entry.get("ann")
        if not ann:
            return self._count(model, entry) < ANN_CLIPS
        path = self.path / _folder(model) / "ivf.faiss"
        return ann["parts"] == entry["parts"] and path.is_file() and sha256_file(path) == ann.get("sha256")

    def _count(self, model: str, entry: dict) -> int:
        """How many clips of ``model`` the store holds (from the parts' footers)."""
        _, pq = _pyarrow()
        total = 0
        for part in entry["parts"]:
            path = self._part(model, "clips", part)
            with _reading(path):
                total += pq.ParquetFile(path).metadata.num_rows
        return total

    def _part(self, model: str, kind: str, part: str) -> Path:
        return self.path / _folder(model) / f"{kind}-{part}.parquet"

    def _part_vectors(self, model: str, paths: list[Path]) -> Iterator[np.ndarray]:
        """The parts' clip vectors, L2-normalised, a row group at a time."""
        _, pq = _pyarrow()
        for path in paths:
            with _reading(path):
                part = pq.ParquetFile(path, page_checksum_verification=True)
                for group in range(part.metadata.num_row_groups):  # (iter_batches holds on to what it read)
                    yield _unit(_vectors(part.read_row_group(group, columns=["vector"])))

    def _new_part(self, entry: dict, model: str, weights: str | None) -> _Part:
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{len(entry['parts'])}"
        return _Part(name, self._part(model, "clips", name), self._part(model, "videos", name), model, weights,
                     entry["dim"])

    def _finish_part(self, manifest: dict, entry: dict, part: _Part) -> None:
        """Make the part's files final, then write the manifest naming them (so a crash in between leaves files
        no manifest names, never a manifest naming a missing file)."""
        from .writers import atomic_path

        part.finish()
        entry["parts"].append(part.name)
        manifest["models"][part.model] = entry
        with atomic_path(self.path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")

    def _keys(self, model: str, entry: dict) -> set[str]:
        if not entry["parts"]:
            return set()
        return set(self._read(model, "videos", ["video"]).column("video").to_pylist())

    # -- reading -------------------------------------------------------------------------------------------------
    def _read(self, model: str, kind: str, columns: list[str] | None = None, filters=None):
        pa, _ = _pyarrow()
        entry = self.manifest()["models"].get(model)
        if entry is None:
            raise StoreError(f"the store has no {model} vectors (it has {', '.join(self.models()) or 'none'})")
        return pa.concat_tables([self._read_part(self._part(model, kind, part), columns, filters)
                                 for part in entry["parts"]])

    def _read_part(self, path: Path, columns: list[str] | None = None, filters=None):
        _, pq = _pyarrow()
        with _reading(path):
            return pq.read_table(path, columns=columns, filters=filters, page_checksum_verification=True)

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

            from .checkpoints import sha256_file

            path = self.path / _folder(model) / "ivf.faiss"
            try:
                if sha256_file(path) != ann.get("sha256"):
                    raise RuntimeError("its sha256 is not the one the manifest records")
                index = faiss.read_index(str(path))
            except (OSError, RuntimeError) as error:
                raise StoreError(f"{path} is damaged or missing ({str(error).splitlines()[0]}); run vidvec index "
                                 "again to rebuild it") from None
            index.nprobe = ANN_NPROBE
            loaded = (self._read(model, "clips", ["video", "source", "clip", "start", "end"]), index, None)
        else:
            table = self._read(model, "clips")
            loaded = (table.drop(["vector"]), None, _unit(_vectors(table)))
        self._loaded[model] = (parts, loaded)
        return loaded

    def vector_of(self, video: str, at: float, model: str | None = None) -> np.ndarray:
        """The stored vector of ``video``'s clip that spans ``at`` seconds (else the nearest one)."""
        spans, vectors = self.clips_of([video], model)[video]  # only that video's rows are read
        if not len(spans):
            raise StoreError(f"no video {video!r} in the store")
        starts, ends = spans[:, 0], spans[:, 1]
        inside = (starts <= at) & (at < ends)
        return vectors[int(np.argmax(inside)) if inside.any() else int(np.argmin(np.abs((starts + ends) / 2 - at)))]

    def clips_of(self, videos: list[str], model: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every stored clip of each of ``videos``: video -> (spans (clips, 2) in seconds, vectors), in clip order."""
        table = self._read(self.model_name(model), "clips", ["video", "clip", "start", "end", "vector"],
                           filters=[("video", "in", list(videos))])
        table = table.sort_by([("video", "ascending"), ("clip", "ascending")])
        keys = np.asarray(table.column("video").to_pylist(), dtype=object)
        spans = np.stack([table.column("start").to_numpy(), table.column("end").to_numpy()], 1)
        vectors = _vectors(table)
        return {video: (spans[keys == video], vectors[keys == video]) for video in videos}

    def source_of(self, video: str, model: str | None = None) -> str:
        """The source path the store records for ``video``."""
        table = self._read(self.model_name(model), "videos", ["source"], filters=[("video", "==", video)])
        if table.num_rows == 0:
            raise StoreError(f"no video {video!r} in the store")
        return table.column("source")[0].as_py()

    def timelines(self, vector: np.ndarray, videos: list[str], model: str | None = None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per video of ``videos``: its clips' spans and their cosine similarity to ``vector``, in clip order."""
        query = _unit(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        return {video: (spans, _unit(vectors) @ query) for video, (spans, vectors) in
                self.clips_of(videos, model).items()}

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


class _Part:
    """One part being written: its clips and videos tables, each to a temporary file a row group at a time (every
    ROW_GROUP_CLIPS clips), made final by :meth:`finish` or removed by :meth:`abort`."""

    _STRINGS = ["video", "source", "model", "weights_sha256"]  # dictionary-encoded; the vectors are stored plain

    def __init__(self, name: str, clips_path: Path, videos_path: Path, model: str, weights: str | None,
                 dim: int) -> None:
        from .writers import atomic_path

        pa, pq = _pyarrow()
        self.name, self.model, self.weights, self.dim, self.clips = name, model, weights, dim, 0
        vector = pa.list_(pa.float32(), dim)
        self._schemas = {
            "clips": pa.schema([("video", pa.string()), ("source", pa.string()), ("model", pa.string()),
                                ("weights_sha256", pa.string()), ("clip", pa.int64()), ("start", pa.float64()),
                                ("end", pa.float64()), ("vector", vector)]),
            "videos": pa.schema([("video", pa.string()), ("source", pa.string()), ("model", pa.string()),
                                 ("clips", pa.int64()), ("provenance", pa.string()), ("vector", vector)])}
        self._files = contextlib.ExitStack()
        self._writers = {}
        for kind, path in (("clips", clips_path), ("videos", videos_path)):
            tmp = self._files.enter_context(atomic_path(path))
            self._writers[kind] = pq.ParquetWriter(tmp, self._schemas[kind], write_page_checksum=True,
                                                   use_dictionary=self._STRINGS, compression={"vector": "none"})
        self._rows: dict[str, list] = {"clips": [], "videos": []}
        self._buffered = 0

    def add(self, key: str, source: str, features: np.ndarray, arrays: dict, provenance: dict) -> None:
        spans = np.asarray(arrays["timestamps"], dtype=np.float64).reshape(-1, 2)
        n = len(features)
        self._rows["clips"].append({"video": [key] * n, "source": [source] * n, "model": [self.model] * n,
                                    "weights_sha256": [self.weights] * n, "clip": np.arange(n),
                                    "start": spans[:, 0], "end": spans[:, 1], "vector": features})
        self._rows["videos"].append({"video": [key], "source": [source], "model": [self.model], "clips": [n],
                                     "provenance": [json.dumps(provenance, default=str)],
                                     "vector": np.asarray(arrays["video_vector"], dtype=np.float32).reshape(1, -1)})
        self.clips += n
        self._buffered += n
        if self._buffered >= ROW_GROUP_CLIPS:
            self._flush()

    def _flush(self) -> None:
        pa, _ = _pyarrow()
        for kind, rows in self._rows.items():
            if not rows:
                continue
            columns = {}
            for field in self._schemas[kind]:
                if field.name == "vector":
                    values = np.concatenate([r["vector"] for r in rows]).reshape(-1)
                    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(values), self.dim)
                else:
                    columns[field.name] = pa.array(np.concatenate([np.asarray(r[field.name]) for r in rows])
                                                   if field.name in ("clip", "start", "end") else
                                                   [v for r in rows for v in r[field.name]], field.type)
            self._writers[kind].write_table(pa.table(columns, schema=self._schemas[kind]))
            rows.clear()
        self._buffered = 0

    def finish(self) -> None:
        self._flush()
        for writer in self._writers.values():
            writer.close()
        self._files.close()  # both files fsynced and renamed into place

    def abort(self) -> None:
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._files.__exit__(StoreError, StoreError("part abandoned"), None)  # both temporary files removed


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Reading a part: a file that cannot be read (missing, damaged: a page checksum fails) is a StoreError."""
    pa, _ = _pyarrow()
    try:
        yield
    except (OSError, pa.ArrowException) as error:
        raise StoreError(f"{path} is damaged or missing ({error}); index its folders again into a new store") \
            from None


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _vectors(table) -> np.ndarray:
    """The ``vector`` column of a Table or RecordBatch as a (rows, dim) float32 array."""
    column = table.column("vector")
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def _folder(model: str) -> str:
    """A model's folder name in the store (PySlowFast names hold slashes)."""
    return model.replace("/", "__")
