"""Feature files: written atomically, each carrying the provenance of how it was made.

A final output path only ever holds a complete file: everything is written to a hidden
temp file in the same folder and renamed into place (``os.replace`` is atomic on POSIX).
A run killed mid-write leaves only ``.*.vidvec-tmp*`` files, which `remove_stale_temps`
deletes on the next start; a temp that a live process is still writing is locked
(``flock``) and left alone, so runs may share an output folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import secrets
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: temps are not locked, and remove_stale_temps removes them all
    fcntl = None

# torch is imported only when needed: reading the ledger or npz files (`vidvec status`,
# tests, downstream users) shouldn't pay for importing it.

FORMATS = ("npz", "npy", "pt")
PYSLOWFAST_DIR = "output_vecs"
PYSLOWFAST_PREFIX = "output_latent_vec_"
TEMP_MARK = ".vidvec-tmp"
# Arrays that hold model outputs: these follow ``out_dtype``. Timestamps never do (float16
# cannot even represent 2049.0 s exactly); scores/indices/flags keep their own dtype.
FEATURE_LIKE = frozenset({"features", "video_vector", "logits"})
_OUT_DTYPES = ("float16", "float32", "float64")
_SIDECAR_FORMAT = "vidvec-npy-sidecar"


def output_path(out_dir: Path, source_key: str, fmt: str, explicit: Path | None = None) -> Path:
    """Where a video's features go: ``out_dir/<key>.<fmt>``, or ``explicit`` when given.

    A relative ``explicit`` path is taken relative to ``out_dir``; the format's suffix is
    appended when ``explicit`` does not already end with it (``a.bin`` -> ``a.bin.npz``).
    """
    _check_format(fmt)
    suffix = "." + fmt
    if explicit is not None:
        path = Path(out_dir) / Path(explicit)  # an absolute explicit path replaces out_dir
        return path if path.suffix.lower() == suffix else path.with_name(path.name + suffix)
    # String concat, not with_suffix: keys may contain dots ("x.mp4" after a key clash).
    return Path(out_dir) / f"{source_key}{suffix}"


def pyslowfast_path(video: Path, name: str | None = None) -> Path:
    """``<video folder>/output_vecs/output_latent_vec_<name>.npy``; ``name`` defaults to the video's stem."""
    video = Path(video)
    return video.parent / PYSLOWFAST_DIR / f"{PYSLOWFAST_PREFIX}{name if name is not None else video.stem}.npy"


def pyslowfast_paths(videos: list[Path]) -> list[Path]:
    """`pyslowfast_path` of each video; videos in one folder that share a stem (``x.mp4``, ``x.avi``) keep
    their extension instead (``output_latent_vec_x.mp4.npy``) so that none overwrites another."""
    seen: dict[tuple[Path, str], int] = {}
    for video in videos:
        key = (Path(video).parent.resolve(), Path(video).stem)
        seen[key] = seen.get(key, 0) + 1
    return [pyslowfast_path(v, Path(v).name if seen[(Path(v).parent.resolve(), Path(v).stem)] > 1 else None)
            for v in videos]


def predictions_path(vector_path: Path) -> Path:
    """``output_vecs/output_topk_<name>.json`` beside ``output_vecs/output_latent_vec_<name>.npy``."""
    vector_path = Path(vector_path)
    name = vector_path.name[len(PYSLOWFAST_PREFIX):] if vector_path.name.startswith(PYSLOWFAST_PREFIX) \
        else vector_path.name
    return vector_path.with_name(f"output_topk_{Path(name).stem}.json")


