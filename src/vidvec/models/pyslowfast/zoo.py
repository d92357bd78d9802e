"""PySlowFast's MODEL_ZOO as vidvec model cards, and ad-hoc cards for checkpoints that carry their own cfg.

One card per config vidvec knows by name (``config.known_config_names()``), named like the config
(``Kinetics/c2/SLOWFAST_8x8_R50``), plus the two Charades SlowFast models MODEL_ZOO.md publishes. Weights URLs are
the exact links of upstream MODEL_ZOO.md (facebookresearch/SlowFast @287ec00; the PyTorchVideo-format SlowFast R101
from projects/pytorchvideo/README.md). No sha256 is published for them, so vidvec records the file's sha256 on
first download and checks it on every later load (see ``vidvec.checkpoints``).

Sampling and preprocessing are PySlowFast's test-time ones (``preprocessing.test_time_sampling``), the latent is
the input of the final ``projection`` averaged over positions (see ``heads``). Registration is cheap: a card holds
the config *name*; the network is built only when ``card.build`` is called.

Configs with no published checkpoint (C2D 8x8 R50 and the Caffe2-style SlowFast R101 configs) are registered
without weights entries: use them with ``--weights PATH`` (your own ``.pyth`` or ``.pkl``) or ``random``.
``Kinetics/c2/C2D_NOPOOL_8x8_R50`` (MODEL_ZOO's C2D row) is not registered: its model class ``ResNet_nopool``
does not exist in PySlowFast itself.
"""

from __future__ import annotations

import copy
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidvec.categories import ava, charades, kinetics400, ssv2
from vidvec.checkpoints import WeightsError, torch_load
from vidvec.registry import ModelCard, Weights, register_checkpoint_inspector, register_model

from .arch import MViTSpec
from .config import CfgNode, load_config, merge_overrides
from .preprocessing import test_time_sampling

if TYPE_CHECKING:
    from vidvec.models.base import FeatureModel

FAMILY = "pyslowfast"
LICENSE = "Apache-2.0 (PySlowFast model zoo); the training data's terms may also apply"
_PYSF = "https://dl.fbaipublicfiles.com/pyslowfast/"
_MODEL_ZOO_MD = "PySlowFast MODEL_ZOO.md (facebookresearch/SlowFast @287ec00)"

# Charades: MODEL_ZOO.md lists the two Charades SlowFast models (its config column says SSv2/..., an upstream
# slip); their own configs are configs/Charades/SLOWFAST_16x8_R50[_multigrid].yaml, which differ from the SSv2
# ones only in what is below (the head and the test protocol), so they are built from the SSv2 configs.
_CHARADES_OVERRIDES = ["MODEL.NUM_CLASSES", 157, "MODEL.HEAD_ACT", "sigmoid", "DATA.MULTI_LABEL", True,
                       "DATA.ENSEMBLE_METHOD", "max", "DATA.TRAIN_JITTER_SCALES", [256, 340],
                       "DATA.RANDOM_FLIP", True, "DATA.TEST_CROP_SIZE", 256, "TRAIN.DATASET", "charades",
                       "TEST.DATASET", "charades", "TEST.NUM_ENSEMBLE_VIEWS", 10, "TEST.NUM_SPATIAL_CROPS", 3]


