"""PySlowFast's MViT (v1 and v2) for inference, without PySlowFast, fvcore, detectron2, PyTorchVideo or timm.

``build_mvit(cfg)`` builds the network a PySlowFast config describes (``MODEL.ARCH: mvit``, e.g. the Kinetics
``MVITv2_S_16x4`` and ``MVITv2_B_32x3`` configs) with PySlowFast's exact module names, so that ``state_dict()``
has exactly the keys of the official checkpoints (``cls_token``, ``patch_embed.proj.weight``,
``blocks.N.attn.qkv.weight``, ``blocks.N.attn.rel_pos_h``, ``norm.weight``, ``head.projection.weight``, ...) and
they load with strict key matching.

The returned module is a :class:`vidvec.models.base.FeatureModel`:

* ``forward(x)`` takes one tensor (B, C, T, H, W), already normalised, and returns the latent (B, D): the vector
  PySlowFast's ``TransformerBasicHead`` receives (with ``CLS_EMBED_ON`` the class token after the final norm;
  with ``USE_MEAN_POOLING`` the normed token mean; otherwise the mean of the normed tokens).
* ``classify(latent)`` returns logits (B, NUM_CLASSES) (``head.projection``; the head's dropout is an inference
  no-op).
* ``probabilities(logits)`` applies ``MODEL.HEAD_ACT`` (softmax / sigmoid / none): what PySlowFast's model
  returns in eval mode. ``predict(x)`` chains the three.

The config is PySlowFast's (yacs) config: either an object with attributes (``cfg.MVIT.DEPTH``) or a plain nested
mapping (``{"MVIT": {"DEPTH": 16}}``, e.g. ``yaml.safe_load`` of a checkpoint's ``cfg``). Fields it lacks take
PySlowFast's defaults (``slowfast/config/defaults.py``, as :func:`.config.get_default_cfg` holds them;
``MODEL.MODEL_NAME`` defaults to ``MViT`` here), and
string values are decoded as Python literals as yacs does (``PATCH_KERNEL: (3, 7, 7)`` in the published YAML), so
a raw ``yaml.safe_load`` of ``configs/Kinetics/MVITv2_S_16x4.yaml`` works too. The cfg passed in is never modified (PySlowFast's builder
rewrites ``MVIT.POOL_KV_STRIDE`` in place when ``POOL_KV_STRIDE_ADAPTIVE`` is set; this port derives the same
strides without writing them back).

Not supported (they raise): other model classes with ``MODEL.ARCH: mvit`` (``MODEL.MODEL_NAME`` PTVMViT,
MaskMViT), reversible MViT (``MVIT.REV.ENABLE``), the detection head (``DETECTION.ENABLE``), and
contrastive MLP heads (``CONTRASTIVE.NUM_MLP_LAYERS > 1``). Training-only pieces (dropout, stochastic depth,
activation checkpointing) are left out: they do nothing at inference and own no parameters.

Like PySlowFast, the network is built for one input size, ``DATA.NUM_FRAMES`` x ``DATA.TRAIN_CROP_SIZE``^2, and
by default refuses other sizes. ``build_mvit(cfg, strict_input_size=False)`` accepts them, interpolating the
absolute position embeddings and relative position tables the way PySlowFast's own helpers would; such outputs
have no PySlowFast reference to match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidvec.models.base import FeatureModel

from .arch import BlockSpec, MViTSpec, round_width

__all__ = ["MViT", "MViTSpec", "BlockSpec", "build_mvit", "round_width"]


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (module and parameter names follow PySlowFast)


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def _pool_tokens(x: Tensor, pool: nn.Module | None, thw: Sequence[int], has_cls: bool,
                 norm: nn.Module | None = None) -> tuple[Tensor, list[int]]:
    """Pool a (B, heads, 1 [+ T*H*W], C) token tensor over its (T, H, W) grid; the class token passes
    through. Also accepts (B, L, C). Returns the pooled tokens and the new grid."""
    if pool is None:
        return x, list(thw)
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(1)
    elif x.ndim != 4:
        raise ValueError(f"unsupported token tensor shape {tuple(x.shape)}")
    if has_cls:
        cls_tok, x = x[:, :, :1, :], x[:, :, 1:, :]
    b, n, _, c = x.shape
    t, h, w = thw
    x = x.reshape(b * n, t, h, w, c).permute(0, 4, 1, 2, 3).contiguous()
    x = pool(x)
    new_thw = [x.shape[2], x.shape[3], x.shape[4]]
    x = x.reshape(b, n, c, -1).transpose(2, 3)
    if has_cls:
        x = torch.cat((cls_tok, x), dim=2)
    if norm is not None:
        x = norm(x)
    if squeeze:
        x = x.squeeze(1)
    return x, new_thw


def _resize_rel_pos(table: Tensor, length: int) -> Tensor:
    """A relative position table resized (linearly) to ``length`` rows, as PySlowFast's ``get_rel_pos``."""
    if table.shape[0] == length:
        return table
    out = F.interpolate(table.reshape(1, table.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
    return out.reshape(-1, length).permute(1, 0)


def _rel_index(q_n: int, k_n: int) -> Tensor:
    """Index into a relative table for every (query, key) pair, with the coarser grid's positions scaled up
    to the finer one (PySlowFast's decomposed relative positions)."""
    q_ratio = max(k_n / q_n, 1.0)
    k_ratio = max(q_n / k_n, 1.0)
    dist = torch.arange(q_n)[:, None] * q_ratio - torch.arange(k_n)[None, :] * k_ratio
    dist += (k_n - 1) * k_ratio
    return dist.long()


class PatchEmbed(nn.Module):
    """The stem: one strided convolution, tokens flattened to (B, T*H*W, C)."""

    def __init__(self, dim_in: int, dim_out: int, kernel: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int], conv_2d: bool = False) -> None:
        super().__init__()
        conv = nn.Conv2d if conv_2d else nn.Conv3d
        self.proj = conv(dim_in, dim_out, kernel_size=tuple(kernel), stride=tuple(stride),
                         padding=tuple(padding))

    def forward(self, x: Tensor) -> tuple[Tensor, torch.Size]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), x.shape


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiScaleAttention(nn.Module):
    """Pooling attention: q, k, v pooled over the token grid, optional decomposed relative positions and
    residual pooling (MViTv2)."""

    def __init__(self, dim: int, dim_out: int, input_size: Sequence[int], num_heads: int, qkv_bias: bool,
                 kernel_q: Sequence[int], kernel_kv: Sequence[int], stride_q: Sequence[int],
                 stride_kv: Sequence[int], has_cls_embed: bool = True, mode: str = "conv",
                 pool_first: bool = False, rel_pos_spatial: bool = False, rel_pos_temporal: bool = False,
                 residual_pooling: bool = False, separate_qkv: bool = False) -> None:
        super().__init__()
        self.pool_first = pool_first
        self.separate_qkv = separate_qkv
        self.num_heads = num_heads
        self.dim_out = dim_out
        head_dim = dim_out // num_heads
        self.scale = head_dim ** -0.5
        self.has_cls_embed = has_cls_embed
        self.mode = mode
        self.rel_pos_spatial = rel_pos_spatial
        self.rel_pos_temporal = rel_pos_temporal
        self.residual_pooling = residual_pooling
        padding_q = [k // 2 for k in kernel_q]
        padding_kv = [k // 2 for k in kernel_kv]

        if pool_first or separate_qkv:
            self.q = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.k = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.v = nn.Linear(dim, dim_out, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        # A pool with kernel and stride all 1 is skipped.
        if math.prod(kernel_q) == 1 and math.prod(stride_q) == 1:
            kernel_q = ()
        if math.prod(kernel_kv) == 1 and math.prod(stride_kv) == 1:
            kernel_kv = ()

        self.pool_q: nn.Module | None
        self.pool_k: nn.Module | None
        self.pool_v: nn.Module | None
        self.norm_q: nn.Module | None = None
        self.norm_k: nn.Module | None = None
        self.norm_v: nn.Module | None = None
        if mode in ("avg", "max"):
            pool_op = nn.MaxPool3d if mode == "max" else nn.AvgPool3d

            def make(kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> nn.Module | None:
                return pool_op(tuple(kernel), tuple(stride), tuple(padding), ceil_mode=False) if kernel else None

            self.pool_q = make(kernel_q, stride_q, padding_q)
            self.pool_k = make(kernel_kv, stride_kv, padding_kv)
            self.pool_v = make(kernel_kv, stride_kv, padding_kv)
        else:  # conv, conv_unshared
            if pool_first:
                dim_conv = dim // num_heads if mode == "conv" else dim
            else:
                dim_conv = dim_out // num_heads if mode == "conv" else dim_out

            def make(kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> nn.Module | None:
                if not kernel:
                    return None
                return nn.Conv3d(dim_conv, dim_conv, tuple(kernel), stride=tuple(stride), padding=tuple(padding),
                                 groups=dim_conv, bias=False)

            self.pool_q = make(kernel_q, stride_q, padding_q)
            self.norm_q = _layer_norm(dim_conv) if kernel_q else None
            self.pool_k = make(kernel_kv, stride_kv, padding_kv)
            self.norm_k = _layer_norm(dim_conv) if kernel_kv else None
            self.pool_v = make(kernel_kv, stride_kv, padding_kv)
            self.norm_v = _layer_norm(dim_conv) if kernel_kv else None

        if rel_pos_spatial:
            if input_size[1] != input_size[2]:
                raise ValueError("relative spatial positions need a square token grid")
            size = input_size[1]
            q_size = size // stride_q[1] if len(stride_q) > 0 else size
            kv_size = size // stride_kv[1] if len(stride_kv) > 0 else size
            rel_sp_dim = 2 * max(q_size, kv_size) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(rel_sp_dim, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(rel_sp_dim, head_dim))
        if rel_pos_temporal:
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))

    def _add_rel_pos(self, attn: Tensor, q: Tensor, q_shape: Sequence[int], k_shape: Sequence[int]) -> Tensor:
        s = 1 if self.has_cls_embed else 0
        q_t, q_h, q_w = q_shape
        k_t, k_h, k_w = k_shape
        b, n_head, _, dim = q.shape
        r_q = q[:, :, s:].reshape(b, n_head, q_t, q_h, q_w, dim)
        grid = attn[:, :, s:, s:].view(b, n_head, q_t, q_h, q_w, k_t, k_h, k_w)
        if self.rel_pos_spatial:
            rh = _resize_rel_pos(self.rel_pos_h, int(2 * max(q_h, k_h) - 1))[_rel_index(q_h, k_h)]
            rw = _resize_rel_pos(self.rel_pos_w, int(2 * max(q_w, k_w) - 1))[_rel_index(q_w, k_w)]
            rel_h = torch.einsum("bythwc,hkc->bythwk", r_q, rh)
            rel_w = torch.einsum("bythwc,wkc->bythwk", r_q, rw)
            grid = grid + rel_h[:, :, :, :, :, None, :, None] + rel_w[:, :, :, :, :, None, None, :]
        if self.rel_pos_temporal:
            rt = _resize_rel_pos(self.rel_pos_t, int(2 * max(q_t, k_t) - 1))[_rel_index(q_t, k_t)]
            rel_t = torch.einsum("bythwc,tkc->bythwk", r_q, rt)
            grid = grid + rel_t[:, :, :, :, :, :, None, None]
        grid = grid.reshape(b, n_head, q_t * q_h * q_w, k_t * k_h * k_w)
        if s == 0:
            return grid
        attn = attn.clone()
        attn[:, :, s:, s:] = grid
        return attn

    def forward(self, x: Tensor, thw: Sequence[int]) -> tuple[Tensor, list[int]]:
        b, n, _ = x.shape
        if self.pool_first:
            fold = 1 if self.mode == "conv_unshared" else self.num_heads
            x = x.reshape(b, n, fold, -1).permute(0, 2, 1, 3)
            q = k = v = x
        elif self.separate_qkv:
            q = self.q(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
            k = self.k(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
            v = self.v(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        else:
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]

        q, q_shape = _pool_tokens(q, self.pool_q, thw, self.has_cls_embed, self.norm_q)
        k, k_shape = _pool_tokens(k, self.pool_k, thw, self.has_cls_embed, self.norm_k)
        v, v_shape = _pool_tokens(v, self.pool_v, thw, self.has_cls_embed, self.norm_v)

        if self.pool_first:
            extra = 1 if self.has_cls_embed else 0

            def project(t: Tensor, shape: Sequence[int], lin: nn.Linear) -> Tensor:
                length = math.prod(shape) + extra
                t = t.permute(0, 2, 1, 3).reshape(b, length, -1)
                return lin(t).reshape(b, length, self.num_heads, -1).permute(0, 2, 1, 3)

            q = project(q, q_shape, self.q)
            v = project(v, v_shape, self.v)
            k = project(k, k_shape, self.k)

        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.rel_pos_spatial or self.rel_pos_temporal:
            attn = self._add_rel_pos(attn, q, q_shape, k_shape)
        attn = attn.softmax(dim=-1)
        x = attn @ v
        if self.residual_pooling:
            if self.has_cls_embed:
                x[:, :, 1:, :] += q[:, :, 1:, :]
            else:
                x = x + q
        x = x.transpose(1, 2).reshape(b, -1, self.dim_out)
        return self.proj(x), q_shape


class MultiScaleBlock(nn.Module):
    def __init__(self, spec: BlockSpec, mlp_ratio: float, qkv_bias: bool, mode: str, has_cls_embed: bool,
                 pool_first: bool, rel_pos_spatial: bool, rel_pos_temporal: bool, residual_pooling: bool,
                 dim_mul_in_att: bool, separate_qkv: bool) -> None:
        super().__init__()
        dim, dim_out = spec.dim, spec.dim_out
        self.dim = dim
        self.dim_out = dim_out
        self.dim_mul_in_att = dim_mul_in_att
        self.has_cls_embed = has_cls_embed
        self.norm1 = _layer_norm(dim)
        att_dim = dim_out if dim_mul_in_att else dim
        self.attn = MultiScaleAttention(
            dim, att_dim, input_size=spec.input_size, num_heads=spec.num_heads, qkv_bias=qkv_bias,
            kernel_q=spec.kernel_q, kernel_kv=spec.kernel_kv, stride_q=spec.stride_q, stride_kv=spec.stride_kv,
            has_cls_embed=has_cls_embed, mode=mode, pool_first=pool_first, rel_pos_spatial=rel_pos_spatial,
            rel_pos_temporal=rel_pos_temporal, residual_pooling=residual_pooling, separate_qkv=separate_qkv,
        )
        self.norm2 = _layer_norm(att_dim)
        self.mlp = Mlp(att_dim, int(att_dim * mlp_ratio), dim_out)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        stride_skip = spec.stride_q
        kernel_skip = [s + 1 if s > 1 else s for s in stride_skip]
        padding_skip = [k // 2 for k in kernel_skip]
        self.pool_skip = (
            nn.MaxPool3d(kernel_skip, list(stride_skip), padding_skip, ceil_mode=False)
            if len(stride_skip) > 0 and math.prod(stride_skip) > 1 else None
        )

    def forward(self, x: Tensor, thw: Sequence[int]) -> tuple[Tensor, list[int]]:
        x_norm = self.norm1(x)
        x_block, thw_new = self.attn(x_norm, thw)
        if self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        x_res, _ = _pool_tokens(x, self.pool_skip, thw, self.has_cls_embed)
        x = x_res + x_block
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        return x + x_mlp, thw_new


class TransformerBasicHead(nn.Module):
    """PySlowFast's transformer head: a linear projection (dropout is an inference no-op) and an activation."""

    def __init__(self, dim_in: int, num_classes: int, act_func: str = "softmax") -> None:
        super().__init__()
        if act_func not in ("softmax", "sigmoid", "none"):
            raise NotImplementedError(f"{act_func} is not supported as an activation function")
        self.projection = nn.Linear(dim_in, num_classes, bias=True)
        self.act_func = act_func

    def activate(self, logits: Tensor) -> Tensor:
        if self.act_func == "softmax":
            return logits.softmax(dim=1)
        if self.act_func == "sigmoid":
            return logits.sigmoid()
        return logits

    def forward(self, x: Tensor) -> Tensor:
        x = self.projection(x)
        if not self.training:
            x = self.activate(x)
        return x.view(x.shape[0], -1)


# ----------------------------------------------------------------------------------------------------------------
# The network


class MViT(FeatureModel):
    """PySlowFast's MViT (v1/v2) with a FeatureModel interface; state_dict keys are exactly PySlowFast's."""

    def __init__(self, spec: MViTSpec, strict_input_size: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.strict_input_size = strict_input_size
        self.cls_embed_on = spec.cls_embed_on
        self.patch_dims = list(spec.patch_dims)
        embed_dim = spec.embed_dim
        self.patch_embed = PatchEmbed(spec.in_chans, embed_dim, spec.patch_kernel,
                                      spec.patch_stride[1:] if spec.patch_2d else spec.patch_stride,
                                      spec.patch_padding, conv_2d=spec.patch_2d)
        num_patches = math.prod(spec.patch_dims)
        if spec.cls_embed_on:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if spec.use_abs_pos:
            if spec.sep_pos_embed:
                p_t, p_h, p_w = spec.patch_dims
                self.pos_embed_spatial = nn.Parameter(torch.zeros(1, p_h * p_w, embed_dim))
                self.pos_embed_temporal = nn.Parameter(torch.zeros(1, p_t, embed_dim))
                if spec.cls_embed_on:
                    self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, embed_dim))
            else:
                n = num_patches + 1 if spec.cls_embed_on else num_patches
                self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim),
                                              requires_grad=not spec.use_fixed_sincos_pos)
        self.norm_stem = _layer_norm(embed_dim) if spec.norm_stem else None
        self.blocks = nn.ModuleList(
            MultiScaleBlock(b, spec.mlp_ratio, spec.qkv_bias, spec.mode, spec.cls_embed_on, spec.pool_first,
                            spec.rel_pos_spatial, spec.rel_pos_temporal, spec.residual_pooling,
                            spec.dim_mul_in_att, spec.separate_qkv)
            for b in spec.blocks
        )
        self.norm = _layer_norm(spec.out_dim)
        self.head = TransformerBasicHead(spec.out_dim, spec.num_classes, act_func=spec.head_act)
        self.eval()

    @property
    def latent_dim(self) -> int:
        return self.spec.out_dim

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def _abs_pos_embed(self, thw: Sequence[int]) -> Tensor:
        if self.spec.sep_pos_embed:
            p_t, p_h, p_w = self.patch_dims
            pos = self.pos_embed_spatial.repeat(1, p_t, 1) + torch.repeat_interleave(
                self.pos_embed_temporal, p_h * p_w, dim=1)
            if self.cls_embed_on:
                pos = torch.cat([self.pos_embed_class, pos], 1)
        else:
            pos = self.pos_embed
        if tuple(thw) == tuple(self.patch_dims):
            return pos
        # Another input size (strict_input_size=False): resize the grid part trilinearly.
        if self.cls_embed_on:
            cls_pos, pos = pos[:, :1], pos[:, 1:]
        p_t, p_h, p_w = self.patch_dims
        t, h, w = thw
        pos = F.interpolate(pos.reshape(1, p_t, p_h, p_w, -1).permute(0, 4, 1, 2, 3), size=(t, h, w),
                            mode="trilinear")
        pos = pos.reshape(1, -1, t * h * w).permute(0, 2, 1)
        if self.cls_embed_on:
            pos = torch.cat((cls_pos, pos), dim=1)
        return pos

    def tokens(self, x: Tensor) -> tuple[Tensor, list[int]]:
        """The tokens after the last block, before the final norm: (B, [1 +] T*H*W, D), and the (T, H, W) grid."""
        if isinstance(x, (list, tuple)):  # PySlowFast passes a list of pathways
            (x,) = x
        x, shape = self.patch_embed(x)
        if self.spec.patch_2d:
            thw = [1, int(shape[-2]), int(shape[-1])]
        else:
            thw = [int(shape[-3]), int(shape[-2]), int(shape[-1])]
        if self.strict_input_size and thw != self.patch_dims:
            s = self.spec
            raise ValueError(
                f"MViT built for {s.num_frames} frames at {s.crop_size}x{s.crop_size} (token grid "
                f"{tuple(self.patch_dims)}); this input gives {tuple(thw)}: input shape must match the config "
                "(build with strict_input_size=False to interpolate position embeddings)")
        b = x.shape[0]
        s_idx = 1 if self.cls_embed_on else 0
        if self.spec.use_fixed_sincos_pos:
            x = x + self.pos_embed[:, s_idx:, :]
        if self.cls_embed_on:
            cls_tokens = self.cls_token.expand(b, -1, -1)
            if self.spec.use_fixed_sincos_pos:
                cls_tokens = cls_tokens + self.pos_embed[:, :s_idx, :]
            x = torch.cat((cls_tokens, x), dim=1)
        if self.spec.use_abs_pos:
            x = x + self._abs_pos_embed(thw)
        if self.norm_stem is not None:
            x = self.norm_stem(x)
        for blk in self.blocks:
            x, thw = blk(x, thw)
        return x, thw

    def forward(self, x: Tensor) -> Tensor:
        """Latent (B, D): the input of PySlowFast's head."""
        x, _ = self.tokens(x)
        if self.spec.use_mean_pooling:
            if self.cls_embed_on:
                x = x[:, 1:]
            return self.norm(x.mean(1))
        if self.cls_embed_on:
            return self.norm(x)[:, 0]
        return self.norm(x).mean(1)

    def classify(self, latent: Tensor) -> Tensor:
        """Logits (B, NUM_CLASSES)."""
        return self.head.projection(latent)

    def probabilities(self, logits: Tensor) -> Tensor:
        """MODEL.HEAD_ACT applied to logits: what PySlowFast's model returns in eval mode."""
        return self.head.activate(logits)

    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities straight from a clip, as PySlowFast's ``model(inputs)`` in eval mode."""
        return self.probabilities(self.classify(self.forward(x)))


def build_mvit(cfg: Any, strict_input_size: bool = True) -> MViT:
    """PySlowFast's MViT for a config (attribute-style object or nested mapping), in eval mode, with
    untrained parameters: load a checkpoint's ``model_state`` into it (strict key matching works)."""
    return MViT(MViTSpec.from_cfg(cfg), strict_input_size=strict_input_size)