def write_latent_vector(path: Path, vector: Any, out_dtype: str = "float32",
                        predictions: dict | None = None) -> Path:
    """Write one video vector (D,) as a plain ``.npy`` (no pickle), atomically; return ``path``.

    ``predictions`` (the video's top-k classes) go to a JSON file beside it (`predictions_path`), written
    first, so that an existing ``.npy`` always has its predictions complete."""
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"unknown out_dtype {out_dtype!r}; choose one of {', '.join(_OUT_DTYPES)}")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(vector, torch.Tensor):
        vector = vector.detach().cpu().float().numpy()
    arr = np.asarray(vector)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"a latent vector must be a 1-D float array, not {arr.dtype} {arr.shape}")
    if predictions is not None:
        with atomic_path(predictions_path(path)) as tmp:
            Path(tmp).write_text(json.dumps(_jsonable(predictions), indent=1))
    return write_array(path, arr.astype(out_dtype, copy=False))


def write_array(path: Path, array: np.ndarray) -> Path:
    """Write one array as a plain ``.npy`` (no pickle), atomically; return ``path``."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.require(array, requirements="C"), allow_pickle=False)  # 0-d arrays stay 0-d
    return Path(path)


def extra_path(output: Path, name: str, clip: int, crop: int = 0) -> Path:
    """Where a clip's by-product ``name`` (``--save-flow``: "flow") goes, beside the video's output file
    ``output``: ``<output without suffix>.<name>/<clip>.npy`` (``<clip>_c<crop>.npy`` for crops 1, 2)."""
    stem = f"{clip:06d}" + (f"_c{crop}" if crop else "")
    return output.with_name(f"{output.stem}.{name}") / f"{stem}.npy"


def write_hero_features(path: Path, features: Any) -> Path:
    """Write a video's clip features (N, D) as HERO reads them: an ``.npz`` whose only array is
    ``features``, float16; atomically; return ``path``."""
    arr = np.asarray(features)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"HERO features must be a 2-D float array, not {arr.dtype} {arr.shape}")
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=arr.astype(np.float16))
    return Path(path)


def write_lvs_timeline(path: Path, name: str, features: Any, intervals: Any, out_dtype: str = "float32") -> Path:
    """Write a video's dense timeline as the Latent Vectors Service's Social-IQ form pickled it: ``{name:
    {"features": (N, D) float32 (or ``out_dtype``), "intervals": (N, 2) float64 seconds}}``, one interval per
    vector; atomically."""
    features, intervals = np.asarray(features).astype(out_dtype), np.asarray(intervals, dtype=np.float64)
    if features.ndim != 2 or intervals.shape != (len(features), 2):
        raise ValueError(f"a timeline needs (N, D) features and (N, 2) intervals, not {features.shape} and "
                         f"{intervals.shape}")
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump({name: {"features": features, "intervals": intervals}}, f, protocol=4)
    return Path(path)


# The metadata keys CMU-MultimodalSDK checks a computational sequence for (mmsdk/mmdatasdk/configurations/
# metadataconfigs.py). Its list lacks a comma, so it asks for "dimension namescomputational sequence version"
# rather than the two keys: all three are written, or the SDK's check fails.
CSD_METADATA_KEYS = ("root name", "computational sequence description", "dimension names",
                     "computational sequence version", "dimension namescomputational sequence version",
                     "alignment compatible", "dataset name", "dataset version", "creator", "contact",
                     "featureset bib citation", "dataset bib citation")


def write_csd(path: Path, root_name: str, entries: Iterable[tuple[str, Any, Any]], metadata: Mapping[str, Any]
              ) -> Path:
    """Write a CMU-MultimodalSDK computational sequence (HDF5, what ``mmdatasdk.computational_sequence`` reads):
    ``<root name>/data/<video>/{features (N, D), intervals (N, 2) seconds}`` per ``(video, features, intervals)``
    entry, and ``<root name>/metadata/<key>``: one JSON string each (``metadata`` fills CSD_METADATA_KEYS; a key
    it lacks is written as null); atomically."""
    import h5py

    with atomic_path(Path(path)) as tmp:
        with h5py.File(tmp, "w", locking=False) as f:  # atomic_path holds the temp's lock
            root = f.create_group(root_name)
            data = root.create_group("data")
            for name, features, intervals in entries:
                video = data.create_group(name)
                video.create_dataset("features", data=np.asarray(features, dtype=np.float32))
                video.create_dataset("intervals", data=np.asarray(intervals, dtype=np.float64))
            meta = root.create_group("metadata")
            text = h5py.special_dtype(vlen=str)
            for key in dict.fromkeys([*CSD_METADATA_KEYS, *metadata]):
                meta.create_dataset(key, (1,), dtype=text)[0] = json.dumps(metadata.get(key))
    return Path(path)


def write_ego4d_features(path: Path, features: Any) -> Path:
    """Write a video's clip features (N, D) as Ego4D's feature tool saves them (``torch.save`` of one float32
    tensor, read back with ``torch.load``); atomically; return ``path``."""
    import torch

    arr = np.asarray(features)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"Ego4D features must be a 2-D float array, not {arr.dtype} {arr.shape}")
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            torch.save(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), f)
    return Path(path)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path next to ``final``; on success it replaces ``final`` atomically.

    The caller writes the temp path (and closes it); it exists, empty, when yielded. On normal
    exit the file is fsynced, renamed onto ``final`` and the folder fsynced, so after a crash
    ``final`` is either the old file or the complete new one. On any exception the temp is
    removed and the exception re-raised. Parent folders are created. Until the rename the temp
    is locked, so `remove_stale_temps` in another process leaves it alone.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, lock_fd = _new_temp(final)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:  # KeyboardInterrupt too: never leave a temp behind if we can help it
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    finally:
        if lock_fd is not None:
            os.close(lock_fd)  # after the rename: the temp name is gone before the lock is
    _fsync_dir(final.parent)


def _new_temp(final: Path) -> tuple[Path, int | None]:
    """Create a fresh temp for ``final`` and lock it: ``(path, fd holding the lock)``.

    Hidden, unique per writer, and kept under NAME_MAX (255) even for long final names. A
    cleaner may remove the temp between its creation and the lock; then it starts over with a
    new name. Without fcntl (Windows) nothing is created or locked: ``(path, None)``. Where
    the file system has no locks the temp is created but stays unprotected, as before locks.
    """
    while True:
        tmp = final.parent / f".{final.name[:200]}{TEMP_MARK}-{os.getpid()}-{secrets.token_hex(4)}"
        if fcntl is None:
            return tmp, None
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks here (e.g. Lustre mounted without flock)
            return tmp, fd
        if os.fstat(fd).st_nlink > 0:
            return tmp, fd
        os.close(fd)  # a cleaner unlinked it before we held the lock


def write_features(
    path: Path,
    fmt: str,
    arrays: Mapping[str, Any],
    provenance: Mapping[str, Any],
    out_dtype: str = "float32",
) -> Path:
    """Write one video's arrays plus provenance to ``path`` atomically; return ``path``.

    ``arrays`` must hold ``features``; numpy arrays or torch tensors are accepted.
    ``out_dtype`` applies to `FEATURE_LIKE` float arrays; ``timestamps`` are always float64.
    Provenance must be JSON-like (paths, numpy scalars, tuples and dataclasses are converted);
    it is stored as JSON so it reads back the same from every format.

    - npz: all arrays plus ``provenance``, a 0-d unicode array holding JSON (loads without pickle).
    - npy: ``path`` holds ``features`` only; ``path.with_suffix('.json')`` holds provenance and
      the other arrays (as lists with dtype and shape). The sidecar is written first and any
      old npy removed before it, so an existing npy always has its matching sidecar.
    - pt: ``torch.save`` of ``{name: tensor, ..., 'provenance': dict}``; loads with weights_only.
    """
    _check_format(fmt)
    path = Path(path)
    data = _prepare_arrays(arrays, out_dtype)
    prov = _jsonable(provenance)
    prov_json = json.dumps(prov)

    if fmt == "npz":
        if "provenance" in data:
            raise ValueError("'provenance' is reserved in npz files; rename that array")
        with atomic_path(path) as tmp:
            # A file object, not a name: np.savez would append ".npz" to the temp name.
            with open(tmp, "wb") as f:
                np.savez(f, **data, provenance=np.array(prov_json))
    elif fmt == "npy":
        features = data.pop("features")
        sidecar = {
            "format": _SIDECAR_FORMAT,
            "version": 1,
            "features": {"file": path.name, "dtype": features.dtype.str, "shape": list(features.shape)},
            "provenance": prov,
            "arrays": {
                name: {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tolist()}
                for name, arr in data.items()
            },
        }
        # An old npy next to a new sidecar would look complete but mismatched.
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        with atomic_path(_sidecar_path(path)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(sidecar, f)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, features, allow_pickle=False)
    else:  # pt
        import torch

        if "provenance" in data:
            raise ValueError("'provenance' is reserved in pt files; rename that array")
        # from_numpy shares memory and warns on read-only arrays (e.g. fresh from np.load).
        payload: dict[str, Any] = {
            name: torch.from_numpy(arr if arr.flags.writeable else arr.copy())
            for name, arr in data.items()
        }
        payload["provenance"] = prov
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
    return path


def read_features(path: Path, key: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a video's file in any layout vidvec writes: ``(arrays, provenance)``. vidvec's own files (npz, npy with
    its JSON sidecar, pt) carry their provenance; the other layouts' files have none, and their provenance is
    ``{"layout": name}``: hero (npz of ``features``), pyslowfast (``output_latent_vec_<stem>.npy``:
    ``video_vector``, and ``video_topk`` from its JSON when present), video_features (``<stem>_<type>.npy`` with its
    ``_fps.npy`` and ``_timestamps_ms.npy``), ego4d (pt of one tensor: ``features``) and lvs-timeline (pk:
    ``features`` and ``intervals``; read without running any code the file could carry). A CMU-MultimodalSDK
    ``.csd`` holds many videos: ``key`` names one (it may be left out when there is one); its provenance adds
    the sequence's name, the key, the number of keys and the sequence's metadata."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "pk":
        return _read_timeline(path)
    if fmt == "csd":
        return _read_csd(path, key)
    _check_format(fmt)
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        prov_arr = arrays.pop("provenance", None)
        prov = json.loads(str(prov_arr[()])) if prov_arr is not None else {"layout": "hero"}
        return arrays, prov
    if fmt == "npy":
        if not _sidecar_path(path).exists():
            return _read_foreign_npy(path)
        arrays = {"features": np.load(path, allow_pickle=False)}
        with open(_sidecar_path(path), encoding="utf-8") as f:
            sidecar = json.load(f)
        for name, spec in sidecar.get("arrays", {}).items():
            arrays[name] = np.array(spec["data"], dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
        return arrays, sidecar.get("provenance", {})
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, torch.Tensor):
        return {"features": payload.numpy()}, {"layout": "ego4d"}
    prov = payload.pop("provenance", {})
    return {name: t.numpy() for name, t in payload.items()}, prov


def _read_csd(path: Path, key: str | None) -> tuple[dict[str, np.ndarray], dict]:
    import h5py

    with h5py.File(path, "r") as f:
        roots = list(f.keys())
        if len(roots) != 1 or not {"data", "metadata"} <= set(f[roots[0]].keys()):
            raise ValueError("a computational sequence holds one group with data and metadata")
        root = f[roots[0]]
        keys = sorted(root["data"].keys())
        if key is None and len(keys) != 1:
            raise ValueError(f"this sequence holds {len(keys)} videos ({', '.join(keys[:3])}"
                             f"{', ...' if len(keys) > 3 else ''}): name one")
        key = keys[0] if key is None else key
        if key not in root["data"]:
            raise ValueError(f"no video {key!r} in this sequence")
        entry = root["data"][key]
        arrays = {"features": entry["features"][()], "intervals": entry["intervals"][()]}
        metadata = {}
        for name, value in root["metadata"].items():
            text = value[0]
            metadata[name] = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    return arrays, {"layout": "csd", "sequence": roots[0], "key": key, "keys": len(keys), "metadata": metadata}


def _read_foreign_npy(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """A PySlowFast latent vector (with its top-k JSON) or one of video_features' files (with its siblings)."""
    array = np.load(path, allow_pickle=False)
    if path.name.startswith(PYSLOWFAST_PREFIX):
        arrays = {"video_vector": array}
        if predictions_path(path).exists():
            topk = json.loads(predictions_path(path).read_text(encoding="utf-8"))
            arrays.update({f"video_topk_{k}": np.asarray(v) for k, v in topk.items() if v is not None})
        return arrays, {"layout": "pyslowfast"}
    stem = path.name[: -len(".npy")].rsplit("_", 1)[0]
    arrays = {"features": array}
    for name in ("fps", "timestamps_ms"):
        sibling = path.with_name(f"{stem}_{name}.npy")
        if sibling.exists() and sibling != path:
            arrays[name] = np.load(sibling, allow_pickle=False)
    return arrays, {"layout": "video_features"}


