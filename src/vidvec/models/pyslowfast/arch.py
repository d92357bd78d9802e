"""What a PySlowFast config implies about an architecture, computed without torch: PySlowFast's width rounding
and MViT's resolved spec (widths, heads and pooling per block). Cards use it to state a latent size without
building the network; the network modules (``blocks``, ``video_models``, ``mvit``) build from it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import get_default_cfg

__all__ = ["BlockSpec", "MViTSpec", "round_width"]


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
    """PySlowFast's width rounding (``models.utils.round_width`` / ``SE._round_width``, also MViT's widths and
    heads): scale ``width`` by ``multiplier`` and round to a multiple of ``divisor``."""
    if not multiplier:
        return int(width)
    width = width * multiplier
    min_width = min_width or divisor
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


# ----------------------------------------------------------------------------------------------------------------
# MViT's resolved architecture

_MISSING = object()

# Fields a cfg lacks take PySlowFast's defaults, the shared ones of ``config`` (``_defaults.py``, which holds
# every field this builder reads), except that the model class defaults to MViT here.
_MVIT_DEFAULT_OVERRIDES: dict[str, Any] = {"MODEL.MODEL_NAME": "MViT"}


def _lookup(cfg: Any, dotted: str) -> Any:
    """``cfg.A.B`` for an attribute-style config or ``cfg["A"]["B"]`` for a nested mapping; ``_MISSING``
    when the field is absent."""
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        else:
            node = getattr(node, part, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _cfg_get(cfg: Any, dotted: str, defaults: Any = None) -> Any:
    """The field ``dotted`` of ``cfg`` (attribute-style or nested mapping); PySlowFast's default when the
    field is absent (``defaults``: a default config, :func:`get_default_cfg` when not given)."""
    node = _lookup(cfg, dotted)
    if node is _MISSING:
        if dotted in _MVIT_DEFAULT_OVERRIDES:
            return _MVIT_DEFAULT_OVERRIDES[dotted]
        node = _lookup(get_default_cfg() if defaults is None else defaults, dotted)
        if node is _MISSING:
            raise KeyError(f"config field {dotted} missing and has no default")
        return node
    if isinstance(node, str):
        # yacs decodes string values as Python literals ("(3, 7, 7)" in the published YAML files); so do we,
        # so that a raw ``yaml.safe_load`` of a config file works too.
        try:
            node = ast.literal_eval(node)
        except (ValueError, SyntaxError):
            pass
    return node


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if v is not None else ()


@dataclass(frozen=True)
class BlockSpec:
    """One MultiScaleBlock as PySlowFast's builder derives it."""

    dim: int
    dim_out: int
    num_heads: int
    input_size: tuple[int, int, int]  # (T, H, W) of the tokens entering the block
    kernel_q: tuple[int, ...]
    kernel_kv: tuple[int, ...]
    stride_q: tuple[int, ...]
    stride_kv: tuple[int, ...]


