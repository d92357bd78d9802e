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

This module is the card and its checkpoint hooks (no torch at import); the network is ``vggish_net``, imported
by ``build_vggish``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vidvec.audio import AudioFrontend
from vidvec.checkpoints import WeightsError, fetch, hash_prefix, load_into
from vidvec.registry import ModelCard, Weights, register_model
from vidvec.sampling import SamplingSpec

if TYPE_CHECKING:
    from torch import Tensor, nn

    from vidvec.models.vggish_net import VGGish

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


def build_vggish(num_classes: int | None = None, postprocess: bool = False) -> VGGish:
    """VGGish with random init; ``postprocess`` adds the PCA + quantisation step (its params load with the
    weights). VGGish has no classifier, so ``num_classes`` must be None (or 0)."""
    if num_classes:
        raise ValueError(f"vggish has no classifier; num_classes must be None, not {num_classes}")
    from vidvec.models.vggish_net import VGGish

    return VGGish(postprocess=postprocess)


# ----------------------------------------------------------------------------------------- checkpoints


def read_pca_params(path: str | Path) -> dict[str, Tensor]:
    """The PCA companion file as ``pproc.*`` tensors: (128, 128) eigenvectors and (128, 1) means.

    torchvggish's file was saved with numpy arrays inside, so it is read with ``weights_only=True`` plus only
    numpy's array-rebuilding globals allowed (numpy 1.x and 2.x module paths)."""
    import torch

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
    state = dict(state)
    has_pca = any(k.startswith("pproc.") for k in state)
    if getattr(module, "pproc", None) is not None and not has_pca:
        pca_path = fetch(PCA_PARAMS)
        try:
            state.update(read_pca_params(pca_path))
        except ValueError as exc:
            raise WeightsError(str(exc)) from exc
    elif getattr(module, "pproc", None) is None and has_pca:
        # A torchvggish VGGish(postprocess=True) state_dict: its PCA part is not used here.
        state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
    load_into(module, state, source)


@register_model
def vggish() -> ModelCard:
    # companions: files the weights need besides their own (the PCA params, with postprocess=True)
    entry = replace(_release_file("AUDIOSET_V1", "vggish-10086976.pth", 72141184, _SOURCE), companions=(PCA_PARAMS,))
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
        options={"postprocess": (False, True)},
        channels_last=True,
    )