@dataclass(frozen=True)
class ZooEntry:
    """One registered config and its MODEL_ZOO row (url None: no checkpoint is published for it)."""

    config: str                     # card name
    url: str | None
    weights_name: str               # e.g. 'KINETICS400'
    dataset: str                    # what the weights were trained on, in words
    metrics: dict = field(hash=False, default_factory=dict)
    num_params: int | None = None   # parameters of the full-size model (PySlowFast's count; Charades: SSv2's
    #                                 minus the 17 fewer classes of its 2305-input projection)
    base: str | None = None         # a known config to start from (Charades) ...
    overrides: tuple = ()           # ... with these overrides
    note: str = ""
    cache_name: str | None = None   # when the URL's file name is not unique (Charades vs SSv2)


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("Kinetics/c2/SLOWFAST_8x8_R50", _PYSF + "model_zoo/kinetics400/SLOWFAST_8x8_R50.pkl", "KINETICS400",
             "Kinetics-400", {"acc@1": 77.0, "acc@5": 92.6}, 34566488),
    ZooEntry("Kinetics/c2/SLOWFAST_4x16_R50", _PYSF + "model_zoo/kinetics400/SLOWFAST_4x16_R50.pkl", "KINETICS400",
             "Kinetics-400", {"acc@1": 75.6, "acc@5": 92.0}, 34480216),
    ZooEntry("Kinetics/c2/SLOW_8x8_R50", _PYSF + "model_zoo/kinetics400/SLOWONLY_8x8_R50.pkl", "KINETICS400",
             "Kinetics-400", {"acc@1": 74.8, "acc@5": 91.6}, 32454096),
    ZooEntry("Kinetics/c2/SLOW_4x16_R50", _PYSF + "model_zoo/kinetics400/SLOWONLY_4x16_R50.pkl", "KINETICS400",
             "Kinetics-400", {"acc@1": 72.7, "acc@5": 90.3}, 32454096),
    ZooEntry("Kinetics/c2/I3D_8x8_R50", _PYSF + "model_zoo/kinetics400/I3D_8x8_R50.pkl", "KINETICS400",
             "Kinetics-400", {"acc@1": 73.5, "acc@5": 90.8}, 28043472),
    ZooEntry("Kinetics/c2/I3D_NLN_8x8_R50", _PYSF + "model_zoo/kinetics400/I3D_NLN_8x8_R50.pkl", "KINETICS400",
             "Kinetics-400", {"acc@1": 74.0, "acc@5": 91.1}, 35401936),
    ZooEntry("Kinetics/C2D_8x8_R50", None, "", "Kinetics-400", {}, 24327632,
             note="MODEL_ZOO.md publishes no checkpoint for this config"),
    ZooEntry("Kinetics/X3D_XS", _PYSF + "x3d_models/x3d_xs.pyth", "KINETICS400", "Kinetics-400",
             {"acc@1": 68.7, "acc@1_30view": 69.5}, 3794322),
    ZooEntry("Kinetics/X3D_S", _PYSF + "x3d_models/x3d_s.pyth", "KINETICS400", "Kinetics-400",
             {"acc@1": 73.1, "acc@1_30view": 73.5}, 3794322),
    ZooEntry("Kinetics/X3D_M", _PYSF + "x3d_models/x3d_m.pyth", "KINETICS400", "Kinetics-400",
             {"acc@1": 75.1, "acc@1_30view": 76.2}, 3794322),
    ZooEntry("Kinetics/X3D_L", _PYSF + "x3d_models/x3d_l.pyth", "KINETICS400", "Kinetics-400",
             {"acc@1": 76.9, "acc@1_30view": 77.5}, 6153432),
    ZooEntry("Kinetics/MVITv2_S_16x4",
             _PYSF + "model_zoo/mvitv2/pysf_video_models/MViTv2_S_16x4_k400_f302660347.pyth", "KINETICS400",
             "Kinetics-400", {"acc@1": 81.0, "acc@5": 94.6}, 34537744),
    ZooEntry("Kinetics/MVITv2_B_32x3",
             _PYSF + "model_zoo/mvitv2/pysf_video_models/MViTv2_B_32x3_k400_f304025456.pyth", "KINETICS400",
             "Kinetics-400", {"acc@1": 82.9, "acc@5": 95.7}, 51230128),
    ZooEntry("SSv2/SLOWFAST_16x8_R50",
             _PYSF + "pyslowfast/model_zoo/multigrid/model_zoo/SSv2/SLOWFAST_16x8_R50.pkl", "SSV2",
             "Something-Something-v2 (Kinetics-400 pretrained)", {"acc@1": 63.0, "acc@5": 88.5}, 34045558),
    ZooEntry("SSv2/SLOWFAST_16x8_R50_multigrid",
             _PYSF + "pyslowfast/model_zoo/multigrid/model_zoo/SSv2/SLOWFAST_16x8_R50_multigrid.pkl", "SSV2",
             "Something-Something-v2 (Kinetics-400 pretrained, multigrid training)",
             {"acc@1": 63.5, "acc@5": 88.7}, 34045558),
    ZooEntry("Charades/SLOWFAST_16x8_R50",
             _PYSF + "pyslowfast/model_zoo/multigrid/model_zoo/Charades/SLOWFAST_16x8_R50.pkl", "CHARADES",
             "Charades (Kinetics-400 pretrained)", {"mAP": 38.9}, 34006373,
             base="SSv2/SLOWFAST_16x8_R50", overrides=tuple(_CHARADES_OVERRIDES),
             cache_name="Charades_SLOWFAST_16x8_R50.pkl"),
    ZooEntry("Charades/SLOWFAST_16x8_R50_multigrid",
             _PYSF + "pyslowfast/model_zoo/multigrid/model_zoo/Charades/SLOWFAST_16x8_R50_multigrid.pkl", "CHARADES",
             "Charades (Kinetics-400 pretrained, multigrid training)", {"mAP": 38.6}, 34006373,
             base="SSv2/SLOWFAST_16x8_R50_multigrid", overrides=tuple(_CHARADES_OVERRIDES),
             cache_name="Charades_SLOWFAST_16x8_R50_multigrid.pkl"),
    ZooEntry("AVA/c2/SLOWFAST_32x2_R101_50_50", _PYSF + "model_zoo/ava/SLOWFAST_32x2_R101_50_50.pkl", "AVA_V2_2",
             "AVA v2.2 (Kinetics-600 pretrained)", {"mAP": 29.1}, 59342488,
             note="an AVA detection model: vidvec has no person boxes and pools the whole frame"),
    ZooEntry("Kinetics/c2/SLOWFAST_8x8_R101_101_101", None, "", "Kinetics-400", {}, 62826968,
             note="MODEL_ZOO.md publishes no checkpoint for this config"),
    ZooEntry("Kinetics/c2/SLOWFAST_8x8_R101_50_50", None, "", "Kinetics-400", {}, 53774808,
             note="MODEL_ZOO.md publishes no checkpoint for this config"),
    ZooEntry("Kinetics/c2/SLOWFAST_8x8_R101_50_101", None, "", "Kinetics-400", {}, 53914072,
             note="MODEL_ZOO.md publishes no checkpoint for this config"),
    ZooEntry("Kinetics/c2/SLOWFAST_16x8_R101_50_50", None, "", "Kinetics-400", {}, 53774808,
             note="MODEL_ZOO.md publishes no checkpoint for this config"),
    ZooEntry("Kinetics/pytorchvideo/SLOWFAST_8x8_R101",
             "https://dl.fbaipublicfiles.com/pytorchvideo/pysf_model_zoo/kinetics/SLOWFAST_8x8_R101.pyth",
             "KINETICS400", "Kinetics-400", {"acc@1": 77.90, "acc@5": 93.27}, 62826968,
             note="PyTorchVideo module layout (PySlowFast's PTVSlowFast wrapper, keys 'model.blocks.*'); "
                  "from SlowFast projects/pytorchvideo/README.md"),
)


