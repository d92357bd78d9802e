"""The two-stream I3D network (torch): hassony2's port of DeepMind's I3D, with torchvision's RAFT for the flow
stream, as v-iashin/video_features runs it. ``vidvec.models.i3d`` describes the card (weights, preprocessing,
options, checkpoint loading) and builds this with ``build_i3d``, which checks the options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import optical_flow

from vidvec.models.base import FeatureModel

Variant = Literal["video_features", "hassony2"]

# (out_channels of branch 0, branch 1's 1x1 and 3x3, branch 2's 1x1 and 3x3, branch 3's 1x1) per Mixed block.
_MIXED = {
    "mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
EMBED_DIM = 1024  # Mixed_5c's channels: 384 + 384 + 128 + 128
RAFT_ITERATIONS = 20  # video_features runs RAFT with iters=20 (the original RAFT's default is 12)
FLOW_BOUND = 20.0


# --- the network: hassony2's port of DeepMind's I3D, same state_dict names ---

class _SamePad(nn.Module):
    """TensorFlow 'SAME' zero padding as the PyTorch port computes it.

    Each dimension is padded by max(kernel - stride, 0), the extra pixel at the end. The port's current master
    ('hassony2' variant, ``dynamic=True``) corrects the time axis when its length is not a multiple of the
    stride, padding max(kernel - length % stride, 0) as TensorFlow does; its spatial padding and the copy in
    video_features never look at the input."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int], dynamic: bool) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.dynamic = dynamic and stride[0] > 1
        self.static = self._pads(0)

    def _pads(self, remainder: int) -> tuple[int, ...]:
        amounts = [max(k - s, 0) for k, s in zip(self.kernel, self.stride)]
        if remainder:
            amounts[0] = max(self.kernel[0] - remainder, 0)
        # F.pad lists (before, after) from the last dimension backwards: (W, H, T).
        return tuple(v for amount in reversed(amounts) for v in (amount // 2, amount - amount // 2))

    @property
    def symmetric(self) -> bool:
        """Whether the padding is the same on both sides of every dimension and never changes."""
        return not self.dynamic and self.static[0::2] == self.static[1::2]

    def forward(self, x: Tensor) -> Tensor:
        pads = self._pads(x.shape[2] % self.stride[0]) if self.dynamic else self.static
        return F.pad(x, pads) if any(pads) else x


class Unit3D(nn.Module):
    """Conv3d with 'SAME' padding, then BatchNorm3d and ReLU; the classifier is a bare conv with a bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), variant: Variant = "video_features",
                 classifier: bool = False) -> None:
        super().__init__()
        pad = _SamePad(kernel, stride, dynamic=variant == "hassony2")
        # Symmetric padding is the conv's own (cheaper than a padded copy, and what the port does).
        self.pad = None if pad.symmetric else pad
        padding = pad.static[::2][::-1] if pad.symmetric else 0
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=classifier)
        # The port kept PyTorch's default eps; its master later moved to TensorFlow's 1e-3.
        self.batch3d = None if classifier else nn.BatchNorm3d(out_channels,
                                                              eps=1e-3 if variant == "hassony2" else 1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(x if self.pad is None else self.pad(x))
        return x if self.batch3d is None else F.relu(self.batch3d(x))


class MaxPool3dSame(nn.Module):
    """Max pooling after 'SAME' zero padding, with ceil_mode as in the port."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                 variant: Variant = "video_features") -> None:
        super().__init__()
        self.pad = _SamePad(kernel, stride, dynamic=variant == "hassony2")
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.pad(x))


class Mixed(nn.Module):
    """An Inception block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 max pool -> 1x1, concatenated."""

    def __init__(self, in_channels: int, out: tuple[int, ...], variant: Variant) -> None:
        super().__init__()
        self.branch_0 = Unit3D(in_channels, out[0], variant=variant)
        self.branch_1 = nn.Sequential(Unit3D(in_channels, out[1], variant=variant),
                                      Unit3D(out[1], out[2], (3, 3, 3), variant=variant))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, out[3], variant=variant),
                                      Unit3D(out[3], out[4], (3, 3, 3), variant=variant))
        self.branch_3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1), variant),
                                      Unit3D(in_channels, out[5], variant=variant))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], 1)


