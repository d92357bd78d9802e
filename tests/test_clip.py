"""CLIP cards (open_clip, OpenAI weights): metadata against open_clip's own registry, numeric equality with
open_clip's model on shared random weights, the published key set, offline tokenisation and safetensors loading.

Only ViT-B/32 is built (twice: vidvec's and open_clip's); the larger cards are checked on metadata alone."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import av
import numpy as np
import open_clip
import pytest
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME
from safetensors.torch import save_file

import vidvec
import vidvec.models.clip as clip_models
from vidvec.extraction import SamplingOverrides
from vidvec.models.clip_net import ClipModel
from vidvec.registry import get_card
from vidvec.sampling import SamplingSpec
from vidvec.weights import WeightsError, _load_checkpoint_into, load_model
from video_features_fixtures import load_reference

DATA = Path(__file__).parent / "data"
CARDS = {"clip_vit_b32": "ViT-B-32-quickgelu", "clip_vit_b16": "ViT-B-16-quickgelu",
         "clip_vit_l14": "ViT-L-14-quickgelu", "clip_rn50x4": "RN50x4-quickgelu"}
TEXTS = ["a dog", "a person juggling a soccer ball"]
FIXTURE = "fixtures/video_features/tests/clip/reference/v_GGSY1Qvo990_ViT-B_32_1_None_clip.pt"


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """open_clip's own ViT-B/32 (the architecture of the OpenAI weights), random init."""
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()


@pytest.fixture(scope="module")
def model(reference: torch.nn.Module) -> ClipModel:
    """vidvec's clip_vit_b32 holding the reference's weights."""
    net = get_card("clip_vit_b32").build()
    net.clip.load_state_dict(reference.state_dict())
    return net.eval()


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_follows_open_clip_openai_config(name: str) -> None:
    card = get_card(name)
    arch = CARDS[name]
    assert card.text and card.build.args == (arch,)
    config = open_clip.get_model_config(arch)
    # The OpenAI weights were trained with QuickGELU; the architecture must use it too.
    assert config["quick_gelu"] is True
    assert card.family == "clip" and card.input == "image"
    assert card.embed_dim == config["embed_dim"]

    (entry,) = card.weights
    pretrained = open_clip.get_pretrained_cfg(arch, "openai")
    assert pretrained["quick_gelu"] is True
    repo = pretrained["hf_hub"].rstrip("/")
    assert entry.url == f"https://huggingface.co/{repo}/resolve/main/{HF_SAFE_WEIGHTS_NAME}"
    assert pretrained["url"] in entry.source  # OpenAI's own TorchScript file, named by its sha256
    assert entry.file_name == f"{name}-openai.safetensors"  # every mirror file has the same name
    assert entry.sha256 is None and entry.categories is None

    size = config["vision_cfg"]["image_size"]
    p = entry.preprocess
    assert pretrained["resize_mode"] == "shortest" and p.resize == (size,)
    assert p.crop == (size, size)
    assert p.interpolation == pretrained["interpolation"] == "bicubic"
    assert p.mean == pytest.approx(pretrained["mean"]) and p.std == pytest.approx(pretrained["std"])

    assert card.sampling == SamplingSpec("frames", fps=None)
    assert card.presets["video_features"].sampling == SamplingSpec("frames", fps=None, rule="video_features")


def test_rn50x4_sees_288_pixel_frames() -> None:
    assert get_card("clip_rn50x4").default_weights.preprocess.crop == (288, 288)


def test_state_dict_has_published_keys_and_shapes(model: ClipModel) -> None:
    expected = json.loads((DATA / "clip_vit_b32_keys.json").read_text())["keys"]
    assert [[k, list(v.shape)] for k, v in model.clip.state_dict().items()] == expected


def test_image_vector_is_open_clips_unnormalised_encode_image(model, reference) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model(x)
        theirs = reference.encode_image(x)
    assert ours.shape == (2, 512)
    torch.testing.assert_close(ours, theirs)
    # video_features stores encode_image as it comes, not L2-normalised.
    assert not torch.allclose(ours.norm(dim=1), torch.ones(2))
    assert model.classify(ours) is None


def test_text_vectors_match_open_clip(model, reference) -> None:
    assert model.has_text
    with torch.no_grad():
        ours = model.encode_text(TEXTS)
        theirs = reference.encode_text(open_clip.tokenize(TEXTS))
    assert ours.shape == (2, 512)
    torch.testing.assert_close(ours, theirs)


