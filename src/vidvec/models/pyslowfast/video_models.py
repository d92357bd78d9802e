"""PySlowFast's ResNet-family video models (SlowFast, Slow/C2D/I3D ResNet, X3D) as vidvec FeatureModels.

Each model's own children carry PySlowFast's names (``s1``, ``s1_fuse``, ``s2`` ... ``pathway0_pool``,
``head``), so ``state_dict()`` keys equal PySlowFast's and official checkpoints load strictly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..base import FeatureModel
from .arch import round_width
from .blocks import FuseFastToSlow, NormFactory, ResStage, VideoModelStem, batchnorm3d
from .heads import ResNetBasicHead, ResNetRoIHead, X3DHead, activation, head_outputs

# Number of blocks per stage for a given depth.
MODEL_STAGE_DEPTH = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

# Temporal kernel sizes per stage (conv1, res2..res5), per pathway.
TEMPORAL_KERNEL_BASIS = {
    "2d": [[[1]], [[1]], [[1]], [[1]], [[1]]],
    "c2d": [[[1]], [[1]], [[1]], [[1]], [[1]]],
    "slow_c2d": [[[1]], [[1]], [[1]], [[1]], [[1]]],
    "i3d": [[[5]], [[3]], [[3, 1]], [[3, 1]], [[1, 3]]],
    "slow_i3d": [[[5]], [[3]], [[3, 1]], [[3, 1]], [[1, 3]]],
    "slow": [[[1]], [[1]], [[1]], [[3]], [[3]]],
    "slowfast": [[[1], [5]], [[1], [3]], [[1], [3]], [[3], [3]], [[3], [3]]],
    "x3d": [[[5]], [[3]], [[3]], [[3]], [[3]]],
}

# Max-pool kernel (= stride) after res2, per pathway.
POOL1 = {
    "2d": [[1, 1, 1]],
    "c2d": [[2, 1, 1]],
    "slow_c2d": [[1, 1, 1]],
    "i3d": [[2, 1, 1]],
    "slow_i3d": [[1, 1, 1]],
    "slow": [[1, 1, 1]],
    "slowfast": [[1, 1, 1], [1, 1, 1]],
    "x3d": [[1, 1, 1]],
}


def get_norm(cfg: Mapping[str, Any]) -> NormFactory:
    norm_type = cfg["BN"]["NORM_TYPE"]
    if norm_type in ("batchnorm", "sync_batchnorm", "sync_batchnorm_apex"):
        # Synchronised BN has BatchNorm3d's parameters and buffers and computes the same thing at inference.
        return batchnorm3d
    raise NotImplementedError(f"BN.NORM_TYPE {norm_type!r} is not supported by vidvec (inference port)")


def pack_pathway_output(cfg: Mapping[str, Any], frames: Tensor) -> list[Tensor]:
    """PySlowFast's ``pack_pathway_output`` for a batch (B, C, T, H, W) or one clip (C, T, H, W).

    DATA.REVERSE_INPUT_CHANNEL flips RGB to BGR; SlowFast's slow pathway takes T // ALPHA frames at
    ``linspace(0, T - 1, T // ALPHA).long()``, the fast pathway all T frames.
    """
    if frames.ndim not in (4, 5):
        raise ValueError(f"expected (B, C, T, H, W) or (C, T, H, W), got shape {tuple(frames.shape)}")
    c_dim, t_dim = frames.ndim - 4, frames.ndim - 3
    if cfg["DATA"]["REVERSE_INPUT_CHANNEL"]:
        frames = frames.index_select(c_dim, torch.tensor([2, 1, 0], device=frames.device))
    arch = cfg["MODEL"]["ARCH"]
    if arch in cfg["MODEL"]["SINGLE_PATHWAY_ARCH"]:
        return [frames]
    if arch in cfg["MODEL"]["MULTI_PATHWAY_ARCH"]:
        t = frames.shape[t_dim]
        n_slow = t // cfg["SLOWFAST"]["ALPHA"]
        if n_slow < 1:
            raise ValueError(f"a SlowFast clip needs at least ALPHA={cfg['SLOWFAST']['ALPHA']} frames, got {t}")
        index = torch.linspace(0, t - 1, n_slow).long().to(frames.device)
        return [frames.index_select(t_dim, index), frames]
    raise NotImplementedError(f"model arch {arch!r} is neither single- nor multi-pathway")


class PySlowFastModel(FeatureModel):
    """Common interface of the PySlowFast ports.

    ``forward(x)`` takes one clip batch (B, C, T, H, W) (normalised as DATA.MEAN/STD say) and packs the
    pathways itself, or an already packed list of pathway tensors; it returns the latent (B, D) (see
    ``heads``: the head's input averaged over time and space, pathways concatenated; X3D: the projection's
    input averaged). ``classify(latent)`` gives the logits; ``predict(x)`` returns PySlowFast's own outputs,
    including per-position logits and the averaged per-position probabilities.
    """

    act_func: str

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg

    # Subclasses provide these two.
    def backbone(self, pathways: list[Tensor]) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def projection(self) -> nn.Linear:
        return self.head.projection

    # Shared API.
    @property
    def embed_dim(self) -> int:
        return self.projection.in_features

    @property
    def num_classes(self) -> int:
        return self.projection.out_features

    def pack(self, x: Tensor) -> list[Tensor]:
        """One clip batch (B, C, T, H, W) -> the list of pathway tensors PySlowFast feeds the model."""
        return pack_pathway_output(self.cfg, x)

    def _pathways(self, x: Tensor | list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
        return self.pack(x) if isinstance(x, Tensor) else list(x)

    def _head(self, x: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
        feats = self.backbone(self._pathways(x))
        features = self.head.features(feats)
        return self.head.latent(feats, features), features

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        """Latent (B, D) of a clip batch (B, C, T, H, W) or of an already packed list of pathways."""
        return self._head(x)[0]

    def forward_pathways(self, pathways: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        """``forward`` for an already packed list of pathway tensors."""
        return self._head(list(pathways))[0]

    def projection_input(self, x: Tensor | list[Tensor]) -> Tensor:
        """The input of the final linear layer at every position of the head's pooled grid: (B, t, h, w, D)."""
        return self._head(x)[1]

    def classify(self, latent: Tensor) -> Tensor:
        """Logits of latent vectors. At the training crop these are PySlowFast's logits; for larger inputs
        PySlowFast instead projects every position of its pooled grid (see ``predict``)."""
        return self.projection(latent)

    def probabilities(self, logits: Tensor) -> Tensor:
        """MODEL.HEAD_ACT (softmax or sigmoid) over the last dimension."""
        return activation(logits, self.act_func)

    def predict(self, x: Tensor | list[Tensor]) -> dict[str, Tensor]:
        """PySlowFast's eval outputs: latent (B, D), projection_input and logits per position
        (B, t, h, w, D/K), probs (B, K) = the activation per position, averaged (PySlowFast's return value)."""
        latent, features = self._head(x)
        return head_outputs(latent, features, self.projection, self.act_func)

    def extra_repr(self) -> str:
        return f"arch={self.cfg['MODEL']['ARCH']}, embed_dim={self.embed_dim}"


def _basic_head_pool(cfg: Mapping[str, Any], pool_size: list[list[int]], temporal: list[int]) -> list[Any]:
    """Fixed average-pool kernels of ResNetBasicHead (None = adaptive, used with multigrid short cycles)."""
    if cfg["MULTIGRID"]["SHORT_CYCLE"] or cfg["MODEL"]["MODEL_NAME"] == "ContrastiveModel":
        return [None] * len(pool_size)
    crop = cfg["DATA"]["TRAIN_CROP_SIZE"]
    return [[temporal[p] // pool_size[p][0], crop // 32 // pool_size[p][1], crop // 32 // pool_size[p][2]]
            for p in range(len(pool_size))]


def _check_head_cfg(cfg: Mapping[str, Any]) -> None:
    if cfg["CONTRASTIVE"]["NUM_MLP_LAYERS"] != 1 or cfg["CONTRASTIVE"]["PREDICTOR_DEPTHS"]:
        raise NotImplementedError("contrastive MLP heads are not supported")


class _ResNetLayout(NamedTuple):
    """What SlowFast and the single-pathway ResNets derive alike from the config before building stages."""

    norm: NormFactory
    act_func: str
    pool_size: list[list[int]]  # max-pool kernel (= stride) after res2, per pathway
    depths: tuple[int, ...]  # blocks per stage
    groups: int
    width: int  # RESNET.WIDTH_PER_GROUP
    dim_inner: int
    temporal_kernels: list[list[list[int]]]


def _resnet_layout(cfg: Mapping[str, Any], num_pathways: int, kind: str) -> _ResNetLayout:
    """The shared constructor preamble of SlowFast and ResNet: checks the head, that MODEL.ARCH is a ``kind``
    architecture with ``num_pathways`` pathways, and RESNET.DEPTH."""
    _check_head_cfg(cfg)
    m, r = cfg["MODEL"], cfg["RESNET"]
    arch = m["ARCH"]
    if arch not in POOL1 or len(POOL1[arch]) != num_pathways:
        raise ValueError(f"MODEL.ARCH {arch!r} is not a {kind} architecture")
    if r["DEPTH"] not in MODEL_STAGE_DEPTH:
        raise ValueError(f"RESNET.DEPTH {r['DEPTH']} not in {sorted(MODEL_STAGE_DEPTH)}")
    norm = get_norm(cfg)
    groups, width = r["NUM_GROUPS"], r["WIDTH_PER_GROUP"]
    return _ResNetLayout(norm, m["HEAD_ACT"], POOL1[arch], MODEL_STAGE_DEPTH[r["DEPTH"]], groups, width,
                         groups * width, TEMPORAL_KERNEL_BASIS[arch])


class SlowFast(PySlowFastModel):
    """SlowFast (Feichtenhofer et al. 2019): slow and fast pathways with fast-to-slow lateral fusion."""

    num_pathways = 2

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        norm, self.act_func, pool_size, depths, groups, width, dim_inner, tk = _resnet_layout(cfg, 2, "two-pathway")
        m, r, sf, d, nl = cfg["MODEL"], cfg["RESNET"], cfg["SLOWFAST"], cfg["DATA"], cfg["NONLOCAL"]
        beta_inv, ratio, alpha = sf["BETA_INV"], sf["FUSION_CONV_CHANNEL_RATIO"], sf["ALPHA"]
        out_dim_ratio = beta_inv // ratio

        self.s1 = VideoModelStem(
            dim_in=d["INPUT_CHANNEL_NUM"], dim_out=[width, width // beta_inv],
            kernel=[tk[0][0] + [7, 7], tk[0][1] + [7, 7]], stride=[[1, 2, 2]] * 2,
            padding=[[tk[0][0][0] // 2, 3, 3], [tk[0][1][0] // 2, 3, 3]], norm=norm)
        self.s1_fuse = FuseFastToSlow(width // beta_inv, ratio, sf["FUSION_KERNEL_SZ"], alpha, norm=norm)

        # Stage widths: res2 .. res5 output width_per_group * 4 * 2**i (slow), / beta_inv (fast).
        for i, stage in enumerate((2, 3, 4, 5)):
            mult_in = 1 if i == 0 else 4 * 2 ** (i - 1)
            mult_out = 4 * 2 ** i
            slow_in = width * mult_in + width * mult_in // out_dim_ratio
            res = ResStage(
                dim_in=[slow_in, width * mult_in // beta_inv],
                dim_out=[width * mult_out, width * mult_out // beta_inv],
                dim_inner=[dim_inner * 2 ** i, dim_inner * 2 ** i // beta_inv],
                temp_kernel_sizes=tk[i + 1], stride=r["SPATIAL_STRIDES"][i], num_blocks=[depths[i]] * 2,
                num_groups=[groups] * 2, num_block_temp_kernel=r["NUM_BLOCK_TEMP_KERNEL"][i],
                nonlocal_inds=nl["LOCATION"][i], nonlocal_group=nl["GROUP"][i], nonlocal_pool=nl["POOL"][i],
                instantiation=nl["INSTANTIATION"], trans_func_name=r["TRANS_FUNC"],
                dilation=r["SPATIAL_DILATIONS"][i], norm=norm)
            self.add_module(f"s{stage}", res)
            if stage < 5:
                self.add_module(f"s{stage}_fuse", FuseFastToSlow(width * mult_out // beta_inv, ratio,
                                                                 sf["FUSION_KERNEL_SZ"], alpha, norm=norm))
            if stage == 2:
                for p in range(2):
                    self.add_module(f"pathway{p}_pool", nn.MaxPool3d(kernel_size=pool_size[p], stride=pool_size[p],
                                                                     padding=[0, 0, 0]))

        dim_head = [width * 32, width * 32 // beta_inv]
        if cfg["DETECTION"]["ENABLE"]:
            self.head = ResNetRoIHead(
                dim_in=dim_head, num_classes=m["NUM_CLASSES"],
                pool_size=[[d["NUM_FRAMES"] // alpha // pool_size[0][0], 1, 1],
                           [d["NUM_FRAMES"] // pool_size[1][0], 1, 1]],
                dropout_rate=m["DROPOUT_RATE"], act_func=m["HEAD_ACT"])
        else:
            self.head = ResNetBasicHead(
                dim_in=dim_head, num_classes=m["NUM_CLASSES"],
                pool_size=_basic_head_pool(cfg, pool_size, [d["NUM_FRAMES"] // alpha, d["NUM_FRAMES"]]),
                dropout_rate=m["DROPOUT_RATE"], act_func=m["HEAD_ACT"])

    def backbone(self, pathways: list[Tensor]) -> list[Tensor]:
        x = self.s1_fuse(self.s1(pathways))
        x = self.s2_fuse(self.s2(x))
        x = [self.pathway0_pool(x[0]), self.pathway1_pool(x[1])]
        x = self.s3_fuse(self.s3(x))
        x = self.s4_fuse(self.s4(x))
        return self.s5(x)


class ResNet(PySlowFastModel):
    """Single-pathway 3D ResNet: Slow, C2D, I3D (optionally with non-local blocks)."""

    num_pathways = 1

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        norm, self.act_func, pool_size, depths, groups, width, dim_inner, tk = _resnet_layout(
            cfg, 1, "single-pathway ResNet")
        m, r, d, nl = cfg["MODEL"], cfg["RESNET"], cfg["DATA"], cfg["NONLOCAL"]

        self.s1 = VideoModelStem(dim_in=d["INPUT_CHANNEL_NUM"], dim_out=[width], kernel=[tk[0][0] + [7, 7]],
                                 stride=[[1, 2, 2]], padding=[[tk[0][0][0] // 2, 3, 3]], norm=norm)
        for i, stage in enumerate((2, 3, 4, 5)):
            res = ResStage(
                dim_in=[width if i == 0 else width * 4 * 2 ** (i - 1)], dim_out=[width * 4 * 2 ** i],
                dim_inner=[dim_inner * 2 ** i], temp_kernel_sizes=tk[i + 1], stride=r["SPATIAL_STRIDES"][i],
                num_blocks=[depths[i]], num_groups=[groups], num_block_temp_kernel=r["NUM_BLOCK_TEMP_KERNEL"][i],
                nonlocal_inds=nl["LOCATION"][i], nonlocal_group=nl["GROUP"][i], nonlocal_pool=nl["POOL"][i],
                instantiation=nl["INSTANTIATION"], trans_func_name=r["TRANS_FUNC"], stride_1x1=r["STRIDE_1X1"],
                dilation=r["SPATIAL_DILATIONS"][i], norm=norm)
            self.add_module(f"s{stage}", res)
            if stage == 2:
                self.pathway0_pool = nn.MaxPool3d(kernel_size=pool_size[0], stride=pool_size[0], padding=[0, 0, 0])

        if cfg["DETECTION"]["ENABLE"]:
            self.head = ResNetRoIHead(dim_in=[width * 32], num_classes=m["NUM_CLASSES"],
                                      pool_size=[[d["NUM_FRAMES"] // pool_size[0][0], 1, 1]],
                                      dropout_rate=m["DROPOUT_RATE"], act_func=m["HEAD_ACT"])
        else:
            self.head = ResNetBasicHead(dim_in=[width * 32], num_classes=m["NUM_CLASSES"],
                                        pool_size=_basic_head_pool(cfg, pool_size, [d["NUM_FRAMES"]]),
                                        dropout_rate=m["DROPOUT_RATE"], act_func=m["HEAD_ACT"])

    def backbone(self, pathways: list[Tensor]) -> list[Tensor]:
        x = self.s2(self.s1(pathways))
        x = [self.pathway0_pool(x[0])]
        return self.s5(self.s4(self.s3(x)))


class X3D(PySlowFastModel):
    """X3D (Feichtenhofer 2020): channelwise 3x3x3 bottlenecks with SE and Swish, X3D stem and head."""

    num_pathways = 1

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        m, r, d, x3d, nl = cfg["MODEL"], cfg["RESNET"], cfg["DATA"], cfg["X3D"], cfg["NONLOCAL"]
        if cfg["DETECTION"]["ENABLE"]:
            raise NotImplementedError("X3D has no detection head in PySlowFast")
        norm = get_norm(cfg)
        self.act_func = m["HEAD_ACT"]
        exp_stage = 2.0
        dim_c1 = x3d["DIM_C1"]
        dim_res2 = round_width(dim_c1, exp_stage, divisor=8) if x3d["SCALE_RES2"] else dim_c1
        dim_res3 = round_width(dim_res2, exp_stage, divisor=8)
        dim_res4 = round_width(dim_res3, exp_stage, divisor=8)
        dim_res5 = round_width(dim_res4, exp_stage, divisor=8)
        block_basis = [[1, dim_res2, 2], [2, dim_res3, 2], [5, dim_res4, 2], [3, dim_res5, 2]]  # blocks, c, stride
        w_mul, d_mul = x3d["WIDTH_FACTOR"], x3d["DEPTH_FACTOR"]
        dim_res1 = round_width(dim_c1, w_mul)
        tk = TEMPORAL_KERNEL_BASIS["x3d"]

        self.s1 = VideoModelStem(dim_in=d["INPUT_CHANNEL_NUM"], dim_out=[dim_res1], kernel=[tk[0][0] + [3, 3]],
                                 stride=[[1, 2, 2]], padding=[[tk[0][0][0] // 2, 1, 1]], norm=norm,
                                 stem_func_name="x3d_stem")
        dim_in = dim_res1
        dim_out = dim_inner = dim_in
        for stage, (blocks, width, stride) in enumerate(block_basis):
            dim_out = round_width(width, w_mul)
            dim_inner = int(x3d["BOTTLENECK_FACTOR"] * dim_out)
            n_rep = int(math.ceil(d_mul * blocks)) if d_mul else blocks
            self.add_module(f"s{stage + 2}", ResStage(
                dim_in=[dim_in], dim_out=[dim_out], dim_inner=[dim_inner], temp_kernel_sizes=tk[1],
                stride=[stride], num_blocks=[n_rep],
                num_groups=[dim_inner] if x3d["CHANNELWISE_3x3x3"] else [r["NUM_GROUPS"]],
                num_block_temp_kernel=[n_rep], nonlocal_inds=nl["LOCATION"][0], nonlocal_group=nl["GROUP"][0],
                nonlocal_pool=nl["POOL"][0], instantiation=nl["INSTANTIATION"], trans_func_name=r["TRANS_FUNC"],
                stride_1x1=r["STRIDE_1X1"], dilation=r["SPATIAL_DILATIONS"][stage], norm=norm))
            dim_in = dim_out
        spat = int(math.ceil(d["TRAIN_CROP_SIZE"] / 32.0))
        self.head = X3DHead(dim_in=dim_out, dim_inner=dim_inner, dim_out=x3d["DIM_C5"], num_classes=m["NUM_CLASSES"],
                            pool_size=[d["NUM_FRAMES"], spat, spat], dropout_rate=m["DROPOUT_RATE"],
                            act_func=m["HEAD_ACT"], norm=norm, bn_lin5_on=x3d["BN_LIN5"])

    def backbone(self, pathways: list[Tensor]) -> list[Tensor]:
        return self.s5(self.s4(self.s3(self.s2(self.s1(pathways)))))


MODEL_CLASSES = {"SlowFast": SlowFast, "ResNet": ResNet, "X3D": X3D}
