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
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import video as tvv

from vidvec.models.base import FeatureModel, HeadSwapModel, with_batchnorm_counters
from vidvec.models.i3d import MaxPool3dSame  # the same TensorFlow "SAME" pooling as the I3D port
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess

FAMILY = "s3d"

# vidvec.weights imports vidvec.models (for FeatureModel), so the checkpoint hooks import it when called.


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
    from vidvec.weights import WeightsError, load_state_dict

    state: dict[str, Tensor] = {}
    for key, value in load_state_dict(path).items():
        new = kylemin_to_torchvision(key) if key.startswith(("base.", "fc.")) else key
        if new in state:
            raise WeightsError(f"{path}: two tensors map to {new} (kylemin and torchvision names mixed?)")
        state[new] = value
    return with_batchnorm_counters(state)


class TemporalPairPool(nn.Module):
    """kylemin's final pooling: the mean over 2 consecutive time steps and the whole H x W map, stride 1
    (torchvision's AvgPool3d((2, 7, 7)) at 224 px, but for any frame size)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool3d(x, (2, x.shape[3], x.shape[4]), stride=1)


def build_kinetics400(num_classes: int | None = None) -> FeatureModel:
    """torchvision's S3D with kylemin's pooling, random init; num_classes=0 drops the classifier."""
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
                                layout="video_features_tensor")


def _kinetics400_weights(name: str, mean: float, std: float, note: str) -> Weights:
    return Weights(
        name=name,
        url=_KYLEMIN_URL,
        sha256=None,  # none published: recorded on first download
        license=_KYLEMIN_LICENSE,
        preprocess=Preprocess(mean=(mean,) * 3, std=(std,) * 3, **_VIDEO_FEATURES_GEOMETRY),
        categories=tuple(tvv.S3D_Weights.KINETICS400_V1.meta["categories"]),  # kylemin's label_map.txt order
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
        extra={"video_features": SamplingSpec(**windows, rule="video_features")},
    )


# ------------------------------------------------------------------------------------ MIL-NCE (HowTo100M)

class Unit3d(nn.Module):
    """Conv3d + BatchNorm + ReLU; ``separable`` factors a k x k x k kernel into 1 x k x k (conv1/bn1) then
    k x 1 x 1 (conv2/bn2), each followed by BatchNorm and ReLU. Upstream's STConv3D names."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int], padding: int | tuple = 0,
                 separable: bool = False) -> None:
        super().__init__()
        if separable:
            assert isinstance(kernel, int) and isinstance(padding, int)
            self.conv1 = nn.Conv3d(cin, cout, (1, kernel, kernel), padding=(0, padding, padding), bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
            self.conv2 = nn.Conv3d(cout, cout, (kernel, 1, 1), padding=(padding, 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, cout, kernel, padding=padding, bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
        self.separable = separable

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x))) if self.separable else x


