"""VGGish (Hershey et al. 2017, AudioSet): a 128-d vector per 0.96 s of sound.

Weights: the torchvggish port (harritaylor/torchvggish, release v0.1, ``vggish-10086976.pth``) of Google's
TensorFlow VGGish checkpoint, and its PCA parameters (``vggish_pca_params-970ea276.pth``).

Preprocessing (``vidvec.audio``; the reference is torchvggish's ``vggish_input.waveform_to_examples``): the
file's first audio stream decoded with PyAV (any codec FFmpeg decodes), resampled to 16 kHz by swresample, each
channel clipped to [-1, 1], channels averaged; cut into examples of 15600 samples every 15360 samples (example k
covers [0.96 k, 0.96 k + 0.96) s; a trailing partial example is dropped; sound shorter than one example gives
one zero-padded example). Each example goes through :class:`LogMelFrontend`, a torch port of
``mel_features.log_mel_spectrogram``: 25 ms (400-sample) periodic Hann windows every 10 ms (160 samples), |rfft|
of 512 points, an HTK mel matrix of 64 bands from 125 to 7500 Hz (its DC row zero), log(mel + 0.01) -> 96 x 64,
computed in float64 (equal to the numpy reference within 1e-5; measured 4e-14). The reference resamples with
resampy (kaiser_best), whose filter rolls off from about 7.2 kHz where swresample's passes up to about 7.8 kHz: on
v_GGSY1Qvo990.mp4 the top mel band (6.9-7.5 kHz) differs by 0.21 in log on average, the two below it by 0.006,
the others by under 1e-3 (0.004 over all bands).

Vector: the output of the last embedding layer, Linear(4096, 128) followed by its ReLU (what torchvggish
returns with postprocessing off, and what video_features' ``vggish`` features are), 128-d. TensorFlow's current
``vggish_slim`` has no activation on that layer; the torchvggish port, and so this model, keep the ReLU.
``build(postprocess=True)`` adds AudioSet's release postprocessing: PCA with whitening (``pproc.pca_eigen_vectors``,
``pproc.pca_means``), clipping to [-2, 2] and 8-bit quantisation to 0..255 (returned as float), the format of
AudioSet's released embeddings. It is off by default, as quantisation loses information. The PCA file is a
companion of the weights: fetched (cached, hash-checked, like the weights) only for a model built with
postprocessing on, and only when the checkpoint does not carry ``pproc.*`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vidvec.audio import AudioFrontend
from vidvec.models.base import FeatureModel, hash_prefix
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec

FAMILY = "audio"
FRONTEND = AudioFrontend()
EMBED_DIM = 128
_RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
_SOURCE = ("Google's TensorFlow VGGish (AudioSet) checkpoint, ported to PyTorch by harritaylor/torchvggish "
           "(release v0.1)")
_LICENSE = "Apache-2.0 (tensorflow/models and harritaylor/torchvggish)"


def _release_file(name: str, file: str, num_params: int, source: str) -> Weights:
    """A file of torchvggish's v0.1 release; its name carries torch.hub's sha256 prefix ('...-10086976.pth')."""
    return Weights(name=name, url=_RELEASE + file, sha256=hash_prefix(file), license=_LICENSE, preprocess=FRONTEND,
                   categories=None, num_params=num_params, metrics={}, source=source)


PCA_PARAMS = _release_file("AUDIOSET_PCA", "vggish_pca_params-970ea276.pth", EMBED_DIM * EMBED_DIM + EMBED_DIM,
                           "AudioSet release PCA (whitening) parameters for VGGish embeddings, " + _SOURCE)
PCA_KEYS = ("pca_eigen_vectors", "pca_means")  # as torchvggish's Postprocessor names them
QUANTIZE_RANGE = (-2.0, 2.0)


# ------------------------------------------------------------------------------------------- log-mel


def _hertz_to_mel(hz: Tensor) -> Tensor:
    # HTK mel scale, as mel_features.hertz_to_mel.
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_matrix(frontend: AudioFrontend = FRONTEND, dtype: torch.dtype = torch.float64) -> Tensor:
    """(fft_length / 2 + 1, mel_bands) triangular HTK mel weights, as ``mel_features.spectrogram_to_mel_matrix``
    builds them: triangles linear in mel between equally spaced mel edges, DC bin always zero."""
    bins = frontend.fft_length // 2 + 1
    f64 = {"dtype": torch.float64, "device": "cpu"}
    bins_mel = _hertz_to_mel(torch.linspace(0.0, frontend.sample_rate / 2, bins, **f64))
    edges = torch.linspace(float(_hertz_to_mel(torch.tensor(frontend.fmin, **f64))),
                           float(_hertz_to_mel(torch.tensor(frontend.fmax, **f64))), frontend.mel_bands + 2, **f64)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0  # HTK leaves out the DC bin
    return weights.to(dtype)


def periodic_hann(length: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """A Hann window of period ``length`` (a full cosine cycle; not numpy's symmetric ``np.hanning``)."""
    n = torch.arange(length, dtype=torch.float64, device="cpu")
    return (0.5 - 0.5 * torch.cos(2 * math.pi / length * n)).to(dtype)


class LogMelFrontend(nn.Module):
    """Waveforms (B, example_samples) -> log-mel patches (B, 1, frames, mel_bands), as the reference computes
    them. No state: the window and mel matrix are rebuilt per device and precision, never saved or cast,
    so the module's state_dict stays the checkpoint's and ``.half()`` cannot coarsen them."""

    def __init__(self, frontend: AudioFrontend = FRONTEND) -> None:
        super().__init__()
        self.frontend = frontend

    def forward(self, waveform: Tensor) -> Tensor:
        f = self.frontend
        if waveform.dim() != 2:
            raise ValueError(f"expected waveforms (batch, samples), got shape {tuple(waveform.shape)}")
        # float64 keeps the match with numpy's float64 reference far inside 1e-5; MPS has no float64.
        dtype = torch.float32 if waveform.device.type == "mps" else torch.float64
        window, mel = _analysis_tensors(f, waveform.device, dtype)
        frames = waveform.to(dtype).unfold(-1, f.window_samples, f.hop_samples)   # (B, frames, window)
        spectrum = torch.fft.rfft(frames * window, n=f.fft_length).abs()       # (B, frames, bins)
        log_mel = torch.log(spectrum @ mel + f.log_offset)
        return log_mel.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"frontend={self.frontend}"


@lru_cache(maxsize=8)
def _analysis_tensors(frontend: AudioFrontend, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # Cached for later calls, so never inference tensors (autograd could not save them for backward).
    with torch.inference_mode(False):
        return (periodic_hann(frontend.window_samples, dtype).to(device),
                mel_matrix(frontend, dtype).to(device))


# --------------------------------------------------------------------------------------------- network


def _vgg_features() -> nn.Sequential:
    """VGG's conv stack on a 1-channel 96 x 64 patch; indices (0, 3, 6, 8, 11, 13 are convs) as the checkpoint's."""
    layers: list[nn.Module] = []
    channels = 1
    for width in (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool"):
        if width == "pool":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(width), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(width)
    return nn.Sequential(*layers)


class Postprocessor(nn.Module):
    """AudioSet's release postprocessing: PCA with whitening, clip to [-2, 2], quantise to 0..255 (as float).
    Buffers: ``pca_eigen_vectors`` (128, 128) and ``pca_means`` (128, 1), as torchvggish's Postprocessor."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        # Identity and zero until the PCA file is loaded, so that a random-weights model is still defined.
        self.register_buffer("pca_eigen_vectors", torch.eye(dim))
        self.register_buffer("pca_means", torch.zeros(dim, 1))

    def forward(self, embeddings: Tensor) -> Tensor:
        low, high = QUANTIZE_RANGE
        # Same operation order as the reference (E @ (x^T - mean))^T, so quantisation rounds identically.
        projected = torch.mm(self.pca_eigen_vectors, embeddings.t() - self.pca_means).t()
        return torch.round((projected.clamp(low, high) - low) * (255.0 / (high - low)))


class VGGish(FeatureModel):
    """Waveforms (B, 15600) at 16 kHz -> (B, 128) VGGish embeddings (optionally postprocessed).

    state_dict keys are torchvggish's: ``features.{0,3,6,8,11,13}.{weight,bias}``,
    ``embeddings.{0,2,4}.{weight,bias}`` (+ ``pproc.pca_eigen_vectors``, ``pproc.pca_means`` when postprocessing).
    """

    def __init__(self, postprocess: bool = False, frontend: AudioFrontend = FRONTEND) -> None:
        super().__init__()
        self.frontend = LogMelFrontend(frontend)
        self.features = _vgg_features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBED_DIM), nn.ReLU(inplace=True),
        )
        self.pproc = Postprocessor() if postprocess else None

    @property
    def postprocess(self) -> bool:
        return self.pproc is not None

    def embed_log_mel(self, log_mel: Tensor) -> Tensor:
        """(B, 1, 96, 64) log-mel patches -> (B, 128) raw embeddings (the reference VGG's forward)."""
        x = self.features(log_mel.to(self.embeddings[0].weight.dtype))     # (B, 512, 6, 4)
        # TensorFlow flattened channels-last (height, width, channel); the ported fc weights expect that order.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.embeddings(x)

    def forward(self, waveform: Tensor) -> Tensor:
        need = self.frontend.frontend.example_samples
        if waveform.dim() != 2 or waveform.shape[1] != need:
            raise ValueError(f"VGGish takes waveforms of shape (batch, {need}) (16 kHz examples from "
                             f"vidvec.audio.audio_examples), not {tuple(waveform.shape)}")
        x = self.embed_log_mel(self.frontend(waveform))
        return self.pproc(x) if self.pproc is not None else x


def build_vggish(num_classes: int | None = None, postprocess: bool = False) -> VGGish:
    """VGGish with random init; ``postprocess`` adds the PCA + quantisation step (its params load with the
    weights). VGGish has no classifier, so ``num_classes`` must be None (or 0)."""
    if num_classes:
        raise ValueError(f"vggish has no classifier; num_classes must be None, not {num_classes}")
    return VGGish(postprocess=postprocess)


# ----------------------------------------------------------------------------------------- checkpoints


def read_pca_params(path: str | Path) -> dict[str, Tensor]:
    """The PCA companion file as ``pproc.*`` tensors: (128, 128) eigenvectors and (128, 1) means.

    torchvggish's file was saved with numpy arrays inside, so it is read with ``weights_only=True`` plus only
    numpy's array-rebuilding globals allowed (numpy 1.x and 2.x module paths)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} is not a VGGish PCA params file ({first})") from exc
    if not isinstance(raw, Mapping) or any(k not in raw for k in PCA_KEYS):
        raise ValueError(f"{path} is not a VGGish PCA params file: expected keys {', '.join(PCA_KEYS)}")
    vectors = torch.as_tensor(np.asarray(raw["pca_eigen_vectors"]), dtype=torch.float32)
    means = torch.as_tensor(np.asarray(raw["pca_means"]), dtype=torch.float32).reshape(-1, 1)
    if vectors.shape != (EMBED_DIM, EMBED_DIM) or means.shape != (EMBED_DIM, 1):
        raise ValueError(f"{path}: PCA params have shapes {tuple(vectors.shape)} and {tuple(means.shape)}, "
                         f"expected ({EMBED_DIM}, {EMBED_DIM}) and ({EMBED_DIM},)")
    return {"pproc.pca_eigen_vectors": vectors, "pproc.pca_means": means}


def _numpy_globals() -> list:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    dtype_classes = [type(np.dtype(t)) for t in ("f4", "f8")]
    return [multiarray._reconstruct, (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, *dtype_classes]


def load_vggish_state(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load the network's weights; for a model built with postprocessing, also the PCA params (from the
    checkpoint when it has them, else from the companion file, fetched into the cache like any weights)."""
    from vidvec import weights  # here: vidvec.weights imports vidvec.models

    state = dict(state)
    has_pca = any(k.startswith("pproc.") for k in state)
    if getattr(module, "pproc", None) is not None and not has_pca:
        pca_path = weights.fetch(PCA_PARAMS)
        try:
            state.update(read_pca_params(pca_path))
        except ValueError as exc:
            raise weights.WeightsError(str(exc)) from exc
    elif getattr(module, "pproc", None) is None and has_pca:
        # A torchvggish VGGish(postprocess=True) state_dict: its PCA part is not used here.
        state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
    weights.load_into(module, state, source)


@register_model
def vggish() -> ModelCard:
    entry = _release_file("AUDIOSET_V1", "vggish-10086976.pth", 72141184, _SOURCE)
    return ModelCard(
        name="vggish",
        family=FAMILY,
        input="audio",
        build=build_vggish,
        weights=(entry,),
        embed_dim=EMBED_DIM,
        sampling=SamplingSpec("windows", fps=None),  # placeholder: audio is framed by vidvec.audio
        latent="last embedding layer (Linear 4096->128 + ReLU), 128-d per 0.96 s example; with "
               "build(postprocess=True) AudioSet's PCA + 8-bit quantisation (0..255)",
        description="VGGish (Hershey et al. 2017), AudioSet, 16 kHz mono log-mel 96x64 per 0.96 s of sound",
        load_state=load_vggish_state,
        # companions: files the weights need besides their own (the PCA params, with postprocess=True)
        extra={"companions": (PCA_PARAMS,), "options": {"postprocess": (False, True)}},
    )
