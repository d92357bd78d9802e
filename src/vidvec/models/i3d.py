"""Two-stream I3D (Carreira & Zisserman 2017), Kinetics-400, as v-iashin/video_features extracts it.

Card ``i3d`` (build options ``streams`` = both | rgb | flow, ``flow`` = raft_large | raft_small,
``flow_region`` = frame | crop):

- Weights: DeepMind's Kinetics-400 I3D (ImageNet-inflated) as converted to PyTorch by
  hassony2/kinetics_i3d_pytorch (``model/model_rgb.pth``, ``model/model_flow.pth``; the same files
  video_features ships as ``i3d_rgb.pt`` / ``i3d_flow.pt``), state_dict names unchanged, under the prefixes
  ``rgb.`` and ``flow.``. Optical flow comes from torchvision's RAFT, under the prefix ``raft.``:
  ``raft_large`` with ``Raft_Large_Weights.C_T_SKHT_V1`` (torchvision's port of the original RAFT's
  ``raft-sintel.pth``, which video_features uses), ``raft_small`` with ``Raft_Small_Weights.C_T_V2``.
- Input: a stack of 64 + 1 frames (default sampling: windows of 65 frames at the video's own frame rate, a new
  one every 64 frames, as video_features' stack_size 64 / step_size 64), short side resized to 256, centre
  crop 224 x 224, RGB scaled to [-1, 1] (mean 0.5, std 0.5 on [0, 1]).
- RGB stream: the first 64 frames. Flow stream: RAFT (20 refinement iterations, video_features' setting) on
  the 64 pairs of consecutive frames, computed on the fly in batches and never written anywhere, then as
  video_features does: clamped to [-20, 20], quantised like an 8-bit flow image (round(128 + 255 / 40 * f))
  and mapped to [-1, 1] (2 q / 255 - 1).
- Vector: per stream, I3D's AvgPool3d((2, 7, 7), stride 1) after Mixed_5c, averaged over the remaining time
  steps (video_features' ``features=True`` output), 1024-d; streams 'both' concatenates [rgb, flow] (2048-d).
- Logits: the Conv3d_0c_1x1 classifier on that vector (equal to I3D's logits, as the classifier is linear);
  'both' adds the two streams' logits, as DeepMind's and hassony2's two-stream evaluation do.

Geometry as video_features: the decoder hands the model the resized frame whole; RAFT runs on it (padded to
a multiple of 8) and both streams are cropped afterwards (the flow from the padded frame). Build option
``flow_region='crop'`` runs RAFT on the 224 crop alone instead: 1.6x less RAFT time on 4:3 video, 2.7x on
16:9 (raft_small, CPU), but flow near the crop border differs, as RAFT then sees nothing beyond it.

``variant`` picks the port's numerics: 'video_features' (default: BatchNorm eps 1e-5 and padding fixed at
build time, the copy of the port that produced video_features' published features) or 'hassony2' (the port's
current master: eps 1e-3 and TensorFlow 'SAME' temporal padding chosen from the input's length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import optical_flow
from torchvision.models.video import R3D_18_Weights

from vidvec.models.base import TORCHVISION_LICENSE, FeatureModel, hash_prefix, with_batchnorm_counters
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

FAMILY = "i3d"
STREAMS = ("both", "rgb", "flow")
FLOWS = ("raft_large", "raft_small")
FLOW_REGIONS = ("frame", "crop")  # RAFT on the whole frame then cropped (video_features), or on the crop alone
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
    and gives (B, 1024) per stream, concatenated [rgb, flow]."""

    def __init__(self, num_classes: int | None = None, streams: str = "both", flow: str = "raft_large",
                 variant: Variant = "video_features", crop: int | None = 224,
                 flow_iterations: int = RAFT_ITERATIONS, flow_batch: int = 32, flow_region: str = "frame") -> None:
        super().__init__()
        if streams not in STREAMS:
            raise ValueError(f"I3D streams must be one of {', '.join(STREAMS)}, not {streams!r}")
        if flow not in FLOWS:
            raise ValueError(f"I3D flow must be one of {', '.join(FLOWS)}, not {flow!r}")
        if flow_region not in FLOW_REGIONS:
            raise ValueError(f"I3D flow_region must be one of {', '.join(FLOW_REGIONS)}, not {flow_region!r}")
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


def build_i3d(num_classes: int | None = None, streams: str = "both", flow: str = "raft_large",
              variant: Variant = "video_features", crop: int | None = 224, flow_iterations: int = RAFT_ITERATIONS,
              flow_batch: int = 32, flow_region: str = "frame") -> TwoStreamI3D:
    """Two-stream I3D with random init (no download); num_classes=0 drops the classifiers."""
    return TwoStreamI3D(num_classes, streams, flow, variant, crop, flow_iterations, flow_batch, flow_region)


# --- weights: the port's two files plus torchvision's RAFT, merged into one state_dict ---

# hassony2's repository holds the converted files in git; pinned to a commit so that the bytes cannot change
# (no sha256 is published: vidvec records it on first download).
_HASSONY2 = ("https://raw.githubusercontent.com/hassony2/kinetics_i3d_pytorch/"
             "786fbae06a6fd5df419e1961cd32e32fbe8b396d/model/")
_LICENSE = ("MIT (hassony2/kinetics_i3d_pytorch conversion) of DeepMind's Apache-2.0 kinetics-i3d weights; "
            "Kinetics-400 terms may also apply")
# No crop here: the model takes the resized frame whole, computes flow on it and crops both streams itself.
PREPROCESS = Preprocess(resize=(256,), crop=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        layout="video_features")
KINETICS400 = tuple(R3D_18_Weights.KINETICS400_V1.meta["categories"])  # the same 400 names, same order