class _TimelineUnpickler(pickle.Unpickler):
    """Unpickles dicts, strings and numpy arrays only: a ``.pk`` from elsewhere cannot run code here."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED or (module.startswith("numpy.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a feature timeline")


def _read_timeline(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with open(path, "rb") as f:
        data = _TimelineUnpickler(f).load()
    if not (isinstance(data, dict) and len(data) == 1):
        raise ValueError("a timeline pickle holds one {name: {features, intervals}} entry")
    (name, entry), = data.items()
    return {"features": np.asarray(entry["features"]), "intervals": np.asarray(entry["intervals"])}, \
        {"layout": "lvs-timeline", "name": name}


def remove_stale_temps(out_dir: Path) -> int:
    """Delete temp files left under ``out_dir`` by killed writers; return how many.

    Only hidden files whose name contains ``.vidvec-tmp`` are touched, and only abandoned ones:
    a temp whose writer is alive (in any process) holds a lock and is left alone, so this is
    safe while other runs write into the same folder. A temp that cannot be locked (a file
    system without locks) is kept. Without fcntl (Windows) every temp is removed.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    removed = 0
    for path in out_dir.rglob(f"*{TEMP_MARK}*"):
        if path.name.startswith(".") and path.is_file() and not path.is_symlink():
            removed += _remove_if_abandoned(path)
    return removed


