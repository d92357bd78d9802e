"""PySlowFast heads, split into ``features`` (everything before the final linear layer, kept per position),
``latent`` (the vector a user wants) and the final ``projection`` (the classifier).

``features`` returns (B, t, h, w, D): the head's fixed-kernel average pool leaves a t x h x w grid when the
input is larger than the training crop (PySlowFast's fully-convolutional testing); for the training crop the
grid is 1 x 1 x 1. PySlowFast then applies the projection and the activation at every position and averages
the *probabilities*; :func:`head_outputs` does exactly that.

``latent``: for ResNetBasicHead (SlowFast, Slow, C2D, I3D) the head's input averaged over time and space,
pathways concatenated; for X3DHead the input of the projection (after ``lin_5``, a non-linear layer)
averaged over positions. At the training crop both equal the projection input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import NormFactory, batchnorm3d


def activation(logits: Tensor, act_func: str) -> Tensor:
    """PySlowFast's head activation over the class (last) dimension."""
    if act_func == "softmax":
        return torch.softmax(logits, dim=-1)
    if act_func == "sigmoid":
        return torch.sigmoid(logits)
    if act_func == "none":
        return logits
    raise NotImplementedError(f"{act_func} is not supported as an activation function")


def _check_act(act_func: str) -> None:
    if act_func not in ("softmax", "sigmoid", "none"):
        raise NotImplementedError(f"{act_func} is not supported as an activation function")


class ResNetBasicHead(nn.Module):
    """Per-pathway average pool (``pathway{p}_avgpool``), concat, ``projection`` (Linear)."""

    def __init__(self, dim_in: Sequence[int], num_classes: int, pool_size: Sequence[Sequence[int] | None],
                 dropout_rate: float = 0.0, act_func: str = "softmax") -> None:
        super().__init__()
        if len(pool_size) != len(dim_in):
            raise ValueError("pathway dimensions are not consistent")
        _check_act(act_func)
        self.num_pathways = len(pool_size)
        self.act_func = act_func
        for p in range(self.num_pathways):
            pool = nn.AdaptiveAvgPool3d((1, 1, 1)) if pool_size[p] is None else nn.AvgPool3d(list(pool_size[p]),
                                                                                            stride=1)
            self.add_module(f"pathway{p}_avgpool", pool)
        if dropout_rate > 0.0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(sum(dim_in), num_classes, bias=True)

    def features(self, inputs: list[Tensor]) -> Tensor:
        if len(inputs) != self.num_pathways:
            raise ValueError(f"expected {self.num_pathways} pathway tensors, got {len(inputs)}")
        pooled = [getattr(self, f"pathway{p}_avgpool")(inputs[p]) for p in range(self.num_pathways)]
        return torch.cat(pooled, 1).permute(0, 2, 3, 4, 1)

    def latent(self, inputs: list[Tensor], features: Tensor) -> Tensor:
        """The head's input averaged over (T, H, W), pathways concatenated."""
        return torch.cat([x.mean((2, 3, 4)) for x in inputs], 1)


class X3DHead(nn.Module):
    """``conv_5`` (1x1x1), BN, ReLU, average pool, ``lin_5`` (1x1x1), [BN], ReLU, ``projection``."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, num_classes: int,
                 pool_size: Sequence[int] | None, dropout_rate: float = 0.0, act_func: str = "softmax",
                 norm: NormFactory = batchnorm3d, bn_lin5_on: bool = False) -> None:
        super().__init__()
        _check_act(act_func)
        self.act_func = act_func
        self.conv_5 = nn.Conv3d(dim_in, dim_inner, kernel_size=(1, 1, 1), stride=(1, 1, 1), padding=(0, 0, 0),
                                bias=False)
        self.conv_5_bn = norm(dim_inner)
        self.conv_5_relu = nn.ReLU(inplace=True)
        self.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1)) if pool_size is None else nn.AvgPool3d(list(pool_size),
                                                                                               stride=1)
        self.lin_5 = nn.Conv3d(dim_inner, dim_out, kernel_size=(1, 1, 1), stride=(1, 1, 1), padding=(0, 0, 0),
                               bias=False)
        if bn_lin5_on:
            self.lin_5_bn = norm(dim_out)
        self.lin_5_relu = nn.ReLU(inplace=True)
        if dropout_rate > 0.0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(dim_out, num_classes, bias=True)

    def features(self, inputs: list[Tensor]) -> Tensor:
        if len(inputs) != 1:
            raise ValueError("the X3D head takes one pathway")
        x = self.avg_pool(self.conv_5_relu(self.conv_5_bn(self.conv_5(inputs[0]))))
        x = self.lin_5(x)
        if hasattr(self, "lin_5_bn"):
            x = self.lin_5_bn(x)
        return self.lin_5_relu(x).permute(0, 2, 3, 4, 1)

    def latent(self, inputs: list[Tensor], features: Tensor) -> Tensor:
        """The projection's input averaged over positions (``lin_5`` is not linear in the head's input)."""
        return features.mean((1, 2, 3))


class ResNetRoIHead(nn.Module):
    """AVA detection head, parameters only (``projection``); PySlowFast pools RoIAlign'ed person boxes.

    vidvec has no person boxes, so ``features`` averages each pathway over time (``s{p}_tpool``, as PySlowFast)
    and then over the whole frame. This whole-clip vector is *not* an output PySlowFast computes.
    """

    def __init__(self, dim_in: Sequence[int], num_classes: int, pool_size: Sequence[Sequence[int]],
                 dropout_rate: float = 0.0, act_func: str = "sigmoid") -> None:
        super().__init__()
        _check_act(act_func)
        self.num_pathways = len(pool_size)
        self.act_func = act_func
        for p in range(self.num_pathways):
            self.add_module(f"s{p}_tpool", nn.AvgPool3d([pool_size[p][0], 1, 1], stride=1))
        if dropout_rate > 0.0:
            self.dropout = nn.Dropout(dropout_rate)
        self.projection = nn.Linear(sum(dim_in), num_classes, bias=True)

    def features(self, inputs: list[Tensor]) -> Tensor:
        pooled = [getattr(self, f"s{p}_tpool")(inputs[p]).mean((2, 3, 4)) for p in range(self.num_pathways)]
        return torch.cat(pooled, 1)[:, None, None, None, :]

    def latent(self, inputs: list[Tensor], features: Tensor) -> Tensor:
        return features.mean((1, 2, 3))


def head_outputs(latent: Tensor, features: Tensor, projection: nn.Module, act_func: str) -> dict[str, Tensor]:
    """PySlowFast's eval-mode head outputs from per-position features (B, t, h, w, D).

    latent (B, D) as given; projection_input: ``features``; logits: per position (B, t, h, w, K);
    probs: activation per position, then averaged (B, K) -- what PySlowFast's model returns.
    """
    logits = projection(features)
    probs = activation(logits, act_func).mean((1, 2, 3))
    return {"latent": latent, "projection_input": features, "logits": logits, "probs": probs}
