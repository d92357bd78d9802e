"""R(2+1)D-34 IG-65M cards: the port's key set, equality with torchvision's VideoResNet built the port's way on
shared random weights, loading a checkpoint in the port's (2019, legacy) format, and video_features'
preprocessing geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

import vidvec.models.ig65m as ig65m
from vidvec import categories
from vidvec.registry import get_card
from vidvec.sampling import SamplingSpec
from vidvec.weights import load_model
from video_features_fixtures import load_reference

DATA = Path(__file__).parent / "data"
FIXTURE = ("fixtures/video_features/tests/r21d/reference/"
           "v_GGSY1Qvo990_r2plus1d_34_8_ig65m_ft_kinetics_None_None_None_r21d.pt")
# moabitcoin/ig65m-pytorch ig65m/models.py model_urls (the Kinetics fine-tuned entries).
UPSTREAM = {
    "r2plus1d_34_8_ig65m_kinetics": (8, "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/"
                                        "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth"),
    "r2plus1d_34_32_ig65m_kinetics": (32, "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/"
                                          "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth"),
}


def port_reference() -> VideoResNet:
    """The network as moabitcoin/ig65m-pytorch builds it (r2plus1d_34 in its models.py), written out here."""
    net = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
    net.fc = nn.Linear(net.fc.in_features, 400)
    net.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
    net.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
    net.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 1e-3
    return net


def randomise_batchnorm(module: nn.Module) -> None:
    """Random BatchNorm affine parameters and statistics measured on random clips (so that activations keep a
    sane scale through 34 layers), so that every BN shapes the output."""
    g = torch.Generator().manual_seed(0)
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm3d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.momentum = None  # running statistics = plain average over the calibration pass
        module.train()
        module(torch.randn(2, 3, 8, 32, 32, generator=g))
        module.eval()


@pytest.fixture(scope="module")
def model_and_state():
    torch.manual_seed(0)
    model = ig65m.build_r2plus1d_34().eval()
    randomise_batchnorm(model)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_keys_and_shapes_are_the_ports(model_and_state) -> None:
    model, _ = model_and_state
    expected = json.loads((DATA / "ig65m_r2plus1d_34_keys.json").read_text())
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == expected["keys"]
    assert sum(p.numel() for p in model.parameters()) == expected["num_params"]
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm3d)} == set(expected["batchnorm_eps"])


def test_matches_torchvision_video_resnet_built_the_ports_way(model_and_state) -> None:
    model, state = model_and_state
    reference = port_reference().eval()
    reference.load_state_dict(state)
    pooled = []
    reference.fc.register_forward_hook(lambda mod, args, out: pooled.append(args[0]))
    torch.manual_seed(1)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        logits = reference(x)
        latent = model(x)
        ours = model.classify(latent)
    assert latent.shape == (1, 512) and ours.shape == (1, 400)
    torch.testing.assert_close(latent, pooled[0])
    torch.testing.assert_close(ours, logits)

    # The Caffe2 eps is visible in the output: torchvision's default 1e-5 would give other vectors.
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 1e-5
    with torch.no_grad():
        assert not torch.allclose(reference(x), logits)


def test_checkpoint_in_the_ports_format_loads(model_and_state, tmp_path: Path) -> None:
    _, state = model_and_state
    # The port saved its .pth files in 2019 with torch.save(model.state_dict()): the legacy (non-zip) format.
    path = tmp_path / "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    loaded = load_model("r2plus1d_34_8_ig65m_kinetics", weights=path)
    assert loaded.weights is None  # same name, other sha256: a user checkpoint, not the published file
    assert len(loaded.categories) == 400 and loaded.categories[0] == "abseiling"
    for key, value in state.items():
        assert torch.equal(loaded.module.state_dict()[key], value), key


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_card(name: str) -> None:
    clip_len, url = UPSTREAM[name]
    card = get_card(name)
    assert card.family == "r2plus1d" and card.input == "video" and card.embed_dim == 512
    (entry,) = card.weights
    assert entry.url == url
    assert entry.sha256 == url.rsplit("-", 1)[1].split(".")[0]  # the sha256 prefix in the file name
    assert entry.categories == categories.kinetics400() and len(entry.categories) == 400
    assert entry.preprocess == ig65m.PREPROCESS
    assert card.sampling == SamplingSpec("windows", fps=None, clip_len=clip_len, stride=clip_len)
    assert card.presets["video_features"].sampling == SamplingSpec("windows", fps=None, clip_len=clip_len, stride=clip_len,
                                                        rule="video_features")


def test_preprocess_reproduces_video_features_r21d_transforms() -> None:
    # video_features models/r21d: frames / 255, interpolate to (128, 171) bilinear (align_corners=False),
    # normalise, CenterCrop((112, 112)) at int(round((h - th) / 2)), int(round((w - tw) / 2)).
    p = ig65m.PREPROCESS
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 240, 320, 3), dtype=np.uint8)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255
    video = F.interpolate(video, size=(128, 171), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.43216, 0.394666, 0.37645]).reshape(-1, 1, 1, 1)
    std = torch.tensor([0.22803, 0.22145, 0.216989]).reshape(-1, 1, 1, 1)
    video = (video - mean) / std
    top, left = int(round((128 - 112) / 2.0)), int(round((171 - 112) / 2.0))
    expected = video[..., top:top + 112, left:left + 112]

    resized = p.resize_frames(frames)
    assert resized.shape == (2, 128, 171, 3)
    (crop,) = p.crop_frames(resized)
    ours = p.normalize(torch.from_numpy(crop)[None])[0]
    assert ours.shape == expected.shape == (3, 2, 112, 112)
    # vidvec rounds the resized frame to uint8 (workers ship uint8): at most half a grey level apart.
    assert (ours - expected).abs().max().item() <= 0.5 / 255 / 0.216989 + 1e-5


def test_video_features_vectors_are_the_pooled_layer4(shared_dir: Path) -> None:
    """video_features' r2plus1d_34_8_ig65m_ft_kinetics output on this video (real weights): 512-d rows, all >= 0
    with exact zeros, as the average of post-ReLU layer4 maps (the input of fc) must be."""

    data = load_reference(shared_dir / FIXTURE)
    assert data.shape == (355 // 8, get_card("r2plus1d_34_8_ig65m_kinetics").embed_dim)
    assert data.min() == 0 and (data > 0).mean() > 0.5
