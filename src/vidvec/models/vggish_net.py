"""The VGGish network (torch): the log-mel frontend and torchvggish's VGG, with AudioSet's optional PCA
postprocessing. ``vidvec.models.vggish`` describes the card (weights, preprocessing) and builds this.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor, nn

from vidvec.audio import AudioFrontend
from vidvec.models.base import FeatureModel

FRONTEND = AudioFrontend()  # VGGish's own analysis: AudioFrontend's defaults
EMBED_DIM = 128
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
