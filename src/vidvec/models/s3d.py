"""S3D feature models: kylemin's Kinetics-400 classifier and MIL-NCE's HowTo100M text-video model.

``s3d_kinetics400``: S3D (Xie et al. 2018) trained on Kinetics-400 by kylemin/S3D (72.1% top-1), the weights
v-iashin/video_features uses. kylemin's network is the one torchvision's S3D was ported from (same layers,
BatchNorm eps 1e-3), so it is built as torchvision's S3D and kylemin's key names are renamed on load
(:func:`kylemin_to_torchvision`). One difference is kept: kylemin pools the last feature map with a (2, H, W)
window at stride 1, which equals torchvision's fixed AvgPool3d((2, 7, 7)) at 224 px and also works for other
sizes. The vector is the 1024-d input of the classifier: that pooled map averaged over time (what
video_features' S3D returns with ``features=True``). Preprocessing: short side resized to 224 as video_features does
(torch bilinear, no antialias, ``scale_factor`` 224 / short side, sizes floored), centre crop 224x224 at the
rounded offset, RGB. Pixels are scaled to [-1, 1],
the range kylemin trained with (kylemin/S3D ``main.py`` ``transform`` and issue #4); the
``KINETICS400_VIDEO_FEATURES`` entry scales to [0, 1] instead, as video_features does, to reproduce its
features. Default sampling: windows of 64 frames at 25 fps, stride 64 (video_features' s3d defaults).

``s3d_howto100m``: S3D-G trained from scratch on HowTo100M with MIL-NCE (Miech et al. 2020), the PyTorch port
antoine77340/S3D_HowTo100M. The vector is the 512-d ``video_embedding``: the mixed_5c map averaged over time
and space (1024-d) and projected by ``fc`` into the joint text-video space; ``encode_text`` gives sentence
vectors in that space (compare with a dot product, as upstream does; neither side is L2-normalised).
Preprocessing: short side resized to 224, centre crop 224x224, RGB in [0, 1] with no mean/std (the README:
"normalized to [0, 1]", H and W between 200 and 256). Default sampling: windows of 32 frames at 10 fps,
stride 32 (32 frames as in training, per the README; 10 fps as in the paper). Frame count, height and width
must be even (the network starts with a 2x2x2 space-to-depth).

Text: the sentence is lowercased and split into ``[\\w']+`` words; words missing from the dictionary
(``s3d_dict.npy``: word i has token i + 1, 0 is padding) are dropped, the first 16 known words are kept and
padded with 0 to 16 tokens; then 300-d word embeddings, fc1 (2048) + ReLU, max over the 16 positions (padding
included, as upstream), fc2 (512). The dictionary is a companion file of the checkpoint: ``read_checkpoint``
fetches it (see :data:`S3D_DICT`) and ``load_state`` gives it to the text tower.

This module is the cards and their checkpoint hooks (no torch at import); the networks are ``s3d_net``, imported
by the ``build_*`` functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vidvec import categories
from vidvec.checkpoints import WeightsError, fetch, load_into, load_state_dict, with_batchnorm_counters
from vidvec.presets import HERO_PIXELS, PRESETS, Preset
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

if TYPE_CHECKING:
    from torch import Tensor, nn

    from vidvec.models.base import FeatureModel
    from vidvec.models.s3d_net import MilNceS3D

FAMILY = "s3d"


# ----------------------------------------------------------------------------------- Kinetics-400 (kylemin)

# kylemin's module names -> torchvision's, applied in order. Both nets list the same 16 layers in one
# Sequential (kylemin ``base``, torchvision ``features``); their blocks differ only in how they are nested.
_KYLEMIN_RULES = [
    (re.compile(r"^fc\.0\."), "classifier.1."),   # torchvision puts a Dropout before the 1x1x1 conv
    (re.compile(r"^base\."), "features."),
    (re.compile(r"\.branch0\.0\."), ".branch0."),  # kylemin wraps branch 0's single unit in a Sequential
    (re.compile(r"\.conv_s\."), ".0.0."),          # SepConv3d -> TemporalSeparableConv: spatial unit ...
    (re.compile(r"\.bn_s\."), ".0.1."),
    (re.compile(r"\.conv_t\."), ".1.0."),          # ... then temporal unit
    (re.compile(r"\.bn_t\."), ".1.1."),
    (re.compile(r"\.conv\."), ".0."),              # BasicConv3d -> Conv3dNormActivation
    (re.compile(r"\.bn\."), ".1."),
]


def kylemin_to_torchvision(key: str) -> str:
    """A kylemin/S3D (and video_features) state_dict key -> torchvision's S3D key, e.g.
    ``base.5.branch1.1.conv_t.weight`` -> ``features.5.branch1.1.1.0.weight``."""
    for pattern, repl in _KYLEMIN_RULES:
        key = pattern.sub(repl, key)
    return key


def read_kylemin_checkpoint(path: Path) -> dict[str, Tensor]:
    """A kylemin/S3D checkpoint (``S3D_kinetics400.pt``, video_features' ``S3D_kinetics400_torchified.pt``)
    as torchvision S3D keys; files already in torchvision's names pass unchanged."""
    state: dict[str, Tensor] = {}
    for key, value in load_state_dict(path).items():
        new = kylemin_to_torchvision(key) if key.startswith(("base.", "fc.")) else key
        if new in state:
            raise WeightsError(f"{path}: two tensors map to {new} (kylemin and torchvision names mixed?)")
        state[new] = value
    return with_batchnorm_counters(state)


def build_kinetics400(num_classes: int | None = None) -> FeatureModel:
    """torchvision's S3D with kylemin's pooling, random init; num_classes=0 drops the classifier."""
    from torchvision.models import video as tvv

    from vidvec.models.base import HeadSwapModel
    from vidvec.models.s3d_net import TemporalPairPool

    n = 400 if num_classes is None else num_classes
    net = tvv.s3d(weights=None, num_classes=max(n, 1))
    net.avgpool = TemporalPairPool()
    return HeadSwapModel(net, "classifier", head_on_volume=True, keep_head=n > 0)


_KYLEMIN_COMMIT = "34b927c18fe48ed34a85d545c895573c50d4cbe6"  # video_features commit that added the file
_KYLEMIN_URL = (f"https://raw.githubusercontent.com/v-iashin/video_features/{_KYLEMIN_COMMIT}/models/s3d/"
                "checkpoint/S3D_kinetics400_torchified.pt")
_KYLEMIN_SOURCE = ("kylemin/S3D Kinetics-400 weights (github.com/kylemin/S3D, Google Drive S3D_kinetics400.pt) "
                   "as committed to v-iashin/video_features (models/s3d/checkpoint, git blob "
                   "65b27cbb412937b3dd705f4216cb822d679535df)")
_KYLEMIN_LICENSE = "MIT (kylemin/S3D, v-iashin/video_features); Kinetics-400 terms may also apply"
# video_features resizes with torch (scale_factor 224 / short side: sizes floored, the grid set by the factor) and
# crops at round((side - 224) / 2).
_VIDEO_FEATURES_GEOMETRY = dict(resize=(224,), crop=(224, 224), interpolation="bilinear", resize_backend="torch",
                                geometry="video_features_tensor")


def _kinetics400_weights(name: str, mean: float, std: float, note: str) -> Weights:
    return Weights(
        name=name,
        url=_KYLEMIN_URL,
        sha256=None,  # none published: recorded on first download
        license=_KYLEMIN_LICENSE,
        preprocess=Preprocess(mean=(mean,) * 3, std=(std,) * 3, **_VIDEO_FEATURES_GEOMETRY),
        categories=categories.kinetics400(),  # kylemin's label_map.txt order
        num_params=8320048,
        metrics={"acc@1": 72.08, "acc@5": 90.35},  # kylemin/S3D README, Kinetics-400 validation
        source=f"{_KYLEMIN_SOURCE}; {note}",
    )


@register_model
def s3d_kinetics400() -> ModelCard:
    windows = dict(kind="windows", fps=25, clip_len=64, stride=64)
    return ModelCard(
        name="s3d_kinetics400",
        family=FAMILY,
        input="video",
        build=build_kinetics400,
        weights=(
            _kinetics400_weights("KINETICS400_V1", 0.5, 0.5, "pixels in [-1, 1] as kylemin trained"),
            _kinetics400_weights("KINETICS400_VIDEO_FEATURES", 0.0, 1.0, "pixels in [0, 1] as video_features"),
        ),
        embed_dim=1024,
        sampling=SamplingSpec(**windows),
        latent="mean over time of the (2, H, W)-average-pooled mixed_5c map (the input of the 1x1x1 "
               "classifier conv, as video_features' S3D features), 1024-d",
        description="S3D (Xie et al. 2018), Kinetics-400, kylemin/S3D weights (those of video_features)",
        read_checkpoint=read_kylemin_checkpoint,
        presets={"video_features": Preset(SamplingSpec(**windows, rule="video_features"))},
        channels_last=True,
    )


# ------------------------------------------------------------------------------------ MIL-NCE (HowTo100M)

def build_howto100m(num_classes: int | None = None, vocabulary: Sequence[str] | None = None,
                    num_embeddings: int = 66250, output: str = "video_embedding", text: bool = True) -> MilNceS3D:
    """MIL-NCE S3D with random init. There is no classifier (num_classes must be None or 0). The word table
    has upstream's fixed 66250 rows (80 MB; tests may pass fewer); ``vocabulary`` defaults to none, so a random
    model encodes every sentence as padding until weights bring the dictionary. ``output``: the vector,
    "video_embedding" (512-d) or "mixed_5c" (1024-d); ``text=False`` leaves the sentence tower out."""
    if num_classes:
        raise ValueError("s3d_howto100m has no classifier: it embeds video and text in one 512-d space")
    from vidvec.models.s3d_net import MilNceS3D

    return MilNceS3D(num_embeddings=num_embeddings, vocabulary=vocabulary or (), output=output, text=text)


_HOWTO100M_URL = "https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/"
_HOWTO100M_LICENSE = "Apache-2.0 (antoine77340/S3D_HowTo100M); HowTo100M terms may also apply"
HOWTO100M_PREPROCESS = Preprocess(resize=(224,), crop=(224, 224), mean=(0.0,) * 3, std=(1.0,) * 3)

# The word dictionary the text tower needs: a companion of the checkpoint, fetched by read_checkpoint.
S3D_DICT = Weights(
    name="S3D_DICT",
    url=_HOWTO100M_URL + "s3d_dict.npy",
    sha256=None,
    license=_HOWTO100M_LICENSE,
    preprocess=HOWTO100M_PREPROCESS,
    categories=None,
    num_params=None,
    metrics={},
    source="MIL-NCE word dictionary (antoine77340/S3D_HowTo100M README): a numpy array of words",
)

# The dictionary travels from read_checkpoint to load_state under this key, as UTF-8 bytes ("\n"-joined).
VOCABULARY_KEY = "text_module.vocabulary"


def read_vocabulary(path: str | Path) -> list[str]:
    """The words of ``s3d_dict.npy``: a 1-d numpy array of strings, read without pickle (object arrays, which
    would need unpickling and so could run code, are refused)."""
    try:
        words = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise WeightsError(f"{path} is not a plain numpy array of words ({exc}); refusing to read it") from exc
    if not isinstance(words, np.ndarray) or words.ndim != 1 or words.dtype.kind not in "US":
        found = f"{words.dtype} {words.shape}" if isinstance(words, np.ndarray) else type(words).__name__
        raise WeightsError(f"{path} is not a 1-d array of words (found {found})")
    return [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in words.tolist()]


def pack_vocabulary(words: Sequence[str]) -> Tensor:
    """Words -> a uint8 tensor (so the dictionary can ride in a state_dict); :func:`unpack_vocabulary` undoes it."""
    import torch

    if any("\n" in w for w in words):
        raise ValueError("a dictionary word contains a newline")
    return torch.from_numpy(np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8).copy())


