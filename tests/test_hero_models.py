"""``--preset hero`` for HERO's ResNet-152 and MIL-NCE S3D extractors, and the SlowFast one's pixels.

HERO's extractors (linjieli222/HERO_Video_Feature_Extractor) probe each video with ffprobe and decode it with the
ffmpeg command line; their loading code is transcribed below (resnets/video_loader.py, mil-nce/video_loader.py,
mil-nce/preprocessing.py, resnets/extract.py) and run with the real ffmpeg and ffprobe on the shared videos, so
vidvec's frames are compared with what HERO's own pipeline decodes, pixel for pixel.
"""

from __future__ import annotations

import json
import math
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import torch

import vidvec
from media import make_video
from test_hero_preset import hero_reference
from vidvec.clips import Clip, ClipGroup, Slot, video_events
from vidvec.extraction import ExtractError, SamplingOverrides, prepare

VIDEOS = ["R6llTwEh07w.mp4", "RATRACE_wave_f_nm_np1_fr_goo_37.avi", "SOX5yA1l24A.mp4",
          "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi", "TrumanShow_wave_f_nm_np1_fr_med_26.avi",
          "WUzgd7C1pWA.mp4", "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", "v_GGSY1Qvo990.mp4",
          "v_SoccerJuggling_g23_c01.avi", "v_SoccerJuggling_g24_c01.avi", "v_ZNVhz7ctTq0.mp4"]


# -- HERO's loading code, transcribed -----------------------------------------------------------------------

