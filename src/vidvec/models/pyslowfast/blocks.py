"""Building blocks of PySlowFast's ResNet video family, with PySlowFast's module names.

Attribute names (``conv``, ``bn``, ``branch1``, ``branch2.a_bn``, ``pathway0_res3``, ``conv_f2s`` ...) are
exactly PySlowFast's, so a state_dict from an official checkpoint loads strictly. Inference only: stochastic
depth and dropout are not implemented (they are identities in eval mode anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .arch import round_width

BN_EPS = 1e-5
BN_MOMENTUM = 0.1

NormFactory = Callable[[int], nn.Module]


def batchnorm3d(num_features: int) -> nn.BatchNorm3d:
    """PySlowFast's BatchNorm3d (eps 1e-5, momentum 0.1). Sync-BN variants are identical at inference."""
    return nn.BatchNorm3d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)


class Swish(nn.Module):
    """x * sigmoid(x) (PyTorchVideo's Swish)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x)


class SE(nn.Module):
    """Squeeze-and-excitation: avg pool, 1x1x1 conv, ReLU, 1x1x1 conv, sigmoid, rescale."""

    def __init__(self, dim_in: int, ratio: float, relu_act: bool = True) -> None:
        super().__init__()
        dim_fc = round_width(dim_in, ratio, min_width=8, divisor=8)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc1 = nn.Conv3d(dim_in, dim_fc, 1, bias=True)
        self.fc1_act = nn.ReLU() if relu_act else Swish()
        self.fc2 = nn.Conv3d(dim_fc, dim_in, 1, bias=True)
        self.fc2_sig = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = self.fc2_sig(self.fc2(self.fc1_act(self.fc1(self.avg_pool(x)))))
        return x * s


# ----------------------------------------------------------------------------------------------- stems


class ResNetBasicStem(nn.Module):
    """Conv (T x 7 x 7), BN, ReLU, spatial max pool 1x3x3 stride 1x2x2."""

    def __init__(self, dim_in: int, dim_out: int, kernel: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int], norm: NormFactory = batchnorm3d) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim_in, dim_out, list(kernel), stride=list(stride), padding=list(padding), bias=False)
        self.bn = norm(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d(kernel_size=[1, 3, 3], stride=[1, 2, 2], padding=[0, 1, 1])

    def forward(self, x: Tensor) -> Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class X3DStem(nn.Module):
    """X3D stem: spatial conv (1 x k x k), depthwise temporal conv (t x 1 x 1), BN, ReLU; no pooling."""

    def __init__(self, dim_in: int, dim_out: int, kernel: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int], norm: NormFactory = batchnorm3d) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(dim_in, dim_out, kernel_size=(1, kernel[1], kernel[2]),
                                 stride=(1, stride[1], stride[2]), padding=(0, padding[1], padding[2]), bias=False)
        self.conv = nn.Conv3d(dim_out, dim_out, kernel_size=(kernel[0], 1, 1), stride=(stride[0], 1, 1),
                              padding=(padding[0], 0, 0), bias=False, groups=dim_out)
        self.bn = norm(dim_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(self.conv_xy(x))))


_STEMS = {"basic_stem": ResNetBasicStem, "x3d_stem": X3DStem}


class VideoModelStem(nn.Module):
    """One stem per pathway, registered as ``pathway{i}_stem``."""

    def __init__(self, dim_in: Sequence[int], dim_out: Sequence[int], kernel: Sequence[Sequence[int]],
                 stride: Sequence[Sequence[int]], padding: Sequence[Sequence[int]],
                 norm: NormFactory = batchnorm3d, stem_func_name: str = "basic_stem") -> None:
        super().__init__()
        if len({len(dim_in), len(dim_out), len(kernel), len(stride), len(padding)}) != 1:
            raise ValueError("stem pathway lists differ in length")
        self.num_pathways = len(dim_in)
        stem_cls = _STEMS[stem_func_name]
        for p in range(self.num_pathways):
            self.add_module(f"pathway{p}_stem",
                            stem_cls(dim_in[p], dim_out[p], kernel[p], stride[p], padding[p], norm))

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if len(x) != self.num_pathways:
            raise ValueError(f"expected {self.num_pathways} pathway tensors, got {len(x)}")
        return [getattr(self, f"pathway{p}_stem")(x[p]) for p in range(self.num_pathways)]


# ---------------------------------------------------------------------------------------- transforms


class BasicTransform(nn.Module):
    """Tx3x3 conv, BN, ReLU, 1x3x3 conv, BN (ResNet-18/34 style)."""

    def __init__(self, dim_in: int, dim_out: int, temp_kernel_size: int, stride: int, dim_inner: int | None = None,
                 num_groups: int = 1, stride_1x1: bool | None = None, dilation: int = 1,
                 norm: NormFactory = batchnorm3d, block_idx: int = 0) -> None:
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_out, kernel_size=[temp_kernel_size, 3, 3], stride=[1, stride, stride],
                           padding=[temp_kernel_size // 2, 1, 1], bias=False)
        self.a_bn = norm(dim_out)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(dim_out, dim_out, kernel_size=[1, 3, 3], stride=[1, 1, 1],
                           padding=[0, dilation, dilation], dilation=[1, dilation, dilation], bias=False)
        self.b_bn = norm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.b_bn(self.b(self.a_relu(self.a_bn(self.a(x)))))


class BottleneckTransform(nn.Module):
    """Tx1x1 conv, BN, ReLU, 1x3x3 conv (grouped), BN, ReLU, 1x1x1 conv, BN."""

    def __init__(self, dim_in: int, dim_out: int, temp_kernel_size: int, stride: int, dim_inner: int,
                 num_groups: int, stride_1x1: bool = False, dilation: int = 1, norm: NormFactory = batchnorm3d,
                 block_idx: int = 0) -> None:
        super().__init__()
        str1x1, str3x3 = (stride, 1) if stride_1x1 else (1, stride)
        self.a = nn.Conv3d(dim_in, dim_inner, kernel_size=[temp_kernel_size, 1, 1], stride=[1, str1x1, str1x1],
                           padding=[temp_kernel_size // 2, 0, 0], bias=False)
        self.a_bn = norm(dim_inner)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(dim_inner, dim_inner, [1, 3, 3], stride=[1, str3x3, str3x3],
                           padding=[0, dilation, dilation], groups=num_groups, bias=False,
                           dilation=[1, dilation, dilation])
        self.b_bn = norm(dim_inner)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = nn.Conv3d(dim_inner, dim_out, kernel_size=[1, 1, 1], stride=[1, 1, 1], padding=[0, 0, 0],
                           bias=False)
        self.c_bn = norm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class X3DTransform(nn.Module):
    """1x1x1 conv, BN, ReLU, Tx3x3 channelwise conv, BN, [SE on even blocks], Swish, 1x1x1 conv, BN.

    The children run in registration order, which puts SE between ``b_bn`` and the Swish ``b_relu``.
    """

    def __init__(self, dim_in: int, dim_out: int, temp_kernel_size: int, stride: int, dim_inner: int,
                 num_groups: int, stride_1x1: bool = False, dilation: int = 1, norm: NormFactory = batchnorm3d,
                 block_idx: int = 0, se_ratio: float = 0.0625, swish_inner: bool = True) -> None:
        super().__init__()
        str1x1, str3x3 = (stride, 1) if stride_1x1 else (1, stride)
        self.a = nn.Conv3d(dim_in, dim_inner, kernel_size=[1, 1, 1], stride=[1, str1x1, str1x1],
                           padding=[0, 0, 0], bias=False)
        self.a_bn = norm(dim_inner)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(dim_inner, dim_inner, [temp_kernel_size, 3, 3], stride=[1, str3x3, str3x3],
                           padding=[temp_kernel_size // 2, dilation, dilation], groups=num_groups, bias=False,
                           dilation=[1, dilation, dilation])
        self.b_bn = norm(dim_inner)
        if se_ratio > 0.0 and (block_idx + 1) % 2:
            self.se = SE(dim_inner, se_ratio)
        self.b_relu = Swish() if swish_inner else nn.ReLU(inplace=True)
        self.c = nn.Conv3d(dim_inner, dim_out, kernel_size=[1, 1, 1], stride=[1, 1, 1], padding=[0, 0, 0],
                           bias=False)
        self.c_bn = norm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        for module in self.children():
            x = module(x)
        return x


TRANSFORMS = {
    "bottleneck_transform": BottleneckTransform,
    "basic_transform": BasicTransform,
    "x3d_transform": X3DTransform,
}


class ResBlock(nn.Module):
    """Residual block: ``branch2`` transform plus identity or 1x1x1 projection ``branch1`` (+ ``branch1_bn``)."""

    def __init__(self, dim_in: int, dim_out: int, temp_kernel_size: int, stride: int, trans_func: type[nn.Module],
                 dim_inner: int, num_groups: int = 1, stride_1x1: bool = False, dilation: int = 1,
                 norm: NormFactory = batchnorm3d, block_idx: int = 0) -> None:
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, kernel_size=1, stride=[1, stride, stride], padding=0,
                                     bias=False, dilation=1)
            self.branch1_bn = norm(dim_out)
        self.branch2 = trans_func(dim_in, dim_out, temp_kernel_size, stride, dim_inner, num_groups,
                                  stride_1x1=stride_1x1, dilation=dilation, norm=norm, block_idx=block_idx)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        f_x = self.branch2(x)
        if hasattr(self, "branch1"):
            x = self.branch1_bn(self.branch1(x)) + f_x
        else:
            x = x + f_x
        return self.relu(x)


class Nonlocal(nn.Module):
    """Non-local block (Wang et al. 2018): theta/phi/g 1x1x1 convs, optional max pool on phi/g, softmax or
    dot-product affinity, 1x1x1 ``conv_out``, BN, residual."""

    def __init__(self, dim: int, dim_inner: int, pool_size: Sequence[int] | None = None,
                 instantiation: str = "softmax", norm: NormFactory = batchnorm3d) -> None:
        super().__init__()
        if instantiation not in ("softmax", "dot_product"):
            raise NotImplementedError(f"unknown non-local instantiation {instantiation!r}")
        self.dim_inner = dim_inner
        self.instantiation = instantiation
        self.use_pool = pool_size is not None and any(s > 1 for s in pool_size)
        self.conv_theta = nn.Conv3d(dim, dim_inner, kernel_size=1, stride=1, padding=0)
        self.conv_phi = nn.Conv3d(dim, dim_inner, kernel_size=1, stride=1, padding=0)
        self.conv_g = nn.Conv3d(dim, dim_inner, kernel_size=1, stride=1, padding=0)
        self.conv_out = nn.Conv3d(dim_inner, dim, kernel_size=1, stride=1, padding=0)
        self.bn = norm(dim)
        if self.use_pool:
            self.pool = nn.MaxPool3d(kernel_size=list(pool_size), stride=list(pool_size), padding=[0, 0, 0])

    def forward(self, x: Tensor) -> Tensor:
        n, _, t, h, w = x.shape
        theta = self.conv_theta(x).reshape(n, self.dim_inner, -1)
        y = self.pool(x) if self.use_pool else x
        phi = self.conv_phi(y).reshape(n, self.dim_inner, -1)
        g = self.conv_g(y).reshape(n, self.dim_inner, -1)
        affinity = torch.einsum("nct,ncp->ntp", theta, phi)
        if self.instantiation == "softmax":
            affinity = torch.softmax(affinity * (self.dim_inner ** -0.5), dim=2)
        else:
            affinity = affinity / affinity.shape[2]
        out = torch.einsum("ntg,ncg->nct", affinity, g).reshape(n, self.dim_inner, t, h, w)
        return x + self.bn(self.conv_out(out))


class ResStage(nn.Module):
    """A ResNet stage over p pathways: ``pathway{p}_res{i}`` blocks, plus ``pathway{p}_nonlocal{i}`` after the
    blocks listed in ``nonlocal_inds[p]``."""

    def __init__(self, dim_in: Sequence[int], dim_out: Sequence[int], stride: Sequence[int],
                 temp_kernel_sizes: Sequence[Sequence[int]], num_blocks: Sequence[int], dim_inner: Sequence[int],
                 num_groups: Sequence[int], num_block_temp_kernel: Sequence[int],
                 nonlocal_inds: Sequence[Sequence[int]], nonlocal_group: Sequence[int],
                 nonlocal_pool: Sequence[Sequence[int]], dilation: Sequence[int], instantiation: str = "softmax",
                 trans_func_name: str = "bottleneck_transform", stride_1x1: bool = False,
                 norm: NormFactory = batchnorm3d) -> None:
        super().__init__()
        self.num_pathways = len(num_blocks)
        self.num_blocks = list(num_blocks)
        self.nonlocal_group = list(nonlocal_group)
        if trans_func_name not in TRANSFORMS:
            raise NotImplementedError(f"transformation function {trans_func_name!r} not supported")
        trans_func = TRANSFORMS[trans_func_name]
        for p in range(self.num_pathways):
            if num_block_temp_kernel[p] > num_blocks[p]:
                raise ValueError("NUM_BLOCK_TEMP_KERNEL exceeds the number of blocks")
            # Repeat the stage's temporal-kernel pattern over the blocks, keep the first
            # num_block_temp_kernel of them and give the remaining blocks a temporal kernel of 1.
            kernels = (list(temp_kernel_sizes[p]) * num_blocks[p])[: num_block_temp_kernel[p]]
            kernels += [1] * (num_blocks[p] - num_block_temp_kernel[p])
            for i in range(num_blocks[p]):
                self.add_module(f"pathway{p}_res{i}", ResBlock(
                    dim_in[p] if i == 0 else dim_out[p], dim_out[p], kernels[i], stride[p] if i == 0 else 1,
                    trans_func, dim_inner[p], num_groups[p], stride_1x1=stride_1x1, dilation=dilation[p],
                    norm=norm, block_idx=i))
                if i in nonlocal_inds[p]:
                    self.add_module(f"pathway{p}_nonlocal{i}", Nonlocal(
                        dim_out[p], dim_out[p] // 2, nonlocal_pool[p], instantiation=instantiation, norm=norm))

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        out = []
        for p in range(self.num_pathways):
            x = inputs[p]
            for i in range(self.num_blocks[p]):
                x = getattr(self, f"pathway{p}_res{i}")(x)
                nln = getattr(self, f"pathway{p}_nonlocal{i}", None)
                if nln is not None:
                    group = self.nonlocal_group[p]
                    if group > 1:  # fold groups of frames into the batch
                        b, c, t, h, w = x.shape
                        x = x.permute(0, 2, 1, 3, 4).reshape(b * group, t // group, c, h, w).permute(0, 2, 1, 3, 4)
                        x = nln(x)
                        x = x.permute(0, 2, 1, 3, 4).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
                    else:
                        x = nln(x)
            out.append(x)
        return out


class FuseFastToSlow(nn.Module):
    """Lateral connection: time-strided conv on the fast pathway, BN, ReLU, concatenated onto the slow one."""

    def __init__(self, dim_in: int, fusion_conv_channel_ratio: int, fusion_kernel: int, alpha: int,
                 norm: NormFactory = batchnorm3d) -> None:
        super().__init__()
        self.conv_f2s = nn.Conv3d(dim_in, dim_in * fusion_conv_channel_ratio, kernel_size=[fusion_kernel, 1, 1],
                                  stride=[alpha, 1, 1], padding=[fusion_kernel // 2, 0, 0], bias=False)
        self.bn = norm(dim_in * fusion_conv_channel_ratio)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        fuse = self.relu(self.bn(self.conv_f2s(x[1])))
        return [torch.cat([x[0], fuse], 1), x[1]]
