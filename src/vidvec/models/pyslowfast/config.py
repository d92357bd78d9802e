"""PySlowFast-format configs without fvcore/yacs: defaults, named configs, YAML files, override lists.

A config is a :class:`CfgNode`, a dict with attribute access (``cfg.MODEL.ARCH``). Sources, merged in order
onto a copy of :data:`DEFAULTS`:

* a known config name such as ``"Kinetics/c2/SLOWFAST_8x8_R50"`` (also accepted with a ``configs/`` prefix or a
  ``.yaml`` suffix): the resolved values of PySlowFast's own config file, stored in ``_known_configs.py``;
* a YAML file path; ``_BASE_`` includes are resolved relative to the file, and a ``_BASE_`` that is no file
  but names a known config (e.g. ``../Kinetics/SLOWFAST_8x8_R50.yaml``) uses the stored one;
* a YAML string (for example the ``cfg`` a PySlowFast ``.pyth`` checkpoint embeds) or a plain dict;
* an override list ``["RESNET.WIDTH_PER_GROUP", 8, "DATA.TRAIN_CROP_SIZE", 64]`` (values may be strings,
  which are parsed as YAML scalars the way yacs does).

Only ``yaml.safe_load`` is used.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._defaults import DEFAULTS
from ._known_configs import KNOWN_CONFIGS

__all__ = ["CfgNode", "get_default_cfg", "known_config_names", "load_config", "merge_overrides",
           "merge_yaml_text", "resolve_known_name"]


class CfgNode(dict):
    """A nested dict with attribute access. Nested dicts are converted to CfgNode on assignment."""

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        for key, value in (data or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, Mapping) and not isinstance(value, CfgNode):
            value = CfgNode(value)
        super().__setitem__(key, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo: dict) -> CfgNode:
        return CfgNode({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def clone(self) -> CfgNode:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, CfgNode) else copy.deepcopy(v) for k, v in self.items()}


def get_default_cfg() -> CfgNode:
    """A fresh copy of PySlowFast's defaults (the sections vidvec uses)."""
    return CfgNode(copy.deepcopy(DEFAULTS))


def known_config_names() -> list[str]:
    return list(KNOWN_CONFIGS)


def resolve_known_name(name: str) -> str | None:
    """'configs/Kinetics/c2/SLOWFAST_8x8_R50.yaml' -> 'Kinetics/c2/SLOWFAST_8x8_R50' if known, else None.
    Relative prefixes ('../', './') are tolerated so that upstream ``_BASE_`` references resolve."""
    s = str(name).replace("\\", "/").strip()
    if s.endswith(".yaml"):
        s = s[: -len(".yaml")]
    while s.startswith("../") or s.startswith("./"):
        s = s.split("/", 1)[1]
    if "configs/" in s:
        s = s.split("configs/", 1)[1]
    if s in KNOWN_CONFIGS:
        return s
    # A _BASE_ reference is relative; match on the longest known suffix.
    matches = [k for k in KNOWN_CONFIGS if k == s or k.endswith("/" + s)]
    return matches[0] if len(matches) == 1 else None


def _merge(dst: CfgNode, src: Mapping[str, Any], strict: bool, path: str = "") -> None:
    for key, value in src.items():
        if key == "_BASE_":
            continue
        where = f"{path}{key}"
        if key not in dst:
            if strict and path:  # unknown key inside a known section: likely a typo
                raise KeyError(f"unknown config key {where!r}")
            dst[key] = copy.deepcopy(value)
            continue
        if isinstance(dst[key], Mapping) and isinstance(value, Mapping):
            _merge(dst[key], value, strict, where + ".")
        elif isinstance(dst[key], Mapping) and value is not None:
            raise TypeError(f"config key {where!r} is a section, got {type(value).__name__}")
        else:
            dst[key] = copy.deepcopy(value)


def _load_yaml_text(text: str) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - pyyaml is a dependency
        raise ImportError("reading PySlowFast YAML configs needs PyYAML (pip install pyyaml)") from e
    data = yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"a config YAML must be a mapping, got {type(data).__name__}")
    return data


def _merge_yaml_file(cfg: CfgNode, path: Path, strict: bool, seen: tuple[Path, ...] = ()) -> None:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"circular _BASE_ include: {path}")
    data = _load_yaml_text(path.read_text(encoding="utf-8"))
    base = data.get("_BASE_")
    if base:
        base_path = (path.parent / base) if not os.path.isabs(base) else Path(base)
        if base_path.is_file():
            _merge_yaml_file(cfg, base_path, strict, seen + (path,))
        else:
            known = resolve_known_name(base)
            if known is None:
                raise FileNotFoundError(f"_BASE_ {base!r} of {path} is neither a file nor a known config")
            _merge(cfg, KNOWN_CONFIGS[known], strict)
    _merge(cfg, data, strict)


def merge_yaml_text(cfg: CfgNode, text: str, strict: bool = False) -> CfgNode:
    """Merge a YAML document (no _BASE_ support: a string has no directory) into ``cfg``."""
    data = _load_yaml_text(text)
    if data.get("_BASE_"):
        known = resolve_known_name(data["_BASE_"])
        if known is None:
            raise ValueError(f"_BASE_ {data['_BASE_']!r} of a YAML string must name a known config")
        _merge(cfg, KNOWN_CONFIGS[known], strict)
    _merge(cfg, data, strict)
    return cfg


def _parse_value(value: Any) -> Any:
    if isinstance(value, str):
        import yaml

        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def merge_overrides(cfg: CfgNode, overrides: Sequence[Any]) -> CfgNode:
    """Apply ``["A.B", value, "C.D", value, ...]`` (PySlowFast's ``opts``). Keys must exist."""
    if len(overrides) % 2:
        raise ValueError(f"overrides must be key/value pairs, got {len(overrides)} items")
    for key, value in zip(overrides[0::2], overrides[1::2]):
        node: Any = cfg
        parts = str(key).split(".")
        for part in parts[:-1]:
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"unknown config key {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise KeyError(f"unknown config key {key!r}")
        node[parts[-1]] = copy.deepcopy(_parse_value(value))
    return cfg


def load_config(source: str | os.PathLike | Mapping[str, Any] | None = None,
                overrides: Sequence[Any] | None = None, strict: bool = False) -> CfgNode:
    """Build a config: defaults, then ``source`` (known name, YAML path, YAML text or dict), then overrides.

    ``strict`` refuses keys unknown inside a known section (a typo guard for hand-written YAML); YAML dumped
    by PySlowFast itself carries sections vidvec does not keep, which are merged as they are.
    """
    cfg = get_default_cfg()
    if source is not None:
        if isinstance(source, Mapping):
            _merge(cfg, source, strict)
        else:
            text = os.fspath(source)
            known = resolve_known_name(text) if "\n" not in text else None
            if known is not None and not Path(text).is_file():
                _merge(cfg, KNOWN_CONFIGS[known], strict)
            elif "\n" not in text and Path(text).is_file():
                _merge_yaml_file(cfg, Path(text), strict)
            elif "\n" in text or ":" in text:
                merge_yaml_text(cfg, text, strict)
            else:
                raise FileNotFoundError(
                    f"{text!r} is neither a YAML file nor a known config; known: {', '.join(KNOWN_CONFIGS)}")
    if overrides:
        merge_overrides(cfg, list(overrides))
    return cfg
