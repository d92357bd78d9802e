"""--save-flow: I3D's RAFT flow written clip by clip beside the output, only when asked for."""

import numpy as np
import pytest
import torch

import vidvec
from vidvec.extraction import ExtractError, SamplingOverrides
from vidvec.models.i3d_net import flow_to_i3d
from vidvec.writers import extra_path, read_features

NAME = "TrumanShow_wave_f_nm_np1_fr_med_26"


@pytest.fixture
def video(shared_dir):
    return shared_dir / "assets" / "videos" / f"{NAME}.avi"


def _run(video, out, **options):
    torch.manual_seed(0)  # the same random weights in every run
    (outcome,) = vidvec.extract([video], "i3d", out, weights="random", num_workers=0,
                                model_options={"streams": "flow", "flow": "raft_small"},
                                sampling=SamplingOverrides(fps=5.0, clip_len=9, stride=8), **options)
    assert outcome.status == "done", outcome.reason
    return outcome


@pytest.mark.slow
@pytest.mark.timeout(300)  # RAFT on the CPU: minutes on a slow machine
def test_flow_is_saved_only_when_asked_and_is_what_the_flow_stream_saw(video, tmp_path):
    plain = _run(video, tmp_path / "plain")
    assert [p.name for p in (tmp_path / "plain").iterdir() if not p.name.startswith("vidvec-ledger")] == [
        f"{NAME}.npz"]  # by default flow never touches the disk
    saved = _run(video, tmp_path / "saved", save_flow=True)
    files = sorted((tmp_path / "saved" / f"{NAME}.flow").iterdir())
    assert [f.name for f in files] == ["000000.npy"]
    assert files[0] == extra_path(saved.output, "flow", 0)
    flow = np.load(files[0], allow_pickle=False)
    assert flow.shape == (2, 8, 224, 224) and flow.dtype == np.float16
    assert np.isfinite(flow).all() and np.abs(flow).max() > 0
    np.testing.assert_allclose(saved.features, plain.features, rtol=1e-5, atol=1e-5)  # saving changes nothing
    assert read_features(saved.output)[1]["save_flow"] is True
    # The flow stream's vector, recomputed from the saved flow, is the stored one (up to float16 storage).
    torch.manual_seed(0)
    model = vidvec.load_model("i3d", weights="random", build_options={"streams": "flow", "flow": "raft_small"})
    with torch.inference_mode():
        again = model.module.flow(flow_to_i3d(torch.from_numpy(flow).float()[None]))[0].numpy()
    cosine = again @ saved.features[0] / np.linalg.norm(again) / np.linalg.norm(saved.features[0])
    assert cosine > 0.999, cosine


def test_save_flow_needs_a_model_with_flow(video, tmp_path):
    with pytest.raises(ExtractError, match="--save-flow needs"):
        vidvec.prepare([video], "efficientnet_lite0", tmp_path / "a", save_flow=True)
    with pytest.raises(ExtractError, match="--save-flow needs"):
        vidvec.prepare([video], "i3d", tmp_path / "b", weights="random", save_flow=True,
                       model_options={"streams": "rgb"})
    with pytest.raises(ExtractError, match="--save-flow needs"):
        vidvec.prepare([video], "i3d", None, weights="random", save_flow=True)
