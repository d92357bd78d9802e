"""PySlowFast test-time sampling and preprocessing against shared/fixtures/pyslowfast/preprocess.

The fixtures record what upstream PySlowFast (pyav backend) produced for two shared videos: per view the
frames it decoded and sampled, the resize and crop geometry, and for two views the normalised tensors.
Frame choice and geometry must be identical; pixels within 1/255 before normalisation.
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from vidvec.clips import Clip, Slot, assemble, video_events
from vidvec.decode import VideoDecoder, probe
from vidvec.models.pyslowfast import preprocessing as psf
from vidvec.models.pyslowfast.config import load_config
from vidvec.sampling import SamplingSpec, StreamTiming, ffmpeg_rate_frames, plan, ssv2_segment_positions
from vidvec.sources import VideoSource
from vidvec.transforms import Preprocess

VIDEOS = ["v_GGSY1Qvo990", "R6llTwEh07w"]
KINETICS = {"slowfast_8x8_r50": "Kinetics/c2/SLOWFAST_8x8_R50", "x3d_m": "Kinetics/X3D_M"}
PIXEL_TOL = 1 / 255


@pytest.fixture(scope="module")
def fixtures(shared_dir: Path) -> Path:
    root = shared_dir / "fixtures" / "pyslowfast" / "preprocess"
    if not root.is_dir():
        pytest.fail(f"PySlowFast preprocessing fixtures not found: {root}", pytrace=False)
    return root


def _record(fixtures: Path, key: str, video: str) -> dict:
    return json.loads((fixtures / f"{key}__{video}.json").read_text())


def _timing(record: dict) -> StreamTiming:
    v = record["video"]
    return StreamTiming(num_frames=v["stream_frames_header"], frame_rate=Fraction(*v["average_rate"]),
                        time_base=Fraction(*v["time_base"]), duration=v["stream_duration"],
                        start=v["full_decode_first_pts"][0])


def _cfg(key: str, record: dict):
    """The vidvec config for a fixture, with the fixture's explicit overrides applied."""
    cfg = load_config(KINETICS[key])
    c = record["config"]
    cfg.TEST.NUM_ENSEMBLE_VIEWS = c["TEST_NUM_ENSEMBLE_VIEWS"]
    cfg.TEST.NUM_SPATIAL_CROPS = c["TEST_NUM_SPATIAL_CROPS"]
    cfg.DATA.TEST_CROP_SIZE = c["DATA_TEST_CROP_SIZE"]
    return cfg


def _frame_indices(plans, fps: float) -> list[list[int]]:
    # Sample times sit inside their frame (i + 1/2) / fps: the frame index is the floor.
    return [[int(np.floor(t * fps)) for t in p.times] for p in plans]


# -- configs -> specs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(KINETICS))
def test_config_gives_the_fixture_settings(fixtures, key):
    record = _record(fixtures, key, VIDEOS[0])
    c = record["config"]
    spec, pre = psf.test_time_sampling(_cfg(key, record))
    assert (spec.kind, spec.rule) == ("views", "pyslowfast")
    assert (spec.fps, spec.clip_len, spec.sampling_rate) == (c["DATA_TARGET_FPS"], c["DATA_NUM_FRAMES"],
                                                             c["DATA_SAMPLING_RATE"])
    assert (spec.views, spec.crops) == (c["TEST_NUM_ENSEMBLE_VIEWS"], c["TEST_NUM_SPATIAL_CROPS"])
    assert pre.mean == tuple(c["DATA_MEAN"]) and pre.std == tuple(c["DATA_STD"])
    assert pre.channel_order == "RGB" and pre.resize == (256,) and pre.crop == (256, 256)
    assert json.loads(json.dumps(spec.to_dict()))["rule"] == "pyslowfast"
    hash(spec), hash(pre)


def test_ssv2_config_and_single_crop_settings():
    spec, pre = psf.test_time_sampling(load_config("SSv2/SLOWFAST_16x8_R50"))
    assert (spec.rule, spec.clip_len, spec.views, spec.crops, spec.fps) == ("ssv2", 64, 1, 1, 30.0)
    # cv2 loads BGR and REVERSE_INPUT_CHANNEL (in the model) flips it to RGB: the model gets BGR from us.
    assert pre.channel_order == "BGR" and pre.single_crop == 0 and pre.resize == (256,)
    # Kinetics with one crop: short side TRAIN_JITTER_SCALES[0], centre crop of TEST_CROP_SIZE.
    mvit_spec, mvit = psf.test_time_sampling(load_config("Kinetics/MVITv2_S_16x4"))
    assert mvit_spec.rule == "pyslowfast_offset" and (mvit_spec.views, mvit_spec.crops) == (5, 1)
    assert mvit.resize == (256,) and mvit.crop == (224, 224) and mvit.single_crop == 1


