"""PySlowFast's ``PTVSlowFast``: the SlowFast network in PyTorchVideo's module layout (``model.blocks.N``),
as the PyTorchVideo-format checkpoints (configs/Kinetics/pytorchvideo/SLOWFAST_*.yaml) expect.

The computation is the same as :class:`~vidvec.models.pyslowfast.video_models.SlowFast`; only the module
names differ (``multipathway_blocks``, ``res_blocks``, ``conv_a``/``norm_a``, ``conv_fast_to_slow``,
``blocks.6.proj``). PyTorchVideo itself is not needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import NormFactory
from .video_models import POOL1, TEMPORAL_KERNEL_BASIS, PySlowFastModel, get_norm

_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class PTVStem(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, t_kernel: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, (t_kernel, 7, 7), stride=(1, 2, 2), padding=(t_kernel // 2, 3, 3),
                              bias=False)
        self.norm = norm(dim_out)
        self.activation = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=[0, 1, 1])

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.activation(self.norm(self.conv(x))))


class PTVBottleneckBlock(nn.Module):
    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, t_kernel: int, stride: int, groups: int,
                 dilation: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(dim_in, dim_inner, (t_kernel, 1, 1), stride=(1, 1, 1), padding=(t_kernel // 2, 0, 0),
                                bias=False)
        self.norm_a = norm(dim_inner)
        self.act_a = nn.ReLU(inplace=True)
        self.conv_b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), stride=(1, stride, stride),
                                padding=(0, dilation, dilation), groups=groups, dilation=(1, dilation, dilation),
                                bias=False)
        self.norm_b = norm(dim_inner)
        self.act_b = nn.ReLU(inplace=True)
        self.conv_c = nn.Conv3d(dim_inner, dim_out, (1, 1, 1), bias=False)
        self.norm_c = norm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_a(self.norm_a(self.conv_a(x)))
        x = self.act_b(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class PTVResBlock(nn.Module):
    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, t_kernel: int, stride: int, groups: int,
                 dilation: int, norm: NormFactory) -> None:
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1_conv = nn.Conv3d(dim_in, dim_out, (1, 1, 1), stride=(1, stride, stride), bias=False)
            self.branch1_norm = norm(dim_out)
        self.branch2 = PTVBottleneckBlock(dim_in, dim_inner, dim_out, t_kernel, stride, groups, dilation, norm)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.branch1_norm(self.branch1_conv(x)) if hasattr(self, "branch1_conv") else x
        return self.activation(shortcut + self.branch2(x))


class PTVResStage(nn.Module):
    def __init__(self, blocks: Sequence[PTVResBlock]) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class PTVFuseFastToSlow(nn.Module):
    def __init__(self, dim_in: int, ratio: int, kernel: int, alpha: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv_fast_to_slow = nn.Conv3d(dim_in, dim_in * ratio, (kernel, 1, 1), stride=(alpha, 1, 1),
                                           padding=(kernel // 2, 0, 0), bias=False)
        self.norm = norm(dim_in * ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        fuse = self.activation(self.norm(self.conv_fast_to_slow(x[1])))
        return [torch.cat([x[0], fuse], 1), x[1]]


class MultiPathWayWithFuse(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module], fusion: nn.Module) -> None:
        super().__init__()
        self.multipathway_blocks = nn.ModuleList(blocks)
        self.multipathway_fusion = fusion

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        x = [block(t) for block, t in zip(self.multipathway_blocks, x)]
        return x if isinstance(self.multipathway_fusion, nn.Identity) else self.multipathway_fusion(x)


class PoolConcatPathway(nn.Module):
    def __init__(self, kernels: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.pool = nn.ModuleList([nn.AvgPool3d(tuple(k), stride=(1, 1, 1), padding=(0, 0, 0)) for k in kernels])

    def forward(self, x: list[Tensor]) -> Tensor:
        return torch.cat([pool(t) for pool, t in zip(self.pool, x)], 1)


class PTVBasicHead(nn.Module):
    def __init__(self, dim_in: int, num_classes: int, dropout_rate: float) -> None:
        super().__init__()
        if dropout_rate > 0.0:
            self.dropout = nn.Dropout(dropout_rate)
        self.proj = nn.Linear(dim_in, num_classes, bias=True)


class PTVNet(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class PTVSlowFast(PySlowFastModel):
    """SlowFast in PyTorchVideo's layout, keys ``model.blocks.{0..6}...`` (classifier ``model.blocks.6.proj``)."""

    num_pathways = 2

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        m, r, sf, d = cfg["MODEL"], cfg["RESNET"], cfg["SLOWFAST"], cfg["DATA"]
        if r["STRIDE_1X1"] or r["TRANS_FUNC"] != "bottleneck_transform":
            raise NotImplementedError("PTVSlowFast needs STRIDE_1X1 False and bottleneck_transform")
        if cfg["DETECTION"]["ENABLE"]:
            raise NotImplementedError("PTVSlowFast detection heads are not supported")
        if r["DEPTH"] not in _DEPTHS:
            raise ValueError(f"RESNET.DEPTH {r['DEPTH']} not in {sorted(_DEPTHS)} for PTVSlowFast")
        norm = get_norm(cfg)
        self.act_func = m["HEAD_ACT"]
        arch = m["ARCH"]
        pool_size, tk, depths = POOL1[arch], TEMPORAL_KERNEL_BASIS[arch], _DEPTHS[r["DEPTH"]]
        width, groups = r["WIDTH_PER_GROUP"], r["NUM_GROUPS"]
        beta_inv, ratio, alpha = sf["BETA_INV"], sf["FUSION_CONV_CHANNEL_RATIO"], sf["ALPHA"]
        dil, strides, nbtk = r["SPATIAL_DILATIONS"], r["SPATIAL_STRIDES"], r["NUM_BLOCK_TEMP_KERNEL"]
        # PySlowFast passes the fast pathway's res3..res5 dilations from SPATIAL_DILATIONS[1][1] (sic).
        dilations = [[dil[s][0] for s in range(4)], [dil[0][1], dil[1][1], dil[1][1], dil[1][1]]]
        fuse = sf["FUSION_KERNEL_SZ"]

        stem_out = [width, width // beta_inv]
        blocks: list[nn.Module] = [MultiPathWayWithFuse(
            [PTVStem(d["INPUT_CHANNEL_NUM"][p], stem_out[p], tk[0][p][0], norm) for p in range(2)],
            PTVFuseFastToSlow(stem_out[1], ratio, fuse, alpha, norm))]
        dim_in = [stem_out[0] + stem_out[1] * ratio, stem_out[1]]
        for s in range(4):
            dim_out = [width * 4 * 2 ** s, width * 4 * 2 ** s // beta_inv]
            dim_inner = [width * groups * 2 ** s, width * groups * 2 ** s // beta_inv]
            stages = []
            for p in range(2):
                kernels = [tk[s + 1][p][0]] * nbtk[s][p] + [1] * (depths[s] - nbtk[s][p])
                stages.append(PTVResStage([
                    PTVResBlock(dim_in[p] if i == 0 else dim_out[p], dim_inner[p], dim_out[p], kernels[i],
                                strides[s][p] if i == 0 else 1, groups, dilations[p][s], norm)
                    for i in range(depths[s])]))
            fusion = PTVFuseFastToSlow(dim_out[1], ratio, fuse, alpha, norm) if s < 3 else nn.Identity()
            blocks.append(MultiPathWayWithFuse(stages, fusion))
            dim_in = [dim_out[0] + dim_out[1] * ratio, dim_out[1]] if s < 3 else dim_out
        crop = d["TRAIN_CROP_SIZE"]
        kernels = [[d["NUM_FRAMES"] // alpha // pool_size[0][0], crop // 32 // pool_size[0][1],
                    crop // 32 // pool_size[0][2]],
                   [d["NUM_FRAMES"] // pool_size[1][0], crop // 32 // pool_size[1][1], crop // 32 // pool_size[1][2]]]
        blocks.append(PoolConcatPathway(kernels))
        blocks.append(PTVBasicHead(sum(dim_in), m["NUM_CLASSES"], m["DROPOUT_RATE"]))
        self.model = PTVNet(blocks)

    @property
    def projection(self) -> nn.Linear:
        return self.model.blocks[6].proj

    def backbone(self, pathways: list[Tensor]) -> list[Tensor]:
        x = pathways
        for block in self.model.blocks[:5]:
            x = block(x)
        return x

    def _head(self, x: Tensor | list[Tensor]) -> tuple[Tensor, Tensor]:
        feats = self.backbone(self._pathways(x))
        features = self.model.blocks[5](feats).permute(0, 2, 3, 4, 1)
        latent = torch.cat([t.mean((2, 3, 4)) for t in feats], 1)
        return latent, features