def _remove_if_abandoned(tmp: Path) -> bool:
    """Unlink ``tmp`` unless a live writer holds its lock; True when it was removed."""
    if fcntl is None:
        return _unlink(tmp)
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except OSError:  # gone meanwhile (its writer renamed it into place), or unreadable
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live writer (or no locks here): not provably abandoned
            return False
        # Unlinked while we hold the lock: a writer that has just created it and waits for the
        # lock then finds no links left and takes another name.
        return _unlink(tmp)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:  # gone meanwhile, or not ours to remove
        return False
    return True


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _sidecar_path(npy_path: Path) -> Path:
    return npy_path.with_suffix(".json")


def _prepare_arrays(arrays: Mapping[str, Any], out_dtype: str) -> dict[str, np.ndarray]:
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"unknown out_dtype {out_dtype!r}; choose one of {', '.join(_OUT_DTYPES)}")
    if "features" not in arrays:
        raise ValueError("arrays must contain 'features'")
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        torch = sys.modules.get("torch")  # if torch isn't loaded, value can't be a tensor
        if torch is not None and isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16
                value = value.float()
            value = value.numpy()
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ValueError(f"array {name!r} has dtype object; only numeric/bool arrays are written")
        if name == "timestamps":
            arr = arr.astype(np.float64, copy=False)
        elif name in FEATURE_LIKE and np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(out_dtype, copy=False)
        out[name] = np.ascontiguousarray(arr)
    return out


def _jsonable(value: Any) -> Any:
    """Provenance as plain JSON types, so every format stores and returns the same thing."""
    def default(obj: Any) -> Any:
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=str)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.dtype):
            return str(obj)
        raise TypeError(f"provenance value of type {type(obj).__name__} is not JSON-serialisable")

    return json.loads(json.dumps(value, default=default))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; folders can't be opened this way on Windows.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
