"""How a weights file's identity is known (LoadedModel.weights_trust), and pinning it (`vidvec verify-weights`).

Never touches the network: VIDVEC_HOME is a temp folder, VIDVEC_OFFLINE=1, downloads use file:// URLs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from vidvec.cli import app
from vidvec.models.base import FeatureModel
from vidvec.registry import ModelCard, Weights, get_card
from vidvec.sampling import SamplingSpec
from vidvec.transforms import Preprocess
from vidvec.weights import WeightsError, load_model, pin_sha256, resolve, sidecar_path, weights_trust

X3D = "Kinetics/X3D_XS"  # a PySlowFast MODEL_ZOO entry: no published sha256
PP = Preprocess(resize=(8,), crop=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VIDVEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    return tmp_path / "home"


def plant_x3d(home: Path, seed: int = 0) -> tuple[Path, str]:
    """A random-weights checkpoint in PySlowFast's format put where the X3D_XS entry's file goes, as a user
    copying a file into the cache would; returns it and its sha256."""
    with torch.device("meta"):
        shapes = get_card(X3D).build().state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else torch.zeros(v.shape,
                                                                                                   dtype=v.dtype)
             for k, v in shapes.items()}
    path = home / "checkpoints" / get_card(X3D).default_weights.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model_state": state, "optimizer_state": {}, "cfg": ""}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def verify(*args: str):
    return CliRunner().invoke(app, ["verify-weights", *args])


def test_planted_file_is_first_use_until_pinned(home):
    path, digest = plant_x3d(home)
    loaded = load_model(X3D)
    assert (loaded.weights_trust, loaded.weights_path, loaded.weights_sha256) == ("first-use", path, digest)
    assert sidecar_path(path).read_text() == f"{digest}  {path.name}\n# vidvec trust: first-use\n"
    assert load_model(X3D).weights_trust == "first-use"  # a later load still knows nobody verified it

    report = verify(X3D)
    assert report.exit_code == 0, report.output
    assert f"file      {path}\nsha256    {digest}\n" in report.stdout and "trust     first-use" in report.stdout

    pinned = verify(X3D, "--weights", "KINETICS400", "--sha256", digest.upper())
    assert pinned.exit_code == 0, pinned.output
    assert sidecar_path(path).read_text() == f"{digest}  {path.name}\n# vidvec trust: pinned\n"
    assert load_model(X3D).weights_trust == "pinned"
    assert "trust     pinned" in verify(X3D).stdout

    plant_x3d(home, seed=1)  # the file changes after it was pinned
    with pytest.raises(WeightsError) as err:
        load_model(X3D)
    assert str(err.value).startswith(f"{path} has sha256 ") and "\n" not in str(err.value)
    assert f"but {digest[:16]}... was pinned ({path.name}.sha256)" in str(err.value)
    changed = verify(X3D)
    assert changed.exit_code == 1 and "does not have the expected sha256 (pinned)" in changed.stderr
    new_digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify(X3D, "--sha256", new_digest).exit_code == 0  # the user checked the new file: pin it instead
    assert load_model(X3D).weights_trust == "pinned"


def test_wrong_pin_records_nothing(home):
    path, digest = plant_x3d(home)
    wrong = verify(X3D, "--sha256", "0" * 64)
    assert wrong.exit_code == 1
    assert wrong.stderr.strip() == f"error: {path} has sha256 {digest}, not {'0' * 64}; nothing was pinned"
    assert not sidecar_path(path).exists()
    assert load_model(X3D).weights_trust == "first-use"
    recorded = sidecar_path(path).read_text()
    assert verify(X3D, "--sha256", "0" * 64).exit_code == 1
    assert sidecar_path(path).read_text() == recorded
    with pytest.raises(ValueError, match="64 hex digits"):
        pin_sha256(get_card(X3D).default_weights, digest[:16])


def test_verify_weights_usage_errors_exit_2(home):
    plant_x3d(home)
    for args in ([X3D, "--sha256", "abc123"], ["Kinetics/X3D_S"], [X3D, "--weights", "NOPE"], ["no_such_model"],
                 ["Kinetics/C2D_8x8_R50"]):
        result = verify(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "x3d_s.pyth is missing" in verify("Kinetics/X3D_S").stderr


def test_verify_weights_without_any_record_exits_1(home):
    path, digest = plant_x3d(home)  # never loaded: nothing recorded, and verifying records nothing
    result = verify(X3D)
    assert result.exit_code == 1 and "expected  none recorded yet" in result.stdout
    assert "pin it with --sha256" in result.stderr and not sidecar_path(path).exists()


def test_sidecar_of_older_vidvec_counts_as_first_use(home):
    path, digest = plant_x3d(home)
    sidecar_path(path).write_text(f"{digest}  {path.name}\n")  # no trust line: nobody knows how it got there
    assert load_model(X3D).weights_trust == "first-use"


# --- tiny entries served from file:// URLs: downloads, published hashes, pins that outlive the file ---


class Tiny(FeatureModel):
    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x)


def _served(tmp_path: Path, seed: int = 0) -> tuple[Path, str]:
    generator = torch.Generator().manual_seed(seed)
    path = tmp_path / "server" / "tiny.pth"
    path.parent.mkdir(exist_ok=True)
    torch.save({k: torch.randn(v.shape, generator=generator) for k, v in Tiny().state_dict().items()}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _card(url: str, sha256: str | None) -> ModelCard:
    entry = Weights("TINY_V1", url, sha256, "MIT", PP, None, None, {})
    return ModelCard("tiny", "test", "image", Tiny, (entry,), 4, SamplingSpec(), "fc output", "a test model")


def test_downloaded_and_published_trust(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDVEC_OFFLINE")
    src, digest = _served(tmp_path)
    card = _card(src.as_uri(), None)
    entry, path = resolve(card, None)
    assert weights_trust(entry, path) == "downloaded"
    assert weights_trust(*resolve(card, None)) == "downloaded"  # read back from the record
    assert weights_trust(*resolve(card, str(path))) == "downloaded"  # the same file given as a path
    assert weights_trust(*resolve(card, "random")) == "random"
    path.unlink()
    sidecar_path(path).unlink()
    published = _card(src.as_uri(), digest)
    entry, path = resolve(published, None)
    assert weights_trust(entry, path) == "published" and not sidecar_path(path).exists()
    assert pin_sha256(entry, digest) == path and not sidecar_path(path).exists()  # the published hash pins it
    assert weights_trust(*resolve(get_card("efficientnet_lite0"), None)) == "published"  # a package's file


def test_pin_outlives_the_file_and_binds_a_new_download(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDVEC_OFFLINE")
    src, digest = _served(tmp_path)
    card = _card(src.as_uri(), None)
    entry, path = resolve(card, None)
    assert pin_sha256(entry, digest) == path
    path.unlink()
    _served(tmp_path, seed=1)  # the server now has another file under the same URL
    with pytest.raises(WeightsError, match=f"expected {digest}; nothing was saved"):
        resolve(card, None)
    assert not path.exists() and "# vidvec trust: pinned" in sidecar_path(path).read_text()
    _served(tmp_path)
    assert weights_trust(*resolve(card, None)) == "pinned"
