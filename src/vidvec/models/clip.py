"""OpenAI CLIP (Radford et al. 2021) through open_clip: one image embedding per sampled frame, plus text.

Cards ``clip_vit_b32``, ``clip_vit_b16``, ``clip_vit_l14`` and ``clip_rn50x4`` build open_clip's
``<arch>-quickgelu`` architectures (the OpenAI weights were trained with QuickGELU; open_clip's 'openai'
pretrained configs say ``quick_gelu=True``) and load OpenAI's weights as open_clip serves them: the Hugging Face
mirror ``timm/<model>.openai``, file ``open_clip_model.safetensors``, read with ``safetensors`` (no pickle).

Preprocessing (open_clip's image config for these weights, which is also OpenAI's and video_features'): the short
side resized to 224 (``clip_rn50x4``: 288) with bicubic interpolation, a centre crop of 224x224 (288x288), pixels
/ 255 normalised with OpenAI's mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258,
0.27577711), RGB.

Vector: ``encode_image``, the image tower's output projected into the joint image-text space (512-d for ViT-B/32
and ViT-B/16, 768-d for ViT-L/14, 640-d for RN50x4), NOT L2-normalised, as v-iashin/video_features' CLIP extractor
stores it (it normalises only to print zero-shot predictions). ``encode_text`` gives sentences' vectors in the same
space, also unnormalised: normalise both before comparing with cosine similarity. There is no classifier.

This module is the cards and their checkpoint hooks (no torch at import); ``build_clip`` imports open_clip and
the wrapper in ``clip_net``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vidvec.checkpoints import load_into, load_state_dict
from vidvec.presets import HERO_FRAMES, HERO_PIXELS, Preset
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

if TYPE_CHECKING:
    from torch import Tensor, nn

    from vidvec.models.clip_net import ClipModel

FAMILY = "clip"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LICENSE = "MIT (openai/CLIP); OpenAI's model card scopes the models to research use"
FRAMES_NATIVE = SamplingSpec("frames", fps=None)
# video_features' default for frame-wise models: every frame at the video's own rate.
VIDEO_FEATURES_FRAMES = Preset(SamplingSpec("frames", fps=None, rule="video_features"))

# open_clip looks for this file first in an hf_hub entry that names only a repo ('timm/....openai/').
_HF_FILE = "open_clip_model.safetensors"
_OPENAI_MODELS = "https://openaipublic.azureedge.net/clip/models"


@contextmanager
def _no_random_init_warning():
    # create_model(pretrained=None) warns on the root logger that the model is randomly initialised; vidvec
    # always builds that way and loads the weights afterwards, so the warning would mislead.
    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def build_clip(arch: str, num_classes: int | None = None, text: bool = True) -> ClipModel:
    """open_clip's ``arch`` with random init (no download), wrapped as a feature model; ``text=False``: the image
    tower alone (open_clip's own ``_build_vision_tower``, as its CLIP builds it)."""
    if num_classes:
        raise ValueError(f"CLIP ({arch}) has no classifier; it cannot be built with {num_classes} classes")
    import open_clip

    from vidvec.models.clip_net import ClipModel, ImageTower

    if not text:
        from open_clip.model import _build_vision_tower

        config = open_clip.get_model_config(arch)
        return ClipModel(ImageTower(_build_vision_tower(config["embed_dim"], config["vision_cfg"],
                                                        config.get("quick_gelu", False))), arch)
    with _no_random_init_warning():
        clip = open_clip.create_model(arch, pretrained=None)
    return ClipModel(clip, arch)


def read_checkpoint(path: Path) -> Mapping[str, Tensor]:
    """The state_dict of a CLIP checkpoint: ``.safetensors`` (open_clip's Hugging Face files) read without any
    pickle; other files (e.g. ``open_clip_pytorch_model.bin``) with ``torch.load(weights_only=True)``."""
    if Path(path).suffix != ".safetensors":
        return load_state_dict(path)
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def load_state(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Strict loading into the open_clip model (checkpoints carry open_clip's key names, without 'clip.'); a model
    built without its text tower takes the image tower's keys (``visual.``), all of them."""
    if not module.has_text:
        state = {key: value for key, value in state.items() if key.startswith("visual.")}
    load_into(module.clip, state, source)


def _openai_weights(hf_repo: str, openai_file: str, cache_name: str, image_size: int, num_params: int,
                    metrics: dict) -> Weights:
    openai_url = f"{_OPENAI_MODELS}/{openai_file}"
    return Weights(
        name="OPENAI",
        url=f"https://huggingface.co/{hf_repo}/resolve/main/{_HF_FILE}",
        sha256=None,  # not published for the safetensors mirror: recorded on first download
        license=LICENSE,
        preprocess=Preprocess(resize=(image_size,), crop=(image_size, image_size), mean=OPENAI_MEAN,
                              std=OPENAI_STD, interpolation="bicubic", geometry="torchvision"),
        categories=None,
        num_params=num_params,
        metrics=metrics,
        source=(f"OpenAI CLIP weights as open_clip's 'openai' tag serves them (Hugging Face {hf_repo}, "
                f"{_HF_FILE}); OpenAI's original TorchScript file is {openai_url} (the folder name is its sha256)"),
        cache_name=cache_name,
    )


def _card(name: str, arch: str, hf_repo: str, openai_file: str, embed_dim: int, image_size: int,
          num_params: int, metrics: dict, description: str) -> ModelCard:
    # The ResNet tower's convolutions gain from channels-last; the ViTs' single patch convolution does not.
    weights = _openai_weights(hf_repo, openai_file, f"{name}-openai.safetensors", image_size, num_params, metrics)
    return ModelCard(
        name=name,
        family=FAMILY,
        input="image",
        build=partial(build_clip, arch),
        weights=(weights,),
        embed_dim=embed_dim,
        sampling=FRAMES_NATIVE,
        latent=f"encode_image: the image tower's output after the projection into the joint image-text space "
               f"(not L2-normalised), {embed_dim}-d",
        description=description,
        read_checkpoint=read_checkpoint,
        load_state=load_state,
        # HERO's CLIP features (clip/extract.py): its ResNet frames, the short side scaled to the model's size
        # and a centre crop of it, encode_image as it is (no L2 normalisation), stored in float16.
        presets={"video_features": VIDEO_FEATURES_FRAMES,
                 "hero": Preset(HERO_FRAMES.sampling, pixels={**HERO_PIXELS, "resize": (image_size,),
                                                              "crop": (image_size, image_size)})},
        text=True,
        channels_last=arch.startswith("RN"),
    )


# ImageNet zero-shot top-1 of the OpenAI weights as open_clip's README states it (its own evaluation; the CLIP
# paper gives 68.6 for ViT-B/16 and 75.3 for ViT-L/14). The README gives none for RN50x4.
@register_model
def clip_vit_b32() -> ModelCard:
    return _card("clip_vit_b32", "ViT-B-32-quickgelu", "timm/vit_base_patch32_clip_224.openai",
                 "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", 512, 224,
                 151277313, {"imagenet_zeroshot_acc@1": 63.2},
                 "CLIP ViT-B/32 (OpenAI), image and text towers, 224x224 frames")


@register_model
def clip_vit_b16() -> ModelCard:
    return _card("clip_vit_b16", "ViT-B-16-quickgelu", "timm/vit_base_patch16_clip_224.openai",
                 "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt", 512, 224,
                 149620737, {"imagenet_zeroshot_acc@1": 68.3},
                 "CLIP ViT-B/16 (OpenAI), image and text towers, 224x224 frames")


@register_model
def clip_vit_l14() -> ModelCard:
    return _card("clip_vit_l14", "ViT-L-14-quickgelu", "timm/vit_large_patch14_clip_224.openai",
                 "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt", 768, 224,
                 427616513, {"imagenet_zeroshot_acc@1": 75.5},
                 "CLIP ViT-L/14 (OpenAI), image and text towers, 224x224 frames")


@register_model
def clip_rn50x4() -> ModelCard:
    return _card("clip_rn50x4", "RN50x4-quickgelu", "timm/resnet50x4_clip.openai",
                 "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt", 640, 288,
                 178300601, {},
                 "CLIP RN50x4 (OpenAI; ResNet-50 at 4x compute with attention pooling), image and text towers, "
                 "288x288 frames")
