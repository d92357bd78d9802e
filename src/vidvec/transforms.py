"""A model's preprocessing: resize, crop, normalise.

The resize happens in the decoder (frames shrink before anything holds them); cropping runs
in the decode workers on uint8 frames; normalisation runs on the model's device, on the batch,
so workers ship uint8 (4x less to move than float32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch


@dataclass(frozen=True)
class Preprocess:
    """resize: ``(s,)`` scales the short side to s; ``(h, w)`` resizes to exactly h x w.
    crop: ``(h, w)`` taken from the centre (or 3 crops along the long side).
    Pixels are divided by ``scale`` and then normalised with ``mean``/``std`` per channel,
    in ``channel_order`` (the model's, after any RGB to BGR swap)."""

    resize: tuple[int, ...]
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 255.0
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) a frame of height x width has after the resize step."""
        if len(self.resize) == 2:
            return int(self.resize[0]), int(self.resize[1])
        short = int(self.resize[0])
        if height <= width:
            return short, max(1, int(round(width * short / height)))
        return max(1, int(round(height * short / width))), short

    def crop_boxes(self, height: int, width: int, crops: int) -> list[tuple[int, int, int, int]]:
        """(top, left, h, w) of each crop in a frame of height x width: centre, or 3 along the long side."""
        ch, cw = min(self.crop[0], height), min(self.crop[1], width)
        top, left = (height - ch) // 2, (width - cw) // 2
        if crops == 1:
            return [(top, left, ch, cw)]
        if width >= height:
            return [(top, 0, ch, cw), (top, left, ch, cw), (top, width - cw, ch, cw)]
        return [(0, left, ch, cw), (top, left, ch, cw), (height - ch, left, ch, cw)]

    def crop_frames(self, frames: np.ndarray, crops: int = 1) -> list[np.ndarray]:
        """uint8 (T, H, W, 3) -> one contiguous uint8 (T, h, w, 3) array per crop, padded if smaller."""
        out = []
        for top, left, h, w in self.crop_boxes(frames.shape[1], frames.shape[2], crops):
            patch = frames[:, top:top + h, left:left + w]
            if (h, w) != tuple(self.crop):  # frame smaller than the crop: pad by edge replication
                pad_h, pad_w = self.crop[0] - h, self.crop[1] - w
                patch = np.pad(patch, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                                       (pad_w // 2, pad_w - pad_w // 2), (0, 0)), mode="edge")
            out.append(np.ascontiguousarray(patch))
        return out

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32,
                  video: bool = True) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) RGB -> (B, C, T, H, W) for video models, (B*T, C, H, W) for image models."""
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
        return x.contiguous().to(dtype)
