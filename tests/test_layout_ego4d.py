"""--layout ego4d: one ``<uid>.pt`` per video as Ego4D's feature tool saves it, read back as its users load it.

Ego4D's ``perform_feature_extraction`` (facebookresearch/Ego4d, ego4d/features/extract_features.py) stacks a video's
window features into one (N, D) tensor and calls ``torch.save(v, f"{out_path}/{uid}.pt")``; its ``_num_fvs`` says
how many windows a video has (32-frame windows every 16 frames, the last one backed up to end at the last frame).
"""

from __future__ import annotations

import av
import pytest
import torch

import vidvec
from vidvec.extraction import ExtractError, SamplingOverrides, prepare

VIDEO = "R6llTwEh07w.mp4"


def _num_fvs(num_frames: int, stride_frames: int = 16, window_size_frames: int = 32) -> int:
    """Ego4D's _num_fvs with backpad_last=True, transcribed."""
    n = num_frames - window_size_frames
    if n < 0:
        return 1
    return n // stride_frames + 1 + (1 if n % stride_frames else 0)


def test_a_video_is_one_float_tensor_with_ego4ds_window_count(tmp_path, shared_dir):
    video = shared_dir / "assets" / "videos" / VIDEO
    (outcome,) = vidvec.extract([video], "Kinetics/X3D_XS", tmp_path, weights="random", layout="ego4d",
                                sampling=SamplingOverrides.preset("ego4d"), num_workers=0)
    assert outcome.status == "done" and outcome.output == tmp_path / "R6llTwEh07w.pt"
    features = torch.load(tmp_path / "R6llTwEh07w.pt")  # as Ego4D's users load them
    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert isinstance(features, torch.Tensor) and features.dtype == torch.float32
    assert features.shape == (_num_fvs(frames), 2048) and torch.isfinite(features).all()


@pytest.mark.parametrize("options, says", [
    ({"sampling": SamplingOverrides(crops=3)}, "--crops 3"),
    ({"top_k": 5}, "--top-k"),
    ({"fmt": "npz"}, "--format"),
    ({"out": None}, "needs --out"),
])
def test_what_the_layout_cannot_hold_is_refused_before_any_work(tmp_path, options, says):
    options = {"out": tmp_path / "out", **options}
    with pytest.raises(ExtractError, match=says):
        prepare([tmp_path], "Kinetics/X3D_XS", weights="random", layout="ego4d", **options)
    assert not (tmp_path / "out").exists()


def test_image_models_take_one_frame_every_6_of_the_30_fps_video(shared_dir):
    """Ego4D's image features (omnivore_image_swinl): window 1, stride 6 frames of the canonical 30 fps video."""
    from vidvec.extraction import SamplingOverrides, prepare
    from vidvec.sampling import plan

    path = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"  # 30 fps
    run = prepare([path], "resnet18", None, weights="random", sampling=SamplingOverrides.preset("ego4d"))
    spec = run.spec.models[0].sampling
    assert (spec.kind, spec.fps, spec.clip_len, spec.stride) == ("windows", 30.0, 1, 6)
    clips = plan(spec, 10.0, 30.0)
    assert len(clips) == 50 and [round(c.times[0] * 30) for c in clips[:3]] == [0, 6, 12]