def unpack_vocabulary(packed: Tensor) -> list[str]:
    import torch

    text = packed.to(torch.uint8).numpy().tobytes().decode("utf-8")
    return text.split("\n") if text else []


def read_howto100m_checkpoint(path: Path) -> dict[str, Tensor]:
    """``s3d_howto100m.pth`` (a plain state_dict) plus its dictionary, fetched like weights (cache, download,
    ``VIDVEC_OFFLINE``), under :data:`VOCABULARY_KEY`."""
    state = with_batchnorm_counters(load_state_dict(path))
    state[VOCABULARY_KEY] = pack_vocabulary(read_vocabulary(fetch(S3D_DICT)))
    return state


def load_howto100m_state(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load the tensors strictly and give the dictionary to the text tower (a model built without it takes the
    video tower's tensors, all of them)."""
    tensors = dict(state)
    packed = tensors.pop(VOCABULARY_KEY, None)
    if packed is None:
        raise WeightsError(f"{source}: no word dictionary came with it (read it with read_howto100m_checkpoint)")
    if module.text_module is None:
        load_into(module, {k: v for k, v in tensors.items() if not k.startswith("text_module.")}, source)
        return
    load_into(module, tensors, source)
    module.text_module.set_vocabulary(unpack_vocabulary(packed))


@register_model
def s3d_howto100m() -> ModelCard:
    weights = Weights(
        name="HOWTO100M_MILNCE",
        url=_HOWTO100M_URL + "s3d_howto100m.pth",
        sha256=None,  # none published: recorded on first download
        license=_HOWTO100M_LICENSE,
        preprocess=HOWTO100M_PREPROCESS,
        categories=None,
        num_params=31211336,  # both towers; the 66250 x 300 word table is 19.9M of it
        metrics={},
        source="antoine77340/S3D_HowTo100M (MIL-NCE, Miech et al. CVPR 2020), PyTorch port of the TF-Hub "
               "deepmind/mil-nce/s3d model; needs its s3d_dict.npy, fetched alongside",
        companions=(S3D_DICT,),
    )
    return ModelCard(
        name="s3d_howto100m",
        family=FAMILY,
        input="video",
        build=build_howto100m,
        weights=(weights,),
        embed_dim=512,
        sampling=SamplingSpec("windows", fps=10, clip_len=32, stride=32),
        latent="video_embedding: mixed_5c averaged over time and space (1024-d) projected by fc into the "
               "joint text-video space, 512-d (encode_text gives sentences in the same space)",
        description="S3D-G trained with MIL-NCE on HowTo100M (Miech et al. 2020): video and text embeddings",
        read_checkpoint=read_howto100m_checkpoint,
        load_state=load_howto100m_state,
        text=True,
        options={"output": ("video_embedding", "mixed_5c")},
        option_dims={"output": {"mixed_5c": 1024}},
        # HERO's MIL-NCE S3D features (mil-nce/extract.py): its SlowFast clips (HERO_PIXELS included), the
        # 1024-d mixed_5c average, stored in float16.
        presets={"hero": Preset(PRESETS["hero"].sampling, pixels=HERO_PIXELS, options={"output": "mixed_5c"})},
        channels_last=True,
    )