def _hassony2(name: str, file: str, stream: str, num_params: int) -> Weights:
    return Weights(name=name, url=_HASSONY2 + file, sha256=None, license=_LICENSE, preprocess=PREPROCESS,
                   categories=KINETICS400, num_params=num_params, metrics={},
                   source=f"hassony2/kinetics_i3d_pytorch model/{file} (DeepMind's Kinetics-400 {stream} I3D, "
                          f"ImageNet-inflated, converted from TensorFlow)",
                   cache_name=f"i3d_hassony2_{file}")


def _raft(tv: optical_flow.Raft_Large_Weights | optical_flow.Raft_Small_Weights) -> Weights:
    return Weights(name=f"{type(tv).__name__}.{tv.name}", url=tv.url, sha256=hash_prefix(tv.url),
                   license=TORCHVISION_LICENSE, preprocess=PREPROCESS, categories=None,
                   num_params=tv.meta["num_params"], metrics=dict(tv.meta["_metrics"]),
                   source=f"torchvision {type(tv).__name__}.{tv.name}")


# The default entry is the RGB file; loading it fetches the companions the model needs (see load_state).
# num_params: the whole default model (RGB 12,697,264 + flow 12,675,312 + RAFT large 5,257,536).
KINETICS400_HASSONY2 = _hassony2("KINETICS400_HASSONY2", "model_rgb.pth", "RGB", 30_630_112)
FLOW_WEIGHTS = _hassony2("KINETICS400_HASSONY2_FLOW", "model_flow.pth", "flow", 12_675_312)
RAFT_WEIGHTS = {
    # C_T_SKHT_V1 is the original RAFT's raft-sintel.pth (torchvision ported it), video_features' flow.
    "raft_large": _raft(optical_flow.Raft_Large_Weights.C_T_SKHT_V1),
    "raft_small": _raft(optical_flow.Raft_Small_Weights.C_T_V2),
}

_STREAM_KEY = "conv3d_1a_7x7.conv3d.weight"  # its input channels tell an RGB file (3) from a flow file (2)


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """A checkpoint as this card's state_dict: one of the port's stream files (keys as hassony2 saved them)
    gets the prefix rgb. or flow.; a merged file (every key under rgb., flow. or raft.) is taken as it is."""
    from vidvec.weights import WeightsError, load_state_dict

    state = load_state_dict(path)
    prefixes = {key.split(".", 1)[0] for key in state}
    if prefixes <= {"rgb", "flow", "raft"}:
        return with_batchnorm_counters(dict(state))
    weight = state.get(_STREAM_KEY)
    stream = {3: "rgb", 2: "flow"}.get(weight.shape[1] if weight is not None and weight.dim() == 5 else None)
    if stream is None:
        raise WeightsError(f"{path} is not an I3D checkpoint: expected hassony2/kinetics_i3d_pytorch's keys "
                           f"({_STREAM_KEY} with 3 or 2 input channels) or a merged state_dict whose keys all "
                           f"start with rgb., flow. or raft.")
    return with_batchnorm_counters({f"{stream}.{key}": value for key, value in state.items()})


def _companion(part: str, model: TwoStreamI3D) -> dict[str, Tensor]:
    from vidvec.weights import fetch, load_state_dict

    if part == "raft":
        return {f"raft.{k}": v for k, v in load_state_dict(fetch(RAFT_WEIGHTS[model.flow_name])).items()}
    return read_checkpoint(fetch(KINETICS400_HASSONY2 if part == "rgb" else FLOW_WEIGHTS))


def load_state(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load strictly what ``module`` runs: parts the file lacks (the flow stream and RAFT, for the port's RGB
    file) come from their official files, fetched like any weights; parts the model does not run are ignored."""
    from vidvec.weights import load_into

    assert isinstance(module, TwoStreamI3D)
    state = dict(state)
    for part in sorted(module.parts - {key.split(".", 1)[0] for key in state}):
        state.update(_companion(part, module))
    load_into(module, {k: v for k, v in state.items() if k.split(".", 1)[0] in module.parts}, source)


@register_model
def i3d() -> ModelCard:
    return ModelCard(
        name="i3d",
        family=FAMILY,
        input="video",
        build=build_i3d,
        weights=(KINETICS400_HASSONY2,),
        embed_dim=2 * EMBED_DIM,
        # video_features' defaults: stacks of 64 frames (+1 for the last flow pair) every 64 frames, native fps.
        sampling=SamplingSpec("windows", fps=None, clip_len=65, stride=64),
        latent="per stream, the time average of AvgPool3d((2,7,7), stride 1) after Mixed_5c (video_features' "
               "I3D features), 1024-d; streams both = [rgb, flow], 2048-d",
        description="Two-stream I3D (Carreira & Zisserman 2017), Kinetics-400, hassony2's PyTorch port as "
                    "video_features uses it, optical flow from torchvision's RAFT computed on the fly",
        read_checkpoint=read_checkpoint,
        load_state=load_state,
        extra={
            "video_features": SamplingSpec("windows", fps=None, clip_len=65, stride=64, rule="video_features"),
            "streams": STREAMS,
            "options": {"streams": STREAMS, "flow": FLOWS, "flow_region": FLOW_REGIONS},
            "embed_dims": {"both": 2 * EMBED_DIM, "rgb": EMBED_DIM, "flow": EMBED_DIM},
            "companions": (FLOW_WEIGHTS, *RAFT_WEIGHTS.values()),
        },
    )
