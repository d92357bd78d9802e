"""Other tools' ways of running a model (``--preset NAME``): their sampling, and where they differ from the
model card, their pixels, build options and vector normalisation.

A preset is plain data. A model card may carry its own preset under a name (``card.presets``: the scheme
v-iashin/video_features or HERO uses for that model); otherwise the named scheme of :data:`PRESETS` applies
to every model, its sampling fields laid over the card's own sampling. Where each rule comes from is in
docs/compatibility.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .sampling import SamplingSpec


@dataclass(frozen=True)
class Preset:
    """``sampling``: the clips the tool cuts (``image_sampling``: for image models, where it differs).
    ``pixels``: the :class:`~vidvec.transforms.Preprocess` fields the tool sets differently from the weights
    entry (resize, crop, interpolation, geometry; the normalisation stays the weights'). ``options``: build
    options it implies (user options win). ``normalize``: "l2" when the tool stores each vector divided by its
    L2 norm."""

    sampling: SamplingSpec
    pixels: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    normalize: str = "none"
    image_sampling: SamplingSpec | None = None


# HERO's extractors (linjieli222/HERO_Video_Feature_Extractor) decode with ``ffmpeg -vf fps=R,scale=W:H``: the
# short side scaled to 224 and the long side to int(long * 224 / short) by the scale filter (bicubic, its
# default; resize_backend "ffmpeg"). Its SlowFast and MIL-NCE S3D extractors then crop 224 x 224 at
# int((side - 224) / 2), its ResNet extractor keeps the whole frame. Those are video_features' size and offset
# rules (geometry "video_features").
HERO_PIXELS = {"resize": (224,), "crop": (224, 224), "interpolation": "bicubic", "geometry": "video_features",
               "resize_backend": "ffmpeg"}
HERO_WHOLE_FRAME_PIXELS = {**HERO_PIXELS, "crop": None}

# HERO's ResNet-152 features (resnets/extract.py): one frame per --clip_len seconds (1.5 by default, 2 in its
# README) through ffmpeg's fps filter, short videos at a higher rate (rule "hero", kind frames), the 2048-d
# pool of the whole frame, L2-normalised (--l2_normalize 1, its default).
HERO_FRAMES = Preset(SamplingSpec("frames", stride_seconds=1.5, rule="hero"), pixels=HERO_WHOLE_FRAME_PIXELS,
                     normalize="l2")

#: Named schemes for every model (a card's own preset of the same name wins).
PRESETS: dict[str, Preset] = {
    # Ego4D's released SlowFast 8x8 R101 features: windows of 32 consecutive frames of the 30 fps canonical
    # video, one every 16 frames, and a last window backed up to end at the last frame when the complete
    # windows leave frames uncovered (Ego4D's docs/data/features.md: 39 frames give [0, 31] and [7, 38]).
    # Its image features (omnivore_image_swinl): one frame every 6 frames of the 30 fps video (5 per second).
    "ego4d": Preset(SamplingSpec("windows", fps=30.0, clip_len=32, stride=16, backpad_last=True),
                    image_sampling=SamplingSpec("windows", fps=30.0, clip_len=1, stride=6)),
    # HERO's SlowFast R50 8x8 features (slowfast/extract_feature) and MIL-NCE S3D features (mil-nce/, the same
    # Preprocessing): the video re-encoded with ffmpeg's fps filter to 30 fps (--target_framerate), cut into
    # 1.5 s chunks (--clip_len 3/2; its README also uses 2: ``--stride 2s``), one clip of NUM_FRAMES 32 per
    # chunk at SAMPLING_RATE 2: frames 0, 2, .., 44 of the chunk, then frame 44 again (for a 30 fps video; the
    # step scales with floor(video fps) / 30). Short tails are tiled as HERO pads its tensor (rule "hero").
    "hero": Preset(SamplingSpec("windows", fps=30.0, clip_len=32, sampling_rate=2, stride_seconds=1.5, rule="hero"),
                   pixels=HERO_PIXELS),
}

# Names only some models have a preset under (their own scheme in ``card.presets``).
MODEL_PRESETS = ("video_features",)
# The sampling fields a scheme of PRESETS lays over a card's sampling (views stay the card's).
_LAID_OVER = ("kind", "fps", "clip_len", "stride", "stride_seconds", "crops", "backpad_last", "rule",
              "sampling_rate")


def preset_names() -> list[str]:
    return [*PRESETS, *(name for name in MODEL_PRESETS if name not in PRESETS)]


def resolve(card: Any, name: str) -> tuple[Preset, bool]:
    """The preset ``name`` for ``card`` and whether it is the card's own; KeyError when there is none."""
    own = card.presets.get(name)
    if own is not None:
        return own, True
    if name not in PRESETS:
        raise KeyError(name)
    preset = PRESETS[name]
    if card.input == "image" and preset.image_sampling is not None:
        preset = replace(preset, sampling=preset.image_sampling)
    return preset, False


def laid_over(sampling: SamplingSpec, preset: Preset) -> SamplingSpec:
    """A scheme of :data:`PRESETS` on a card's own sampling: its set fields replace the card's (views stay)."""
    return sampling.with_overrides(**{name: getattr(preset.sampling, name) for name in _LAID_OVER})
