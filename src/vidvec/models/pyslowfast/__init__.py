"""PySlowFast's model family ported without PySlowFast, detectron2, fvcore or PyTorchVideo.

``build_model(cfg)`` builds a :class:`~vidvec.models.base.FeatureModel` whose ``state_dict`` keys are
PySlowFast's own, so official checkpoints (``.pyth`` and Caffe2 ``.pkl``) load strictly; see
``load_checkpoint`` and ``load_pretrained``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .config import CfgNode, get_default_cfg, known_config_names, load_config
from .video_models import PySlowFastModel, pack_pathway_output

__all__ = ["CfgNode", "PySlowFastModel", "build_model", "get_default_cfg", "known_config_names", "load_checkpoint",
           "load_config", "load_pretrained", "load_state_dict_strict", "pack_pathway_output"]


def build_model(cfg: Mapping[str, Any] | str) -> nn.Module:
    """Build the model that ``cfg.MODEL.MODEL_NAME`` names, in eval mode. ``cfg`` may be a config or
    anything :func:`load_config` accepts (e.g. ``"Kinetics/c2/SLOWFAST_8x8_R50"``)."""
    if not isinstance(cfg, Mapping):
        cfg = load_config(cfg)
    elif not isinstance(cfg, CfgNode):
        cfg = load_config(cfg)
    name = cfg["MODEL"]["MODEL_NAME"]
    arch = cfg["MODEL"]["ARCH"]
    if arch in ("mvit", "maskmvit") or name == "MViT":
        try:
            from .mvit import build_mvit  # written separately; imported lazily
        except ImportError as e:
            raise NotImplementedError(f"MViT support is not available yet ({e})") from e
        model = build_mvit(cfg)
    elif name == "PTVSlowFast":
        from .ptv import PTVSlowFast

        model = PTVSlowFast(cfg)
    else:
        from .video_models import MODEL_CLASSES

        if name not in MODEL_CLASSES:
            raise NotImplementedError(f"MODEL.MODEL_NAME {name!r} is not supported; "
                                      f"supported: {', '.join(list(MODEL_CLASSES) + ['PTVSlowFast', 'MViT'])}")
        model = MODEL_CLASSES[name](cfg)
    return model.eval()


def __getattr__(name: str) -> Any:  # lazy: checkpoint helpers pull in pickle machinery only when used
    if name in ("load_checkpoint", "load_pretrained", "load_state_dict_strict"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(name)
