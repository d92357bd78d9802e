"""PySlowFast's test-time sampling and preprocessing, as vidvec specs (other tools' named window schemes are
in :mod:`vidvec.presets`).

What PySlowFast's test loop feeds a model (upstream ``slowfast/datasets``, pyav backend), reproduced:

* Kinetics-style datasets (``kinetics`` and every dataset that is not ``ssv2``): TEST.NUM_ENSEMBLE_VIEWS
  clips, clip k decoded from a window of W = ceil(SAMPLING_RATE * (NUM_FRAMES - 1) / TARGET_FPS * fps)
  frames placed uniformly by the container's frame count, NUM_FRAMES frames taken at
  linspace(0, C - 1) in the window (C = SAMPLING_RATE * NUM_FRAMES / TARGET_FPS * fps), i.e. the video
  resampled to TARGET_FPS and every SAMPLING_RATE-th frame taken. Sampling rule ``pyslowfast`` (or
  ``pyslowfast_offset`` with DATA.USE_OFFSET_SAMPLING), see :mod:`vidvec.sampling`.
* Pixels: the short side scaled to TEST_CROP_SIZE (TRAIN_JITTER_SCALES[0] when there is one crop) with
  torch bilinear interpolation, then TEST.NUM_SPATIAL_CROPS square crops of TEST_CROP_SIZE at
  left/centre/right (top/centre/bottom for portrait); one crop is the centre one. MEAN/STD on [0, 1].
* SSv2 (``ssv2``): PySlowFast reads jpgs extracted with ``ffmpeg -r 30``; vidvec resamples the decoded
  frames to 30 fps the way that ffmpeg command does and takes the middle frame of each of NUM_FRAMES
  segments (rule ``ssv2``). Its single crop is the left/top one (``idx % NUM_SPATIAL_CROPS`` = 0), and the
  scale is TEST_CROP_SIZE.
* Charades (``charades``): frame folders at 24 fps (the dataset's released frames); view k starts at
  round(k * (L - span) / (views - 1)) and takes every SAMPLING_RATE-th frame (rule ``charades``); the
  scale is TEST_CROP_SIZE and crops follow ``idx % NUM_SPATIAL_CROPS``. Not checked against fixtures.
* DATA.REVERSE_INPUT_CHANNEL is applied by the model (``pack_pathway_output``) to what the dataset
  produced: RGB frames for video datasets, BGR for the frame-folder datasets SSv2 and Charades (cv2). So
  the preprocessing here hands the model the dataset's channel order (``channel_order`` "BGR" there), and
  the model's flip turns it into exactly what PySlowFast's model saw.

The resize runs in torch after decoding (``resize_backend="torch"``) because PySlowFast interpolates float
frames with ``F.interpolate`` (no antialias), which swscale does not reproduce to 1/255.

Not reproduced: the torchvision decoding backend (several configs name it; PySlowFast's own test fixtures
use pyav, and torchvision no longer ships the ops it needs), MULTIGRID.LONG_CYCLE_SAMPLING_RATE (random at
test time upstream), and the exact jpg compression of SSv2's extracted frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

# ``ffmpeg -i VIDEO -r 30`` in PySlowFast's DATASET.md for Something-Something v2.
SSV2_FRAME_RATE = 30.0
# Charades' released frames (Charades_v1_rgb) are 24 fps.
CHARADES_FRAME_RATE = 24.0
# Class counts that name the dataset of configs stored without TEST.DATASET (model sections only).
_CLASS_COUNTS = {174: "ssv2", 157: "charades"}

def pyslowfast_dataset(cfg: Mapping[str, Any]) -> str:
    """The test dataset a config's sampling follows: "ssv2", "charades" or the Kinetics-style "kinetics"."""
    for section in ("TEST", "TRAIN"):
        name = str(cfg.get(section, {}).get("DATASET", "")).lower()
        if name in ("ssv2", "charades"):
            return name
    guess = _CLASS_COUNTS.get(cfg.get("MODEL", {}).get("NUM_CLASSES"))
    if guess and cfg["DATA"].get("REVERSE_INPUT_CHANNEL"):
        return guess  # stored configs that keep the model sections only
    return "kinetics"


def test_time_sampling(cfg: Mapping[str, Any]) -> tuple[SamplingSpec, Preprocess]:
    """The sampling spec and preprocessing PySlowFast's test loop uses for this config."""
    data, test = cfg["DATA"], cfg["TEST"]
    crops = int(test["NUM_SPATIAL_CROPS"])
    if crops not in (1, 3):
        raise ValueError(f"TEST.NUM_SPATIAL_CROPS must be 1 or 3 for vidvec, not {crops}")
    crop = int(data["TEST_CROP_SIZE"])
    mean = tuple(float(v) for v in data["MEAN"])
    std = tuple(float(v) for v in data["STD"])
    dataset = pyslowfast_dataset(cfg)
    if dataset in ("ssv2", "charades"):
        if dataset == "ssv2":
            spec = SamplingSpec("views", fps=SSV2_FRAME_RATE, clip_len=int(data["NUM_FRAMES"]), views=1,
                                crops=crops, rule="ssv2")
        else:
            spec = SamplingSpec("views", fps=CHARADES_FRAME_RATE, clip_len=int(data["NUM_FRAMES"]),
                                sampling_rate=int(data["SAMPLING_RATE"]), views=int(test["NUM_ENSEMBLE_VIEWS"]),
                                crops=crops, rule="charades")
        # Frames from cv2 (BGR); one crop is idx % NUM_SPATIAL_CROPS = 0, the left/top one.
        preprocess = Preprocess(resize=(crop,), crop=(crop, crop), mean=mean, std=std, channel_order="BGR",
                                geometry="pyslowfast", single_crop=0, resize_backend="torch")
        return spec, preprocess
    spec = SamplingSpec(
        kind="views",
        fps=float(data["TARGET_FPS"]),
        clip_len=int(data["NUM_FRAMES"]),
        sampling_rate=int(data["SAMPLING_RATE"]),
        views=int(test["NUM_ENSEMBLE_VIEWS"]),
        crops=crops,
        rule="pyslowfast_offset" if data.get("USE_OFFSET_SAMPLING") else "pyslowfast",
    )
    # Three crops: scale = crop = TEST_CROP_SIZE. One crop: scale TRAIN_JITTER_SCALES[0], centre crop.
    scale = crop if crops > 1 else int(data["TRAIN_JITTER_SCALES"][0])
    preprocess = Preprocess(resize=(scale,), crop=(crop, crop), mean=mean, std=std, channel_order="RGB",
                            geometry="pyslowfast", single_crop=1, resize_backend="torch")
    return spec, preprocess
