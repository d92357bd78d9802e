"""ResNet-18/34/50/101/152 frame-wise cards: torchvision's weights entries, latent size, video_features sampling."""

from __future__ import annotations

import pytest
import torch
from torchvision import models as tvm

from vidvec.checkpoints import hash_prefix
from vidvec.registry import get_card
from vidvec.sampling import SamplingSpec

RESNETS = {"resnet18": (tvm.ResNet18_Weights, 512), "resnet34": (tvm.ResNet34_Weights, 512),
           "resnet50": (tvm.ResNet50_Weights, 2048), "resnet101": (tvm.ResNet101_Weights, 2048),
           "resnet152": (tvm.ResNet152_Weights, 2048)}


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_card_lists_torchvision_weights(name: str) -> None:
    enum, _ = RESNETS[name]
    card = get_card(name)
    assert card.family == "torchvision-image" and card.input == "image"
    assert [(w.name, w.url) for w in card.weights] == [(w.name, w.url) for w in enum]
    assert all(w.sha256 == hash_prefix(w.url) for w in card.weights)
    # video_features loads IMAGENET1K_V1: the default entry, resize 256 / crop 224.
    default = card.default_weights
    assert default.name == "IMAGENET1K_V1"
    assert default.preprocess.resize == (256,) and default.preprocess.crop == (224, 224)
    assert len(default.categories) == 1000
    assert card.sampling == SamplingSpec("frames", fps=None)
    assert card.presets["video_features"].sampling == SamplingSpec("frames", fps=None, rule="video_features")


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_embed_dim_is_the_built_latent_size(name: str) -> None:
    _, embed_dim = RESNETS[name]
    card = get_card(name)
    assert card.embed_dim == embed_dim
    torch.manual_seed(0)
    model = card.build().eval()
    with torch.no_grad():
        latent = model(torch.randn(1, 3, 64, 64))
        logits = model.classify(latent)
    assert latent.shape == (1, embed_dim)
    assert logits.shape == (1, 1000)
