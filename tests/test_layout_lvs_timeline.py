"""--layout lvs-timeline: the Latent Vectors Service's dense timeline for Social-IQ, read back as its users read it
(``pickle.load``, then ``data[stem]["features"]`` and ``data[stem]["intervals"]``), every vector with its own
interval (that tool's own files had 113 vectors for 117-119 intervals)."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

import media
import vidvec
from vidvec.extraction import ExtractError, SamplingOverrides, prepare


def test_a_video_is_one_pickle_of_aligned_features_and_intervals(tmp_path, shared_dir):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4", videos)
    (outcome,) = vidvec.extract([videos], "r3d_18", tmp_path / "ledger", weights="random", layout="lvs-timeline",
                                sampling=SamplingOverrides(stride_seconds=0.5), num_workers=0)
    path = videos / "output_vecs" / "output_latent_vec_R6llTwEh07w.pk"
    assert outcome.status == "done" and outcome.output == path
    with open(path, "rb") as f:
        data = pickle.load(f)
    assert list(data) == ["R6llTwEh07w"]
    features, intervals = data["R6llTwEh07w"]["features"], data["R6llTwEh07w"]["intervals"]
    assert features.dtype == np.float32 and features.shape[1] == 512
    assert intervals.shape == (len(features), 2) and intervals.dtype == np.float64
    assert len(features) >= 15  # a 10 s video at 0.5 s steps
    np.testing.assert_allclose(np.diff(intervals[:, 0]), 0.5, atol=0.04)  # one step per vector
    assert (intervals[:, 1] > intervals[:, 0]).all()


@pytest.mark.parametrize("options, says", [
    ({"sampling": SamplingOverrides(crops=3)}, "--crops 3"),
    ({"top_k": 5}, "--top-k"),
    ({"out": None}, "needs --out"),
])
def test_what_the_layout_cannot_hold_is_refused_before_any_work(tmp_path, options, says):
    media.make_video(tmp_path / "a.mp4", frames=3)
    options = {"out": tmp_path / "out", **options}
    with pytest.raises(ExtractError, match=says):
        prepare([tmp_path / "a.mp4"], "r3d_18", weights="random", layout="lvs-timeline", **options)
    assert not (tmp_path / "out").exists()