def test_tokenizer_works_without_network(model, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(model, "_tokenizer", None)  # built afresh, under the blocked network
    with torch.no_grad():
        vectors = model.encode_text(TEXTS)
    assert vectors.shape == (2, 512)
    tokens = model._tokenizer(["a dog"])
    assert tokens.shape == (1, 77)
    assert tokens[0, 0].item() == 49406 and 49407 in tokens[0].tolist()  # OpenAI's start/end of text


def test_build_refuses_a_classifier() -> None:
    with pytest.raises(ValueError, match="no classifier"):
        clip_models.build_clip("ViT-B-32-quickgelu", num_classes=400)


@pytest.mark.slow
def test_safetensors_checkpoint_loads_through_load_model(reference, tmp_path: Path) -> None:
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    loaded = load_model("clip_vit_b32", weights=path)
    assert loaded.weights is None and loaded.weights_path == path
    assert loaded.categories is None
    assert loaded.preprocess == get_card("clip_vit_b32").default_weights.preprocess
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.module.clip.state_dict()[key], value), key



@pytest.mark.slow
def test_the_image_tower_alone_gives_the_same_vectors(reference, tmp_path: Path) -> None:
    """What a run loads (text=False): open_clip's image tower without the text tower, the checkpoint's image
    keys strictly (a missing one is an error), the same vectors; encode_text refuses in one line."""
    path = tmp_path / "open_clip_model.safetensors"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(path))
    alone = load_model("clip_vit_b32", weights=path, text=False).module
    assert not alone.has_text
    assert sorted(alone.clip.state_dict()) == sorted(k for k in state if k.startswith("visual."))
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(alone(images), reference.encode_image(images))
    with pytest.raises(ValueError, match="built without its text tower"):
        alone.encode_text(["a dog"])
    assert load_model("clip_vit_b32", weights="random", text=False).module(images).shape == (2, 512)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if k != "visual.proj"}, str(partial))
    with pytest.raises(WeightsError, match="1 missing: visual.proj"):
        load_model("clip_vit_b32", weights=partial, text=False)


def test_a_run_builds_the_image_tower_alone(shared_dir: Path, tmp_path: Path) -> None:
    run = vidvec.prepare([shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"], "clip_vit_b32", tmp_path / "out",
                         weights="random", sampling=SamplingOverrides(fps=0.5))
    assert [o.status for o in run] == ["done"]
    assert run.targets[0].model.module.has_text is False


def test_bad_checkpoints_give_one_clear_error(model, reference, tmp_path: Path) -> None:
    # What load_model runs after building (the card's reader and loader), without building again.
    card = get_card("clip_vit_b32")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="broken.safetensors"):
        _load_checkpoint_into(card, model, broken)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items() if k != "logit_scale"}, str(partial))
    with pytest.raises(WeightsError, match="1 missing: logit_scale"):
        _load_checkpoint_into(card, model, partial)


@pytest.mark.parametrize("video", ["v_ZNVhz7ctTq0.mp4", "R6llTwEh07w.mp4"])
def test_frames_are_resized_like_open_clips_own_preprocessing(shared_dir: Path, video: str) -> None:
    # open_clip's eval transform for these weights: torchvision's Resize(224, bicubic) on PIL frames (the long
    # side truncated: 340x256 gives 297x224) and CenterCrop (offset rounded). vidvec resizes in the decoder with
    # swscale's bicubic, which widens its filter when shrinking as PIL does: within ~1 level of open_clip's
    # pixels (swscale's bilinear was 1.4-1.7 levels off, and a rounded long side 3-4 levels).
    from vidvec.clips import Slot, video_events
    from vidvec.sources import collect_sources

    preprocess = get_card("clip_vit_b32").default_weights.preprocess
    transform = open_clip.image_transform(224, is_train=False, mean=preprocess.mean, std=preprocess.std)
    path = shared_dir / "assets" / "videos" / video
    slot = Slot(SamplingSpec("frames", fps=1.0), preprocess)
    clips = [e for e in video_events(0, collect_sources([path])[0], [slot]) if hasattr(e, "pixels")]
    ours = preprocess.normalize(torch.stack([c.pixels for c in clips]), video=False)
    with av.open(str(path)) as container:
        frames = {round(f.time, 3): f.to_image() for f in container.decode(video=0)}
    theirs = torch.stack([transform(frames[max(t for t in frames if t <= c.start + 1e-6)]) for c in clips])
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    levels = ((ours - theirs) * std * 255).abs()
    assert ours.shape == theirs.shape == (len(clips), 3, 224, 224) and len(clips) >= 10
    assert levels.mean() < 1.2, f"{levels.mean():.2f} levels from open_clip's preprocessing"


def test_video_features_stores_unnormalised_vectors(shared_dir: Path) -> None:
    """video_features' CLIP ViT-B/32 output on this video (real weights): 512-d rows whose norms are about 10, so
    it stores encode_image unnormalised, as vidvec does. (Its values are all float16: it ran CLIP in half
    precision on the GPU.)"""

    data = load_reference(shared_dir / FIXTURE)
    assert data.shape == (355, get_card("clip_vit_b32").embed_dim)
    norms = np.linalg.norm(data, axis=1)
    assert norms.min() > 5 and norms.max() < 20
