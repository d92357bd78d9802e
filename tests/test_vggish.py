"""VGGish: the torch log-mel frontend against torchvggish's numpy reference, the network against torchvggish's
VGG (same random weights), the PCA postprocessing, the checkpoint's keys, and the PCA companion file."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import vidvec.models.vggish as vggish_module
from vidvec.audio import AudioFrontend, audio_examples, decode_audio
from vidvec.models.vggish import FRONTEND, PCA_PARAMS, build_vggish, load_vggish_state, read_pca_params
from vidvec.models.vggish_net import LogMelFrontend, VGGish, mel_matrix, periodic_hann
from vidvec.registry import get_card
from vidvec.weights import WeightsError, sha256_file
from video_features_fixtures import load_reference

DATA = Path(__file__).parent / "data"
VIDEO = "assets/videos/v_GGSY1Qvo990.mp4"
FIXTURE = "fixtures/video_features/tests/vggish/reference/v_GGSY1Qvo990_vggish.pt"


@pytest.fixture(scope="module")
def ref() -> types.SimpleNamespace:
    """torchvggish 0.2's own files, loaded by path: ``import torchvggish`` needs soundfile (not installed), and
    vggish_input imports it (and resampy) at the top. A private package name keeps them apart from any real
    import; the soundfile stub exists only while vggish_input is executed (16 kHz input never resamples)."""
    spec = importlib.util.find_spec("torchvggish")
    assert spec is not None and spec.submodule_search_locations, "torchvggish (PyPI) must be installed"
    root = Path(list(spec.submodule_search_locations)[0])
    package = "_torchvggish_reference"
    saved = {name: sys.modules.get(name) for name in ("soundfile", "resampy")}
    pkg = types.ModuleType(package)
    pkg.__path__ = [str(root)]
    sys.modules[package] = pkg
    modules = {}
    try:
        for stub in saved:
            if importlib.util.find_spec(stub) is None:
                sys.modules[stub] = types.ModuleType(stub)
        for name in ("vggish_params", "mel_features", "vggish_input", "torchvggish"):
            sub = importlib.util.spec_from_file_location(f"{package}.{name}", root / f"{name}.py")
            module = importlib.util.module_from_spec(sub)
            sys.modules[sub.name] = module
            sub.loader.exec_module(module)
            modules[name] = module
    finally:
        for stub, original in saved.items():
            if original is None:
                sys.modules.pop(stub, None)
            else:
                sys.modules[stub] = original
    return types.SimpleNamespace(**modules)


@pytest.fixture(scope="module")
def video_audio(shared_dir) -> np.ndarray:
    return np.concatenate(list(decode_audio(shared_dir / VIDEO)))


def reference_log_mel(ref, waveform: np.ndarray) -> np.ndarray:
    p = ref.vggish_params
    return ref.mel_features.log_mel_spectrogram(
        waveform, audio_sample_rate=p.SAMPLE_RATE, log_offset=p.LOG_OFFSET,
        window_length_secs=p.STFT_WINDOW_LENGTH_SECONDS, hop_length_secs=p.STFT_HOP_LENGTH_SECONDS,
        num_mel_bins=p.NUM_MEL_BINS, lower_edge_hertz=p.MEL_MIN_HZ, upper_edge_hertz=p.MEL_MAX_HZ)


def our_patches(waveform: np.ndarray) -> torch.Tensor:
    examples = [e.waveform for e in audio_examples([waveform], pad_short=False)]
    return LogMelFrontend()(torch.from_numpy(np.stack(examples)))


def empty_model(**kwargs) -> VGGish:
    """A VGGish with uninitialised tensors: building skips the (slow) random init of 72M parameters, for
    tests that only look at keys or load a state_dict over everything."""
    with torch.device("meta"):
        model = build_vggish(**kwargs)
    return model.to_empty(device="cpu")


@pytest.fixture(scope="module")
def random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_vggish().state_dict()


def chirp(seconds: float = 3.0, rate: int = 16000) -> np.ndarray:
    """A 50 Hz -> 7.9 kHz exponential sweep with a little noise: energy in every mel band."""
    t = np.arange(int(seconds * rate)) / rate
    f0, f1 = 50.0, 7900.0
    phase = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * (np.exp(t / seconds * np.log(f1 / f0)) - 1)
    noise = np.random.default_rng(0).standard_normal(t.size) * 1e-3
    return (0.8 * np.sin(phase) + noise).astype(np.float32)


# ------------------------------------------------------------------------------------------- frontend


def test_frontend_constants_are_torchvggish_params(ref):
    p = ref.vggish_params
    assert (FRONTEND.sample_rate, FRONTEND.window_seconds, FRONTEND.hop_seconds) == (
        p.SAMPLE_RATE, p.STFT_WINDOW_LENGTH_SECONDS, p.STFT_HOP_LENGTH_SECONDS)
    assert (FRONTEND.mel_bands, FRONTEND.fmin, FRONTEND.fmax, FRONTEND.log_offset) == (
        p.NUM_MEL_BINS, p.MEL_MIN_HZ, p.MEL_MAX_HZ, p.LOG_OFFSET)
    assert (FRONTEND.example_seconds, FRONTEND.example_hop_seconds, FRONTEND.example_frames) == (
        p.EXAMPLE_WINDOW_SECONDS, p.EXAMPLE_HOP_SECONDS, p.NUM_FRAMES)


def test_mel_matrix_and_window_equal_reference(ref):
    expected = ref.mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000, lower_edge_hertz=125,
        upper_edge_hertz=7500)
    ours = mel_matrix().numpy()
    assert ours.shape == (257, 64) and not ours[0].any()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(periodic_hann(400).numpy(), ref.mel_features.periodic_hann(400), rtol=0, atol=1e-15)


@pytest.mark.parametrize("source", ["video", "chirp"])
def test_log_mel_equals_reference(ref, video_audio, source):
    waveform = video_audio if source == "video" else chirp()
    ours = our_patches(waveform)
    # mel_features.log_mel_spectrogram over the whole waveform, framed into examples as vggish_input does.
    log_mel = reference_log_mel(ref, waveform)
    expected = ref.mel_features.frame(log_mel, window_length=96, hop_length=96)
    assert ours.shape == (expected.shape[0], 1, 96, 64)
    assert ours.shape[0] == (18 if source == "video" else 3)
    assert np.abs(ours[:, 0].double().numpy() - expected).max() < 1e-5
    # ... and vggish_input.waveform_to_examples itself (16 kHz input, so no resampy).
    examples = ref.vggish_input.waveform_to_examples(waveform, 16000, return_tensor=False)
    assert np.abs(ours[:, 0].double().numpy() - examples).max() < 1e-5


def test_example_count_equals_reference(ref):
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, 15600 + 3 * 15360 + 15359).astype(np.float32)
    for n in (15600, 15600 + 15359, 15600 + 15360, noise.size):
        expected = ref.vggish_input.waveform_to_examples(noise[:n], 16000, return_tensor=False).shape[0]
        assert len(list(audio_examples([noise[:n]], pad_short=False))) == FRONTEND.num_examples(n) == expected
    # Too short for one example: the reference gives none; vidvec pads one (documented in vidvec.audio).
    assert ref.vggish_input.waveform_to_examples(noise[:15599], 16000, return_tensor=False).shape[0] == 0
    assert len(list(audio_examples([noise[:15599]]))) == 1


def test_video_features_fixture_is_raw_embeddings_of_18_examples(shared_dir, video_audio):
    """video_features' VGGish output for this video (real weights): one row per 0.96 s example, and raw
    embeddings (ReLU zeros, non-integer values), not the quantised postprocessing."""

    data = load_reference(shared_dir / FIXTURE)
    assert data.shape == (18, 128) == (len(list(audio_examples([video_audio]))), 128)
    assert data.min() == 0 and (data == 0).any() and not np.allclose(data, np.round(data))


# -------------------------------------------------------------------------------------------- network


def test_state_dict_keys_are_the_checkpoints():
    stored = json.loads((DATA / "vggish_keys.json").read_text())
    model = empty_model()
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == stored["keys"]
    num_params = sum(p.numel() for p in model.parameters())
    assert num_params == stored["num_params"] == get_card("vggish").default_weights.num_params
    with_pca = empty_model(postprocess=True)
    assert [[k, list(v.shape)] for k, v in with_pca.state_dict().items()] == stored["keys"] + stored["postprocess_keys"]


def test_keys_equal_torchvggish_vgg(ref):
    with torch.device("meta"):
        theirs = ref.torchvggish._vgg(postprocess=False).state_dict()
    ours = empty_model().state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]


def test_forward_equals_torchvggish(ref, video_audio, random_state):
    with torch.device("meta"):
        theirs = ref.torchvggish._vgg(postprocess=False)
    theirs = theirs.to_empty(device="cpu").eval()
    theirs.load_state_dict(random_state, strict=True)
    ours = empty_model().eval()
    ours.load_state_dict(random_state, strict=True)
    waveform = video_audio[: 15600 + 2 * 15360]  # 3 examples
    patches = torch.from_numpy(ref.vggish_input.waveform_to_examples(waveform, 16000, return_tensor=False))
    patches = patches[:, None].float()
    with torch.no_grad():
        expected = theirs(patches)
        from_patches = ours.embed_log_mel(patches)
        from_waveform = ours(torch.from_numpy(np.stack([e.waveform for e in audio_examples([waveform])])))
    assert expected.shape == (3, 128) and (expected > 0).sum() > 20  # ReLU output, not all zero
    scale = float(expected.abs().max())
    assert (from_patches - expected).abs().max() <= 1e-5 * max(1.0, scale)
    assert (from_waveform - expected).abs().max() <= 1e-5 * max(1.0, scale)
    assert ours.classify(from_waveform) is None
    with pytest.raises(ValueError, match=r"shape \(batch, 15600\)"):
        ours(torch.zeros(1, 16000))


def _fake_pca(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((128, 128)) * 0.3, rng.standard_normal(128) * 0.2


def test_postprocess_equals_torchvggish(ref, random_state):
    vectors, means = _fake_pca()
    theirs = object.__new__(ref.torchvggish.Postprocessor)  # its __init__ downloads the PCA file
    theirs._pca_matrix = torch.as_tensor(vectors).float()
    theirs._pca_means = torch.as_tensor(means.reshape(-1, 1)).float()
    model = empty_model(postprocess=True)
    model.load_state_dict(random_state, strict=False)
    model.pproc.pca_eigen_vectors.copy_(torch.as_tensor(vectors))
    model.pproc.pca_means.copy_(torch.as_tensor(means).reshape(-1, 1))
    embeddings = torch.rand(8, 128) * 1.5  # wide enough that the PCA output is clipped in places
    expected = theirs.postprocess(embeddings)
    got = model.pproc(embeddings)
    assert got.shape == (8, 128)
    assert torch.equal(got, expected)
    assert got.min() == 0 and got.max() == 255  # both clip ends reached
    # The whole model: raw embedding -> postprocess.
    with torch.no_grad():
        wave = torch.from_numpy(chirp(1.0)[None, :15600])
        assert torch.equal(model(wave), theirs.postprocess(model.embed_log_mel(model.frontend(wave)))[None])


# ------------------------------------------------------------------------------------- card and weights


def test_card():
    card = get_card("vggish")
    entry = card.default_weights
    assert (card.name, card.family, card.input, card.embed_dim) == ("vggish", "audio", "audio", 128)
    assert entry.url == "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
    assert entry.sha256 == "10086976" and entry.file_name == "vggish-10086976.pth"
    assert PCA_PARAMS.url.endswith("/v0.1/vggish_pca_params-970ea276.pth") and PCA_PARAMS.sha256 == "970ea276"
    assert isinstance(entry.preprocess, AudioFrontend) and entry.preprocess == FRONTEND
    assert card.preprocess_for(None) == FRONTEND
    hash(card), hash(entry)  # frozen dataclasses stay hashable with an AudioFrontend inside
    assert entry.companions == (PCA_PARAMS,) and card.options == {"postprocess": (False, True)}
    with torch.device("meta"):
        assert isinstance(card.build(), VGGish) and card.build().pproc is None
        assert card.build(postprocess=True).postprocess
    with pytest.raises(ValueError, match="no classifier"):
        card.build(num_classes=10)


def _save_pca(path: Path, vectors: np.ndarray, means: np.ndarray, numpy1: bool = False) -> Path:
    """A PCA file as torchvggish's release holds it: a torch.save'd dict of numpy arrays (legacy format,
    from the torch 1.x era). ``numpy1`` rewrites the array globals to numpy 1.x's module path, as such a
    file names them."""
    buf = io.BytesIO()
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if numpy1:
        assert b"numpy._core.multiarray" in data
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("numpy1", [False, True])
def test_read_pca_params(tmp_path, numpy1):
    vectors, means = _fake_pca(1)
    state = read_pca_params(_save_pca(tmp_path / "pca.pth", vectors, means, numpy1))
    assert list(state) == ["pproc.pca_eigen_vectors", "pproc.pca_means"]
    np.testing.assert_array_equal(state["pproc.pca_eigen_vectors"].numpy(), vectors.astype(np.float32))
    np.testing.assert_array_equal(state["pproc.pca_means"].numpy(), means.astype(np.float32).reshape(-1, 1))
    # Tensors instead of arrays (as a re-saved file might hold) read the same.
    tensors = tmp_path / "pca_tensors.pth"
    torch.save({"pca_eigen_vectors": torch.as_tensor(vectors), "pca_means": torch.as_tensor(means)}, tensors)
    assert torch.equal(read_pca_params(tensors)["pproc.pca_means"], state["pproc.pca_means"])


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_read_pca_params_refuses_code_and_wrong_files(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"pca_eigen_vectors": _Payload(), "pca_means": np.zeros(128)}, evil)
    with pytest.raises(ValueError, match="not a VGGish PCA params file"):
        read_pca_params(evil)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="expected keys pca_eigen_vectors, pca_means"):
        read_pca_params(other)
    small = _save_pca(tmp_path / "small.pth", np.eye(4), np.zeros(4))
    with pytest.raises(ValueError, match="shapes"):
        read_pca_params(small)


def test_pca_companion_loads_offline_from_cache(tmp_path, monkeypatch, random_state):
    monkeypatch.setenv("VIDVEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    vectors, means = _fake_pca(2)
    state = random_state

    # Built without postprocessing, nothing else is needed: no fetch, no error while offline and uncached.
    plain = empty_model()
    load_vggish_state(plain, state, "vggish-10086976.pth")

    # With postprocessing, the companion is needed; missing and offline -> one clear error naming the file.
    with_pca = empty_model(postprocess=True)
    with pytest.raises(WeightsError, match="vggish_pca_params-970ea276.pth is missing and VIDVEC_OFFLINE=1"):
        load_vggish_state(with_pca, state, "vggish-10086976.pth")

    # A (fake) file in the cache: it is hash-checked (the fake's own hash stands in for the release's), read, loaded.
    cached = tmp_path / "home" / "checkpoints" / PCA_PARAMS.file_name
    cached.parent.mkdir(parents=True)
    _save_pca(cached, vectors, means, numpy1=True)
    with pytest.raises(WeightsError, match="sha256"):
        load_vggish_state(with_pca, state, "vggish-10086976.pth")
    monkeypatch.setattr(vggish_module, "PCA_PARAMS", dataclasses.replace(PCA_PARAMS, sha256=sha256_file(cached)))
    load_vggish_state(with_pca, state, "vggish-10086976.pth")
    np.testing.assert_array_equal(with_pca.pproc.pca_eigen_vectors.numpy(), vectors.astype(np.float32))
    np.testing.assert_array_equal(with_pca.pproc.pca_means[:, 0].numpy(), means.astype(np.float32))
    assert torch.equal(with_pca.features[0].weight, state["features.0.weight"])

    # A torchvggish VGGish(postprocess=True) state_dict carries its PCA: used as is, or dropped when unused.
    full = dict(state, **{"pproc.pca_eigen_vectors": torch.eye(128), "pproc.pca_means": torch.ones(128, 1)})
    load_vggish_state(with_pca, full, "full.pth")
    assert torch.equal(with_pca.pproc.pca_means, torch.ones(128, 1))
    load_vggish_state(plain, full, "full.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        load_vggish_state(plain, {k: v for k, v in state.items() if k != "embeddings.4.bias"}, "bad.pth")
