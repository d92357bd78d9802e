"""A model's preprocessing: resize, crop, normalise.

The resize happens in the decoder (frames shrink before anything holds them), or, where a model needs
its training code's exact pixels, in torch right after decoding (``resize_backend="torch"``); cropping runs
in the decode workers on uint8 frames; normalisation runs on the model's device, on the batch,
so workers ship uint8 (4x less to move than float32).

A Preprocess is plain data (model cards hold one, and listing cards needs no torch): the methods that compute
on tensors import torch when they run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

from .decode import SWSCALE_FILTERS

if TYPE_CHECKING:
    import torch

# Fields added after the first release: to_dict() lists them only when they differ from their defaults, so the
# settings hash of a preprocessing that does not use them is what it was before they existed.
_NEW_FIELDS = ("geometry", "single_crop", "resize_backend")
GEOMETRIES = ("vidvec", "torchvision", "video_features", "video_features_tensor", "pyslowfast")


@dataclass(frozen=True)
class Preprocess:
    """resize: ``(s,)`` scales the short side to s; ``(h, w)`` resizes to exactly h x w.
    crop: ``(h, w)`` taken from the centre (or 3 crops along the long side); ``None`` hands the model the
    resized frame whole (a model that crops itself, as I3D, whose flow is computed on the whole frame first).
    Pixels are divided by ``scale`` and then normalised with ``mean``/``std`` per channel,
    in ``channel_order`` (the model's, after any RGB to BGR swap).

    ``geometry`` is whose pixel rules a short-side resize and the crop follow (they differ by a pixel on many sizes):
    ``"vidvec"`` rounds the long side and floors the crop offset; ``"torchvision"`` (``transforms.Resize`` and
    ``CenterCrop``, which open_clip and timm use too) truncates int(s * long / short) and rounds the offset
    half to even; ``"video_features"`` (its I3D's ``ResizeImproved`` and ``TensorCenterCrop``) truncates and
    floors; ``"video_features_tensor"`` (its tensor ``Resize``/``CenterCrop``, used for S3D; needs
    ``resize_backend="torch"``) scales both sides by s / short with torch's ``scale_factor`` (sizes floored, and the
    sampling grid follows the factor, not the sizes) and rounds the offset; ``"pyslowfast"`` takes
    floor(long / short * s) and ceil((dim - crop) / 2).
    ``single_crop`` is the position (0 left/top, 1 centre, 2 right/bottom) one crop takes.
    By default (``resize_backend="decoder"``) the decoder's swscale resizes with the ``interpolation`` filter
    (bilinear, bicubic, area or nearest; swscale widens them when shrinking, like PIL's antialiased resize).
    ``resize_backend="torch"``: frames are decoded at their own size and resized with torch's
    ``interpolate`` (``interpolation`` mode, align_corners=False, no antialias) on float pixels, rounded
    back to uint8, as PySlowFast does, instead of by the decoder's swscale. ``resize_backend="ffmpeg"``: by
    FFmpeg's ``scale`` filter with the ``interpolation`` flag, as ``ffmpeg -vf scale=W:H`` resizes and converts
    to RGB (it also places the chroma samples where the stream says they sit), for tools that decode with the
    ffmpeg command line (HERO)."""

    resize: tuple[int, ...]
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 255.0
    interpolation: str = "bilinear"
    geometry: Literal["vidvec", "torchvision", "video_features", "video_features_tensor", "pyslowfast"] = "vidvec"
    single_crop: int = 1
    resize_backend: Literal["decoder", "torch", "ffmpeg"] = "decoder"

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, not {self.geometry!r}")
        if self.single_crop not in (0, 1, 2):
            raise ValueError(f"single_crop must be 0, 1 or 2, not {self.single_crop!r}")
        if self.resize_backend not in ("decoder", "torch", "ffmpeg"):
            raise ValueError(f"resize_backend must be decoder, torch or ffmpeg, not {self.resize_backend!r}")
        if self.geometry == "video_features_tensor" and (self.resize_backend != "torch" or len(self.resize) != 1):
            raise ValueError("geometry video_features_tensor scales the short side in torch: it needs "
                             "resize_backend='torch' and resize=(s,)")
        if self.resize_backend != "torch" and self.interpolation not in SWSCALE_FILTERS:
            raise ValueError(f"the decoder resizes with {sorted(SWSCALE_FILTERS)}, not {self.interpolation!r} "
                             f"(resize_backend='torch' takes torch's modes)")

    def to_dict(self) -> dict:
        """The preprocessing as settings (part of a run's settings hash): fields added after the first release
        only when they are not their default, and ``geometry`` under its first name, ``layout``, so that folders
        made before the rename keep their hash."""
        out = asdict(self)
        for name in _NEW_FIELDS:
            if out[name] == _DEFAULTS[name]:
                del out[name]
        if "geometry" in out:
            out["layout"] = out.pop("geometry")
        return out

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) a frame of height x width has after the resize step."""
        if len(self.resize) == 2:
            return int(self.resize[0]), int(self.resize[1])
        short = int(self.resize[0])
        if self.geometry == "video_features_tensor":
            factor = self._scale_factor(height, width)
            return int(math.floor(height * factor)), int(math.floor(width * factor))
        if self.geometry == "pyslowfast":
            # random_short_side_scale_jitter: nothing to do when the short side is already s; otherwise
            # floor((float(long) / short) * s), evaluated in that order.
            if (width <= height and width == short) or (height <= width and height == short):
                return height, width
            if width < height:
                return int(math.floor((float(height) / width) * short)), short
            return short, int(math.floor((float(width) / height) * short))
        if self.geometry in ("torchvision", "video_features"):
            if height <= width:
                return short, max(1, int(short * width / height))
            return max(1, int(short * height / width)), short
        if height <= width:
            return short, max(1, int(round(width * short / height)))
        return max(1, int(round(height * short / width))), short

    @property
    def decoder_size(self) -> Callable[[int, int], tuple[int, int]] | None:
        """The ``size`` to give :class:`vidvec.decode.VideoDecoder`: the resize, unless torch does it."""
        return None if self.resize_backend == "torch" else self.resized_size

    @property
    def decoder_filter(self) -> str:
        """The ``interpolation`` to give :class:`vidvec.decode.VideoDecoder` (``scale:NAME``: FFmpeg's scale
        filter)."""
        if self.resize_backend == "torch":
            return "bilinear"  # frames come at their own size: nothing to resize
        return f"scale:{self.interpolation}" if self.resize_backend == "ffmpeg" else self.interpolation

    def resize_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (..., H, W, 3) at decoded size -> uint8 (..., h, w, 3) resized by torch (``resize_backend``
        "torch"); unchanged when the size is already right."""
        import torch
        import torch.nn.functional as F

        height, width = frames.shape[-3], frames.shape[-2]
        size = self.resized_size(height, width)
        if size == (height, width):
            return frames
        x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, height, width, 3)
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        if self.geometry == "video_features_tensor":
            y = F.interpolate(x, scale_factor=self._scale_factor(height, width), mode=self.interpolation,
                              align_corners=False, recompute_scale_factor=False)
        else:
            y = F.interpolate(x, size=size, mode=self.interpolation, align_corners=False)
        y = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return y.reshape(*frames.shape[:-3], *size, 3).numpy()

    def _scale_factor(self, height: int, width: int) -> float:
        return float(self.resize[0]) / min(height, width)

    def crop_boxes(self, height: int, width: int, crops: int) -> list[tuple[int, int, int, int]]:
        """(top, left, h, w) of each crop in a frame of height x width: one (centre unless ``single_crop``
        says otherwise), or 3 along the long side; the whole frame when there is no crop."""
        if self.crop is None:
            if crops != 1:
                raise ValueError(f"{crops} crops need a crop size; this model takes whole frames (it crops itself)")
            return [(0, 0, height, width)]
        ch, cw = min(self.crop[0], height), min(self.crop[1], width)
        if self.geometry == "pyslowfast":
            top, left = int(math.ceil((height - ch) / 2)), int(math.ceil((width - cw) / 2))
        elif self.geometry in ("torchvision", "video_features_tensor"):
            top, left = int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))
        else:
            top, left = (height - ch) // 2, (width - cw) // 2
        if height > width:  # portrait: top/centre/bottom; landscape and square: left/centre/right
            boxes = [(0, left, ch, cw), (top, left, ch, cw), (height - ch, left, ch, cw)]
        else:
            boxes = [(top, 0, ch, cw), (top, left, ch, cw), (top, width - cw, ch, cw)]
        return [boxes[self.single_crop]] if crops == 1 else boxes

    def crop_frames(self, frames: np.ndarray, crops: int = 1) -> list[np.ndarray]:
        """uint8 (T, H, W, 3) -> one contiguous uint8 (T, h, w, 3) array per crop, padded if smaller."""
        out = []
        for top, left, h, w in self.crop_boxes(frames.shape[1], frames.shape[2], crops):
            patch = frames[:, top:top + h, left:left + w]
            # A frame smaller than the crop: pad by edge replication.
            if self.crop is not None and (h, w) != tuple(self.crop):
                pad_h, pad_w = self.crop[0] - h, self.crop[1] - w
                patch = np.pad(patch, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                                       (pad_w // 2, pad_w - pad_w // 2), (0, 0)), mode="edge")
            out.append(np.ascontiguousarray(patch))
        return out

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype | None = None,
                  video: bool = True) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) RGB -> (B, C, T, H, W) for video models, (B*T, C, H, W) for image models;
        ``dtype`` default float32."""
        import torch

        x = batch.to(torch.float32)
        if self.channel_order == "BGR":
            x = x.flip(-1)
        mean = torch.tensor(self.mean, device=x.device)
        std = torch.tensor(self.std, device=x.device)
        x = (x / self.scale - mean) / std
        if video:
            x = x.permute(0, 4, 1, 2, 3)
        else:
            x = x.reshape(-1, *x.shape[2:]).permute(0, 3, 1, 2)
        return x.contiguous().to(dtype or torch.float32)


_DEFAULTS = {f.name: f.default for f in fields(Preprocess)}
