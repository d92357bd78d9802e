"""vidvec convert: a finished folder in another tool's layout without computing again, each read back as that tool
reads it; a CMU-MultimodalSDK computational sequence passes the SDK's own checks (transcribed below)."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import media
import vidvec
from vidvec.cli import app
from vidvec.convert import ConvertError, convert

# CMU-MultimodalSDK's featuresetMetadataTemplate (mmsdk/mmdatasdk/configurations/metadataconfigs.py), as the SDK
# has it: a missing comma joins two of its keys.
SDK_METADATA = ["root name", "computational sequence description", "dimension namescomputational sequence version",
                "alignment compatible", "dataset name", "dataset version", "creator", "contact",
                "featureset bib citation", "dataset bib citation"]


def _read_csd_as_the_sdk_does(path):
    """mmsdk's read_CSD (file_ops.py): the first group's data as a dict, its metadata JSON-decoded; then its
    validate_data_format and validate_metadata_format checks (integrity_check.py)."""
    handle = h5py.File(path, "r")
    root = handle[list(handle.keys())[0]]
    data = dict(root["data"])
    metadata = {key: json.loads(root["metadata"][key][0]) for key in root["metadata"].keys()}
    for video in data.values():
        assert video["intervals"].shape[0] == video["features"].shape[0] and video["intervals"].shape[1] == 2
    assert all(key in metadata for key in SDK_METADATA)
    return data, metadata


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    videos = root / "videos"
    videos.mkdir()
    media.make_video(videos / "a.mp4", frames=6, fps=10)
    media.make_video(videos / "b.mp4", frames=4, fps=10)
    outcomes = list(vidvec.extract([videos], "efficientnet_lite0", root / "feats", num_workers=0))
    assert [o.status for o in outcomes] == ["done", "done"]
    return root


def test_every_video_goes_into_one_computational_sequence(folder):
    result = CliRunner().invoke(app, ["convert", str(folder / "feats"), "--to", "csd", "--into",
                                      str(folder / "seq.csd")])
    assert result.exit_code == 0, result.output
    data, metadata = _read_csd_as_the_sdk_does(folder / "seq.csd")
    assert sorted(data) == ["a", "b"] and metadata["root name"] == "efficientnet_lite0"
    arrays, _ = vidvec.read_features(folder / "feats" / "a.npz")
    np.testing.assert_allclose(data["a"]["features"][()], arrays["features"])
    np.testing.assert_allclose(data["a"]["intervals"][()], arrays["timestamps"])
    # read back by vidvec too: one video of the sequence by its key
    back, provenance = vidvec.read_features(folder / "seq.csd", "a")
    np.testing.assert_allclose(back["features"], arrays["features"])
    assert (provenance["layout"], provenance["key"], provenance["keys"]) == ("csd", "a", 2)
    assert provenance["metadata"]["root name"] == "efficientnet_lite0"
    with pytest.raises(ValueError, match=r"holds 2 videos \(a, b\): name one"):
        vidvec.read_features(folder / "seq.csd")
    shown = CliRunner().invoke(app, ["inspect", str(folder / "seq.csd"), "--key", "b"])
    assert shown.exit_code == 0 and "layout csd: sequence efficientnet_lite0, video b of 2" in shown.output
    refused = CliRunner().invoke(app, ["inspect", str(folder / "seq.csd")])
    assert refused.exit_code != 0 and "holds 2 videos (a, b): name one" in refused.output


def test_per_video_layouts_hold_the_same_vectors(folder):
    arrays, _ = vidvec.read_features(folder / "feats" / "a.npz")
    assert all(c.reason is None for c in convert(folder / "feats", "hero", folder / "hero"))
    with np.load(folder / "hero" / "a.npz") as hero:
        np.testing.assert_allclose(hero["features"], arrays["features"].astype(np.float16))
    assert all(c.reason is None for c in convert(folder / "feats", "ego4d", folder / "ego4d"))
    np.testing.assert_allclose(torch.load(folder / "ego4d" / "a.pt").numpy(), arrays["features"])
    assert all(c.reason is None for c in convert(folder / "feats", "lvs-timeline"))
    with open(folder / "videos" / "output_vecs" / "output_latent_vec_a.pk", "rb") as f:
        timeline = pickle.load(f)["a"]
    np.testing.assert_allclose(timeline["intervals"], arrays["timestamps"])
    assert all(c.reason is None for c in convert(folder / "feats", "pyslowfast"))
    np.testing.assert_allclose(np.load(folder / "videos" / "output_vecs" / "output_latent_vec_a.npy"),
                               arrays["video_vector"])


@pytest.mark.parametrize("to, into, says", [
    ("video_features", "vf", "not cut with video_features' rule"),
    ("hero", None, "needs --into"),
    ("hero", "feats", "must not be the folder being converted"),
    ("parquet", "x", "unknown layout"),
])
def test_a_conversion_that_cannot_hold_the_folder_is_refused_before_writing(folder, to, into, says):
    with pytest.raises(ConvertError, match=says):
        list(convert(folder / "feats", to, None if into is None else folder / into))
    assert into is None or into == "feats" or not (folder / into).exists()
    result = CliRunner().invoke(app, ["convert", str(folder / "feats"), "--to", to]
                                + ([] if into is None else ["--into", str(folder / into)]))
    assert result.exit_code == 2 and says in result.output
