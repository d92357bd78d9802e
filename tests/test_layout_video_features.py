"""--layout video_features: v-iashin/video_features' own files, read back as its code reads them.

Its BaseExtractor saves each key of a video's feature dict to ``make_path(output_path, video, key, ".npy")`` =
``<output_path>/<stem>_<key>.npy`` with ``np.save`` (utils/utils.py), and ``is_already_exist`` counts a video done
when every key of ``output_feat_keys`` ({feature_type, "fps", "timestamps_ms"}) loads with ``np.load``; the
reference files in shared/fixtures/video_features hold what it computed on v_GGSY1Qvo990 (CLIP ViT-B/32 at 5 fps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from video_features_fixtures import load_reference

import vidvec
from vidvec.extraction import ExtractError, SamplingOverrides, prepare
from vidvec.sinks import video_features_streams

VIDEO = "v_GGSY1Qvo990.mp4"
REFERENCE = "fixtures/video_features/tests/clip/reference/v_GGSY1Qvo990_ViT-B_32_1_5_{}.pt"


def _make_path(output_root: Path, video_path: Path, key: str) -> Path:
    """video_features' make_path (utils/utils.py), transcribed."""
    return output_root / f"{video_path.stem}_{key}.npy"


def test_clip_files_are_what_video_features_writes(tmp_path, shared_dir):
    video = shared_dir / "assets" / "videos" / VIDEO
    (outcome,) = vidvec.extract([video], "clip_vit_b32", tmp_path, weights="random", layout="video_features",
                                sampling=SamplingOverrides(fps=5), num_workers=0)
    assert outcome.status == "done" and outcome.output == _make_path(tmp_path, video, "clip")
    loaded = {key: np.load(_make_path(tmp_path, video, key)) for key in ("clip", "fps", "timestamps_ms")}
    reference = {key: load_reference(shared_dir / REFERENCE.format(key)) for key in ("clip", "fps", "timestamps_ms")}
    assert loaded["fps"].shape == () and loaded["fps"].dtype == np.float64 and loaded["fps"] == reference["fps"]
    assert loaded["timestamps_ms"].dtype == np.float64
    np.testing.assert_array_equal(loaded["timestamps_ms"], reference["timestamps_ms"])
    assert loaded["clip"].dtype == np.float32 and loaded["clip"].shape == reference["clip"].shape
    # A second run finds the video done, as video_features' is_already_exist would.
    (again,) = vidvec.extract([video], "clip_vit_b32", tmp_path, weights="random", layout="video_features",
                              sampling=SamplingOverrides(fps=5), num_workers=0)
    assert again.status == "skipped"


def test_i3d_streams_go_to_rgb_and_flow_files():
    assert video_features_streams("i3d", {}) == [("rgb", slice(0, 1024)), ("flow", slice(1024, 2048))]
    assert video_features_streams("i3d", {"streams": "rgb"}) == [("rgb", slice(None))]
    assert video_features_streams("r2plus1d_18", {}) == [("r21d", slice(None))]
    assert video_features_streams("efficientnet_lite0", {}) == [("efficientnet_lite0", slice(None))]


@pytest.mark.parametrize("options, says", [
    ({"sampling": SamplingOverrides(crops=3)}, "one vector per clip"),
    ({"sampling": SamplingOverrides.preset("ego4d")}, "not another sampling rule"),
    ({"top_k": 5}, "no --format, --logits or --top-k"),
    ({"out": None}, "needs --out"),
])
def test_what_the_layout_cannot_hold_is_refused_before_any_work(tmp_path, options, says):
    options = {"out": tmp_path / "out", **options}
    with pytest.raises(ExtractError, match=says):
        prepare([tmp_path], "clip_vit_b32", weights="random", layout="video_features", **options)
    assert not (tmp_path / "out").exists()
