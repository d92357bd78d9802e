"""The run as data: a RunSpec plans without loading any model, survives JSON, and keeps every settings hash that
output folders made before it exist with."""

from __future__ import annotations

import subprocess
import sys

import media
import numpy as np
import pytest

import vidvec
from vidvec.extraction import Extraction, ExtractError, SamplingOverrides, prepare
from vidvec.spec import RunSpec, SpecError

# Settings hashes vidvec 974374b (before specs existed) bound output folders to, for these runs of one video.
# A folder made then must resume now: the same settings must hash the same.
BEFORE = {
    "efficientnet_lite0 default": ("0900559a86f4f161", dict(model="efficientnet_lite0")),
    "efficientnet_lite0 fps 2 npy float16": ("2cb2550ebd988c50", dict(
        model="efficientnet_lite0", fmt="npy", out_dtype="float16", sampling=SamplingOverrides(fps=2.0))),
    "r2plus1d_18 random top-5": ("7a50b21a711dd15b", dict(model="r2plus1d_18", weights="random", top_k=5)),
    "r3d_18 random views 3 crops 3 pt bfloat16": ("8b57c686d53950b6", dict(
        model="r3d_18", weights="random", fmt="pt", dtype="bfloat16", sampling=SamplingOverrides(views=3, crops=3))),
    "i3d random rgb": ("d6bcb44fdf6b17a3", dict(model="i3d", weights="random", model_options={"streams": "rgb"})),
    "i3d random save-flow raft_small": ("8629d63321717256", dict(
        model="i3d", weights="random", save_flow=True, model_options={"flow": "raft_small"})),
    "vggish random postprocess": ("b7317013a1edca1c", dict(
        model="vggish", weights="random", model_options={"postprocess": True})),
    "SlowFast pyslowfast layout top-3": ("cb07dcd497759770", dict(
        model="Kinetics/c2/SLOWFAST_8x8_R50", weights="random", layout="pyslowfast", top_k=3)),
    # --preset hero feeds HERO's own pixels since the HERO presets for ResNet and MIL-NCE S3D (short side 224 by
    # ffmpeg's scale filter, crop 224): the same clips with the card's pixels keep the hash of before.
    "X3D_S hero layout": ("e198aa8b176778b3", dict(
        model="Kinetics/X3D_S", weights="random", layout="hero", sampling=SamplingOverrides.preset("hero"))),
    "X3D_S hero clips, card pixels": ("e855791463f817a7", dict(
        model="Kinetics/X3D_S", weights="random", layout="hero", sampling=SamplingOverrides(
            kind="windows", fps=30.0, clip_len=32, sampling_rate=2, stride_seconds=1.5, crops=1, rule="hero"))),
    "clip_vit_b32 video_features preset logits": ("f22d4b64fa66618f", dict(
        model="clip_vit_b32", weights="random", logits=True, sampling=SamplingOverrides.preset("video_features"))),
    "s3d_kinetics400 ego4d": ("8d697a754f05345e", dict(
        model="s3d_kinetics400", weights="random", sampling=SamplingOverrides.preset("ego4d"))),
}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return media.make_video(tmp_path_factory.mktemp("v") / "v.mp4", frames=6, fps=10)


@pytest.mark.parametrize("case", sorted(BEFORE))
def test_settings_hashes_of_existing_folders_are_unchanged(case, video, tmp_path):
    expected, options = BEFORE[case]
    run = prepare([video], out=tmp_path / "o", num_workers=0, **options)
    assert run.targets[0].settings_hash == expected
    again = RunSpec.from_json(run.spec.to_json())
    assert again == run.spec and again.settings_hash(0) == expected


def test_planning_builds_and_loads_no_model(video, tmp_path, monkeypatch):
    import torch

    from vidvec import registry

    def refuse(*args, **kwargs):
        raise AssertionError("planning must not build a model or read a checkpoint")

    monkeypatch.setattr(registry.ModelCard, "build", property(lambda self: refuse), raising=False)
    monkeypatch.setattr(torch, "load", refuse)
    run = prepare([video], ["efficientnet_lite0", "clip_vit_b32"], tmp_path / "o", weights=[None, "random"],
                  num_workers=0)
    model = run.spec.models[0]
    assert model.weights.name == "IMAGENET1K_V1" and len(model.weights.sha256) == 64
    assert model.weights.trust == "published" and model.weights.path.endswith(".pth")
    assert run.spec.models[1].weights.sha256 == "random" and all(t.model is None for t in run.targets)


@pytest.mark.slow
def test_a_spec_from_json_runs_elsewhere_with_the_same_vectors(video, tmp_path):
    """What a cluster driver does: plan here, ship the JSON, run it in another process."""
    planned = prepare([video], "efficientnet_lite0", tmp_path / "here", num_workers=0)
    here = {o.source.key: o.features for o in planned}
    spec = RunSpec.from_json(planned.spec.to_json())
    from dataclasses import replace

    from vidvec.spec import OutputSpec

    elsewhere = replace(spec, output=OutputSpec(str(tmp_path / "there"), "vidvec", "npz", "float32"))
    script = (
        "import sys; from vidvec.extraction import Extraction, ExecutionOptions; from vidvec.spec import RunSpec; "
        "from vidvec.sources import collect_sources; "
        "spec = RunSpec.from_json(sys.stdin.read()); "
        f"run = Extraction.from_spec(spec, collect_sources([{str(video)!r}]), ExecutionOptions(num_workers=0)); "
        "print([o.status for o in run])"
    )
    done = subprocess.run([sys.executable, "-c", script], input=elsewhere.to_json(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "['done']" in done.stdout, done.stderr
    from vidvec.writers import read_features

    arrays, provenance = read_features(tmp_path / "there" / "v.npz")
    np.testing.assert_array_equal(arrays["features"], here["v"])
    assert provenance["settings_hash"] == planned.targets[0].settings_hash


def test_a_weights_file_that_changed_since_planning_is_refused(tmp_path, video):
    import torch

    ckpt = tmp_path / "mine.pth"
    model = vidvec.load_model("resnet18", weights="random")
    torch.save(model.module.state_dict(), ckpt)
    run = prepare([video], "resnet18", None, weights=str(ckpt), num_workers=0)
    assert run.spec.models[0].weights.name == "file"
    with open(ckpt, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExtractError, match="changed since"):
        list(run)


def test_malformed_spec_json_is_one_line():
    with pytest.raises(SpecError, match="not a vidvec run spec"):
        RunSpec.from_json('{"vidvec_run_spec": 1, "models": [{"name": 3}]}')
    with pytest.raises(SpecError):
        RunSpec.from_json("not json")


def test_extraction_from_a_spec_checks_outputs_first(tmp_path, video):
    planned = prepare([video], "efficientnet_lite0", tmp_path / "o", num_workers=0)
    assert isinstance(planned, Extraction) and planned.spec.folder(0) == tmp_path / "o"
