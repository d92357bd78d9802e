"""Write what vidvec's cards need from torchvision's weights enums into src/vidvec/data, so cards need no
torchvision import (it costs about a second: it imports torch._dynamo).

    python scripts/snapshot_torchvision.py          # after upgrading torchvision; then review the diff

Writes ``torchvision_weights.json`` (per enum: each member's name, URL, parameter count, metrics and eval
transforms, and which class list it uses) and the two class lists, ``imagenet1k_classes.txt`` and
``kinetics400_classes.txt``. ``tests/test_torchvision_snapshot.py`` checks the files against the installed
torchvision.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src" / "vidvec" / "data"
ENUMS = {  # module -> the enums vidvec's cards read
    "torchvision.models": ["ResNet18_Weights", "ResNet34_Weights", "ResNet50_Weights", "ResNet101_Weights",
                           "ResNet152_Weights"],
    "torchvision.models.video": ["R3D_18_Weights", "MC3_18_Weights", "R2Plus1D_18_Weights", "S3D_Weights",
                                 "MViT_V1_B_Weights", "MViT_V2_S_Weights", "Swin3D_T_Weights", "Swin3D_S_Weights",
                                 "Swin3D_B_Weights"],
    "torchvision.models.optical_flow": ["Raft_Large_Weights", "Raft_Small_Weights"],
}


def snapshot() -> dict[str, str]:
    """File name in vidvec/data -> its text, from the installed torchvision."""
    import importlib

    from torchvision.models import _meta

    lists = {"imagenet1k": list(_meta._IMAGENET_CATEGORIES), "kinetics400": list(_meta._KINETICS400_CATEGORIES)}
    enums = {}
    for module, names in ENUMS.items():
        for name in names:
            enums[name] = [_member(w, lists) for w in getattr(importlib.import_module(module), name)]
    return {"torchvision_weights.json": json.dumps(enums, indent=1) + "\n",
            **{f"{key}_classes.txt": "".join(f"{c}\n" for c in names) for key, names in lists.items()}}


def _member(w, lists: dict[str, list[str]]) -> dict:
    meta = w.meta
    record = {"name": w.name, "url": w.url, "num_params": meta.get("num_params"), "metrics": meta["_metrics"]}
    if "categories" in meta:
        record["categories"] = next(key for key, names in lists.items() if names == list(meta["categories"]))
    t = w.transforms()
    if hasattr(t, "crop_size"):  # classifiers' eval transforms (optical flow has none to state)
        record["transforms"] = {"resize": [int(v) for v in t.resize_size], "crop": [int(v) for v in t.crop_size],
                                "mean": [float(v) for v in t.mean], "std": [float(v) for v in t.std],
                                "interpolation": t.interpolation.value}
    return record


if __name__ == "__main__":
    for file, text in snapshot().items():
        (DATA / file).write_text(text, encoding="utf-8")
        print(f"wrote {DATA / file}")