# ------------------------------------------------------------------------------------------- categories

# Heads named by what their weights were trained on, where the output count alone does not say which dataset
# it is: an 80-way head is AVA's only when the weights are AVA's.
_CATEGORIES_BY_WEIGHTS = {"AVA_V2_2": ava}


def categories_for_count(num_classes: int) -> tuple[str, ...] | None:
    """Class names for a head of ``num_classes`` outputs when it is one of the datasets vidvec ships names for
    (400 Kinetics, 174 Something-Something-v2, 157 Charades), else None."""
    return {400: kinetics400, 174: ssv2, 157: charades}.get(
        int(num_classes), lambda: None)()


# ------------------------------------------------------------------------------------------- configs -> cards


def config_for(name: str) -> CfgNode:
    """The full config of a registered PySlowFast card (a known config, or a base config plus overrides)."""
    entry = _BY_NAME.get(name)
    if entry is not None and entry.base is not None:
        return merge_overrides(load_config(entry.base), list(entry.overrides))
    return load_config(name)


def latent_dim(cfg: Mapping[str, Any]) -> int:
    """The latent size of the model ``build_model(cfg)`` makes, computed from the config (no network built)."""
    name, arch = cfg["MODEL"]["MODEL_NAME"], cfg["MODEL"]["ARCH"]
    if arch in ("mvit", "maskmvit") or name == "MViT":
        return int(MViTSpec.from_cfg(cfg).out_dim)
    if name == "X3D":
        return int(cfg["X3D"]["DIM_C5"])
    width = int(cfg["RESNET"]["WIDTH_PER_GROUP"]) * 32
    if name in ("SlowFast", "PTVSlowFast"):
        return width + width // int(cfg["SLOWFAST"]["BETA_INV"])
    if name == "ResNet":
        return width
    raise NotImplementedError(f"MODEL.MODEL_NAME {name!r} is not supported by vidvec's PySlowFast port")


