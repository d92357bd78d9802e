"""R(2+1)D-34 pre-trained on IG-65M and fine-tuned on Kinetics-400 (Ghadiyaram et al. 2019), as ported to
PyTorch by moabitcoin/ig65m-pytorch (the weights v-iashin/video_features' ``r2plus1d_34_*_ig65m_ft_kinetics`` use).

Cards ``r2plus1d_34_8_ig65m_kinetics`` (8-frame clips) and ``r2plus1d_34_32_ig65m_kinetics`` (32-frame clips) build
torchvision's VideoResNet the way the port does: R(2+1)D stem and Conv2Plus1D blocks, layers [3, 4, 6, 3], and two
Caffe2 details of the original VMZ models: the second (2+1)D conv of the first block of layer2/3/4 has the mid-plane
count Caffe2 computes for it (288, 576, 1152; torchvision's formula gives 230, 460, 921), and BatchNorm eps is 1e-3.
State_dict keys are torchvision's, so the port's ``.pth`` files load strictly.

Preprocessing (video_features' R(2+1)D transforms, which match VMZ's Kinetics evaluation): every frame resized to
exactly 128x171 (h x w) with torch's bilinear interpolation (align_corners=False, no antialiasing), a centre crop of
112x112 (at row 8, column 30, as video_features rounds 29.5 up), pixels / 255 normalised with mean (0.43216,
0.394666, 0.37645) and std (0.22803, 0.22145, 0.216989), RGB.
Default sampling: consecutive non-overlapping windows of 8 (or 32) frames at the video's own frame rate, as
video_features' defaults (stack and step = the clip length).

Vector: the global average pool of layer4 over (T, H, W), the input of ``fc``, 512-d; ``classify`` applies ``fc``
(Kinetics-400 logits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidvec import categories
from vidvec.checkpoints import hash_prefix
from vidvec.presets import Preset
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

if TYPE_CHECKING:
    from vidvec.models.base import FeatureModel

FAMILY = "r2plus1d"
LICENSE = ("MIT (moabitcoin/ig65m-pytorch, the conversion); converted from facebookresearch/VMZ's Caffe2 "
           "weights, whose terms and the training data's may also apply")
_RELEASE = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0"

PREPROCESS = Preprocess(
    resize=(128, 171),
    crop=(112, 112),
    mean=(0.43216, 0.394666, 0.37645),
    std=(0.22803, 0.22145, 0.216989),
    interpolation="bilinear",
    # video_features resizes with torch.nn.functional.interpolate on the decoded frames, not with swscale.
    resize_backend="torch",
    # Only for its crop offsets: ceil((171 - 112) / 2) = 30 is the column video_features' round(29.5) gives;
    # with an exact (h, w) resize this geometry changes nothing else.
    geometry="pyslowfast",
)


def build_r2plus1d_34(num_classes: int | None = None) -> FeatureModel:
    """R(2+1)D-34 as the IG-65M port builds it, random init (no download); num_classes=0 drops the head."""
    from torch import nn
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

    from vidvec.models.base import HeadSwapModel

    n = 400 if num_classes is None else num_classes
    net = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem,
                      num_classes=max(n, 1))
    # Caffe2 sizes the (2+1)D factorisation of a block's second conv from its own planes -> planes shape
    # (planes * planes * 27 / (planes * 9 + 3 * planes) = 2.25 * planes); torchvision reuses the first conv's
    # count, computed from the block's input planes, which differs where the width doubles.
    for layer, planes in ((net.layer2, 128), (net.layer3, 256), (net.layer4, 512)):
        layer[0].conv2[0] = Conv2Plus1D(planes, planes, planes * 9 // 4)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = 1e-3  # Caffe2's spatial BN epsilon, kept by the port
    return HeadSwapModel(net, "fc", keep_head=n > 0)


def _card(name: str, clip_len: int, file_name: str, metrics: dict) -> ModelCard:
    url = f"{_RELEASE}/{file_name}"
    weights = Weights(
        name="IG65M_KINETICS400",
        url=url,
        sha256=hash_prefix(url),  # the port names its files with their sha256 prefix, as torch.hub checks
        license=LICENSE,
        preprocess=PREPROCESS,
        categories=categories.kinetics400(),
        num_params=63697175,
        metrics=metrics,
        source=f"moabitcoin/ig65m-pytorch v1.0.0 release: {file_name} (IG-65M pre-training, Kinetics-400 "
               f"fine-tuning, {clip_len}x112x112 clips), converted from facebookresearch/VMZ's Caffe2 model",
    )
    windows = dict(fps=None, clip_len=clip_len, stride=clip_len)
    return ModelCard(
        name=name,
        family=FAMILY,
        input="video",
        build=build_r2plus1d_34,
        weights=(weights,),
        embed_dim=512,
        sampling=SamplingSpec("windows", **windows),
        latent="global average pool of layer4 (the input of fc), 512-d",
        description=f"R(2+1)D-34 (Tran et al. 2018) pre-trained on IG-65M, fine-tuned on Kinetics-400, "
                    f"{clip_len}-frame 112x112 clips (moabitcoin/ig65m-pytorch port)",
        presets={"video_features": Preset(SamplingSpec("windows", rule="video_features", **windows))},
        channels_last=True,
    )


# Video-level top-1/top-5 on Kinetics-400 validation from VMZ's model zoo (tutorials/model_zoo.md).
@register_model
def r2plus1d_34_8_ig65m_kinetics() -> ModelCard:
    return _card("r2plus1d_34_8_ig65m_kinetics", 8, "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth",
                 {"video@1": 74.9, "video@5": 91.8})


@register_model
def r2plus1d_34_32_ig65m_kinetics() -> ModelCard:
    return _card("r2plus1d_34_32_ig65m_kinetics", 32, "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth",
                 {"video@1": 80.0, "video@5": 94.2})
