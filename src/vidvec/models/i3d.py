"""Two-stream I3D (Carreira & Zisserman 2017), Kinetics-400, as v-iashin/video_features extracts it.

Card ``i3d`` (build options ``streams`` = both | rgb | flow, ``flow`` = raft_large | raft_small,
``flow_region`` = frame | crop):

- Weights: DeepMind's Kinetics-400 I3D (ImageNet-inflated) as converted to PyTorch by
  hassony2/kinetics_i3d_pytorch (``model/model_rgb.pth``, ``model/model_flow.pth``; the same files
  video_features ships as ``i3d_rgb.pt`` / ``i3d_flow.pt``), state_dict names unchanged, under the prefixes
  ``rgb.`` and ``flow.``. Optical flow comes from torchvision's RAFT, under the prefix ``raft.``:
  ``raft_large`` with ``Raft_Large_Weights.C_T_SKHT_V1`` (torchvision's port of the original RAFT's
  ``raft-sintel.pth``, which video_features uses), ``raft_small`` with ``Raft_Small_Weights.C_T_V2``.
- Input: a stack of 64 + 1 frames (default sampling: windows of 65 frames at the video's own frame rate, a new
  one every 64 frames, as video_features' stack_size 64 / step_size 64), short side resized to 256, centre
  crop 224 x 224, RGB scaled to [-1, 1] (mean 0.5, std 0.5 on [0, 1]).
- RGB stream: the first 64 frames. Flow stream: RAFT (20 refinement iterations, video_features' setting) on
  the 64 pairs of consecutive frames, computed on the fly in batches and never written anywhere, then as
  video_features does: clamped to [-20, 20], quantised like an 8-bit flow image (round(128 + 255 / 40 * f))
  and mapped to [-1, 1] (2 q / 255 - 1).
- Vector: per stream, I3D's AvgPool3d((2, 7, 7), stride 1) after Mixed_5c, averaged over the remaining time
  steps (video_features' ``features=True`` output), 1024-d; streams 'both' concatenates [rgb, flow] (2048-d).
- Logits: the Conv3d_0c_1x1 classifier on that vector (equal to I3D's logits, as the classifier is linear);
  'both' adds the two streams' logits, as DeepMind's and hassony2's two-stream evaluation do.

Geometry as video_features: the decoder hands the model the resized frame whole; RAFT runs on it (padded to
a multiple of 8) and both streams are cropped afterwards (the flow from the padded frame). Build option
``flow_region='crop'`` runs RAFT on the 224 crop alone instead: 1.6x less RAFT time on 4:3 video, 2.7x on
16:9 (raft_small, CPU), but flow near the crop border differs, as RAFT then sees nothing beyond it.

``variant`` picks the port's numerics: 'video_features' (default: BatchNorm eps 1e-5 and padding fixed at
build time, the copy of the port that produced video_features' published features) or 'hassony2' (the port's
current master: eps 1e-3 and TensorFlow 'SAME' temporal padding chosen from the input's length).

This module is the card and its checkpoint hooks (no torch at import); the network is ``i3d_net``, imported by
``build_i3d``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vidvec import categories
from vidvec.checkpoints import WeightsError, fetch, hash_prefix, load_into, load_state_dict, with_batchnorm_counters
from vidvec.models.torchvision_weights import TORCHVISION_LICENSE, member
from vidvec.presets import Preset
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

if TYPE_CHECKING:
    from torch import Tensor, nn

    from vidvec.models.i3d_net import TwoStreamI3D

FAMILY = "i3d"
STREAMS = ("both", "rgb", "flow")
FLOWS = ("raft_large", "raft_small")
FLOW_REGIONS = ("frame", "crop")  # RAFT on the whole frame then cropped (video_features), or on the crop alone
OPTIONS = {"streams": STREAMS, "flow": FLOWS, "flow_region": FLOW_REGIONS}  # the card's build options
EMBED_DIM = 1024  # per stream: Mixed_5c's channels


def build_i3d(num_classes: int | None = None, **options: object) -> TwoStreamI3D:
    """Two-stream I3D with random init (no download); num_classes=0 drops the classifiers. ``options``: the
    card's (:data:`OPTIONS`: ``streams``, ``flow``, ``flow_region``) and the network's own (``variant``, ``crop``,
    ``flow_iterations``, ``flow_batch``), see :class:`vidvec.models.i3d_net.TwoStreamI3D`."""
    for key, allowed in OPTIONS.items():
        if key in options and options[key] not in allowed:
            raise ValueError(f"I3D {key} must be one of {', '.join(allowed)}, not {options[key]!r}")
    from vidvec.models.i3d_net import TwoStreamI3D

    return TwoStreamI3D(num_classes, **options)


# --- weights: the port's two files plus torchvision's RAFT, merged into one state_dict ---

# hassony2's repository holds the converted files in git; pinned to a commit so that the bytes cannot change
# (no sha256 is published: vidvec records it on first download).
_HASSONY2 = ("https://raw.githubusercontent.com/hassony2/kinetics_i3d_pytorch/"
             "786fbae06a6fd5df419e1961cd32e32fbe8b396d/model/")
_LICENSE = ("MIT (hassony2/kinetics_i3d_pytorch conversion) of DeepMind's Apache-2.0 kinetics-i3d weights; "
            "Kinetics-400 terms may also apply")
# No crop here: the model takes the resized frame whole, computes flow on it and crops both streams itself.
PREPROCESS = Preprocess(resize=(256,), crop=None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        geometry="video_features")
KINETICS400 = categories.kinetics400()


def _hassony2(name: str, file: str, stream: str, num_params: int) -> Weights:
    return Weights(name=name, url=_HASSONY2 + file, sha256=None, license=_LICENSE, preprocess=PREPROCESS,
                   categories=KINETICS400, num_params=num_params, metrics={},
                   source=f"hassony2/kinetics_i3d_pytorch model/{file} (DeepMind's Kinetics-400 {stream} I3D, "
                          f"ImageNet-inflated, converted from TensorFlow)",
                   cache_name=f"i3d_hassony2_{file}")


def _raft(enum: str, name: str) -> Weights:
    tv = member(enum, name)  # torchvision's enum, from its snapshot (no torchvision import)
    return Weights(name=f"{enum}.{name}", url=tv["url"], sha256=hash_prefix(tv["url"]),
                   license=TORCHVISION_LICENSE, preprocess=PREPROCESS, categories=None,
                   num_params=tv["num_params"], metrics=dict(tv["metrics"]), source=f"torchvision {enum}.{name}")


FLOW_WEIGHTS = _hassony2("KINETICS400_HASSONY2_FLOW", "model_flow.pth", "flow", 12_675_312)
RAFT_WEIGHTS = {
    # C_T_SKHT_V1 is the original RAFT's raft-sintel.pth (torchvision ported it), video_features' flow.
    "raft_large": _raft("Raft_Large_Weights", "C_T_SKHT_V1"),
    "raft_small": _raft("Raft_Small_Weights", "C_T_V2"),
}
# The default entry is the RGB file; loading it fetches the companions the model needs (see load_state).
# num_params: the whole default model (RGB 12,697,264 + flow 12,675,312 + RAFT large 5,257,536).
KINETICS400_HASSONY2 = replace(_hassony2("KINETICS400_HASSONY2", "model_rgb.pth", "RGB", 30_630_112),
                               companions=(FLOW_WEIGHTS, *RAFT_WEIGHTS.values()))

_STREAM_KEY = "conv3d_1a_7x7.conv3d.weight"  # its input channels tell an RGB file (3) from a flow file (2)


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """A checkpoint as this card's state_dict: one of the port's stream files (keys as hassony2 saved them)
    gets the prefix rgb. or flow.; a merged file (every key under rgb., flow. or raft.) is taken as it is."""
    state = load_state_dict(path)
    prefixes = {key.split(".", 1)[0] for key in state}
    if prefixes <= {"rgb", "flow", "raft"}:
        return with_batchnorm_counters(dict(state))
    weight = state.get(_STREAM_KEY)
    stream = {3: "rgb", 2: "flow"}.get(weight.shape[1] if weight is not None and weight.dim() == 5 else None)
    if stream is None:
        raise WeightsError(f"{path} is not an I3D checkpoint: expected hassony2/kinetics_i3d_pytorch's keys "
                           f"({_STREAM_KEY} with 3 or 2 input channels) or a merged state_dict whose keys all "
                           f"start with rgb., flow. or raft.")
    return with_batchnorm_counters({f"{stream}.{key}": value for key, value in state.items()})


def _companion(part: str, model: TwoStreamI3D) -> dict[str, Tensor]:
    if part == "raft":
        return {f"raft.{k}": v for k, v in load_state_dict(fetch(RAFT_WEIGHTS[model.flow_name])).items()}
    return read_checkpoint(fetch(KINETICS400_HASSONY2 if part == "rgb" else FLOW_WEIGHTS))


def load_state(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load strictly what ``module`` runs: parts the file lacks (the flow stream and RAFT, for the port's RGB
    file) come from their official files, fetched like any weights; parts the model does not run are ignored."""
    state = dict(state)
    for part in sorted(module.parts - {key.split(".", 1)[0] for key in state}):
        state.update(_companion(part, module))
    load_into(module, {k: v for k, v in state.items() if k.split(".", 1)[0] in module.parts}, source)


