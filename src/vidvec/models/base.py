"""The one interface every vidvec model has: ``forward`` gives the latent vector, ``classify`` the logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FeatureModel(nn.Module):
    """Wraps a network so that forward(x) returns the latent vector (B, D) — by default the input of the final
    classifier — and classify(latent) returns logits (B, K), or None when the model has no classifier."""

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def classify(self, latent: Tensor) -> Tensor | None:
        """Logits for latent vectors from ``forward``; None when there is no classifier."""
        return None

    has_text = False  # True for models with a text tower (CLIP, MIL-NCE): ``encode_text`` then works
    extras: tuple[str, ...] = ()  # per-clip by-products a model can hand out besides the vector (I3D: "flow")

    def forward_with_extras(self, x: Tensor, names: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """``forward(x)`` and the by-products ``names`` (each (B, ...)) computed on the way, not twice."""
        if names:
            raise ValueError(f"{type(self).__name__} has no by-products {', '.join(names)}")
        return self(x), {}

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """(N, D) vectors for sentences, in the same space as ``forward``'s (models with a text tower)."""
        raise NotImplementedError(f"{type(self).__name__} has no text encoder")

    def text_left_out(self) -> ValueError:
        """The error ``encode_text`` raises in a model with a text tower built without it (``text=False``)."""
        return ValueError(f"this {type(self).__name__} was built without its text tower "
                          "(vidvec.load_model(..., text=True) builds it)")


class HeadSwapModel(FeatureModel):
    """A torchvision-style net whose classifier attribute(s) now return their input.

    The net's own children are registered on this wrapper under their original names, and the
    classifier modules stay registered under their original attribute names, so ``state_dict()``
    has exactly the net's keys (official checkpoints load unchanged, strictly). The net itself is
    held outside the module tree so that its parameters are not registered twice.

    ``head`` names the classifier attribute(s) applied in order by ``classify`` (e.g. ``"fc"`` or
    ``("_dropout", "_fc")``). ``head_on_volume`` is for heads that are 1x1x1 convolutions applied
    before a mean over (T, H, W) (torchvision's S3D): since the conv is linear, applying it to the
    (T, H, W)-mean gives the same logits, so the latent is that mean and ``classify`` applies the
    conv to it as a (B, D, 1, 1, 1) volume.
    """

    def __init__(self, net: nn.Module, head: str | Sequence[str], head_on_volume: bool = False,
                 keep_head: bool = True) -> None:
        super().__init__()
        names = (head,) if isinstance(head, str) else tuple(head)
        if net._parameters or net._buffers:
            # Only children are re-registered; top-level tensors would be silently dropped from state_dict.
            raise ValueError(f"{type(net).__name__} has top-level parameters; HeadSwapModel cannot wrap it")
        heads = {name: getattr(net, name) for name in names}
        for name in names:
            setattr(net, name, nn.Identity())
        for name, child in net.named_children():
            if name in heads:
                if keep_head:
                    self.add_module(name, heads[name])
            else:
                self.add_module(name, child)
        self._net = (net,)  # a tuple hides it from nn.Module registration
        self._head_names = names if keep_head else ()
        self._head_on_volume = head_on_volume

    @property
    def net(self) -> nn.Module:
        """The wrapped network (its classifier replaced by Identity)."""
        return self._net[0]

    def train(self, mode: bool = True) -> HeadSwapModel:
        super().train(mode)
        self.net.training = mode  # the net is not a registered child, so its own flag needs setting
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def classify(self, latent: Tensor) -> Tensor | None:
        if not self._head_names:
            return None
        x = latent[:, :, None, None, None] if self._head_on_volume else latent
        for name in self._head_names:
            x = getattr(self, name)(x)
        return torch.flatten(x, 1)

    def extra_repr(self) -> str:
        return f"net={type(self.net).__name__}, head={self._head_names}"
