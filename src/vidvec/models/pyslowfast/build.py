"""``build_model(cfg)``: the network a PySlowFast config names (the model classes load when it is called)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import CfgNode, load_config

if TYPE_CHECKING:
    from torch import nn


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