class I3D(nn.Module):
    """One I3D stream (in_channels 3 for RGB, 2 for flow). ``forward`` gives the 1024-d vector; ``logits``
    applies the classifier to it (num_classes 0: no classifier)."""

    def __init__(self, in_channels: int, num_classes: int = 400, variant: Variant = "video_features") -> None:
        super().__init__()
        if variant not in ("video_features", "hassony2"):
            raise ValueError(f"I3D variant must be video_features or hassony2, not {variant!r}")
        self.conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2), variant)
        self.maxpool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2), variant)
        self.conv3d_2b_1x1 = Unit3D(64, 64, variant=variant)
        self.conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), variant=variant)
        self.maxpool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2), variant)
        for name in ("mixed_3b", "mixed_3c"):
            self.add_module(name, Mixed(*_MIXED[name], variant))
        self.maxpool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2), variant)
        for name in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
            self.add_module(name, Mixed(*_MIXED[name], variant))
        self.maxpool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2), variant)
        for name in ("mixed_5b", "mixed_5c"):
            self.add_module(name, Mixed(*_MIXED[name], variant))
        self.conv3d_0c_1x1 = Unit3D(EMBED_DIM, num_classes, classifier=True) if num_classes > 0 else None

    def volume(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> Mixed_5c's output (B, 1024, T / 8, H / 32, W / 32)."""
        for layer in self.children():
            if layer is not self.conv3d_0c_1x1:
                x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return pool_volume(self.volume(x))

    def logits(self, latent: Tensor) -> Tensor:
        # The port averages the classifier's output over time; the 1x1x1 conv is linear, so applying it to
        # the time-averaged vector gives the same logits.
        if self.conv3d_0c_1x1 is None:
            raise ValueError("this I3D stream was built without a classifier (num_classes=0)")
        return self.conv3d_0c_1x1(latent[:, :, None, None, None]).flatten(1)


def pool_volume(volume: Tensor) -> Tensor:
    """The port's AvgPool3d((2, 7, 7), stride 1) then the mean over what is left (video_features' features):
    at 224 x 224 input the pool leaves (T', 1, 1). The window shrinks to fit smaller volumes."""
    t, h, w = volume.shape[2:]
    pooled = F.avg_pool3d(volume, (min(2, t), min(7, h), min(7, w)), stride=1)
    return pooled.mean((2, 3, 4))


# --- flow: torchvision's RAFT, then video_features' scaling ---

def flow_to_i3d(flow: Tensor) -> Tensor:
    """Raw flow in pixels -> the flow stream's input, exactly as video_features: clamp to [-20, 20], quantise
    like an 8-bit flow image (DeepMind's kinetics-i3d preprocessing) and map [0, 255] to [-1, 1]."""
    quantised = (128 + 255 / 40 * flow.clamp(-FLOW_BOUND, FLOW_BOUND)).round()
    return 2 * quantised / 255 - 1


def _pad_to_8(frames: Tensor) -> Tensor:
    """(N, C, H, W) -> replicate-padded to multiples of 8, the extra pixel at the end (RAFT's InputPadder,
    'sintel' mode, as video_features uses it)."""
    h, w = frames.shape[-2:]
    ph, pw = -h % 8, -w % 8
    if not (ph or pw):
        return frames
    return F.pad(frames, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")


def centre_crop(x: Tensor, size: int | None) -> Tensor:
    """(..., H, W) -> the central size x size (floor offsets, as video_features' TensorCenterCrop); dimensions
    already at most ``size`` are left as they are."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    top, left = max(h - size, 0) // 2, max(w - size, 0) // 2
    return x[..., top:top + min(size, h), left:left + min(size, w)]


class TwoStreamI3D(FeatureModel):
    """RGB and/or flow I3D streams with RAFT inside: ``forward`` takes (B, 3, T + 1, H, W) frames in [-1, 1]
    and gives (B, 1024) per stream, concatenated [rgb, flow]. ``streams``, ``flow`` and ``flow_region`` take the
    values ``vidvec.models.i3d.OPTIONS`` lists (``build_i3d`` checks them)."""

    def __init__(self, num_classes: int | None = None, streams: str = "both", flow: str = "raft_large",
                 variant: Variant = "video_features", crop: int | None = 224,
                 flow_iterations: int = RAFT_ITERATIONS, flow_batch: int = 32, flow_region: str = "frame") -> None:
        super().__init__()
        if flow_batch < 1:
            raise ValueError(f"flow_batch must be at least 1, not {flow_batch}")
        n = 400 if num_classes is None else num_classes
        self.streams, self.flow_name, self.crop = streams, flow, crop
        self.flow_iterations, self.flow_batch, self.flow_region = flow_iterations, flow_batch, flow_region
        self.rgb = I3D(3, n, variant) if streams in ("both", "rgb") else None
        self.flow = I3D(2, n, variant) if streams in ("both", "flow") else None
        self.raft = getattr(optical_flow, flow)(weights=None) if self.flow is not None else None

    @property
    def parts(self) -> set[str]:
        """The state_dict prefixes this model has: rgb, flow, raft."""
        return {name for name, child in self.named_children() if child is not None}

    def optical_flow(self, x: Tensor) -> Tensor:
        """(B, 3, T + 1, H, W) in [-1, 1] -> RAFT's flow (B, 2, T, H', W') in pixels between consecutive frames,
        H', W' rounded up to multiples of 8 (video_features keeps RAFT's padding)."""
        b, _, t, h, w = x.shape
        frames = _pad_to_8(x.transpose(1, 2).reshape(b * t, 3, h, w)).reshape(b, t, 3, *_ceil8(h, w))
        first = frames[:, :-1].reshape(-1, 3, *frames.shape[-2:])
        second = frames[:, 1:].reshape(-1, 3, *frames.shape[-2:])
        # One RAFT call per chunk of pairs bounds the memory its correlation volumes take.
        flows = [self.raft(first[i:i + self.flow_batch], second[i:i + self.flow_batch],
                           num_flow_updates=self.flow_iterations)[-1]
                 for i in range(0, len(first), self.flow_batch)]
        return torch.cat(flows).reshape(b, t - 1, 2, *frames.shape[-2:]).transpose(1, 2)

    def cropped_flow(self, x: Tensor) -> Tensor:
        """RAFT's flow (B, 2, T, crop, crop) in pixels for frames (B, 3, T + 1, H, W): computed on the whole
        frame and then cropped (flow_region 'frame', as video_features), or on the crop alone ('crop': less
        RAFT work on wide frames, but flow near the crop border differs, as RAFT sees no context beyond it)."""
        if self.flow_region == "crop":
            return self.optical_flow(centre_crop(x, self.crop))
        return centre_crop(self.optical_flow(x), self.crop)

    def flow_input(self, x: Tensor) -> Tensor:
        """The flow stream's input (B, 2, T, crop, crop) for frames (B, 3, T + 1, H, W)."""
        return flow_to_i3d(self.cropped_flow(x))

    @property
    def extras(self) -> tuple[str, ...]:
        return ("flow",) if self.flow is not None else ()

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_extras(x, ())[0]

    def forward_with_extras(self, x: Tensor, names: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """The vector, and with ``names`` = ("flow",) RAFT's flow (B, 2, T, crop, crop) in pixels, before the
        flow stream's clamping and quantisation (``--save-flow``)."""
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] < 2:
            raise ValueError(f"I3D takes (batch, 3, frames + 1, height, width) with at least 2 frames, "
                             f"not {tuple(x.shape)}")
        if set(names) - set(self.extras):
            raise ValueError(f"I3D with streams={self.streams} has no by-product {', '.join(sorted(names))}")
        vectors, extras = [], {}
        if self.rgb is not None:  # video_features feeds the RGB stream all frames but the last
            vectors.append(self.rgb(centre_crop(x[:, :, :-1], self.crop)))
        if self.flow is not None:
            flow = self.cropped_flow(x)
            vectors.append(self.flow(flow_to_i3d(flow)))
            if "flow" in names:
                extras["flow"] = flow
        return torch.cat(vectors, 1), extras

    def classify(self, latent: Tensor) -> Tensor | None:
        streams = [s for s in (self.rgb, self.flow) if s is not None]
        if streams[0].conv3d_0c_1x1 is None:
            return None
        # Two-stream I3D adds the streams' logits (DeepMind's evaluate_sample.py, hassony2's i3d_pt_demo.py).
        return sum(s.logits(part) for s, part in zip(streams, latent.split(EMBED_DIM, 1)))

    def extra_repr(self) -> str:
        return f"streams={self.streams}, flow={self.flow_name}, flow_region={self.flow_region}, crop={self.crop}"


def _ceil8(h: int, w: int) -> tuple[int, int]:
    return h + (-h % 8), w + (-w % 8)
