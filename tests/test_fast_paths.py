"""The CPU's fast paths keep the vectors faithful: every model whose card lays its convolutions out channels-last
gives, on clips of the shared videos, vectors within cosine 0.999 of the plain (contiguous fp32) path; bfloat16
runs on every kind of network and stays within that bound too."""

from __future__ import annotations

import pytest
import torch

from vidvec.clips import Clip, Slot, video_events
from vidvec.registry import get_card, list_models
from vidvec.runner import ModelOptions, ModelRunner
from vidvec.sources import VideoSource
from vidvec.weights import load_model

# One model per family (and per kind of network in a family) that takes the channels-last path.
FAMILIES = ["efficientnet_lite0", "resnet18", "r3d_18", "r2plus1d_18", "s3d_kinetics400", "s3d",
            "r2plus1d_34_8_ig65m_kinetics", "Kinetics/X3D_XS", "Kinetics/c2/SLOWFAST_8x8_R50", "Kinetics/C2D_8x8_R50",
            "clip_rn50x4", "vggish"]


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
@pytest.mark.parametrize("name", FAMILIES)
def test_channels_last_vectors_are_within_cosine_0999_of_the_plain_path(name, shared_dir):
    card = get_card(name)
    assert card.channels_last
    weights = None if name == "efficientnet_lite0" else "random"  # the only real weights on hand offline

    def latents(channels_last: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = load_model(name, weights=weights)
        runner = ModelRunner([model], ModelOptions(batch_size=2, channels_last=channels_last))
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
