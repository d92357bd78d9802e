"""Start-up of vidvec's own processes: torchvision and open_clip imported without what vidvec never runs.

Most of importing either library is importing ``torch._dynamo`` (the compiler's front end) for code vidvec does not
use: torchvision's ``ops.roi_align`` imports it for one function, called only when its compiled fallback runs; open_clip
imports timm, for vision towers no vidvec card builds, and timm's models import it to mark functions for the
compiler. After :func:`trim_imports`, the first import of each library leaves those out: roi_align's function
imports the real one on its first call, and open_clip is imported as where timm is not installed (which it
supports). Should a trimmed import fail (another version of either), it is undone and done again as it is.

Only vidvec's own processes call it: the ``vidvec`` command (``cli.main``), a SLURM task, a Ray replica. A program
that imports vidvec as a library keeps its own imports as they are. The time it saves is in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

_DYNAMO_UTILS = "torch._dynamo.utils"
TRIMMED = ("torchvision", "open_clip")  # the libraries whose first import is trimmed


def trim_imports() -> None:
    """From now on in this process, the first import of torchvision and open_clip leaves out what vidvec never
    runs (see the module's docstring)."""
    if not any(isinstance(finder, _Trimmer) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Trimmer())


class _Trimmer(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name not in TRIMMED or "torch._dynamo" in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _TrimmedLoader(spec.loader)
        return spec


class _TrimmedLoader(importlib.abc.Loader):
    """The library's own loader, its module body run with the trims in place."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> object:  # resources, source and the like: the library's own loader's
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        before = set(sys.modules)
        try:
            with _compile_helper_deferred(), _without_timm() if module.__name__ == "open_clip" else nullcontext():
                self.loader.exec_module(module)
        except Exception:  # noqa: BLE001 - a version this does not fit: forget what it imported, import it as it is
            for name in set(sys.modules) - before:
                if name != module.__name__:
                    del sys.modules[name]
            self.loader.exec_module(module)


@contextmanager
def _compile_helper_deferred() -> Iterator[None]:
    """``from torch._dynamo.utils import is_compile_supported`` gives a function that imports the real one when
    called, instead of importing the compiler."""
    if _DYNAMO_UTILS in sys.modules:
        yield
        return
    stand_in = types.ModuleType(_DYNAMO_UTILS)
    stand_in.is_compile_supported = _is_compile_supported  # type: ignore[attr-defined]
    sys.modules[_DYNAMO_UTILS] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(_DYNAMO_UTILS) is stand_in:
            del sys.modules[_DYNAMO_UTILS]


def _is_compile_supported(device_type: str) -> bool:
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


@contextmanager
def _without_timm() -> Iterator[None]:
    """``import timm`` fails as if timm were not installed (unless something imported it before)."""
    if "timm" in sys.modules:
        yield
        return
    sys.modules["timm"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("timm", 0) is None:
            del sys.modules["timm"]
