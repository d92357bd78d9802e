"""The CLIP network wrapper (torch): ``forward`` gives ``encode_image``, ``encode_text`` tokenises first.

Built by ``vidvec.models.clip.build_clip``, which also describes the weights and preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vidvec.models.base import FeatureModel


class ImageTower(nn.Module):
    """A CLIP without its text tower: the image tower under open_clip's name for it (``visual``)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def encode_image(self, image: Tensor) -> Tensor:
        return self.visual(image)


class ClipModel(FeatureModel):
    """An open_clip CLIP model (or its :class:`ImageTower`): forward gives ``encode_image``, ``encode_text``
    tokenises sentences first."""

    def __init__(self, clip: nn.Module, arch: str) -> None:
        super().__init__()
        self.clip = clip
        self.arch = arch
        self.has_text = not isinstance(clip, ImageTower)
        self._tokenizer = None

    def forward(self, x: Tensor) -> Tensor:
        return self.clip.encode_image(x)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        if not self.has_text:
            raise self.text_left_out()
        if self._tokenizer is None:
            import open_clip

            # OpenAI's BPE tokenizer; its vocabulary ships inside the open_clip package (no download).
            self._tokenizer = open_clip.get_tokenizer(self.arch)
        tokens = self._tokenizer(list(texts)).to(self.clip.token_embedding.weight.device)
        return self.clip.encode_text(tokens)

    def extra_repr(self) -> str:
        return f"arch={self.arch}"
