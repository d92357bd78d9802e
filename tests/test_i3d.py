"""Two-stream I3D: upstream state_dict names and numerics, RAFT flow and its scaling, companion weights loading.

Reference data in tests/data (made outside the project from the upstream code, never by vidvec):
- i3d_rgb_keys.json, i3d_flow_keys.json: ``I3D(num_classes=400, modality=...).state_dict()`` of
  hassony2/kinetics_i3d_pytorch@786fbae src/i3dpt.py (video_features' copy gives the same keys and shapes).
- i3d_upstream_outputs.npz: Mixed_5c outputs of both upstream modules for the weights ``seeded_state`` makes
  and a small seeded input (its ``source`` entry says how).
- i3d_kinetics400_labels.json: the port's label_map.txt, the class order of its logits.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.optical_flow import raft_small

import vidvec.models.i3d as i3d
import vidvec.models.i3d_net as i3d_net
from vidvec.registry import get_card
from vidvec.weights import WeightsError, load_model

DATA = Path(__file__).parent / "data"


def seeded_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Deterministic weights with sane activations (He-scaled convs, BatchNorm statistics near 1); the
    reference outputs were computed from exactly these."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(0)
            continue
        if name.endswith("conv3d.weight"):
            value = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif name.endswith(("running_var", "batch3d.weight")):
            value = torch.rand(shape, generator=g) + 0.5
        else:
            value = torch.randn(shape, generator=g) * 0.1
        out[name] = value
    return out


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def full() -> i3d_net.TwoStreamI3D:
    torch.manual_seed(0)
    return i3d.build_i3d().eval()


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_state_dict_matches_the_port(full: i3d_net.TwoStreamI3D, stream: str) -> None:
    expected = json.loads((DATA / f"i3d_{stream}_keys.json").read_text())
    own = getattr(full, stream)
    assert [[k, list(v.shape)] for k, v in own.state_dict().items()] == expected["keys"]
    assert sum(p.numel() for p in own.parameters()) == expected["num_params"]
    assert own.conv3d_1a_7x7.conv3d.in_channels == expected["in_channels"]


def test_whole_model_keys_and_size(full: i3d_net.TwoStreamI3D) -> None:
    keys = list(full.state_dict())
    assert {k.split(".", 1)[0] for k in keys} == {"rgb", "flow", "raft"} == full.parts
    assert sum(p.numel() for p in full.parameters()) == i3d.KINETICS400_HASSONY2.num_params
    raft_keys = [k[len("raft."):] for k in keys if k.startswith("raft.")]
    assert raft_keys == list(i3d_net.optical_flow.raft_large().state_dict())


@pytest.mark.parametrize("variant,stream", [("video_features", "rgb"), ("hassony2", "rgb"),
                                            ("video_features", "flow")])
def test_numerics_match_the_upstream_modules(variant: str, stream: str) -> None:
    # Time 10 and width 40 give odd lengths at strided pools: the variants' padding rules differ there.
    reference = np.load(DATA / "i3d_upstream_outputs.npz")[f"{variant}_{stream}_mixed_5c"]
    channels = 3 if stream == "rgb" else 2
    net = i3d_net.I3D(channels, 400, variant).eval()
    net.load_state_dict(seeded_state(_shapes(net)))
    x = torch.rand((1, channels, 10, 64, 40), generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        volume = net.volume(x)
    np.testing.assert_allclose(volume.numpy(), reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_variants_differ() -> None:
    refs = np.load(DATA / "i3d_upstream_outputs.npz")
    assert np.abs(refs["hassony2_rgb_mixed_5c"] - refs["video_features_rgb_mixed_5c"]).max() > 0.1


def test_pooling_and_logits_equal_the_ports_head() -> None:
    torch.manual_seed(0)
    net = i3d_net.I3D(3, 7)
    volume = torch.randn(2, 1024, 7, 7, 7)  # Mixed_5c at 64 x 224 x 224
    # video_features (features=True): AvgPool3d((2,7,7), stride 1), squeeze, mean over time.
    pooled = torch.nn.AvgPool3d((2, 7, 7), (1, 1, 1))(volume)
    expected_latent = pooled.squeeze(3).squeeze(3).mean(2)
    # The port's logits: the classifier conv on the pooled volume, then the mean over time.
    expected_logits = net.conv3d_0c_1x1(pooled).squeeze(3).squeeze(3).mean(2)
    latent = i3d_net.pool_volume(volume)
    torch.testing.assert_close(latent, expected_latent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.logits(latent), expected_logits, rtol=1e-5, atol=1e-5)


def _tiny(**options) -> i3d_net.TwoStreamI3D:
    # RAFT small with 3 refinement steps keeps RAFT cheap on the CPU; the default (video_features') is 20.
    return i3d.build_i3d(flow="raft_small", flow_batch=3, flow_iterations=3, **options).eval()


@pytest.fixture(scope="module")
def tiny() -> i3d_net.TwoStreamI3D:
    torch.manual_seed(0)
    return _tiny()


def test_forward_shapes_per_stream(tiny: i3d_net.TwoStreamI3D) -> None:
    x = torch.rand(1, 3, 3, 128, 128) * 2 - 1  # RAFT needs 128 x 128 at least
    with torch.no_grad():
        both = tiny(x)
        assert both.shape == (1, 2048)
        logits = tiny.classify(both)
        assert logits.shape == (1, 400)
        # 'both' adds the streams' logits (two-stream I3D).
        torch.testing.assert_close(logits, tiny.rgb.logits(both[:, :1024]) + tiny.flow.logits(both[:, 1024:]))
        for streams in ("rgb", "flow"):
            single = _tiny(streams=streams)
            single.load_state_dict({k: v for k, v in tiny.state_dict().items()
                                    if k.split(".", 1)[0] in single.parts})
            out = single(x)
            assert out.shape == (1, 1024)
            # Each stream's vector is the same as inside the two-stream model.
            torch.testing.assert_close(out, both[:, :1024] if streams == "rgb" else both[:, 1024:])
    assert i3d.build_i3d(num_classes=0, streams="rgb").classify(torch.zeros(1, 1024)) is None
    assert i3d.build_i3d(streams="rgb").flow_iterations == 20  # video_features' RAFT iters


def test_rgb_stream_takes_all_frames_but_the_last() -> None:
    model = i3d.build_i3d(streams="rgb").eval()
    x = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    changed = x.clone()
    changed[:, :, -1] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(changed), rtol=0, atol=0)
        torch.testing.assert_close(model(x), model.rgb(x[:, :, :8]), rtol=0, atol=0)


class _FixedFlow(torch.nn.Module):
    """Stands in for RAFT: returns a given flow (per pair) as the last of its refinement steps."""

    def __init__(self, flow: torch.Tensor) -> None:
        super().__init__()
        self.flow = flow
        self.calls: list[int] = []

    def forward(self, first: torch.Tensor, second: torch.Tensor, num_flow_updates: int) -> list[torch.Tensor]:
        self.calls.append(len(first))
        return [self.flow.expand(len(first), 2, *first.shape[-2:])]


def test_flow_scaling_is_video_features() -> None:
    raw = torch.tensor([-25.0, -20.0, -1.0, 0.0, 0.1, 1.0, 19.9, 20.0, 33.0])
    # clamp to [-20, 20], q = round(128 + 6.375 f) (half to even: 0.5 -> 0, 255.5 -> 256), then 2 q / 255 - 1
    q = torch.tensor([0, 0, 122, 128, 129, 134, 255, 256, 256], dtype=torch.float64)
    expected = (2 * q - 255) / 255
    flow = torch.zeros(1, 2, 8, 8)
    flow[0, 0, 0, :8] = raw[:8]
    flow[0, 1, 0, 0] = raw[8]
    model = _tiny(streams="flow")
    model.raft = stub = _FixedFlow(flow)
    x = torch.zeros(2, 3, 4, 8, 8)  # 2 clips x 3 pairs, 3 pairs per RAFT call (flow_batch=3)
    out = model.flow_input(x)
    assert out.shape == (2, 2, 3, 8, 8)
    assert stub.calls == [3, 3]
    got = torch.cat([out[0, 0, 0, 0, :8], out[0, 1, 0, 0, :1]]).double()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(i3d_net.flow_to_i3d(raw).double(), expected, rtol=0, atol=1e-6)


def test_raft_inside_matches_torchvision(tiny: i3d_net.TwoStreamI3D) -> None:
    reference = raft_small(weights=None).eval()
    reference.load_state_dict(tiny.raft.state_dict())
    g = torch.Generator().manual_seed(2)
    x = torch.rand((2, 3, 3, 128, 128), generator=g) * 2 - 1  # 2 clips of 3 frames: 4 pairs
    one_pair_per_call = _tiny(streams="flow")
    one_pair_per_call.raft.load_state_dict(tiny.raft.state_dict())
    one_pair_per_call.flow_batch = 1
    with torch.no_grad():
        chunked = tiny.optical_flow(x)  # calls of 3 pairs, across the clips' boundary
        single = one_pair_per_call.optical_flow(x)
        for b in range(2):
            for t in range(2):
                direct = reference(x[b:b + 1, :, t], x[b:b + 1, :, t + 1], num_flow_updates=3)[-1]
                torch.testing.assert_close(single[b:b + 1, :, t], direct, rtol=1e-5, atol=1e-5)
                # Another batch size only changes float rounding (flows here reach 4 pixels).
                torch.testing.assert_close(chunked[b:b + 1, :, t], direct, rtol=1e-4, atol=1e-4)


def test_whole_frames_follow_video_features_geometry() -> None:
    # Frames larger than the crop: flow on the whole frame replicate-padded to multiples of 8 (width 51 -> 56,
    # 2 left and 3 right), then video_features' centre crop of the padded flow, floor((56 - 32) / 2) = 12; the
    # RGB crop is taken from the unpadded frame, floor((51 - 32) / 2) = 9.
    model = i3d.build_i3d(flow="raft_small", crop=32).eval()

    class Echo(torch.nn.Module):  # "flow" = the first frame's first two channels, to see the geometry
        def forward(self, first, second, num_flow_updates):
            return [first[:, :2] * 10]

    model.raft = Echo()
    x = torch.rand(1, 3, 3, 40, 51) * 2 - 1
    padded = F.pad(x[0].transpose(0, 1), (2, 3, 0, 0), mode="replicate").transpose(0, 1)  # (3, T, 40, 56)
    expected = i3d_net.flow_to_i3d(padded[None, :2, :-1, 4:36, 12:44] * 10)
    torch.testing.assert_close(model.flow_input(x), expected, rtol=0, atol=0)
    seen = []
    model.rgb.forward = lambda frames: seen.append(frames) or torch.zeros(1, 1024)
    model.flow.forward = lambda frames: torch.zeros(1, 1024)
    model(x)
    torch.testing.assert_close(seen[0], x[:, :, :-1, 4:36, 9:41], rtol=0, atol=0)


def test_flow_region_crop_runs_raft_on_the_crop_alone() -> None:
    # flow_region='crop': the frames are cropped first (floor offsets 4 and 9 in 40 x 51), RAFT sees only the
    # 32 x 32 crop (already a multiple of 8, so nothing is padded); the RGB stream is cropped as before.
    model = i3d.build_i3d(flow="raft_small", crop=32, flow_region="crop").eval()

    class Echo(torch.nn.Module):
        def forward(self, first, second, num_flow_updates):
            return [first[:, :2] * 10]

    model.raft = Echo()
    x = torch.rand(1, 3, 3, 40, 51) * 2 - 1
    expected = i3d_net.flow_to_i3d(x[:, :2, :-1, 4:36, 9:41] * 10)
    torch.testing.assert_close(model.flow_input(x), expected, rtol=0, atol=0)
    whole_frame = i3d.build_i3d(flow="raft_small", crop=32).eval()
    whole_frame.raft = Echo()
    assert not torch.equal(whole_frame.flow_input(x), expected)  # the default crops the padded frame's flow


@pytest.mark.slow
def test_two_videos_of_different_sizes_run_whole_frames_in_one_run(shared_dir: Path) -> None:
    import vidvec
    from vidvec.clips import Clip, Slot
    from vidvec.local import VideoEvents
    from vidvec.extraction import ExtractError, SamplingOverrides
    from vidvec.sources import collect_sources

    videos = [shared_dir / "assets" / "videos" / f"{name}.avi"
              for name in ("TrumanShow_wave_f_nm_np1_fr_med_26", "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0")]
    sampling = SamplingOverrides(fps=5.0, clip_len=3, stride=4)
    card = get_card("i3d")
    slot = Slot(sampling.apply(card), card.default_weights.preprocess)
    jobs = [(i, source, [0]) for i, source in enumerate(collect_sources(videos))]
    shapes = {(e.video, tuple(e.pixels.shape)) for e in VideoEvents(jobs, [slot]) if isinstance(e, Clip)}
    # 432 x 240 and 320 x 240 at short side 256 (video_features' truncation): the whole frames, uncropped.
    assert shapes == {(0, (3, 256, 460, 3)), (1, (3, 256, 341, 3))}

    def run(chosen):
        torch.manual_seed(0)
        return list(vidvec.extract(chosen, "i3d", None, weights="random", num_workers=0, batch_size=8,
                                   model_options={"flow": "raft_small"}, sampling=sampling))

    with pytest.raises(ExtractError, match="i3d takes whole frames and crops them itself; it has no --crops 3"):
        vidvec.prepare(videos, "i3d", None, weights="random", sampling=SamplingOverrides(crops=3))

    together = run(videos)
    assert [o.status for o in together] == ["done", "done"], [o.reason for o in together]
    alone = run(videos[1:])[0]
    assert together[1].features.shape == (alone.features.shape[0], 2048)
    np.testing.assert_allclose(together[1].features, alone.features, rtol=1e-4, atol=1e-4)


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="streams must be one of both, rgb, flow"):
        i3d.build_i3d(streams="depth")
    with pytest.raises(ValueError, match="flow must be one of raft_large, raft_small"):
        i3d.build_i3d(flow="farneback")
    with pytest.raises(ValueError, match="flow_region must be one of frame, crop"):
        i3d.build_i3d(flow_region="padded")
    with pytest.raises(ValueError, match="at least 2 frames"):
        i3d.build_i3d(streams="rgb")(torch.zeros(1, 3, 1, 64, 64))


def test_card() -> None:
    card = get_card("i3d")
    assert (card.family, card.input, card.embed_dim) == ("i3d", "video", 2048)
    assert (card.sampling.kind, card.sampling.fps, card.sampling.clip_len, card.sampling.stride) == (
        "windows", None, 65, 64)
    assert card.presets["video_features"].sampling.rule == "video_features"
    assert card.options == {"streams": ("both", "rgb", "flow"), "flow": ("raft_large", "raft_small"),
                            "flow_region": ("frame", "crop")}
    assert [card.embed_dim_for({"streams": s}) for s in ("both", "rgb", "flow")] == [2048, 1024, 1024]
    assert card.embed_dim_for({}) == 2048
    assert [card.extras_for({"streams": s}) for s in ("both", "rgb", "flow")] == [("flow",), (), ("flow",)]
    assert card.default_weights.companions == (i3d.FLOW_WEIGHTS, *i3d.RAFT_WEIGHTS.values())
    entry = card.default_weights
    assert entry.name == "KINETICS400_HASSONY2" and entry.url.endswith("/model/model_rgb.pth")
    assert i3d.FLOW_WEIGHTS.url.endswith("/model/model_flow.pth")
    assert "raw.githubusercontent.com/hassony2/kinetics_i3d_pytorch/" in entry.url
    p = entry.preprocess
    # No crop in the preprocessing: the model gets the 256-short-side frame whole and crops itself.
    assert (p.resize, p.crop, p.mean, p.std) == ((256,), None, (0.5,) * 3, (0.5,) * 3)
    labels = json.loads((DATA / "i3d_kinetics400_labels.json").read_text())["labels"]
    assert entry.categories == tuple(labels)
    assert i3d.RAFT_WEIGHTS["raft_large"].url.endswith("raft_large_C_T_SKHT_V1-0b8c9e55.pth")
    assert i3d.RAFT_WEIGHTS["raft_large"].sha256 == "0b8c9e55"
    assert i3d.RAFT_WEIGHTS["raft_small"].url.endswith("raft_small_C_T_V2-01064c6d.pth")


def _save_stream_file(path: Path, stream: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Like the port's 2018 files: plain I3D keys, no num_batches_tracked (PyTorch 0.3 had none).
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v
             for k, v in stream.state_dict().items() if not k.endswith("num_batches_tracked")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.fixture
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIDVEC_HOME", str(tmp_path))
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    # The fake RAFT file cannot have torchvision's hash; the real entry keeps it.
    fake = dict(i3d.RAFT_WEIGHTS, raft_small=dataclasses.replace(i3d.RAFT_WEIGHTS["raft_small"], sha256=None))
    monkeypatch.setattr(i3d, "RAFT_WEIGHTS", fake)
    return tmp_path / "checkpoints"


def test_default_weights_fetch_their_companions_offline(offline_home: Path, tiny: i3d_net.TwoStreamI3D) -> None:
    rgb = _save_stream_file(offline_home / i3d.KINETICS400_HASSONY2.file_name, tiny.rgb)
    flow = _save_stream_file(offline_home / i3d.FLOW_WEIGHTS.file_name, tiny.flow)
    raft = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in tiny.raft.state_dict().items()}
    torch.save(raft, offline_home / i3d.RAFT_WEIGHTS["raft_small"].file_name)

    loaded = load_model("i3d", build_options={"flow": "raft_small"})
    state = loaded.module.state_dict()
    for prefix, part in (("rgb.", rgb), ("flow.", flow), ("raft.", raft)):
        for key, value in part.items():
            assert torch.equal(state[prefix + key], value), prefix + key
    assert loaded.weights is i3d.KINETICS400_HASSONY2
    # No published sha256: each file's digest was recorded on first use (trust on first use).
    for name in (i3d.KINETICS400_HASSONY2.file_name, i3d.FLOW_WEIGHTS.file_name):
        assert (offline_home / (name + ".sha256")).is_file()

    # An RGB-only model needs nothing but the RGB file.
    (offline_home / i3d.FLOW_WEIGHTS.file_name).unlink()
    rgb_only = load_model("i3d", build_options={"streams": "rgb"}).module
    assert rgb_only.parts == {"rgb"}
    assert torch.equal(rgb_only.state_dict()["rgb.conv3d_1a_7x7.conv3d.weight"],
                       rgb["conv3d_1a_7x7.conv3d.weight"])
    # A missing companion is a clear error naming the file.
    with pytest.raises(WeightsError, match="model_flow.pth is missing and VIDVEC_OFFLINE=1"):
        load_model("i3d", build_options={"flow": "raft_small"})


@pytest.mark.slow
def test_merged_user_file_and_mismatches(tmp_path: Path, tiny: i3d_net.TwoStreamI3D) -> None:
    merged = tmp_path / "my_i3d.pth"
    torch.save(tiny.state_dict(), merged)
    loaded = load_model("i3d", weights=merged, build_options={"flow": "raft_small"})
    assert loaded.weights is None
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key

    bad = dict(tiny.state_dict())
    bad["rgb.conv3d_1a_7x7.conv3d.weight"] = torch.zeros(64, 3, 5, 7, 7)
    torch.save(bad, merged)
    with pytest.raises(WeightsError, match=r"does not fit the model; 1 shape mismatches.*conv3d_1a_7x7"):
        load_model("i3d", weights=merged, build_options={"streams": "rgb"})

    # A RAFT of the other size under raft.: named, not loaded.
    torch.save(tiny.state_dict(), merged)
    with pytest.raises(WeightsError, match="does not fit the model"):
        load_model("i3d", weights=merged)

    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match="is not an I3D checkpoint"):
        load_model("i3d", weights=other)


def test_under_the_video_features_preset_clip_len_is_its_stack_size():
    # video_features' I3D with stack_size=24 at extraction_fps 15 stamps its first stack 1600 ms: 25 frames are
    # read (the 25th is the second frame of the last flow pair) and the stamp is the last one's time, 24 / 15 s.
    from vidvec.extraction import SamplingOverrides
    from vidvec.registry import get_card
    from vidvec.sampling import plan

    card = get_card("i3d")
    spec = SamplingOverrides.preset("video_features", clip_len=24, fps=15).apply(card)
    assert spec.clip_len == 25
    clips = plan(spec, duration=4.0, native_fps=30.0)
    assert clips[0].stamp * 1000 == pytest.approx(1600.0)
    assert len(clips[0].times) == 25
    assert SamplingOverrides(clip_len=24).apply(card).clip_len == 24  # without the preset: every frame read
