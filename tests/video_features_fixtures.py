"""Reading shared/fixtures/video_features: torch.save'd dicts holding OmegaConf objects and a numpy array.

omegaconf is not installed and the files are read without running anything from them: a restricted unpickler
admits only plain containers, numpy arrays and inert stand-ins for the OmegaConf objects.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest


class _Opaque:
    """Stands in for the OmegaConf objects (the run's config) a reference also holds; nothing reads them."""

    def __setstate__(self, state: object) -> None:
        self.state = state


def _reconstruct():
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    return core.multiarray._reconstruct


class _ReferenceUnpickler(pickle.Unpickler):
    """Only what these files need: plain containers, numpy arrays, and inert stand-ins for OmegaConf."""

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("omegaconf."):
            return _Opaque
        if module == "__builtin__":  # protocol-2 pickles name builtins the Python 2 way
            module, name = "builtins", {"long": "int"}.get(name, name)
        allowed = {
            ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "int"): int,
            ("collections", "defaultdict"): collections.defaultdict, ("typing", "Any"): typing.Any,
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct(), ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"unexpected global {module}.{name}")
        return allowed[(module, name)]


def load_reference(path: Path) -> np.ndarray:
    """The ``data`` array of one reference file (torch's zip format, or its legacy stream of pickles)."""
    if not path.is_file():
        pytest.fail(f"video_features reference missing: {path}", pytrace=False)
    raw = path.read_bytes()
    if raw[:2] == b"PK":
        archive = zipfile.ZipFile(io.BytesIO(raw))
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        return _ReferenceUnpickler(io.BytesIO(archive.read(name))).load()["data"]
    stream = io.BytesIO(raw)
    for _ in range(3):  # legacy format: magic number, protocol version, system info, then the object
        _ReferenceUnpickler(stream).load()
    return _ReferenceUnpickler(stream).load()["data"]