def latent_description(cfg: Mapping[str, Any]) -> str:
    name, dim = cfg["MODEL"]["MODEL_NAME"], latent_dim(cfg)
    if cfg["MODEL"]["ARCH"] in ("mvit", "maskmvit") or name == "MViT":
        m = cfg["MVIT"]
        if m.get("USE_MEAN_POOLING"):
            what = "the final LayerNorm of the mean of the (non-class) tokens"
        elif m.get("CLS_EMBED_ON", True):
            what = "class token after the final LayerNorm"
        else:
            what = "mean of the tokens after the final LayerNorm"
        return f"{what} (the input of head.projection), {dim}-d"
    if name == "X3D":
        return f"the input of head.projection (after lin_5 and its ReLU), averaged over positions, {dim}-d"
    if cfg["DETECTION"]["ENABLE"]:
        return (f"each pathway's res5 output averaged over time (s*_tpool) and over the whole frame, pathways "
                f"concatenated, {dim}-d: PySlowFast itself pools RoIAlign'ed person boxes, which vidvec has not")
    pathways = "slow and fast pathways concatenated" if name in ("SlowFast", "PTVSlowFast") else "one pathway"
    return f"the head's input averaged over (T, H, W), {pathways} (the input of the final projection), {dim}-d"


def describe_cfg(cfg: Mapping[str, Any]) -> str:
    d, m = cfg["DATA"], cfg["MODEL"]
    depth = cfg["RESNET"]["DEPTH"] if m["MODEL_NAME"] in ("SlowFast", "PTVSlowFast", "ResNet") else None
    arch = m["ARCH"] + (f" R{depth}" if depth else "")
    return f"PySlowFast {m['MODEL_NAME']} ({arch}), {d['NUM_FRAMES']} frames x sampling rate {d['SAMPLING_RATE']}"


def _build(cfg: Mapping[str, Any] | str, num_classes: int | None = None) -> FeatureModel:
    """Build the port for ``cfg`` (a card name or a config) with random init; num_classes overrides the head."""
    from .build import build_model

    cfg = config_for(cfg) if isinstance(cfg, str) else copy.deepcopy(cfg)
    if num_classes is not None:
        cfg["MODEL"]["NUM_CLASSES"] = int(num_classes)
    return build_model(cfg)


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    """The state_dict of a PySlowFast checkpoint: ``.pyth`` via ``torch.load(weights_only=True)``, Caffe2
    ``.pkl`` via a restricted unpickler that can only rebuild numpy arrays."""
    from .checkpoint import load_checkpoint

    return load_checkpoint(path)[0]


def load_state(module: Any, state: Mapping[str, Any], source: str) -> None:
    """Strict loading with PySlowFast's rules (Caffe2 blobs reshaped, num_batches_tracked optional) and one
    error listing missing/unexpected keys and the known configs the checkpoint fits best."""
    from .checkpoint import load_state_dict_strict

    load_state_dict_strict(module, state, source=source)


def _card(name: str, cfg: CfgNode, weights: tuple[Weights, ...], description: str,
          categories: tuple[str, ...] | None = None) -> ModelCard:
    spec, preprocess = test_time_sampling(cfg)
    build = partial(_build, name if name in _BY_NAME else cfg)
    transformer = cfg["MODEL"]["ARCH"] in ("mvit", "maskmvit") or cfg["MODEL"]["MODEL_NAME"] == "MViT"
    return ModelCard(name=name, family=FAMILY, input="video", build=build, weights=weights,
                     embed_dim=latent_dim(cfg), sampling=spec, latent=latent_description(cfg),
                     description=description, read_checkpoint=read_checkpoint, load_state=load_state,
                     preprocess=None if weights else preprocess, categories=None if weights else categories,
                     channels_last=not transformer)  # the CNNs gain from channels-last, MViT does not


