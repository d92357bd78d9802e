"""The S3D networks (torch): kylemin's final pooling for torchvision's S3D, and MIL-NCE's S3D-G video tower and
sentence tower (antoine77340/S3D_HowTo100M). ``vidvec.models.s3d`` describes the cards and builds these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidvec.models.base import FeatureModel
from vidvec.models.i3d_net import MaxPool3dSame  # the same TensorFlow "SAME" pooling as the I3D port


class TemporalPairPool(nn.Module):
    """kylemin's final pooling: the mean over 2 consecutive time steps and the whole H x W map, stride 1
    (torchvision's AvgPool3d((2, 7, 7)) at 224 px, but for any frame size)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool3d(x, (2, x.shape[3], x.shape[4]), stride=1)



class Unit3d(nn.Module):
    """Conv3d + BatchNorm + ReLU; ``separable`` factors a k x k x k kernel into 1 x k x k (conv1/bn1) then
    k x 1 x 1 (conv2/bn2), each followed by BatchNorm and ReLU. Upstream's STConv3D names."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int], padding: int | tuple = 0,
                 separable: bool = False) -> None:
        super().__init__()
        if separable:
            assert isinstance(kernel, int) and isinstance(padding, int)
            self.conv1 = nn.Conv3d(cin, cout, (1, kernel, kernel), padding=(0, padding, padding), bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
            self.conv2 = nn.Conv3d(cout, cout, (kernel, 1, 1), padding=(padding, 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, cout, kernel, padding=padding, bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
        self.separable = separable

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x))) if self.separable else x


class SelfGating(nn.Module):
    """S3D-G feature gating: channels scaled by sigmoid(fc(their mean over time and space))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


class InceptionBlock(nn.Module):
    """S3D-G inception block: 1x1x1 | 1x1x1 -> separable 3x3x3 | 1x1x1 -> separable 3x3x3 | max pool -> 1x1x1,
    each branch gated, then concatenated."""

    def __init__(self, cin: int, b0: int, b1a: int, b1b: int, b2a: int, b2b: int, b3b: int) -> None:
        super().__init__()
        self.conv_b0 = Unit3d(cin, b0, 1)
        self.conv_b1_a = Unit3d(cin, b1a, 1)
        self.conv_b1_b = Unit3d(b1a, b1b, 3, padding=1, separable=True)
        self.conv_b2_a = Unit3d(cin, b2a, 1)
        self.conv_b2_b = Unit3d(b2a, b2b, 3, padding=1, separable=True)
        self.maxpool_b3 = nn.MaxPool3d(3, stride=1, padding=1)
        self.conv_b3_b = Unit3d(cin, b3b, 1)
        self.gating_b0 = SelfGating(b0)
        self.gating_b1 = SelfGating(b1b)
        self.gating_b2 = SelfGating(b2b)
        self.gating_b3 = SelfGating(b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.gating_b0(self.conv_b0(x)),
            self.gating_b1(self.conv_b1_b(self.conv_b1_a(x))),
            self.gating_b2(self.conv_b2_b(self.conv_b2_a(x))),
            self.gating_b3(self.conv_b3_b(self.maxpool_b3(x))),
        ], dim=1)


_WORD = re.compile(r"[\w']+")


