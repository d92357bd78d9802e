"""PySlowFast's model family ported without PySlowFast, detectron2, fvcore or PyTorchVideo.

``build_model(cfg)`` builds a :class:`~vidvec.models.base.FeatureModel` whose ``state_dict`` keys are
PySlowFast's own, so official checkpoints (``.pyth`` and Caffe2 ``.pkl``) load strictly; see
``load_checkpoint`` and ``load_pretrained``. ``zoo`` registers the MODEL_ZOO cards.

Importing the package imports no torch (the cards in ``zoo`` use its configs): the network and checkpoint
modules load when something from them is used.
"""

from __future__ import annotations

from typing import Any

from .build import build_model
from .config import CfgNode, get_default_cfg, known_config_names, load_config

__all__ = ["CfgNode", "PySlowFastModel", "build_model", "get_default_cfg", "known_config_names", "load_checkpoint",
           "load_config", "load_pretrained", "load_state_dict_strict", "pack_pathway_output"]


def __getattr__(name: str) -> Any:  # lazy: the network and checkpoint modules import torch
    if name in ("PySlowFastModel", "pack_pathway_output"):
        from . import video_models

        return getattr(video_models, name)
    if name in ("load_checkpoint", "load_pretrained", "load_state_dict_strict"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(name)
