"""torchvision's Kinetics-400 video classifiers as feature models.

Cards are read from torchvision's weights enums (URL, hash, transforms, categories, metrics; through their
snapshot, ``models.torchvision_weights``); only the evaluation sampling (stated in each enum's ``_docs``) and the
latent layer are written here. ``build`` imports torchvision.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from vidvec.models.torchvision_weights import torchvision_weights
from vidvec.presets import Preset
from vidvec.registry import ModelCard, register_model
from vidvec.sampling import SamplingSpec

if TYPE_CHECKING:
    from vidvec.models.base import FeatureModel

FAMILY = "torchvision-video"
_MVIT_LICENSE = "Apache-2.0 (PySlowFast weights, ported by torchvision); Kinetics-400 terms may also apply"
_SWIN_LICENSE = "Apache-2.0 (Video Swin Transformer weights, ported by torchvision); training data terms may apply"


def build_torchvision_video(fn_name: str, head: str, volume_head: bool = False, default_classes: int = 400,
                            num_classes: int | None = None) -> FeatureModel:
    """Build torchvision's ``fn_name`` with random init (no download) and wrap it; num_classes=0 drops the head."""
    from torchvision.models import video as tvv

    from vidvec.models.base import HeadSwapModel

    n = default_classes if num_classes is None else num_classes
    net = getattr(tvv, fn_name)(weights=None, num_classes=max(n, 1))
    return HeadSwapModel(net, head, head_on_volume=volume_head, keep_head=n > 0)


def _windows(fps: float, clip_len: int) -> SamplingSpec:
    # Non-overlapping windows of the clip length and frame rate the weights were evaluated with.
    return SamplingSpec("windows", fps=fps, clip_len=clip_len, stride=clip_len)


def _card(name: str, enum: str, embed_dim: int, fps: float, clip_len: int, head: str, latent: str,
          description: str, license: str | None = None, volume_head: bool = False,
          presets: dict | None = None, channels_last: bool = True) -> ModelCard:
    extra = {"license": license} if license else {}
    return ModelCard(
        name=name,
        family=FAMILY,
        input="video",
        build=partial(build_torchvision_video, name, head, volume_head),
        weights=torchvision_weights(enum, **extra),
        embed_dim=embed_dim,
        sampling=_windows(fps, clip_len),
        latent=latent,
        description=description,
        presets=presets or {},
        channels_last=channels_last,
    )


_RESNET_LATENT = "global average pool of layer4 (the input of fc), 512-d"


@register_model
def r3d_18() -> ModelCard:
    return _card("r3d_18", "R3D_18_Weights", 512, 15, 16, "fc", _RESNET_LATENT,
                 "ResNet3D-18 (Tran et al. 2018), Kinetics-400, 112x112 clips")


@register_model
def mc3_18() -> ModelCard:
    return _card("mc3_18", "MC3_18_Weights", 512, 15, 16, "fc", _RESNET_LATENT,
                 "Mixed-convolution ResNet-18 MC3 (Tran et al. 2018), Kinetics-400, 112x112 clips")


@register_model
def r2plus1d_18() -> ModelCard:
    # video_features' r2plus1d_18_16_kinetics: stacks of 16 frames every 16 at the native rate.
    return _card("r2plus1d_18", "R2Plus1D_18_Weights", 512, 15, 16, "fc", _RESNET_LATENT,
                 "R(2+1)D-18 (Tran et al. 2018), Kinetics-400, 112x112 clips",
                 presets={"video_features": Preset(SamplingSpec("windows", clip_len=16, stride=16,
                                                                         rule="video_features"))})


@register_model
def s3d() -> ModelCard:
    return _card("s3d", "S3D_Weights", 1024, 15, 128, "classifier",
                 "mean over (T, H, W) of the final AvgPool3d(2,7,7) output (what the 1x1x1 classifier conv "
                 "sees, averaged), 1024-d", "S3D (Xie et al. 2018), Kinetics-400, 224x224 clips",
                 volume_head=True)


@register_model
def mvit_v1_b() -> ModelCard:
    return _card("mvit_v1_b", "MViT_V1_B_Weights", 768, 7.5, 16, "head",
                 "class token after the final LayerNorm (the input of head), 768-d",
                 "MViT-B 16x4 (Fan et al. 2021), Kinetics-400; input must be 16x224x224", _MVIT_LICENSE,
                 channels_last=False)


@register_model
def mvit_v2_s() -> ModelCard:
    return _card("mvit_v2_s", "MViT_V2_S_Weights", 768, 7.5, 16, "head",
                 "class token after the final LayerNorm (the input of head), 768-d",
                 "MViTv2-S 16x4 (Li et al. 2022), Kinetics-400; input must be 16x224x224", _MVIT_LICENSE,
                 channels_last=False)


_SWIN_LATENT = "global average pool after the final LayerNorm (the input of head)"


@register_model
def swin3d_t() -> ModelCard:
    return _card("swin3d_t", "Swin3D_T_Weights", 768, 15, 32, "head", _SWIN_LATENT + ", 768-d",
                 "Video Swin Transformer tiny (Liu et al. 2022), Kinetics-400", _SWIN_LICENSE,
                 channels_last=False)


@register_model
def swin3d_s() -> ModelCard:
    return _card("swin3d_s", "Swin3D_S_Weights", 768, 15, 32, "head", _SWIN_LATENT + ", 768-d",
                 "Video Swin Transformer small (Liu et al. 2022), Kinetics-400", _SWIN_LICENSE,
                 channels_last=False)


@register_model
def swin3d_b() -> ModelCard:
    return _card("swin3d_b", "Swin3D_B_Weights", 1024, 15, 32, "head", _SWIN_LATENT + ", 1024-d",
                 "Video Swin Transformer base (Liu et al. 2022), Kinetics-400 (default) or "
                 "Kinetics-400 after ImageNet-22K pretraining", _SWIN_LICENSE,
                 channels_last=False)