class SelfGating(nn.Module):
    """S3D-G feature gating: channels scaled by sigmoid(fc(their mean over time and space))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


class InceptionBlock(nn.Module):
    """S3D-G inception block: 1x1x1 | 1x1x1 -> separable 3x3x3 | 1x1x1 -> separable 3x3x3 | max pool -> 1x1x1,
    each branch gated, then concatenated."""

    def __init__(self, cin: int, b0: int, b1a: int, b1b: int, b2a: int, b2b: int, b3b: int) -> None:
        super().__init__()
        self.conv_b0 = Unit3d(cin, b0, 1)
        self.conv_b1_a = Unit3d(cin, b1a, 1)
        self.conv_b1_b = Unit3d(b1a, b1b, 3, padding=1, separable=True)
        self.conv_b2_a = Unit3d(cin, b2a, 1)
        self.conv_b2_b = Unit3d(b2a, b2b, 3, padding=1, separable=True)
        self.maxpool_b3 = nn.MaxPool3d(3, stride=1, padding=1)
        self.conv_b3_b = Unit3d(cin, b3b, 1)
        self.gating_b0 = SelfGating(b0)
        self.gating_b1 = SelfGating(b1b)
        self.gating_b2 = SelfGating(b2b)
        self.gating_b3 = SelfGating(b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.gating_b0(self.conv_b0(x)),
            self.gating_b1(self.conv_b1_b(self.conv_b1_a(x))),
            self.gating_b2(self.conv_b2_b(self.conv_b2_a(x))),
            self.gating_b3(self.conv_b3_b(self.maxpool_b3(x))),
        ], dim=1)


_WORD = re.compile(r"[\w']+")


class SentenceEncoder(nn.Module):
    """MIL-NCE's text tower (upstream ``Sentence_Embedding``): word embeddings, fc1 + ReLU, max over words, fc2.

    The vocabulary is not a tensor: :meth:`set_vocabulary` sets it (from ``s3d_dict.npy`` when weights load);
    word i of it has token i + 1 (a word listed twice keeps its last position, as upstream's dict does).
    """

    def __init__(self, embed_dim: int = 512, num_embeddings: int = 66250, word_dim: int = 300,
                 hidden: int = 2048, max_words: int = 16, vocabulary: Sequence[str] = ()) -> None:
        super().__init__()
        self.word_embd = nn.Embedding(num_embeddings, word_dim)
        self.fc1 = nn.Linear(word_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.max_words = max_words
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, words: Sequence[str]) -> None:
        self.vocabulary = tuple(words)
        self._tokens = {word: i + 1 for i, word in enumerate(self.vocabulary)}

    def token_ids(self, texts: Sequence[str]) -> Tensor:
        """(N, max_words) int64 tokens: known words of each lowercased sentence, first max_words, 0-padded."""
        if isinstance(texts, str):
            raise TypeError("token_ids takes a list of sentences, not one string")
        rows = torch.zeros(len(texts), self.max_words, dtype=torch.long)
        for row, text in zip(rows, texts):
            ids = [self._tokens[w] for w in _WORD.findall(str(text).lower()) if w in self._tokens]
            ids = ids[: self.max_words]
            if ids and max(ids) >= self.word_embd.num_embeddings:
                raise ValueError(f"the dictionary ({len(self.vocabulary)} words) does not fit the word embedding "
                                 f"table ({self.word_embd.num_embeddings} rows): token {max(ids)} is out of range")
            row[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        return rows

    def forward(self, texts: Sequence[str]) -> Tensor:
        ids = self.token_ids(texts).to(self.word_embd.weight.device)
        x = F.relu(self.fc1(self.word_embd(ids)))
        return self.fc2(x.max(dim=1).values)  # padding positions take part in the max, as upstream


class MilNceS3D(FeatureModel):
    """S3D-G video tower + sentence tower of antoine77340/S3D_HowTo100M, with its state_dict key names.

    ``forward`` gives the 512-d video embedding (upstream's ``video_embedding``), ``features`` the 1024-d
    mixed_5c average (upstream's ``mixed_5c``), ``encode_text`` the 512-d sentence embeddings.
    """

    has_text = True

    def __init__(self, embed_dim: int = 512, num_embeddings: int = 66250,
                 vocabulary: Sequence[str] = ()) -> None:
        super().__init__()
        # The port keeps the TPU model's space-to-depth stem: 2x2x2 blocks of pixels become 24 channels.
        self.conv1 = Unit3d(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.conv_2b = Unit3d(64, 64, 1)
        self.conv_2c = Unit3d(64, 192, 3, padding=1, separable=True)
        self.gating = SelfGating(192)
        self.maxpool_2a = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.maxpool_3a = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.mixed_3b = InceptionBlock(192, 64, 96, 128, 16, 32, 32)
        self.mixed_3c = InceptionBlock(256, 128, 128, 192, 32, 96, 64)
        self.maxpool_4a = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.mixed_4b = InceptionBlock(480, 192, 96, 208, 16, 48, 64)
        self.mixed_4c = InceptionBlock(512, 160, 112, 224, 24, 64, 64)
        self.mixed_4d = InceptionBlock(512, 128, 128, 256, 24, 64, 64)
        self.mixed_4e = InceptionBlock(512, 112, 144, 288, 32, 64, 64)
        self.mixed_4f = InceptionBlock(528, 256, 160, 320, 32, 128, 128)
        self.maxpool_5a = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.mixed_5b = InceptionBlock(832, 256, 160, 320, 32, 128, 128)
        self.mixed_5c = InceptionBlock(832, 384, 192, 384, 48, 128, 128)
        self.fc = nn.Linear(1024, embed_dim)
        self.text_module = SentenceEncoder(embed_dim, num_embeddings, vocabulary=vocabulary)

    @staticmethod
    def space_to_depth(x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, 8C, T/2, H/2, W/2); channel = (dt, dy, dx, c), as the port orders it."""
        b, c, t, h, w = x.shape
        if t % 2 or h % 2 or w % 2:
            raise ValueError(f"MIL-NCE S3D needs an even frame count, height and width, got {t}x{h}x{w}")
        x = x.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
        return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [0, 1] -> (B, 1024) mixed_5c averaged over time and space."""
        x = self.conv1(self.space_to_depth(x))[:, :, 1:, 1:, 1:]  # crop the extra row TF 'SAME' would not add
        x = self.maxpool_2a(x)
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        x = self.mixed_3c(self.mixed_3b(self.maxpool_3a(x)))
        x = self.maxpool_4a(x)
        for block in (self.mixed_4b, self.mixed_4c, self.mixed_4d, self.mixed_4e, self.mixed_4f):
            x = block(x)
        x = self.mixed_5c(self.mixed_5b(self.maxpool_5a(x)))
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        return self.text_module(list(texts))


def build_howto100m(num_classes: int | None = None, vocabulary: Sequence[str] | None = None,
                    num_embeddings: int = 66250) -> MilNceS3D:
    """MIL-NCE S3D with random init. There is no classifier (num_classes must be None or 0). The word table
    has upstream's fixed 66250 rows (80 MB; tests may pass fewer); ``vocabulary`` defaults to none, so a random
    model encodes every sentence as padding until weights bring the dictionary."""
    if num_classes:
        raise ValueError("s3d_howto100m has no classifier: it embeds video and text in one 512-d space")
    return MilNceS3D(num_embeddings=num_embeddings, vocabulary=vocabulary or ())


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
    from vidvec.weights import WeightsError

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
    if any("\n" in w for w in words):
        raise ValueError("a dictionary word contains a newline")
    return torch.from_numpy(np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8).copy())


def unpack_vocabulary(packed: Tensor) -> list[str]:
    text = packed.to(torch.uint8).numpy().tobytes().decode("utf-8")
    return text.split("\n") if text else []


def read_howto100m_checkpoint(path: Path) -> dict[str, Tensor]:
    """``s3d_howto100m.pth`` (a plain state_dict) plus its dictionary, fetched like weights (cache, download,
    ``VIDVEC_OFFLINE``), under :data:`VOCABULARY_KEY`."""
    from vidvec.weights import fetch, load_state_dict

    state = with_batchnorm_counters(load_state_dict(path))
    state[VOCABULARY_KEY] = pack_vocabulary(read_vocabulary(fetch(S3D_DICT)))
    return state


def load_howto100m_state(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load the tensors strictly and give the dictionary to the text tower."""
    from vidvec.weights import WeightsError, load_into

    tensors = dict(state)
    packed = tensors.pop(VOCABULARY_KEY, None)
    if packed is None:
        raise WeightsError(f"{source}: no word dictionary came with it (read it with read_howto100m_checkpoint)")
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
        extra={"companions": (S3D_DICT,), "text": True},
    )
