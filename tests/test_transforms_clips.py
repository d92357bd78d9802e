import numpy as np
import pytest
import torch

from vidvec.clips import assemble
from vidvec.sampling import SamplingSpec, plan
from vidvec.transforms import Preprocess

IMAGENET = Preprocess(resize=(256,), crop=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def test_resized_size_short_side_and_exact():
    assert IMAGENET.resized_size(240, 320) == (256, 341)
    assert IMAGENET.resized_size(320, 240) == (341, 256)
    exact = Preprocess(resize=(128, 171), crop=(112, 112), mean=(0, 0, 0), std=(1, 1, 1))
    assert exact.resized_size(240, 320) == (128, 171)


SIZES = [(256, 340), (240, 432), (432, 240), (360, 480), (720, 1280), (480, 854), (240, 560), (288, 352), (225, 301)]


@pytest.mark.parametrize("height, width", SIZES)
def test_torchvision_layout_is_torchvisions_resize_and_center_crop(height, width):
    import torchvision.transforms as T

    pre = Preprocess(resize=(224,), crop=(224, 224), mean=(0,) * 3, std=(1,) * 3, geometry="torchvision")
    frame = torch.arange(height * width, dtype=torch.float64).reshape(1, height, width)
    resized = T.Resize(224, antialias=False)(frame)
    assert pre.resized_size(height, width) == tuple(resized.shape[1:])
    h, w = resized.shape[1:]
    grid = torch.arange(h * w, dtype=torch.float64).reshape(1, h, w)
    corner = int(T.CenterCrop(224)(grid)[0, 0, 0])
    top, left, _, _ = pre.crop_boxes(h, w, 1)[0]
    assert (top, left) == divmod(corner, w)


@pytest.mark.parametrize("height, width", SIZES)
def test_video_features_layout_is_its_i3d_resize_and_crop(height, width):
    # video_features' ResizeImproved: the short side becomes s and the other int(s * other / short);
    # TensorCenterCrop: offsets (dim - crop) // 2.
    pre = Preprocess(resize=(256,), crop=(224, 224), mean=(0,) * 3, std=(1,) * 3, geometry="video_features")
    expected = (int(256 * height / width), 256) if width < height else (256, int(256 * width / height))
    if min(height, width) == 256:
        expected = (height, width)
    assert pre.resized_size(height, width) == expected
    h, w = expected
    assert pre.crop_boxes(h, w, 1)[0][:2] == ((h - 224) // 2, (w - 224) // 2)


def _video_features_tensor_transforms(frames: torch.Tensor, size: int) -> torch.Tensor:
    """A transcription of video_features' models/transforms.py Resize(int) and CenterCrop((size, size)) on
    float (T, C, H, W) frames, as its S3D extractor applies them."""
    scale = float(size) / min(frames.shape[-2:])
    resized = torch.nn.functional.interpolate(frames, size=None, scale_factor=scale, mode="bilinear",
                                              align_corners=False, recompute_scale_factor=False)
    h, w = resized.shape[-2:]
    i, j = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return resized[..., i:i + size, j:j + size]


@pytest.mark.parametrize("height, width", SIZES)
def test_video_features_tensor_layout_is_its_s3d_resize_and_crop(height, width):
    from vidvec.registry import get_card

    pre = get_card("s3d_kinetics400").default_weights.preprocess
    assert pre.geometry == "video_features_tensor"
    frames = np.random.default_rng(height * width).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    ours = pre.crop_frames(pre.resize_frames(frames))[0]
    theirs = _video_features_tensor_transforms(torch.from_numpy(frames).permute(0, 3, 1, 2).double(), 224)
    assert ours.shape == (2, 224, 224, 3)
    # vidvec ships uint8 (rounded after the resize); video_features keeps floats
    difference = np.abs(ours.astype(np.float64) - theirs.permute(0, 2, 3, 1).numpy())
    assert difference.max() <= 0.52 and difference.mean() < 0.3


def test_video_features_tensor_layout_needs_torch_and_a_short_side():
    with pytest.raises(ValueError, match="video_features_tensor"):
        Preprocess(resize=(224,), crop=(224, 224), mean=(0,) * 3, std=(1,) * 3, geometry="video_features_tensor")


def test_three_crops_follow_the_long_side():
    frames = np.arange(2 * 256 * 341 * 3, dtype=np.int64).reshape(2, 256, 341, 3).astype(np.uint8)
    crops = IMAGENET.crop_frames(frames, crops=3)
    assert [c.shape for c in crops] == [(2, 224, 224, 3)] * 3
    boxes = IMAGENET.crop_boxes(256, 341, 3)
    assert [b[1] for b in boxes] == [0, (341 - 224) // 2, 341 - 224]
    assert np.array_equal(crops[2], frames[:, 16:240, 117:341])
    portrait = IMAGENET.crop_boxes(341, 256, 3)
    assert [b[0] for b in portrait] == [0, (341 - 224) // 2, 341 - 224]


def test_frame_smaller_than_crop_is_padded_to_crop_size():
    small = np.full((1, 100, 150, 3), 7, np.uint8)
    (crop,) = IMAGENET.crop_frames(small)
    assert crop.shape == (1, 224, 224, 3) and np.all(crop == 7)


def test_normalize_layouts_and_channel_order():
    pixels = torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8)
    pixels[..., 0] = 255  # pure red
    video = IMAGENET.normalize(pixels, video=True)
    assert video.shape == (2, 3, 4, 8, 8)
    assert video[0, 0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    image = IMAGENET.normalize(pixels, video=False)
    assert image.shape == (8, 3, 8, 8)
    bgr = Preprocess(resize=(8,), crop=(8, 8), mean=(0, 0, 0), std=(1, 1, 1), channel_order="BGR")
    assert bgr.normalize(pixels)[0, 2, 0, 0, 0].item() == pytest.approx(1.0)
    assert IMAGENET.normalize(pixels, torch.bfloat16).dtype == torch.bfloat16


class FakeDecoder:
    """Frames are 1x1 images holding their own index; records the most frames alive at once."""

    def __init__(self, fps):
        self.fps = fps
        self.requested = None

    def frames_at(self, times):
        self.requested = list(times)
        last = None
        for i, t in enumerate(times):
            index = int(np.floor(t * self.fps + 1e-4))
            if last is None or last[0] != index:
                last = (index, np.full((1, 1, 3), index % 256, np.uint8))
            yield i, last[1]


def test_assemble_decodes_each_instant_once_and_keeps_clip_order():
    spec = SamplingSpec("windows", fps=30, clip_len=32, stride=16)
    plans = plan(spec, duration=10.0, native_fps=30)
    decoder = FakeDecoder(30)
    clips = list(assemble(plans, decoder))
    # 17 windows (starts 0..256) need frames 0..287, each asked for once although windows overlap
    assert len(decoder.requested) == 288 == len(set(decoder.requested))
    assert [p.index for p, _ in clips] == list(range(len(plans)))
    for p, frames in clips:
        first = int(round(p.start * 30))
        assert frames.shape == (32, 1, 1, 3)
        assert list(frames[:, 0, 0, 0]) == [(first + j) % 256 for j in range(32)]


def test_assemble_handles_views_and_padding():
    spec = SamplingSpec("views", fps=30, clip_len=64, views=3)
    plans = plan(spec, duration=49 / 30, native_fps=30)  # shorter than a clip: all views identical, padded
    clips = list(assemble(plans, FakeDecoder(30)))
    assert len(clips) == 3
    frames = clips[0][1][:, 0, 0, 0]
    assert frames[0] == 0 and frames[-1] == 48 and all(p.padded for p, _ in clips)


def test_grouped_stacks_runs_of_clips_and_keeps_event_order():
    from vidvec.clips import Clip, ClipGroup, VideoFinished, grouped

    def clip(video, i):
        return Clip(video, i, 0, torch.full((2, 4, 4, 3), i, dtype=torch.uint8), i, i + 1, False)

    events = [clip(0, 0), clip(0, 1), clip(0, 2), VideoFinished(0, 0.1), clip(1, 0), VideoFinished(1, 0.1)]
    out = list(grouped(events, size=2))
    assert [type(e).__name__ for e in out] == ["ClipGroup", "ClipGroup", "VideoFinished", "ClipGroup",
                                              "VideoFinished"]
    assert out[0].pixels.shape == (2, 2, 4, 4, 3)
    unpacked = out[0].unpack() + out[1].unpack()
    assert [c.clip for c in unpacked] == [0, 1, 2]
    assert all(int(c.pixels[0, 0, 0, 0]) == c.clip for c in unpacked)
    capped = list(grouped(events[:3], size=10, max_bytes=2 * 4 * 4 * 3))
    assert [len(e.clips) for e in capped if isinstance(e, ClipGroup)] == [1, 1, 1]


def test_grouped_keeps_each_slots_run_when_slots_interleave():
    from vidvec.clips import Clip, ClipGroup, VideoFinished, grouped

    def clip(slot, i):
        return Clip(0, i, 0, torch.full((1, 2, 2, 3), 10 * slot + i, dtype=torch.uint8), i, i + 1, False, slot)

    events = [clip(s, i) for i in range(5) for s in (0, 1)] + [VideoFinished(0, 0.1)]
    out = list(grouped(events, size=2))
    groups = [e for e in out if isinstance(e, ClipGroup)]
    assert isinstance(out[-1], VideoFinished) and len(out) == 7  # 3 groups per slot (2, 2, 1), then the end
    for slot in (0, 1):
        mine = [g for g in groups if g.clips[0].slot == slot]
        assert [len(g.clips) for g in mine] == [2, 2, 1]
        clips = [c for g in mine for c in g.unpack()]
        assert [c.clip for c in clips] == list(range(5)) and all(c.slot == slot for c in clips)
        assert [int(c.pixels[0, 0, 0, 0]) for c in clips] == [10 * slot + i for i in range(5)]


def test_grouped_starts_a_new_group_when_the_clip_shape_changes():
    from vidvec.clips import Clip, ClipGroup, grouped

    def clip(video, i, width):  # whole frames (a model without a crop): each video keeps its own width
        return Clip(video, i, 0, torch.full((2, 4, width, 3), i, dtype=torch.uint8), i, i + 1, False)

    events = [clip(0, 0, 6), clip(0, 1, 6), clip(1, 0, 5), clip(1, 1, 5), clip(2, 0, 5)]
    groups = [e for e in grouped(events, size=4) if isinstance(e, ClipGroup)]
    assert [(g.pixels.shape[0], g.pixels.shape[3]) for g in groups] == [(2, 6), (3, 5)]
    assert [(c.video, c.clip) for g in groups for c in g.unpack()] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]


def test_no_crop_hands_the_resized_frame_whole():
    pre = Preprocess(resize=(256,), crop=None, mean=(0.5,) * 3, std=(0.5,) * 3, geometry="video_features")
    frames = np.random.default_rng(0).integers(0, 256, (3, 256, 460, 3), dtype=np.uint8)
    (whole,) = pre.crop_frames(frames)
    assert whole.shape == frames.shape and np.array_equal(whole, frames)
    assert pre.to_dict()["crop"] is None  # part of the settings: a cropping run's folder is not resumed
    with pytest.raises(ValueError, match="3 crops need a crop size"):
        pre.crop_frames(frames, 3)
