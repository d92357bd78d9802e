"""The fast paths keep the vectors faithful: on clips of the shared videos, every family's models give vectors
within cosine 0.999 of the plain path (the module as loaded, contiguous fp32) with their BatchNorms folded into the
convolutions and, where the card says so, channels-last; bfloat16 runs on every kind of network and stays within
that bound too."""

from __future__ import annotations

import pytest
import torch

from vidvec.clips import Clip, Slot, video_events
from vidvec.registry import get_card, list_models
from vidvec.runner import ModelOptions, ModelRunner
from vidvec.sources import VideoSource
from vidvec.weights import load_model

# One model per family (and per kind of network in a family) that takes the channels-last path, and the networks
# with BatchNorms that do not.
FAMILIES = ["efficientnet_lite0", "resnet18", "r3d_18", "r2plus1d_18", "s3d_kinetics400", "s3d",
            "r2plus1d_34_8_ig65m_kinetics", "Kinetics/X3D_XS", "Kinetics/c2/SLOWFAST_8x8_R50", "Kinetics/C2D_8x8_R50",
            "clip_rn50x4", "vggish"]
FOLD_ONLY = ["i3d"]  # its RGB stream: RAFT flow takes minutes per clip on a CPU
QUICK_GELU = ["clip_vit_b32"]  # no BatchNorm, no channels-last: its QuickGELUs become SiLUs


def test_the_representatives_cover_every_family_that_takes_the_path():
    chosen = {get_card(name).family for name in FAMILIES}
    taking = {get_card(name).family for name in list_models() if get_card(name).channels_last}
    assert chosen == taking


def _clips(card, shared_dir, count):
    video = shared_dir / "assets" / "videos" / ("v_GGSY1Qvo990.mp4" if card.input == "audio" else "R6llTwEh07w.mp4")
    preprocess = card.preprocess_for(None)
    slot = Slot(card.sampling, preprocess, card.input == "audio")
    clips = [e for e in video_events(0, VideoSource(video, "v"), [slot]) if isinstance(e, Clip)]
    assert clips
    return clips[:count]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES + FOLD_ONLY + QUICK_GELU)
def test_fast_path_vectors_are_within_cosine_0999_of_the_plain_path(name, shared_dir):
    card = get_card(name)
    assert card.channels_last == (name in FAMILIES)
    weights = None if name == "efficientnet_lite0" else "random"  # the only real weights on hand offline

    def latents(fast_paths: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = load_model(name, weights=weights, build_options={"streams": "rgb"} if name == "i3d" else None)
        if weights == "random":
            _random_statistics(model.module)
        norms = _norms(model.module)
        runner = ModelRunner([model], ModelOptions(batch_size=2, fast_paths=fast_paths))
        if fast_paths and norms:  # most are folded (not those after a pooling or a sum)
            assert _norms(model.module) < norms / 2
        if fast_paths and name in QUICK_GELU:
            assert not [m for m in model.module.modules() if type(m).__name__ == "QuickGELU"]
        latent, _, _ = runner.forward(0, _clips(card, shared_dir, 2))
        return torch.from_numpy(latent)

    fast, plain = latents(True), latents(False)
    cosine = torch.nn.functional.cosine_similarity(fast.double(), plain.double(), dim=1)
    assert cosine.min().item() >= 0.999, cosine


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Kinetics/X3D_XS", "s3d_kinetics400", "resnet18"])
def test_bfloat16_runs_every_model_and_stays_close(name, shared_dir):
    # A bf16 model has no CPU kernel for 3-D average pooling (PySlowFast, S3D): the runner's autocast covers it.
    card = get_card(name)

    def latents(dtype: str) -> torch.Tensor:
        torch.manual_seed(0)
        model = load_model(name, weights="random", dtype=getattr(torch, dtype))
        runner = ModelRunner([model], ModelOptions(batch_size=2, dtype=dtype))
        latent, _, _ = runner.forward(0, _clips(card, shared_dir, 2))
        return torch.from_numpy(latent)

    cosine = torch.nn.functional.cosine_similarity(latents("bfloat16").double(), latents("float32").double(), dim=1)
    assert cosine.min().item() >= 0.999, cosine


def _norms(module: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _random_statistics(module: torch.nn.Module) -> None:
    """Random weights leave BatchNorms at identity statistics, which would make folding trivially exact: give them
    trained-looking ones."""
    generator = torch.Generator().manual_seed(1)
    for norm in module.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None:
            norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=generator) * 0.1)
            norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)
            if norm.weight is not None:
                norm.weight.data.copy_(torch.rand(norm.weight.shape, generator=generator) + 0.5)
                norm.bias.data.copy_(torch.randn(norm.bias.shape, generator=generator) * 0.1)