@register_model
def i3d() -> ModelCard:
    return ModelCard(
        name="i3d",
        family=FAMILY,
        input="video",
        build=build_i3d,
        weights=(KINETICS400_HASSONY2,),
        embed_dim=2 * EMBED_DIM,
        # video_features' defaults: stacks of 64 frames (+1 for the last flow pair) every 64 frames, native fps.
        sampling=SamplingSpec("windows", fps=None, clip_len=65, stride=64),
        latent="per stream, the time average of AvgPool3d((2,7,7), stride 1) after Mixed_5c (video_features' "
               "I3D features), 1024-d; streams both = [rgb, flow], 2048-d",
        description="Two-stream I3D (Carreira & Zisserman 2017), Kinetics-400, hassony2's PyTorch port as "
                    "video_features uses it, optical flow from torchvision's RAFT computed on the fly",
        read_checkpoint=read_checkpoint,
        load_state=load_state,
        options=OPTIONS,
        presets={"video_features": Preset(SamplingSpec("windows", fps=None, clip_len=65, stride=64,
                                                        rule="video_features"))},
        option_dims={"streams": {"both": 2 * EMBED_DIM, "rgb": EMBED_DIM, "flow": EMBED_DIM}},
        extras={"flow": {"streams": ("both", "flow")}},
        stack_extra=1,
    )
