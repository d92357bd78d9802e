"""PySlowFast's MODEL_ZOO as vidvec cards, checkpoint-aware loading (.pyth with its cfg, Caffe2 .pkl) and the
pyslowfast output layout. Uses the small real-format checkpoints in shared/fixtures/pyslowfast/ckpt; no network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vidvec
from vidvec.extraction import ExtractError, SamplingOverrides
from vidvec.models.pyslowfast.checkpoint import load_checkpoint
from vidvec.ledger import SettingsMismatch
from vidvec.models.pyslowfast.preprocessing import test_time_sampling as time_sampling_of
from vidvec import categories
from vidvec.models.pyslowfast.zoo import ZOO, card_from_cfg, categories_for_count, config_for
from vidvec.registry import card_from_checkpoint, get_card, list_models
from vidvec.weights import WeightsError, _load_checkpoint_into, load_model, sha256_file
from vidvec.writers import read_features

VIDVEC = [sys.executable, "-m", "vidvec.cli"]
# Configs for which upstream MODEL_ZOO.md publishes no checkpoint: registered without weights entries.
NO_PUBLISHED_WEIGHTS = {"Kinetics/C2D_8x8_R50", "Kinetics/c2/SLOWFAST_8x8_R101_101_101",
                        "Kinetics/c2/SLOWFAST_8x8_R101_50_50", "Kinetics/c2/SLOWFAST_8x8_R101_50_101",
                        "Kinetics/c2/SLOWFAST_16x8_R101_50_50"}


def vidvec_cli(*args, check=None):
    result = subprocess.run([*VIDVEC, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def fixtures(shared_dir) -> Path:
    root = shared_dir / "fixtures" / "pyslowfast"
    if not (root / "keys" / "index.json").is_file():
        pytest.fail(f"PySlowFast fixtures missing: {root}", pytrace=False)
    return root


@pytest.fixture(scope="module")
def index(fixtures) -> dict:
    return json.loads((fixtures / "keys" / "index.json").read_text())


@pytest.fixture
def one_video(tmp_path, shared_dir) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(shared_dir / "assets" / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi", folder / "truman.avi")
    return folder


# ------------------------------------------------------------------------------------------------ cards


def test_every_fixture_config_is_registered_with_its_dim_and_weights(index):
    buildable = {name: info for name, info in index.items() if info["status"] == "ok"}
    assert len(buildable) == 21
    for name, info in buildable.items():
        card = get_card(name)
        assert card.family == "pyslowfast" and card.input == "video"
        assert card.embed_dim == info["latent_dim"], name
        assert card.latent and card.description
        if name in NO_PUBLISHED_WEIGHTS:
            assert card.weights == () and card.preprocess is not None, name
            continue
        (entry,) = card.weights
        assert entry.url.startswith("https://dl.fbaipublicfiles.com/"), name
        assert entry.file_name.endswith((".pkl", ".pyth"))
        assert entry.sha256 is None  # none published: recorded on first download
        assert entry.license.startswith("Apache-2.0") and entry.source
        assert entry.num_params == info["num_parameters"], name
        n = info["num_classes_out"]
        assert len(entry.categories) == n, name
    # MODEL_ZOO's C2D row names a config PySlowFast itself cannot build (ResNet_nopool): not registered.
    assert index["Kinetics/c2/C2D_NOPOOL_8x8_R50"]["status"] == "build_failed"
    assert "Kinetics/c2/C2D_NOPOOL_8x8_R50" not in list_models("pyslowfast")


def test_model_zoo_urls_and_metrics_are_upstreams():
    urls = {e.config: e.url for e in ZOO}
    assert urls["Kinetics/c2/SLOWFAST_8x8_R50"] == \
        "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400/SLOWFAST_8x8_R50.pkl"
    assert urls["Kinetics/c2/SLOW_8x8_R50"] == \
        "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400/SLOWONLY_8x8_R50.pkl"
    assert urls["Kinetics/X3D_M"] == "https://dl.fbaipublicfiles.com/pyslowfast/x3d_models/x3d_m.pyth"
    assert urls["Kinetics/MVITv2_S_16x4"] == ("https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/mvitv2/"
                                              "pysf_video_models/MViTv2_S_16x4_k400_f302660347.pyth")
    assert urls["SSv2/SLOWFAST_16x8_R50_multigrid"] == (
        "https://dl.fbaipublicfiles.com/pyslowfast/pyslowfast/model_zoo/multigrid/model_zoo/SSv2/"
        "SLOWFAST_16x8_R50_multigrid.pkl")
    assert get_card("Kinetics/c2/SLOWFAST_8x8_R50").default_weights.metrics["acc@1"] == 77.0
    assert get_card("Kinetics/X3D_M").default_weights.metrics == {"acc@1": 75.1, "acc@1_30view": 76.2}
    assert get_card("Charades/SLOWFAST_16x8_R50").default_weights.metrics == {"mAP": 38.9}
    assert len({e.config for e in ZOO}) == len(ZOO)
    # Every downloadable file has its own name in the cache (SSv2's and Charades' share the URL's last part).
    # No two different downloads share a cache file name (entries of one file, e.g. two preprocessings, may).
    urls_by_name: dict = {}
    for w in (w for n in list_models() for w in get_card(n).weights if w.url):
        urls_by_name.setdefault(w.file_name, set()).add(w.url)
    assert all(len(urls) == 1 for urls in urls_by_name.values())
    assert get_card("Charades/SLOWFAST_16x8_R50").default_weights.file_name == "Charades_SLOWFAST_16x8_R50.pkl"


@pytest.mark.parametrize("name", [e.config for e in ZOO])
def test_card_sampling_preprocessing_and_dim_follow_the_config(name):
    card = get_card(name)
    cfg = config_for(name)
    spec, preprocess = time_sampling_of(cfg)
    assert card.sampling == spec
    assert card.preprocess_for(None) == preprocess
    with torch.device("meta"):  # the real network, built without allocating
        model = card.build()
    dim = getattr(model, "embed_dim", None) or model.latent_dim
    assert dim == card.embed_dim
    classes = card.categories_for(None)
    assert model.num_classes == (len(classes) if classes else cfg["MODEL"]["NUM_CLASSES"])
    entry = next(e for e in ZOO if e.config == name)
    assert sum(p.numel() for p in model.parameters()) == entry.num_params


def test_charades_cards_are_the_ssv2_net_with_charades_head_and_protocol():
    ssv2, charades = config_for("SSv2/SLOWFAST_16x8_R50"), config_for("Charades/SLOWFAST_16x8_R50")
    assert (charades.MODEL.NUM_CLASSES, charades.MODEL.HEAD_ACT) == (157, "sigmoid")
    assert (charades.TEST.NUM_ENSEMBLE_VIEWS, charades.TEST.NUM_SPATIAL_CROPS) == (10, 3)
    assert charades.TEST.DATASET == "charades" and charades.DATA.TEST_CROP_SIZE == 256
    assert config_for("Charades/SLOWFAST_16x8_R50_multigrid").DATA.TEST_CROP_SIZE == 256  # SSv2's is 224
    for section in ("RESNET", "SLOWFAST", "NONLOCAL"):
        assert charades[section] == ssv2[section]
    assert charades.DATA.NUM_FRAMES == ssv2.DATA.NUM_FRAMES and charades.DATA.REVERSE_INPUT_CHANNEL


def test_category_lists():
    k400, ssv2, charades = categories.kinetics400(), categories.ssv2(), categories.charades()
    assert len(k400) == 400 and list(k400) == sorted(k400) and k400[0] == "abseiling"
    assert len(ssv2) == len(set(ssv2)) == 174 and list(ssv2) == sorted(ssv2)
    assert ssv2[0] == "Approaching something with your camera" and ssv2[-1] == "Wiping something off of something"
    assert len(charades) == len(set(charades)) == 157
    assert charades[0] == "Holding some clothes" and charades[156] == "Someone is eating something"
    assert categories_for_count(400) == k400 and categories_for_count(174) == ssv2
    assert categories_for_count(157) == charades and categories_for_count(80) is None


def test_models_command_lists_the_family():
    result = vidvec_cli("models", "--family", "pyslowfast", check=0)
    for name in list_models("pyslowfast"):
        assert name in result.stdout, name
    for text in ("2304", "2048", "768", "KINETICS400", "SSV2", "none published"):
        assert text in result.stdout


# ------------------------------------------------------------------------------- checkpoint-aware loading


def test_pyth_without_model_builds_the_architecture_of_its_cfg(fixtures):
    path = fixtures / "ckpt" / "slowfast_r50_8x8_w8.pyth"
    card = card_from_checkpoint(path)
    assert card.name == "pyslowfast:SlowFast" and card.weights == () and card.embed_dim == 288
    loaded = load_model(None, weights=path)
    assert loaded.card.name == "pyslowfast:SlowFast" and loaded.weights is None
    assert loaded.weights_sha256 == sha256_file(path)
    assert loaded.categories == categories.kinetics400()
    assert loaded.preprocess.crop == (64, 64)  # the reduced config's TEST_CROP_SIZE
    state, _ = load_checkpoint(path)
    own = loaded.module.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    # A plain torch checkpoint (no cfg) keeps the old default.
    assert card_from_checkpoint(fixtures / "ckpt" / "slowfast_r50_8x8_w8.c2_names.json") is None


def test_pyth_of_other_families_and_sizes(fixtures):
    x3d = card_from_checkpoint(fixtures / "ckpt" / "x3d_xs.pyth")
    assert (x3d.name, x3d.embed_dim) == ("pyslowfast:X3D", 2048)
    mvit = card_from_checkpoint(fixtures / "ckpt" / "mvitv2_s_16x4_tiny.pyth")
    assert (mvit.name, mvit.embed_dim) == ("pyslowfast:MViT", 128)
    ssv2 = card_from_checkpoint(fixtures / "ckpt" / "ssv2_slowfast_r50_16x8_w8.pyth")
    assert ssv2.categories == categories.ssv2() and ssv2.sampling.views == 1


def test_caffe2_pkl_loads_through_the_card_hook(fixtures):
    # The .pkl holds the same weights as the .pyth; the card built from the .pyth's cfg reads it with the
    # restricted unpickler and PySlowFast's blob-name mapping.
    _, cfg = load_checkpoint(fixtures / "ckpt" / "slowfast_r50_8x8_w8.pyth")
    card = card_from_cfg(cfg)
    module = card.build()
    _load_checkpoint_into(card, module, fixtures / "ckpt" / "slowfast_r50_8x8_w8.c2.pkl")
    reference = load_model(None, weights=fixtures / "ckpt" / "slowfast_r50_8x8_w8.pyth").module.state_dict()
    for key, value in module.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, reference[key]), key


def test_caffe2_pkl_without_model_asks_for_one(fixtures):
    with pytest.raises(WeightsError, match="carries no config: give --model"):
        load_model(None, weights=fixtures / "ckpt" / "slowfast_r50_8x8_w8.c2.pkl")


@pytest.mark.slow
def test_card_with_wrong_width_gives_one_clear_error(fixtures, one_video, tmp_path):
    pkl = fixtures / "ckpt" / "slowfast_r50_8x8_w8.c2.pkl"
    result = vidvec_cli("extract", one_video, "--model", "Kinetics/c2/SLOWFAST_8x8_R50", "--weights", pkl,
                        "--out", tmp_path / "out", check=2)
    err = result.stderr
    assert "Traceback" not in err
    assert "error:" in err and "does not match the model (SlowFast)" in err
    assert "s1.pathway0_stem.conv.weight: checkpoint (8, 3, 1, 7, 7) vs model (64, 3, 1, 7, 7)" in err
    assert "RESNET.WIDTH_PER_GROUP 8?" in err


def test_card_without_published_weights_needs_a_file():
    with pytest.raises(WeightsError, match="no published weights; give --weights PATH"):
        load_model("Kinetics/C2D_8x8_R50")


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_extract_pyth_without_model_end_to_end(fixtures, one_video, tmp_path):
    pyth = fixtures / "ckpt" / "slowfast_r50_8x8_w8.pyth"
    out = tmp_path / "out"
    result = vidvec_cli("extract", one_video, "--weights", pyth, "--out", out, "--num-workers", 0, check=0)
    assert "model pyslowfast:SlowFast (file)" in result.stderr
    arrays, prov = read_features(out / "truman.npz")
    assert arrays["features"].shape == (30, 288)  # 10 views x 3 crops of the 288-d reduced SlowFast
    assert arrays["video_vector"].shape == (288,)
    np.testing.assert_allclose(arrays["video_vector"], arrays["features"].mean(0), rtol=1e-5, atol=1e-5)
    assert "logits" not in arrays and "topk_indices" not in arrays  # --top-k off
    assert np.isfinite(arrays["features"]).all() and arrays["features"].std() > 0
    assert prov["model"] == "pyslowfast:SlowFast"
    assert prov["weights"] == {"name": "file", "sha256": sha256_file(pyth), "url": None}


@pytest.mark.slow
def test_x3d_pyslowfast_layout_end_to_end(fixtures, one_video, tmp_path):
    pyth = fixtures / "ckpt" / "x3d_xs.pyth"
    ledger = tmp_path / "ledger"
    vidvec_cli("extract", one_video, "--weights", pyth, "--out", ledger, "--num-workers", 0, "--views", 2,
               "--crops", 1, "--layout", "pyslowfast", "--top-k", 5, check=0)
    vector_file = one_video / "output_vecs" / "output_latent_vec_truman.npy"
    vector = np.load(vector_file, allow_pickle=False)
    assert vector.shape == (2048,) and vector.dtype == np.float32
    predictions = json.loads((one_video / "output_vecs" / "output_topk_truman.json").read_text())
    assert len(predictions["labels"]) == 5 and len(predictions["scores"]) == 5
    assert predictions["scores"] == sorted(predictions["scores"], reverse=True)
    assert sorted(p.name for p in ledger.iterdir()) == ["vidvec-ledger.sqlite"]  # OUT keeps only the ledger
    assert not list((one_video / "output_vecs").glob(".*"))                       # no temp left behind
    # The vector is the mean over the views of the per-view latents.
    views = SamplingOverrides(views=2, crops=1)
    (outcome,) = vidvec.extract([one_video / "truman.avi"], weights=str(pyth), num_workers=0, sampling=views)
    assert outcome.features.shape == (2, 2048)
    np.testing.assert_allclose(vector, outcome.features.mean(0), rtol=1e-4, atol=1e-5)
    # Recorded in the ledger: a second run skips it; another layout into the same ledger is refused.
    (again,) = vidvec.extract([one_video], out=ledger, weights=str(pyth), num_workers=0, sampling=views,
                              layout="pyslowfast", top_k=5)
    assert (again.status, again.output) == ("skipped", vector_file)
    with pytest.raises(SettingsMismatch, match="layout"):
        next(vidvec.extract([one_video], out=ledger, weights=str(pyth), sampling=views))


@pytest.mark.parametrize("options, message", [
    ({"logits": True}, "--logits needs --layout vidvec"),
    ({"fmt": "pt"}, "--format pt does not apply"),
    ({"out": None}, "needs an output folder"),
])
def test_pyslowfast_layout_option_errors(one_video, tmp_path, options, message):
    kwargs = {"out": tmp_path / "o", "weights": "random", "layout": "pyslowfast", **options}
    with pytest.raises(ExtractError, match=message):
        next(vidvec.extract([one_video], **kwargs))
    assert not (tmp_path / "o").exists()  # refused before anything was created


def test_unknown_layout_is_a_usage_error(one_video, tmp_path):
    result = vidvec_cli("extract", one_video, "--weights", "random", "--out", tmp_path / "o", "--layout", "csv",
                        check=2)
    assert "unknown layout 'csv'; choose one of vidvec, pyslowfast" in result.stderr


def test_pyslowfast_layout_without_out_keeps_its_ledger_in_output_vecs(one_video):
    # The Latent Vectors Service takes only a folder and a config: vectors and ledger go to FOLDER/output_vecs.
    vidvec_cli("extract", one_video, "-m", "Kinetics/X3D_XS", "--weights", "random", "--views", 1, "--crops", 1,
               "--num-workers", 0, "--layout", "pyslowfast", check=0)
    output_vecs = one_video / "output_vecs"
    assert sorted(p.name for p in output_vecs.iterdir()) == ["output_latent_vec_truman.npy", "vidvec-ledger.sqlite"]
    assert np.load(output_vecs / "output_latent_vec_truman.npy").shape == (2048,)
    assert "done" in vidvec_cli("status", output_vecs, check=0).stdout


@pytest.mark.parametrize("args, message", [
    (["--layout", "vidvec"], "missing --out"),
    (["--layout", "pyslowfast", "EXTRA"], "takes one folder of videos"),
])
def test_a_run_without_out_is_refused_in_one_line(one_video, args, message):
    args = [one_video if a == "EXTRA" else a for a in args]
    result = vidvec_cli("extract", one_video, "--weights", "random", *args, check=2)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (one_video / "output_vecs").exists()