@dataclass(frozen=True)
class MViTSpec:
    """Every config value the network needs, resolved (pool strides, widths and heads per block)."""

    in_chans: int
    num_frames: int
    crop_size: int
    num_classes: int
    head_act: str
    embed_dim: int
    mlp_ratio: float
    qkv_bias: bool
    mode: str
    pool_first: bool
    cls_embed_on: bool
    patch_kernel: tuple[int, ...]
    patch_stride: tuple[int, ...]  # 3 entries (with a leading 1 for 2D patches)
    patch_padding: tuple[int, ...]
    patch_2d: bool
    patch_dims: tuple[int, int, int]
    use_abs_pos: bool
    sep_pos_embed: bool
    use_fixed_sincos_pos: bool
    rel_pos_spatial: bool
    rel_pos_temporal: bool
    residual_pooling: bool
    dim_mul_in_att: bool
    separate_qkv: bool
    norm_stem: bool
    use_mean_pooling: bool
    blocks: tuple[BlockSpec, ...]
    out_dim: int

    @classmethod
    def from_cfg(cls, cfg: Any) -> MViTSpec:
        defaults = get_default_cfg()
        g = lambda key: _cfg_get(cfg, key, defaults)  # noqa: E731
        if g("MODEL.MODEL_NAME") != "MViT":
            raise ValueError(f"MODEL.MODEL_NAME is {g('MODEL.MODEL_NAME')!r}; build_mvit builds PySlowFast's MViT "
                             "(PyTorchVideo's PTVMViT and MaskMViT have other state_dict keys)")
        if g("MVIT.REV.ENABLE"):
            raise NotImplementedError("reversible MViT (MVIT.REV.ENABLE) is not supported")
        if g("DETECTION.ENABLE"):
            raise NotImplementedError("MViT with a detection head (DETECTION.ENABLE) is not supported")
        if int(g("CONTRASTIVE.NUM_MLP_LAYERS")) != 1:
            raise NotImplementedError("MViT with an MLP head (CONTRASTIVE.NUM_MLP_LAYERS > 1) is not supported")
        if g("MVIT.NORM") != "layernorm":
            raise NotImplementedError("PySlowFast's MViT only supports MVIT.NORM layernorm")
        crop = int(g("DATA.TRAIN_CROP_SIZE"))
        if crop != int(g("DATA.TEST_CROP_SIZE")):
            raise ValueError("PySlowFast's MViT requires DATA.TRAIN_CROP_SIZE == DATA.TEST_CROP_SIZE "
                             f"(got {crop} and {g('DATA.TEST_CROP_SIZE')})")
        mode = str(g("MVIT.MODE"))
        if mode not in ("conv", "avg", "max", "conv_unshared"):
            raise NotImplementedError(f"unsupported MVIT.MODE {mode}")
        pool_first = bool(g("MVIT.POOL_FIRST"))
        if mode == "conv_unshared" and not pool_first:
            raise ValueError("MVIT.MODE conv_unshared requires MVIT.POOL_FIRST")

        patch_2d = bool(g("MVIT.PATCH_2D"))
        patch_stride = _ints(g("MVIT.PATCH_STRIDE"))
        if patch_2d:
            patch_stride = (1,) + patch_stride
        num_frames = int(g("DATA.NUM_FRAMES"))
        input_dims = (num_frames, crop, crop)
        patch_dims = tuple(input_dims[i] // patch_stride[i] for i in range(3))

        depth = int(g("MVIT.DEPTH"))
        embed_dim = int(g("MVIT.EMBED_DIM"))
        num_heads = int(g("MVIT.NUM_HEADS"))
        dim_mul = [1.0] * (depth + 1)
        head_mul = [1.0] * (depth + 1)
        for idx, mul in g("MVIT.DIM_MUL"):
            dim_mul[int(idx)] = float(mul)
        for idx, mul in g("MVIT.HEAD_MUL"):
            head_mul[int(idx)] = float(mul)

        kvq_kernel = g("MVIT.POOL_KVQ_KERNEL")
        pool_q: list[tuple[int, ...]] = [() for _ in range(depth)]
        pool_kv: list[tuple[int, ...]] = [() for _ in range(depth)]
        stride_q: list[tuple[int, ...]] = [() for _ in range(depth)]
        stride_kv: list[tuple[int, ...]] = [() for _ in range(depth)]

        def default_kernel(strides: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(s + 1 if s > 1 else s for s in strides)

        for entry in g("MVIT.POOL_Q_STRIDE"):
            i, s = int(entry[0]), _ints(entry[1:])
            stride_q[i] = s
            pool_q[i] = _ints(kvq_kernel) if kvq_kernel is not None else default_kernel(s)

        kv_entries = [list(e) for e in g("MVIT.POOL_KV_STRIDE")]
        adaptive = g("MVIT.POOL_KV_STRIDE_ADAPTIVE")
        if adaptive is not None:
            # Each q-pooling stride divides the kv stride of that block and all later ones (floor 1).
            cur = list(_ints(adaptive))
            kv_entries = []
            for i in range(depth):
                if stride_q[i]:
                    cur = [max(cur[d] // stride_q[i][d], 1) for d in range(len(cur))]
                kv_entries.append([i] + cur)
        for entry in kv_entries:
            i, s = int(entry[0]), _ints(entry[1:])
            stride_kv[i] = s
            pool_kv[i] = _ints(kvq_kernel) if kvq_kernel is not None else default_kernel(s)

        dim_mul_in_att = bool(g("MVIT.DIM_MUL_IN_ATT"))
        blocks = []
        size = patch_dims
        for i in range(depth):
            num_heads = round_width(num_heads, head_mul[i])
            if dim_mul_in_att:
                dim_out = round_width(embed_dim, dim_mul[i], divisor=round_width(num_heads, head_mul[i]))
            else:
                dim_out = round_width(embed_dim, dim_mul[i + 1], divisor=round_width(num_heads, head_mul[i + 1]))
            blocks.append(BlockSpec(embed_dim, dim_out, num_heads, tuple(size), pool_q[i], pool_kv[i],
                                    stride_q[i], stride_kv[i]))
            if stride_q[i]:
                size = tuple(n // s for n, s in zip(size, stride_q[i]))
            embed_dim = dim_out

        in_chans = g("DATA.INPUT_CHANNEL_NUM")
        return cls(
            in_chans=int(in_chans[0]),
            num_frames=num_frames,
            crop_size=crop,
            num_classes=int(g("MODEL.NUM_CLASSES")),
            head_act=str(g("MODEL.HEAD_ACT")),
            embed_dim=int(g("MVIT.EMBED_DIM")),
            mlp_ratio=float(g("MVIT.MLP_RATIO")),
            qkv_bias=bool(g("MVIT.QKV_BIAS")),
            mode=mode,
            pool_first=pool_first,
            cls_embed_on=bool(g("MVIT.CLS_EMBED_ON")),
            patch_kernel=_ints(g("MVIT.PATCH_KERNEL")),
            patch_stride=patch_stride,
            patch_padding=_ints(g("MVIT.PATCH_PADDING")),
            patch_2d=patch_2d,
            patch_dims=patch_dims,  # type: ignore[arg-type]
            use_abs_pos=bool(g("MVIT.USE_ABS_POS")),
            sep_pos_embed=bool(g("MVIT.SEP_POS_EMBED")),
            use_fixed_sincos_pos=bool(g("MVIT.USE_FIXED_SINCOS_POS")),
            rel_pos_spatial=bool(g("MVIT.REL_POS_SPATIAL")),
            rel_pos_temporal=bool(g("MVIT.REL_POS_TEMPORAL")),
            residual_pooling=bool(g("MVIT.RESIDUAL_POOLING")),
            dim_mul_in_att=dim_mul_in_att,
            separate_qkv=bool(g("MVIT.SEPARATE_QKV")),
            norm_stem=bool(g("MVIT.NORM_STEM")),
            use_mean_pooling=bool(g("MVIT.USE_MEAN_POOLING")),
            blocks=tuple(blocks),
            out_dim=embed_dim,
        )