def test_presets_are_named_window_specs():
    from vidvec.presets import PRESETS

    ego, hero = PRESETS["ego4d"].sampling, PRESETS["hero"].sampling
    assert (ego.kind, ego.fps, ego.clip_len, ego.stride, ego.backpad_last) == ("windows", 30.0, 32, 16, True)
    # Ego4D's docs/data/features.md: 39 frames give [0, 31] and the backed-up [7, 38].
    assert [round(c.start * 30) for c in plan(ego, duration=39 / 30, native_fps=30.0)] == [0, 7]
    assert [round(c.times[-1] * 30) for c in plan(ego, duration=39 / 30, native_fps=30.0)] == [31, 38]
    clips = plan(hero, duration=9.0, native_fps=30.0)
    assert [c.start for c in clips] == pytest.approx([0.0, 1.5, 3.0, 4.5, 6.0, 7.5])  # one clip per 1.5 s chunk
    assert all(len(c.times) == 32 for c in clips)
    assert clips[0].times[1] - clips[0].times[0] == pytest.approx(2 / 30)


def test_new_fields_keep_old_settings_dicts():
    assert "rule" not in SamplingSpec("windows", fps=30, clip_len=32).to_dict()
    old = Preprocess(resize=(256,), crop=(224, 224), mean=(0, 0, 0), std=(1, 1, 1))
    assert set(old.to_dict()) == {"resize", "crop", "mean", "std", "channel_order", "scale", "interpolation"}
    with pytest.raises(ValueError):
        SamplingSpec("windows", fps=30, clip_len=8, rule="pyslowfast")
    with pytest.raises(ValueError):
        SamplingSpec("views", fps=30, clip_len=8, sampling_rate=2)


# -- frame choice -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize("key", sorted(KINETICS))
def test_kinetics_frame_indices_match_every_view(fixtures, key, video):
    record = _record(fixtures, key, video)
    spec, _ = psf.test_time_sampling(_cfg(key, record))
    timing = _timing(record)
    fps = float(timing.frame_rate)
    plans = plan(spec, timing.num_frames / fps, fps, timing=timing)
    assert len(plans) == record["config"]["TEST_NUM_ENSEMBLE_VIEWS"]
    got = _frame_indices(plans, fps)
    for view in record["views"]:
        sampling = view["temporal_sampling"]
        assert got[view["temporal_clip_index"]] == sampling["frame_indices"], view["view_index"]
        window = view["decoder"]["window_frame_indices"]
        # the window the decoder kept, and the clamped, truncated linspace inside it
        assert sampling["window_index"] == [i - window[0] for i in sampling["frame_indices"]]


@pytest.mark.parametrize("video", VIDEOS)
def test_probe_gives_the_header_pyslowfast_reads(fixtures, shared_dir, video):
    record = _record(fixtures, "slowfast_8x8_r50", video)
    info = probe(shared_dir / "assets" / "videos" / f"{video}.mp4")
    assert StreamTiming.from_info(info) == _timing(record)


@pytest.mark.parametrize("video", VIDEOS)
def test_ssv2_frame_positions_and_ffmpeg_resampling(fixtures, video):
    record = _record(fixtures, "ssv2_slowfast_16x8_r50", video)
    kin = _record(fixtures, "slowfast_8x8_r50", video)
    timing = _timing(kin)
    fps = float(timing.frame_rate)
    jpgs = record["frame_extraction"]["jpg_sha256"]
    resampled = ffmpeg_rate_frames(timing.num_frames, fps, 30.0)
    # ffmpeg -r 30 wrote one jpg per resampled frame; equal neighbours are repeats of one source frame
    assert len(resampled) == len(jpgs) == record["views"][0]["frame_list_length"]
    assert [a == b for a, b in zip(resampled, resampled[1:])] == [a == b for a, b in zip(jpgs, jpgs[1:])]
    assert len(set(resampled)) == len(set(jpgs)) == timing.num_frames
    view = record["views"][0]
    assert ssv2_segment_positions(len(jpgs), 64) == view["frame_indices"]
    spec, pre = psf.test_time_sampling(load_config("SSv2/SLOWFAST_16x8_R50"))
    (clip,) = plan(spec, timing.num_frames / fps, fps, timing=timing)
    assert _frame_indices([clip], fps)[0] == [resampled[p] for p in view["frame_indices"]]
    spatial = view["spatial"]
    assert list(pre.resized_size(*spatial["input_hw"])) == spatial["resized_hw"]
    (box,) = pre.crop_boxes(*spatial["resized_hw"], spec.crops)
    assert list(box) == spatial["crop_box_yxhw"]