def zoo_card(entry: ZooEntry) -> ModelCard:
    """The card of one MODEL_ZOO config (cheap: reads the config, builds nothing)."""
    cfg = config_for(entry.config)
    _, preprocess = test_time_sampling(cfg)
    named = _CATEGORIES_BY_WEIGHTS.get(entry.weights_name)
    categories = named() if named else categories_for_count(cfg["MODEL"]["NUM_CLASSES"])
    weights: tuple[Weights, ...] = ()
    if entry.url is not None:
        weights = (Weights(
            name=entry.weights_name, url=entry.url, sha256=None, license=LICENSE, preprocess=preprocess,
            categories=categories, num_params=entry.num_params, metrics=dict(entry.metrics),
            source=f"{_MODEL_ZOO_MD}, {entry.dataset}" + (f"; {entry.note}" if entry.note else ""),
            cache_name=entry.cache_name),)
    description = f"{describe_cfg(cfg)}, {entry.dataset}" + (f"; {entry.note}" if entry.note else "")
    return _card(entry.config, cfg, weights, description, categories)


_BY_NAME = {e.config: e for e in ZOO}


for _entry in ZOO:
    register_model(partial(zoo_card, _entry), name=_entry.config)


# ------------------------------------------------------------------- checkpoints that carry their cfg


def card_from_cfg(cfg: Mapping[str, Any], source: str = "a checkpoint") -> ModelCard:
    """An ad-hoc card for a config (e.g. the one a fine-tuned ``.pyth`` embeds): named
    ``pyslowfast:<MODEL_NAME>``, sampling/preprocessing from the config, class names only when the head has
    400, 174 or 157 outputs (Kinetics-400, SSv2, Charades)."""
    cfg = cfg if isinstance(cfg, CfgNode) else load_config(cfg)
    latent_dim(cfg)  # unsupported models fail here, with the name of what is missing
    num_classes = int(cfg["MODEL"]["NUM_CLASSES"])
    return _card(f"pyslowfast:{cfg['MODEL']['MODEL_NAME']}", cfg, (),
                 f"{describe_cfg(cfg)}, {num_classes} classes, built from the cfg embedded in {source}",
                 categories_for_count(num_classes))


@register_checkpoint_inspector
def inspect_checkpoint(path: Path) -> ModelCard | None:
    """A card for a PySlowFast ``.pyth`` (``{model_state, cfg, ...}``) built from its embedded cfg; None for any
    other file. Tensors are memory-mapped, not read, and nothing but ``torch.load(weights_only=True)`` runs: a
    pickle that would run code is refused here (``checkpoints.torch_load``'s one-line WeightsError)."""
    if not zipfile.is_zipfile(path):  # Caffe2 .pkl files and legacy pickles carry no cfg
        if path.suffix == ".pkl":
            raise ValueError(f"{path.name} is a pickle (PySlowFast's Caffe2 .pkl format) and carries no config: "
                             f"give --model with its config, e.g. one of `vidvec models --family pyslowfast`")
        return None
    try:
        ckpt = torch_load(path, mmap=True)
    except WeightsError:  # a pickle vidvec refuses: say so now, any model would refuse it too
        raise
    except Exception:  # noqa: BLE001 - not a checkpoint we can read: let the normal path report it
        return None
    if not isinstance(ckpt, Mapping) or "model_state" not in ckpt:
        return None
    raw = ckpt.get("cfg")
    if not raw or not isinstance(raw, (str, Mapping)):
        return None
    try:
        cfg = load_config(raw)
        return card_from_cfg(cfg, source=path.name)
    except Exception as exc:  # noqa: BLE001 - a PySlowFast checkpoint we cannot build: say so, don't guess
        raise ValueError(f"{path} is a PySlowFast checkpoint whose cfg vidvec cannot build "
                         f"({type(exc).__name__}: {exc}); pass --model NAME for its architecture") from exc