def hero_probe(path) -> dict:
    """VideoLoader._get_video_info: ffprobe's first video stream; fps floored; nb_frames and duration together
    or both -1."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    stream = next(s for s in json.loads(out)["streams"] if s["codec_type"] == "video")
    try:
        frames_length, duration = int(stream["nb_frames"]), float(stream["duration"])
    except (KeyError, ValueError):
        frames_length, duration = -1, -1
    return {"duration": duration, "frames_length": frames_length, "fps": math.floor(Fraction(stream["avg_frame_rate"])),
            "height": int(stream["height"]), "width": int(stream["width"])}


def hero_decode(path, framerate: float, centercrop: bool, short_video_rule: bool) -> np.ndarray:
    """VideoLoader.__getitem__ (size 224): ``ffmpeg -i VIDEO -vf fps=R,scale=W:H[,crop]`` to raw rgb24. The ResNet
    loader reads a video shorter than 1 / R + 0.1 s at 2 / max(int(duration), 1) fps."""
    info = hero_probe(path)
    h, w = info["height"], info["width"]
    height, width = (int(h * 224 / w), 224) if h >= w else (224, int(w * 224 / h))
    fps = framerate
    if short_video_rule and 0 < info["duration"] < 1 / fps + 0.1:
        fps = 2 / max(int(info["duration"]), 1)
    chain = f"fps=fps={fps},scale={width}:{height}"  # ffmpeg-python's .filter() writes floats with str()
    if centercrop:
        chain += f",crop=224:224:{int((width - 224) / 2.0)}:{int((height - 224) / 2.0)}"
        height, width = 224, 224
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", chain, "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "pipe:"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def hero_resnet_features(frames: np.ndarray, trunk: torch.nn.Module) -> np.ndarray:
    """resnets/extract.py: frames / 255, ImageNet normalisation (std + 1e-8), the trunk's 2048-d (here 512-d)
    pool, F.normalize, float16."""
    x = torch.from_numpy(frames.astype("float32")).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = trunk((x - mean) / (std + 1e-8))
    return torch.nn.functional.normalize(out, dim=1).numpy().astype("float16")


def assert_same_pixels(name: str, mine: np.ndarray, reference: np.ndarray) -> None:
    """Bit for bit, except where the two FFmpeg builds decode differently: Debian's ffmpeg 5.1 (the command
    line HERO runs) and PyAV's FFmpeg 8 decode UCF-101's Xvid AVIs a few levels apart on a few pixels in a
    thousand, before any scaling."""
    mine = mine.reshape(reference.shape)
    if name not in DECODERS_DIFFER:
        assert mine.tobytes() == reference.tobytes()
        return
    diff = np.abs(mine.astype(int) - reference.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3


DECODERS_DIFFER = {"v_SoccerJuggling_g23_c01.avi", "v_SoccerJuggling_g24_c01.avi"}


# -- vidvec's side -------------------------------------------------------------------------------------------

def vidvec_pixels(path, model: str, **explicit) -> list[np.ndarray]:
    """The uint8 pixels of each clip vidvec feeds ``model`` under --preset hero (clip order)."""
    run = prepare([path], model, None, weights="random", sampling=SamplingOverrides.preset("hero", **explicit),
                  num_workers=0)
    spec = run.spec.models[0]
    pixels = []
    for event in video_events(0, run.sources[0], [Slot(spec.sampling, spec.preprocess)]):
        clips = event.unpack() if isinstance(event, ClipGroup) else [event] if isinstance(event, Clip) else []
        pixels.extend(clip.pixels.numpy() for clip in clips)
    return pixels


@pytest.mark.parametrize("model, name", [("resnet152", name) for name in VIDEOS] + [
    ("clip_vit_b32", name) for name in ("R6llTwEh07w.mp4", "TrumanShow_wave_f_nm_np1_fr_med_26.avi")])
def test_frame_models_get_heros_frames_bit_for_bit(model, name, shared_dir):
    """HERO's ResNet loader (whole frames) and its CLIP loader (the same frames, cropped to the model's size)."""
    path = shared_dir / "assets" / "videos" / name
    expected = hero_decode(path, 1 / 1.5, centercrop=model.startswith("clip"), short_video_rule=True)
    mine = vidvec_pixels(path, model)
    assert len(mine) == len(expected) > 0
    for frame, reference in zip(mine, expected):
        assert_same_pixels(name, frame, reference)


@pytest.mark.parametrize("name", VIDEOS)
def test_mil_nce_s3d_clips_are_heros_bit_for_bit(name, shared_dir):
    path = shared_dir / "assets" / "videos" / name
    frames = hero_decode(path, 30, centercrop=True, short_video_rule=False)
    info = hero_probe(path)
    clips = hero_reference(list(range(len(frames))), "3/2", info["fps"], info["duration"])
    mine = vidvec_pixels(path, "s3d_howto100m")
    assert len(mine) == len(clips) > 0
    for pixels, indices in zip(mine, clips):
        assert_same_pixels(name, pixels, frames[indices])


def test_two_second_chunks_and_a_short_video(tmp_path, shared_dir):
    path = shared_dir / "assets" / "videos" / "v_ZNVhz7ctTq0.mp4"
    expected = hero_decode(path, 1 / 2, centercrop=False, short_video_rule=True)  # --clip_len 2
    mine = vidvec_pixels(path, "resnet152", stride_seconds=2.0)
    assert len(mine) == len(expected) and all(
        a.reshape(b.shape).tobytes() == b.tobytes() for a, b in zip(mine, expected))
    short = make_video(tmp_path / "short.mp4", frames=36, fps=30, size=(64, 48))  # 1.2 s: read at 2 fps
    expected = hero_decode(short, 1 / 1.5, centercrop=False, short_video_rule=True)
    mine = vidvec_pixels(short, "resnet152")
    assert len(mine) == len(expected) == 2  # 1.2 s at 2 fps; at 1 / 1.5 fps it would be one frame
    assert all(a.reshape(b.shape).tobytes() == b.tobytes() for a, b in zip(mine, expected))


def test_resnet_features_are_heros(tmp_path, shared_dir):
    """The same weights through HERO's pipeline and through vidvec's --preset hero --layout hero (whose
    BatchNorms are folded, hence a float16 tolerance) give the same L2-normalised float16 rows."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(weights=None).eval()
    for module in net.modules():  # trained-looking statistics, so that folding them is a real change
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    trunk = torch.nn.Sequential(*list(net.children())[:-2], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = shared_dir / "assets" / "videos" / "WUzgd7C1pWA.mp4"
    (outcome,) = vidvec.extract([path], "resnet18", tmp_path / "resnet_features", weights=tmp_path / "resnet18.pth",
                                layout="hero", sampling=SamplingOverrides.preset("hero"), num_workers=0)
    assert outcome.status == "done"
    stored = np.load(outcome.output)["features"]
    expected = hero_resnet_features(hero_decode(path, 1 / 1.5, False, True), trunk)
    assert stored.dtype == np.float16 and stored.shape == expected.shape == (7, 512)
    np.testing.assert_allclose(np.linalg.norm(stored.astype(np.float32), axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(stored.astype(np.float32), expected.astype(np.float32), atol=2e-3)


def test_mil_nce_s3d_stores_mixed_5c_under_the_preset(tmp_path, shared_dir):
    path = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    run = prepare([path], "s3d_howto100m", tmp_path / "o", weights="random", layout="hero",
                  sampling=SamplingOverrides.preset("hero"), num_workers=0)
    assert run.targets[0].settings["model_options"] == {"output": "mixed_5c"}
    assert run.spec.models[0].preprocess.resize_backend == "ffmpeg"
    (outcome,) = list(run)
    assert outcome.status == "done" and outcome.features.shape == (7, 1024)
    # Without the preset the same model gives its 512-d joint embedding; a user option wins over the preset's.
    assert prepare([path], "s3d_howto100m", None, weights="random", model_options={"output": "video_embedding"},
                   sampling=SamplingOverrides.preset("hero")).spec.models[0].options == (("output", "video_embedding"),)
    with pytest.raises(ExtractError, match="output must be one of video_embedding, mixed_5c"):
        prepare([path], "s3d_howto100m", None, weights="random", model_options={"output": "fc"})


def test_normalize_l2_divides_each_vector_and_keeps_the_logits(tmp_path, shared_dir):
    path = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    torch.manual_seed(0)
    plain, = vidvec.extract([path], "efficientnet_lite0", None, weights="random", logits=True,
                            sampling=SamplingOverrides(fps=1.0), num_workers=0)
    torch.manual_seed(0)
    unit, = vidvec.extract([path], "efficientnet_lite0", None, weights="random", logits=True, normalize="l2",
                           sampling=SamplingOverrides(fps=1.0), num_workers=0)
    norms = np.linalg.norm(plain.features, axis=1, keepdims=True)
    np.testing.assert_allclose(unit.features, plain.features / norms, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unit.result.arrays["logits"], plain.result.arrays["logits"], rtol=1e-5, atol=1e-5)
    settings = prepare([path], "efficientnet_lite0", tmp_path / "o", normalize="l2").targets[0].settings
    assert settings["normalize"] == "l2"
    assert "normalize" not in prepare([path], "efficientnet_lite0", tmp_path / "p").targets[0].settings
    with pytest.raises(ExtractError, match="--normalize must be none or l2, not 'l1'"):
        prepare([path], "efficientnet_lite0", None, normalize="l1")


def test_resnet_preset_is_l2_normalised_frames_unless_told(shared_dir):
    path = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    spec = prepare([path], "resnet152", None, weights="random", sampling=SamplingOverrides.preset("hero")).spec
    (model,) = spec.models
    assert (model.sampling.kind, model.sampling.rule, model.sampling.stride_seconds) == ("frames", "hero", 1.5)
    assert model.normalize == "l2" and model.preprocess.crop is None and model.preprocess.resize == (224,)
    assert "1.5 s through ffmpeg's fps filter" in model.sampling.describe()
    raw = prepare([path], "resnet152", None, weights="random", normalize="none",
                  sampling=SamplingOverrides.preset("hero")).spec.models[0]
    assert raw.normalize == "none"  # --normalize none: HERO's --l2_normalize 0
    with pytest.raises(ExtractError, match="one frame per stride_seconds"):
        prepare([path], "resnet152", None, weights="random", sampling=SamplingOverrides.preset("hero", fps=1.0))


def test_hero_cli(tmp_path, shared_dir):
    """The command a HERO user runs: its CSV as the manifest, ResNet-152's preset and layout."""
    from typer.testing import CliRunner

    from vidvec.cli import app

    video = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    csv = tmp_path / "resnet_info.csv"
    csv.write_text(f"video_path,feature_path\n{video},R6llTwEh07w.npz\n")
    result = CliRunner().invoke(app, ["extract", "--manifest", str(csv), "-m", "resnet18", "--weights", "random",
                                      "--preset", "hero", "--layout", "hero", "--stride", "2s",
                                      "--out", str(tmp_path / "feats"), "-q"])
    assert result.exit_code == 0, result.output
    features = np.load(tmp_path / "feats" / "R6llTwEh07w.npz")["features"]
    assert features.dtype == np.float16 and features.shape == (5, 512)  # 10.1 s, one frame per 2 s
    np.testing.assert_allclose(np.linalg.norm(features.astype(np.float32), axis=1), 1.0, atol=2e-3)

