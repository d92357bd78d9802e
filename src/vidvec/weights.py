"""Loading a registered model: build the network its card describes and load its weights (``load_model``).

This module sits above the model families: it looks cards up in the registry and calls their ``build`` and
checkpoint hooks. Finding, downloading, verifying and reading checkpoint files is ``vidvec.checkpoints``'
job (below the families); its names are re-exported here, so ``from vidvec.weights import fetch, WeightsError``
keeps working.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.overrides import TorchFunctionMode

from vidvec.checkpoints import (TRUST_LEVELS, WeightsCheck, WeightsError, check_finite, check_weights,
                                checkpoint_path, download, fetch, load_into, load_state_dict, local_path, pin_sha256,
                                recorded_sha256, resolve, sha256_file, sidecar_path, torch_load, vidvec_home,
                                weights_trust)
from vidvec.registry import card_from_checkpoint, get_card

if TYPE_CHECKING:
    from vidvec.models.base import FeatureModel
    from vidvec.registry import ModelCard, Weights
    from vidvec.transforms import Preprocess

__all__ = ["DEFAULT_MODEL", "LoadedModel", "load_model",
           # re-exported from vidvec.checkpoints
           "TRUST_LEVELS", "WeightsCheck", "WeightsError", "check_finite", "check_weights", "checkpoint_path",
           "download", "fetch", "load_into", "load_state_dict", "local_path", "pin_sha256", "recorded_sha256",
           "resolve", "sha256_file", "sidecar_path", "torch_load", "vidvec_home", "weights_trust"]

DEFAULT_MODEL = "efficientnet_lite0"


@dataclass
class LoadedModel:
    """A model ready to run, with what produced it (for provenance records)."""

    module: FeatureModel           # in eval mode
    card: ModelCard
    weights: Weights | None        # None for random init or a user checkpoint matching no entry
    weights_path: Path | None
    weights_sha256: str | None     # full hex of the file, or 'random'
    weights_trust: str             # how the file's identity is known: one of TRUST_LEVELS (see weights_trust)
    preprocess: Preprocess
    categories: tuple[str, ...] | None


def load_model(name: str | None, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32,
               progress: Callable[[int, int], None] | None = None,
               build_options: Mapping[str, object] | None = None, text: bool = True) -> LoadedModel:
    """Build a registered model and load its weights (see ``resolve`` for what ``weights`` may be).

    ``name`` None: the architecture a checkpoint file ``weights`` names itself (e.g. the cfg a PySlowFast
    ``.pyth`` embeds, see ``registry.card_from_checkpoint``), else :data:`DEFAULT_MODEL`.
    ``build_options`` go to the card's ``build`` (options it declares in ``card.options``). ``text=False`` leaves
    out the text tower of a model that has one (``card.text``): smaller and quicker to build, for vectors only.
    """
    card = card_for(name, weights)
    entry, path = resolve(card, weights, progress)
    # User checkpoints and random init use the default entry's preprocessing and categories.
    preprocess, categories = card.preprocess_for(entry), card.categories_for(entry)
    num_classes = len(categories) if categories else None
    options = dict(build_options or {}, **({"text": False} if card.text and not text else {}))
    with _RandomInitSkipped() if path is not None else contextlib.nullcontext():
        module = card.build(num_classes=num_classes, **options)
    digest = "random"
    if path is not None:
        _load_checkpoint_into(card, module, path)
        digest = sha256_file(path)
    module = module.to(device=device, dtype=dtype).eval()
    return LoadedModel(module=module, card=card, weights=entry, weights_path=path, weights_sha256=digest,
                       weights_trust=weights_trust(entry, path), preprocess=preprocess, categories=categories)


class _RandomInitSkipped(TorchFunctionMode):
    """Inside it, torch.nn.init's random initialisers and in-place random fills leave the tensor as it is, so a
    model whose parameters a checkpoint will overwrite is built without computing random values first (most of
    the time of building a big model; docs/benchmarks.md). Safe only because every card's loader is
    strict: a parameter the checkpoint does not set is an error, never a silently uninitialised tensor. A
    function mode is per thread, so another thread building a model meanwhile is untouched."""

    _FILLS = frozenset({
        *(getattr(torch.nn.init, name) for name in (
            "uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
            "xavier_normal_", "orthogonal_", "sparse_")),
        torch._C.TensorBase.uniform_, torch._C.TensorBase.normal_,
    })

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._FILLS:
            return args[0] if args else kwargs["tensor"]  # every initialiser's first parameter is ``tensor``
        return func(*args, **(kwargs or {}))


def card_for(name: str | None, weights: str | os.PathLike | None) -> ModelCard:
    """The card of model ``name``; without a name, the architecture a checkpoint file ``weights`` names itself
    (a PySlowFast ``.pyth`` with its cfg), else :data:`DEFAULT_MODEL`."""
    if name is not None:
        return get_card(name)
    if weights is not None and os.fspath(weights) not in ("random", "default"):
        path = Path(os.fspath(weights)).expanduser()
        if path.is_file():
            try:
                card = card_from_checkpoint(path)
            except ValueError as exc:  # a checkpoint that names an architecture vidvec cannot build
                raise WeightsError(str(exc)) from exc
            if card is not None:
                return card
    return get_card(DEFAULT_MODEL)


def _load_checkpoint_into(card: ModelCard, module: torch.nn.Module, path: Path) -> None:
    """Read ``path`` with the card's reader (default: ``load_state_dict``), refuse NaN/Inf values
    (``check_finite``) and load it strictly; every failure is one WeightsError."""
    reader = card.read_checkpoint or load_state_dict
    loader = card.load_state or load_into
    try:
        state = reader(path)
    except WeightsError:
        raise
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file not found: {path}") from exc
    except Exception as exc:  # the family's reader words its own errors (unsafe pickle, not a checkpoint, ...)
        raise WeightsError(f"cannot read {path} for {card.name}: {exc}") from exc
    check_finite(state, path)
    try:
        loader(module, state, str(path))
    except WeightsError:
        raise
    except Exception as exc:  # e.g. pyslowfast's CheckpointError, which lists missing/unexpected keys
        raise WeightsError(str(exc)) from exc