class SentenceEncoder(nn.Module):
    """MIL-NCE's text tower (upstream ``Sentence_Embedding``): word embeddings, fc1 + ReLU, max over words, fc2.

    The vocabulary is not a tensor: :meth:`set_vocabulary` sets it (from ``s3d_dict.npy`` when weights load);
    word i of it has token i + 1 (a word listed twice keeps its last position, as upstream's dict does).
    """

    def __init__(self, embed_dim: int = 512, num_embeddings: int = 66250, word_dim: int = 300,
                 hidden: int = 2048, max_words: int = 16, vocabulary: Sequence[str] = ()) -> None:
        super().__init__()
        self.word_embd = nn.Embedding(num_embeddings, word_dim)
        self.fc1 = nn.Linear(word_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.max_words = max_words
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, words: Sequence[str]) -> None:
        self.vocabulary = tuple(words)
        self._tokens = {word: i + 1 for i, word in enumerate(self.vocabulary)}

    def token_ids(self, texts: Sequence[str]) -> Tensor:
        """(N, max_words) int64 tokens: known words of each lowercased sentence, first max_words, 0-padded."""
        if isinstance(texts, str):
            raise TypeError("token_ids takes a list of sentences, not one string")
        rows = torch.zeros(len(texts), self.max_words, dtype=torch.long)
        for row, text in zip(rows, texts):
            ids = [self._tokens[w] for w in _WORD.findall(str(text).lower()) if w in self._tokens]
            ids = ids[: self.max_words]
            if ids and max(ids) >= self.word_embd.num_embeddings:
                raise ValueError(f"the dictionary ({len(self.vocabulary)} words) does not fit the word embedding "
                                 f"table ({self.word_embd.num_embeddings} rows): token {max(ids)} is out of range")
            row[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        return rows

    def forward(self, texts: Sequence[str]) -> Tensor:
        ids = self.token_ids(texts).to(self.word_embd.weight.device)
        x = F.relu(self.fc1(self.word_embd(ids)))
        return self.fc2(x.max(dim=1).values)  # padding positions take part in the max, as upstream


class MilNceS3D(FeatureModel):
    """S3D-G video tower + sentence tower of antoine77340/S3D_HowTo100M, with its state_dict key names.

    ``forward`` gives the 512-d video embedding (upstream's ``video_embedding``), or with ``output="mixed_5c"``
    the 1024-d mixed_5c average (``features``, upstream's ``mixed_5c``, what HERO stores); ``encode_text`` the
    512-d sentence embeddings, in the space of the video embedding (``text=False``: built without the sentence
    tower).
    """

    OUTPUTS = ("video_embedding", "mixed_5c")

    def __init__(self, embed_dim: int = 512, num_embeddings: int = 66250,
                 vocabulary: Sequence[str] = (), output: str = "video_embedding", text: bool = True) -> None:
        super().__init__()
        if output not in self.OUTPUTS:
            raise ValueError(f"MIL-NCE S3D output must be {' or '.join(self.OUTPUTS)}, not {output!r}")
        self.output = output
        self.has_text = text and output == "video_embedding"  # sentences live in the video embedding's space only
        # The port keeps the TPU model's space-to-depth stem: 2x2x2 blocks of pixels become 24 channels.
        self.conv1 = Unit3d(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.conv_2b = Unit3d(64, 64, 1)
        self.conv_2c = Unit3d(64, 192, 3, padding=1, separable=True)
        self.gating = SelfGating(192)
        self.maxpool_2a = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.maxpool_3a = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.mixed_3b = InceptionBlock(192, 64, 96, 128, 16, 32, 32)
        self.mixed_3c = InceptionBlock(256, 128, 128, 192, 32, 96, 64)
        self.maxpool_4a = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.mixed_4b = InceptionBlock(480, 192, 96, 208, 16, 48, 64)
        self.mixed_4c = InceptionBlock(512, 160, 112, 224, 24, 64, 64)
        self.mixed_4d = InceptionBlock(512, 128, 128, 256, 24, 64, 64)
        self.mixed_4e = InceptionBlock(512, 112, 144, 288, 32, 64, 64)
        self.mixed_4f = InceptionBlock(528, 256, 160, 320, 32, 128, 128)
        self.maxpool_5a = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.mixed_5b = InceptionBlock(832, 256, 160, 320, 32, 128, 128)
        self.mixed_5c = InceptionBlock(832, 384, 192, 384, 48, 128, 128)
        self.fc = nn.Linear(1024, embed_dim)
        self.text_module = SentenceEncoder(embed_dim, num_embeddings, vocabulary=vocabulary) if text else None

    @staticmethod
    def space_to_depth(x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, 8C, T/2, H/2, W/2); channel = (dt, dy, dx, c), as the port orders it."""
        b, c, t, h, w = x.shape
        if t % 2 or h % 2 or w % 2:
            raise ValueError(f"MIL-NCE S3D needs an even frame count, height and width, got {t}x{h}x{w}")
        x = x.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
        return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [0, 1] -> (B, 1024) mixed_5c averaged over time and space."""
        x = self.conv1(self.space_to_depth(x))[:, :, 1:, 1:, 1:]  # crop the extra row TF 'SAME' would not add
        x = self.maxpool_2a(x)
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        x = self.mixed_3c(self.mixed_3b(self.maxpool_3a(x)))
        x = self.maxpool_4a(x)
        for block in (self.mixed_4b, self.mixed_4c, self.mixed_4d, self.mixed_4e, self.mixed_4f):
            x = block(x)
        x = self.mixed_5c(self.mixed_5b(self.maxpool_5a(x)))
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.features(x)
        return pooled if self.output == "mixed_5c" else self.fc(pooled)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        if self.text_module is None:
            raise self.text_left_out()
        return self.text_module(list(texts))
