"""torchvision's ImageNet classifiers as frame-wise feature models (one vector per sampled frame).

ResNet-18/34/50/101/152 (``resnet18`` ... ``resnet152``): preprocessing is the weights entry's torchvision
transforms: short side resized to 256 (IMAGENET1K_V1, the default; also what v-iashin/video_features uses) or 232
(IMAGENET1K_V2, ResNet-50/101/152 only), bilinear, centre crop 224x224, pixels / 255 normalised with ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Vector: the global average pool of layer4, the input of
``fc``: 512-d for ResNet-18/34, 2048-d for ResNet-50 and deeper.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from vidvec.models.torchvision_weights import torchvision_weights
from vidvec.presets import HERO_FRAMES, Preset
from vidvec.registry import ModelCard, register_model
from vidvec.sampling import SamplingSpec

if TYPE_CHECKING:
    from vidvec.models.base import FeatureModel

FAMILY = "torchvision-image"
# Frame-wise models see single frames; the video's own frame rate unless the user sets one.
FRAMES_NATIVE = SamplingSpec("frames", fps=None)
# v-iashin/video_features' frame choice for its ResNet extractor (every frame at the video's own rate by default).
VIDEO_FEATURES_FRAMES = Preset(SamplingSpec("frames", fps=None, rule="video_features"))


def build_torchvision_image(fn_name: str, head: str, default_classes: int = 1000,
                            num_classes: int | None = None) -> FeatureModel:
    """Build torchvision's ``fn_name`` with random init (no download) and wrap it; num_classes=0 drops the head."""
    from torchvision import models as tvm

    from vidvec.models.base import HeadSwapModel

    n = default_classes if num_classes is None else num_classes
    net = getattr(tvm, fn_name)(weights=None, num_classes=max(n, 1))
    return HeadSwapModel(net, head, keep_head=n > 0)


def _card(name: str, enum: str, embed_dim: int, head: str, latent: str, description: str) -> ModelCard:
    return ModelCard(
        name=name,
        family=FAMILY,
        input="image",
        build=partial(build_torchvision_image, name, head),
        weights=torchvision_weights(enum),  # IMAGENET1K_V1 first: the default
        embed_dim=embed_dim,
        sampling=FRAMES_NATIVE,
        latent=latent,
        description=description,
        presets={"video_features": VIDEO_FEATURES_FRAMES, "hero": HERO_FRAMES},
        channels_last=True,
    )


_LATENT_512 = "global average pool of layer4 (the input of fc), 512-d"
_LATENT_2048 = "global average pool of layer4 (the input of fc), 2048-d"


@register_model
def resnet18() -> ModelCard:
    return _card("resnet18", "ResNet18_Weights", 512, "fc", _LATENT_512,
                 "ResNet-18 (He et al. 2016), ImageNet-1k, original recipe")


@register_model
def resnet34() -> ModelCard:
    return _card("resnet34", "ResNet34_Weights", 512, "fc", _LATENT_512,
                 "ResNet-34 (He et al. 2016), ImageNet-1k, original recipe")


@register_model
def resnet50() -> ModelCard:
    return _card("resnet50", "ResNet50_Weights", 2048, "fc", _LATENT_2048,
                 "ResNet-50 (He et al. 2016), ImageNet-1k; V1 original recipe, V2 new torchvision recipe")


@register_model
def resnet101() -> ModelCard:
    return _card("resnet101", "ResNet101_Weights", 2048, "fc", _LATENT_2048,
                 "ResNet-101 (He et al. 2016), ImageNet-1k; V1 original recipe, V2 new torchvision recipe")


@register_model
def resnet152() -> ModelCard:
    return _card("resnet152", "ResNet152_Weights", 2048, "fc", _LATENT_2048,
                 "ResNet-152 (He et al. 2016), ImageNet-1k; V1 original recipe, V2 new torchvision recipe")
