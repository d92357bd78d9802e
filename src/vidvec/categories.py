"""Class-name lists shipped in ``vidvec/data`` (index i names a model's output i), read on first use.

Plain text and JSON files, so a card's ``categories`` cost no torch or torchvision import; see
``vidvec/data/README.md`` for where each list comes from.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


def _text(name: str) -> str:
    return resources.files("vidvec").joinpath(f"data/{name}").read_text("utf-8")


@cache
def imagenet1k() -> tuple[str, ...]:
    """The 1000 ImageNet-1k classes in the standard index order (torchvision's names)."""
    return tuple(_text("imagenet1k_classes.txt").splitlines())


@cache
def kinetics400() -> tuple[str, ...]:
    """The 400 Kinetics-400 classes in label order (alphabetical; torchvision's and PySlowFast's)."""
    return tuple(_text("kinetics400_classes.txt").splitlines())


@cache
def ssv2() -> tuple[str, ...]:
    """The 174 Something-Something-v2 classes, by id (``something-something-v2-labels.json``)."""
    by_id = {int(i): name for name, i in json.loads(_text("something-something-v2-labels.json")).items()}
    return tuple(by_id[i] for i in range(len(by_id)))


@cache
def charades() -> tuple[str, ...]:
    """The 157 Charades classes, by index (``Charades_v1_classes.txt``, ``cNNN name`` per line)."""
    names = {}
    for line in _text("Charades_v1_classes.txt").splitlines():
        if line.strip():
            code, name = line.strip().split(" ", 1)
            names[int(code[1:])] = name
    return tuple(names[i] for i in range(len(names)))


@cache
def ava() -> tuple[str, ...]:
    """The 80 AVA v2.2 actions in id order (``ava_v2.2_labels.txt``, ``id: name`` per line).

    PySlowFast's AVA head has one output per action id: output k is id k + 1 (``ava_dataset.py`` sets
    ``label_arrs[i][label - 1]``), over all 80 ids; the 60-id ``for_activitynet_2019`` list only picks which
    classes its evaluation scores."""
    names = {}
    for line in _text("ava_v2.2_labels.txt").splitlines():
        if line.strip():
            action_id, name = line.split(": ", 1)
            names[int(action_id)] = name.strip()
    return tuple(names[i] for i in range(1, len(names) + 1))