# -- geometry ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize("key", sorted(KINETICS))
def test_resize_and_crop_boxes_match_every_view(fixtures, key, video):
    record = _record(fixtures, key, video)
    spec, pre = psf.test_time_sampling(_cfg(key, record))
    for view in record["views"]:
        spatial = view["spatial"]
        size = pre.resized_size(*spatial["input_hw"])
        assert list(size) == spatial["resized_hw"]
        boxes = pre.crop_boxes(*size, spec.crops)
        assert list(boxes[view["spatial_crop_index"]]) == spatial["crop_box_yxhw"]


def test_pyslowfast_geometry_rules():
    pre = Preprocess(resize=(256,), crop=(256, 256), mean=(0, 0, 0), std=(1, 1, 1), geometry="pyslowfast")
    assert pre.resized_size(256, 340) == (256, 340)  # short side already right: untouched
    assert pre.resized_size(360, 480) == (256, 341)  # floor, not round
    assert pre.resized_size(640, 360) == (455, 256)
    assert [b[0] for b in pre.crop_boxes(455, 256, 3)] == [0, 100, 199]  # portrait: top/centre/bottom
    assert pre.crop_boxes(256, 341, 1) == [(0, 43, 256, 256)]  # ceil((341 - 256) / 2)


def test_torch_resize_is_pyslowfast_interpolate():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    pre = Preprocess(resize=(20,), crop=(20, 20), mean=(0, 0, 0), std=(1, 1, 1), geometry="pyslowfast",
                     resize_backend="torch")
    assert pre.decoder_size is None
    out = pre.resize_frames(frames)
    x = torch.from_numpy(frames).float().permute(3, 0, 1, 2) / 255  # C T H W, as PySlowFast
    ref = torch.nn.functional.interpolate(x, size=(20, 26), mode="bilinear", align_corners=False)
    ref = ref.permute(1, 2, 3, 0).numpy()
    assert out.dtype == np.uint8 and out.shape == (3, 20, 26, 3)
    assert np.abs(out / 255 - ref).max() <= 0.5 / 255 + 1e-6


# -- the whole chain on the real videos --------------------------------------------------------------------

def _reference_pixels(fixtures: Path, key: str, video: str, view: int, pathways: int) -> np.ndarray:
    """The fast (or only) pathway of an npz view, back in [0, 1] as (T, H, W, C)."""
    with np.load(fixtures / f"{key}__{video}.npz") as npz:
        t = npz[f"view{view}_pathway{pathways - 1}"].astype(np.float32)
    return (t * 0.225 + 0.45).transpose(1, 2, 3, 0)


@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize("key", sorted(KINETICS))
def test_decoded_clips_match_pyslowfast_pixels(fixtures, shared_dir, key, video):
    record = _record(fixtures, key, video)
    spec, pre = psf.test_time_sampling(_cfg(key, record))
    path = shared_dir / "assets" / "videos" / f"{video}.mp4"
    pathways = len(record["views"][0]["pathways"])
    # 1. The native-size uint8 clips are PySlowFast's, bit for bit (same frames, same RGB conversion).
    with VideoDecoder(path) as decoder:
        info = decoder.info
        plans = plan(spec, info.duration, info.fps, timing=StreamTiming.from_info(info))
        native = {p.index: frames for p, frames in assemble(plans, decoder)}
    for view in record["views"][:: spec.crops]:
        clip = native[view["temporal_clip_index"]]
        digest = hashlib.sha256(np.ascontiguousarray(clip).tobytes()).hexdigest()
        assert digest == view["temporal_sampling"]["sampled_uint8_sha256"], view["view_index"]
    # 2. The pipeline's clips (torch resize after decoding, crops) match the saved tensors within 1/255.
    events = list(video_events(0, VideoSource(path, video), [Slot(spec, pre)]))
    clips = {(e.clip, e.crop): e.pixels for e in events if isinstance(e, Clip)}
    assert len(clips) == len(record["views"])
    for view_index in record["npz_views"]:
        view = record["views"][view_index]
        ours = clips[(view["temporal_clip_index"], view["spatial_crop_index"])]
        ref = _reference_pixels(fixtures, key, video, view_index, pathways)
        assert ours.shape == ref.shape
        diff = np.abs(ours.numpy() / 255.0 - ref).max()
        assert diff <= PIXEL_TOL, (view_index, diff * 255)
        # and what the model gets after normalisation, as the npz holds it (float16)
        normed = pre.normalize(ours[None])[0]  # C T H W
        with np.load(fixtures / f"{key}__{video}.npz") as npz:
            want = torch.from_numpy(npz[f"view{view_index}_pathway{pathways - 1}"].astype(np.float32))
        assert (normed - want).abs().max().item() <= PIXEL_TOL / 0.225 + 1e-2


