"""Several models on one decoding pass: outputs per model, equal to single-model runs, one decode per video."""

import numpy as np
import pytest
import torch

import vidvec
import vidvec.clips
from vidvec.extraction import ExtractError, SamplingOverrides
from vidvec.ledger import Ledger
from vidvec.registry import get_card
from vidvec.writers import read_features

VIDEOS = ("v_SoccerJuggling_g23_c01.avi", "TrumanShow_wave_f_nm_np1_fr_med_26.avi")


@pytest.fixture
def videos(shared_dir):
    return [shared_dir / "assets" / "videos" / name for name in VIDEOS]


@pytest.fixture
def r21d_checkpoint(tmp_path):
    """Fixed random weights for r2plus1d_18, so that separate runs build the same model."""
    torch.manual_seed(0)
    path = tmp_path / "r21d.pth"
    torch.save(get_card("r2plus1d_18").build().state_dict(), path)
    return str(path)


def _extract(videos, models, out, weights, **options):
    return list(vidvec.extract(videos, models, out, weights=weights, num_workers=0,
                               sampling=SamplingOverrides(fps=2.0), **options))


@pytest.mark.slow
def test_several_models_decode_each_video_once_and_equal_single_runs(videos, tmp_path, r21d_checkpoint,
                                                                      monkeypatch):
    opened = []

    class CountingDecoder(vidvec.clips.VideoDecoder):
        def __init__(self, path, *args, **kwargs):
            opened.append(str(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(vidvec.clips, "VideoDecoder", CountingDecoder)
    models = ["efficientnet_lite0", "r2plus1d_18"]
    out = tmp_path / "both"
    outcomes = _extract(videos, models, out, [None, r21d_checkpoint])
    assert sorted((o.model, o.source.path.name, o.status) for o in outcomes) == sorted(
        (m, v, "done") for m in models for v in VIDEOS)
    assert sorted(opened) == sorted(str(v) for v in videos)  # one decoding pass per video for both models
    for model, weights in zip(models, [None, r21d_checkpoint]):
        single = tmp_path / model
        _extract(videos, model, single, weights)
        for video in VIDEOS:
            name = video.rsplit(".", 1)[0] + ".npz"
            together, provenance = read_features(out / model / name)
            alone, _ = read_features(single / name)
            assert provenance["model"] == model
            assert together["features"].shape == alone["features"].shape
            np.testing.assert_allclose(together["features"], alone["features"], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(together["timestamps"], alone["timestamps"])
        assert Ledger(out / model).summary()["done"] == len(VIDEOS)


def test_rerun_of_several_models_resumes_per_model(videos, tmp_path, r21d_checkpoint):
    out = tmp_path / "both"
    models = ["efficientnet_lite0", "r2plus1d_18"]
    _extract(videos[:1], models, out, [None, r21d_checkpoint])
    again = _extract(videos, models, out, [None, r21d_checkpoint])
    status = {(o.model, o.source.path.name): o.status for o in again}
    assert status == {(m, VIDEOS[0]): "skipped" for m in models} | {(m, VIDEOS[1]): "done" for m in models}


def test_weights_must_be_given_once_per_model(videos, tmp_path):
    with pytest.raises(ExtractError, match="once per model"):
        vidvec.prepare(videos, ["efficientnet_lite0", "r2plus1d_18"], tmp_path / "o", weights="random")
    with pytest.raises(ExtractError, match="1 --weights for 2 models"):
        vidvec.prepare(videos, ["efficientnet_lite0", "r2plus1d_18"], tmp_path / "o", weights=["random"])
    with pytest.raises(ExtractError, match="named twice"):
        vidvec.prepare(videos, ["efficientnet_lite0", "efficientnet_lite0"], tmp_path / "o")


def test_an_option_no_model_takes_is_refused(videos, tmp_path):
    with pytest.raises(ExtractError, match="streams"):
        vidvec.prepare(videos, "efficientnet_lite0", tmp_path / "o", model_options={"streams": "rgb"})


def test_hero_layout_writes_float16_features_only(videos, tmp_path):
    out = tmp_path / "hero"
    outcomes = _extract(videos[:1], "efficientnet_lite0", out, None, layout="hero")
    assert [o.status for o in outcomes] == ["done"]
    with np.load(out / "v_SoccerJuggling_g23_c01.npz", allow_pickle=False) as data:
        assert list(data.keys()) == ["features"]
        assert data["features"].dtype == np.float16 and data["features"].shape == (17, 1280)
        np.testing.assert_allclose(data["features"], outcomes[0].features, rtol=1e-3, atol=1e-3)
    again = _extract(videos[:1], "efficientnet_lite0", out, None, layout="hero")
    assert [o.status for o in again] == ["skipped"]
    with pytest.raises(ExtractError, match="float16 features only"):
        vidvec.prepare(videos, "efficientnet_lite0", tmp_path / "h2", layout="hero", top_k=3)


def test_video_features_preset_reproduces_its_clip_counts_and_timestamps(shared_dir, tmp_path):
    """resnet at 1 fps (18 frames stamped 0, 1000, ... ms) and R(2+1)D-34 8x8 at 1 fps (2 clips), as
    v-iashin/video_features gave for this video (shared/fixtures/video_features)."""
    from video_features_fixtures import load_reference

    video = shared_dir / "assets" / "videos" / "v_GGSY1Qvo990.mp4"
    references = shared_dir / "fixtures" / "video_features" / "tests"
    outcomes = list(vidvec.extract([video], ["resnet18", "r2plus1d_34_8_ig65m_kinetics"], tmp_path / "o",
                                   weights=["random", "random"], num_workers=0,
                                   sampling=SamplingOverrides.preset("video_features", fps=1.0)))
    by_model = {o.model: o for o in outcomes}
    stamps = load_reference(references / "resnet" / "reference" / "v_GGSY1Qvo990_resnet101_1_1_timestamps_ms.pt")
    np.testing.assert_array_equal(by_model["resnet18"].result.arrays["timestamps_ms"], stamps)
    r21d = load_reference(references / "r21d" / "reference" /
                          "v_GGSY1Qvo990_r2plus1d_34_8_ig65m_ft_kinetics_None_None_1_r21d.pt")
    assert by_model["r2plus1d_34_8_ig65m_kinetics"].features.shape == r21d.shape == (2, 512)
    with pytest.raises(ExtractError, match="efficientnet_lite0 has no video_features preset"):
        vidvec.prepare([video], "efficientnet_lite0", None, sampling=SamplingOverrides.preset("video_features"))


def test_an_audio_only_file_fails_the_video_models_and_feeds_the_audio_model(tmp_path):
    """The video stream cannot open: the image model fails with the reason, VGGish still gets the sound."""
    from media import make_audio_only

    sound = make_audio_only(tmp_path / "tone.m4a", seconds=3.0)
    outcomes = list(vidvec.extract([sound], ["resnet18", "vggish"], tmp_path / "o", weights=["random", "random"],
                                   num_workers=0))
    by_model = {o.model: o for o in outcomes}
    assert len(outcomes) == 2  # one outcome per model, none lost
    assert by_model["resnet18"].status == "failed" and "no video stream" in by_model["resnet18"].reason
    assert by_model["vggish"].status == "done" and by_model["vggish"].features.shape == (3, 128)
