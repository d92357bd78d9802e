"""torchvision's weights enums as vidvec Weights entries, without importing torchvision.

Importing torchvision costs about a second (it imports torch._dynamo), too much for listing cards, so the
facts the cards need (URL, eval transforms, categories, parameter count, metrics) are read from a snapshot of
the enums, ``vidvec/data/torchvision_weights.json``, written by ``scripts/snapshot_torchvision.py`` and checked
against the installed torchvision by ``tests/test_torchvision_snapshot.py``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from vidvec import categories
from vidvec.checkpoints import hash_prefix
from vidvec.registry import Weights
from vidvec.transforms import Preprocess

TORCHVISION_LICENSE = "BSD-3-Clause (torchvision model zoo); the training data's terms may also apply"


@cache
def _snapshot() -> dict[str, list[dict]]:
    return json.loads(resources.files("vidvec").joinpath("data/torchvision_weights.json").read_text("utf-8"))


def members(enum: str) -> list[dict]:
    """The snapshot of torchvision's weights enum ``enum`` (e.g. 'ResNet50_Weights'), one dict per member in
    the enum's order: name, url, num_params, metrics (per dataset), categories (a ``vidvec.categories`` list
    name) and transforms (resize, crop, mean, std, interpolation), the last two where the enum has them."""
    return _snapshot()[enum]


def member(enum: str, name: str) -> dict:
    """One member of ``members(enum)`` by name."""
    return next(m for m in members(enum) if m["name"] == name)


def preprocess_of(transforms: dict) -> Preprocess:
    """A Preprocess from a member's eval transforms (resize, crop, mean/std, interpolation)."""
    crop = transforms["crop"]
    return Preprocess(
        resize=tuple(transforms["resize"]),  # (s,) = short side, (h, w) = exact, as in Preprocess
        crop=(crop[0], crop[-1]),
        mean=tuple(transforms["mean"]),
        std=tuple(transforms["std"]),
        interpolation=transforms["interpolation"],
        geometry="torchvision",  # the geometry of the transforms these weights were evaluated with
    )


def torchvision_weights(enum: str, license: str = TORCHVISION_LICENSE, note: str = "") -> tuple[Weights, ...]:
    """The Weights entries of a torchvision classifier's weights enum, in its order (the first is the default)."""
    entries = []
    for m in members(enum):
        (dataset, metrics), = m["metrics"].items()
        entries.append(Weights(
            name=m["name"],
            url=m["url"],
            sha256=hash_prefix(m["url"]),
            license=license,
            preprocess=preprocess_of(m["transforms"]),
            categories=getattr(categories, m["categories"])(),
            num_params=m["num_params"],
            metrics=dict(metrics),
            source=f"torchvision {enum}.{m['name']} ({dataset}){note}",
        ))
    return tuple(entries)