# -- edge cases of the rules -------------------------------------------------------------------------------

KINETICS_8X8 = SamplingSpec("views", fps=30.0, clip_len=32, sampling_rate=2, views=10, crops=3, rule="pyslowfast")


def test_stream_without_duration_header_takes_the_decode_everything_path():
    timing = StreamTiming(num_frames=100, frame_rate=Fraction(30), time_base=None, duration=None)
    plans = plan(KINETICS_8X8, 100 / 30, 30.0, timing=timing)
    got = _frame_indices(plans, 30.0)
    # clip size C = 64 frames; clip k starts at (100 - 64) * k / 10 and takes linspace(s, s + 63, 32)
    assert got[0] == [int(i) for i in np.floor(np.linspace(0, 63, 32, dtype=np.float32))]
    assert got[9][0] == 32 and got[9][-1] == 95
    assert not any(p.padded for p in plans)


def test_video_shorter_than_a_clip_repeats_its_last_frame():
    timing = StreamTiming(num_frames=20, frame_rate=Fraction(30), time_base=Fraction(1, 15360),
                          duration=20 * 512)
    plans = plan(KINETICS_8X8, 20 / 30, 30.0, timing=timing)
    got = _frame_indices(plans, 30.0)
    assert all(g == got[0] for g in got) and got[0][-1] == 19 and got[0][0] == 0
    assert all(p.padded for p in plans)


def test_offset_sampling_and_spans():
    spec = SamplingSpec("views", fps=30.0, clip_len=16, sampling_rate=4, views=5, rule="pyslowfast_offset")
    timing = StreamTiming(num_frames=300, frame_rate=Fraction(30), time_base=Fraction(1, 15360),
                          duration=300 * 512)
    got = _frame_indices(plan(spec, 10.0, 30.0, timing=timing), 30.0)
    # window W = ceil(4 * 15 / 30 * 30) = 60; starts k * floor(240 / 4) = 0, 60, ..., 240
    assert [g[0] for g in got] == [0, 60, 120, 180, 240]
    # a span is a shorter video made of the frames that start in it
    span = _frame_indices(plan(spec, 10.0, 30.0, start=2.0, end=6.0, timing=timing), 30.0)
    assert min(min(g) for g in span) == 60 and max(max(g) for g in span) <= 179


def test_overriding_the_kind_leaves_the_pyslowfast_rule():
    spec = KINETICS_8X8.with_overrides(kind="windows", stride=16)
    assert spec.rule == "uniform" and spec.sampling_rate == 1
    assert KINETICS_8X8.with_overrides(views=5).rule == "pyslowfast"


def test_charades_rule_and_config():
    from vidvec.models.pyslowfast.zoo import config_for
    from vidvec.sampling import charades_clip_positions

    # span 7, gap 93 / 2 = 46.5: round() halves to even, as upstream's Python round does
    assert charades_clip_positions(100, 4, 2, 3) == [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]
    spec, pre = psf.test_time_sampling(config_for("Charades/SLOWFAST_16x8_R50"))
    assert (spec.rule, spec.fps, spec.clip_len, spec.sampling_rate, spec.views) == ("charades", 24.0, 64, 2, 10)
    assert pre.channel_order == "BGR" and pre.resize == (256,)
    # a 24 fps video is its own frame list
    timing = StreamTiming(num_frames=480, frame_rate=Fraction(24), time_base=Fraction(1, 12288), duration=480 * 512)
    got = _frame_indices(plan(spec, 20.0, 24.0, timing=timing), 24.0)
    assert got[0][:3] == [0, 2, 4] and got[-1][-1] == 479


@pytest.mark.parametrize("video", VIDEOS)
def test_ssv2_clip_matches_the_jpg_based_tensors_up_to_jpeg_noise(fixtures, shared_dir, video):
    """PySlowFast's SSv2 tensors come from q:v 1 jpgs, so pixels differ by JPEG noise (~2 levels on average);
    every frame must still be the right one: a frame off by one differs by 5+ levels on average here."""
    spec, pre = psf.test_time_sampling(load_config("SSv2/SLOWFAST_16x8_R50"))
    path = shared_dir / "assets" / "videos" / f"{video}.mp4"
    (clip,) = [e for e in video_events(0, VideoSource(path, video), [Slot(spec, pre)]) if isinstance(e, Clip)]
    ours = clip.pixels.numpy().astype(np.float32) / 255
    ref = _reference_pixels(fixtures, "ssv2_slowfast_16x8_r50", video, 0, 2)  # RGB after the model's flip
    per_frame = np.abs(ours - ref).reshape(len(ours), -1).mean(1) * 255
    assert per_frame.max() < 3.0, per_frame.max()
