"""The registry: names, lookups, errors, and that every card carries complete, consistent data."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
from torchvision.models import video as tvv

from vidvec.registry import ModelCard, Weights, _REGISTRY, get_card, list_models, register_model
from vidvec.transforms import Preprocess

VIDEO = ["mc3_18", "mvit_v1_b", "mvit_v2_s", "r2plus1d_18", "r3d_18", "s3d", "swin3d_b", "swin3d_s", "swin3d_t"]
IMAGE = ["resnet101", "resnet152", "resnet18", "resnet34", "resnet50"]
ALL = sorted(VIDEO + IMAGE + ["efficientnet_lite0"])   # the torchvision/efficientnet cards checked below
# The other families' cards are checked in their own files (test_pyslowfast_zoo, test_clip, test_ig65m, ...).
OTHERS = {"clip": ["clip_rn50x4", "clip_vit_b16", "clip_vit_b32", "clip_vit_l14"],
          "r2plus1d": ["r2plus1d_34_32_ig65m_kinetics", "r2plus1d_34_8_ig65m_kinetics"],
          "s3d": ["s3d_howto100m", "s3d_kinetics400"], "audio": ["vggish"], "i3d": ["i3d"]}
PYSLOWFAST = list_models("pyslowfast")


def test_all_models_listed():
    assert list_models() == sorted(ALL + PYSLOWFAST + [n for names in OTHERS.values() for n in names])
    for family, names in OTHERS.items():
        assert list_models(family) == names
    assert len(PYSLOWFAST) >= 20
    assert list_models("torchvision-video") == VIDEO
    assert list_models("torchvision-image") == IMAGE
    assert list_models("efficientnet") == ["efficientnet_lite0"]
    assert list_models("no-such-family") == []


def test_get_card_unknown_suggests_close_names():
    with pytest.raises(ValueError) as err:
        get_card("r2plus1d18")
    msg = str(err.value)
    assert msg.startswith("unknown model 'r2plus1d18'; did you mean r2plus1d_18")
    assert msg.endswith("(vidvec models lists them)")
    with pytest.raises(ValueError, match=r"^unknown model 'zzzz' \(vidvec models lists them\)$"):
        get_card("zzzz")


def test_duplicate_registration_rejected_and_registry_unchanged():
    original = get_card("r3d_18")
    before = dict(_REGISTRY)
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda: replace(original, description="impostor"), name="r3d_18")
    with pytest.raises(ValueError, match="already registered"):
        @register_model
        def r3d_18() -> ModelCard:  # the name is the function's
            return replace(original, description="impostor")
    assert get_card("r3d_18") is original
    assert _REGISTRY == before


def test_a_registered_function_must_make_a_card_of_its_name(monkeypatch):
    # Registration calls nothing: what the function returns is checked when the card is first asked for.
    monkeypatch.setitem(_REGISTRY, "not_a_card", lambda: "not a card")
    with pytest.raises(TypeError, match="must return a ModelCard, not str"):
        get_card("not_a_card")
    monkeypatch.setitem(_REGISTRY, "alias", lambda: get_card("r3d_18"))
    with pytest.raises(ValueError, match="registered under another name than its card's"):
        get_card("alias")


@pytest.mark.parametrize("name", ALL)
def test_card_default_weights_complete(name):
    card = get_card(name)
    w = card.default_weights
    assert w is card.weights[0] is card.get_weights(None) is card.get_weights("default")
    assert w.url or w.package_file
    assert w.license and w.source
    assert isinstance(w.preprocess, Preprocess)
    assert w.categories and all(isinstance(c, str) and c for c in w.categories)
    assert len(w.categories) == (400 if card.input == "video" else 1000)
    assert w.num_params and w.num_params > 1_000_000
    assert w.metrics.get("acc@1", 0) > 50
    assert w.sha256 and w.file_name.endswith(".pth")
    assert card.latent and card.description and card.embed_dim > 0
    # Video models cut windows; frame-wise image models take single frames at the native rate.
    if card.input == "video":
        assert card.sampling.kind == "windows" and card.sampling.stride == card.sampling.clip_len
    else:
        assert card.sampling.kind == "frames" and card.sampling.fps is None


def test_get_weights_by_name_and_error():
    card = get_card("resnet50")
    assert card.get_weights("IMAGENET1K_V2").name == "IMAGENET1K_V2"
    assert card.get_weights("imagenet1k_v2").name == "IMAGENET1K_V2"
    assert card.get_weights("IMAGENET1K_V2").preprocess.resize == (232,)
    assert card.default_weights.preprocess.resize == (256,)
    with pytest.raises(ValueError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        card.get_weights("IMAGENET1K_V3")
    assert get_card("swin3d_b").weight_names() == ["KINETICS400_V1", "KINETICS400_IMAGENET22K_V1"]


_ENUMS = {
    "r3d_18": tvv.R3D_18_Weights, "mc3_18": tvv.MC3_18_Weights, "r2plus1d_18": tvv.R2Plus1D_18_Weights,
    "s3d": tvv.S3D_Weights, "mvit_v1_b": tvv.MViT_V1_B_Weights, "mvit_v2_s": tvv.MViT_V2_S_Weights,
    "swin3d_t": tvv.Swin3D_T_Weights, "swin3d_s": tvv.Swin3D_S_Weights, "swin3d_b": tvv.Swin3D_B_Weights,
}


@pytest.mark.parametrize("name", VIDEO)
def test_video_cards_match_torchvision(name):
    card = get_card(name)
    enum = list(_ENUMS[name])
    assert card.weight_names() == [e.name for e in enum]
    for entry, tv in zip(card.weights, enum):
        assert entry.url == tv.url
        assert entry.file_name in tv.url and entry.file_name.split("-")[-1].startswith(entry.sha256)
        t = tv.transforms()
        assert list(entry.preprocess.crop) == list(t.crop_size)
        assert list(entry.preprocess.resize) == list(t.resize_size)
        assert list(entry.preprocess.mean) == list(t.mean) and list(entry.preprocess.std) == list(t.std)
        assert entry.categories == tuple(tv.meta["categories"])
        assert entry.num_params == tv.meta["num_params"]
        # The default sampling is the evaluation setup torchvision documents for these weights.
        docs = tv.meta["_docs"]
        fps = float(re.search(r"frame_rate=([\d.]+)", docs).group(1))
        clip_len = int(re.search(r"clip_len=(\d+)", docs).group(1))
        assert (card.sampling.fps, card.sampling.clip_len) == (fps, clip_len)


def test_weights_validation():
    pp = get_card("r3d_18").default_weights.preprocess
    with pytest.raises(ValueError, match="url or a package_file"):
        Weights("X", None, None, "MIT", pp, None, None, {})
    with pytest.raises(ValueError, match="hex"):
        Weights("X", "https://example.org/x-abc.pth", "xyz", "MIT", pp, None, None, {})
    w = Weights("X", "https://example.org/a/b/model-ABCDEF12.pth?dl=1", "ABCDEF12", "MIT", pp, None, None, {})
    assert w.file_name == "model-ABCDEF12.pth" and w.sha256 == "abcdef12"
    assert w.matches_sha256("abcdef12" + "0" * 56) and not w.matches_sha256("0" * 64)
    with pytest.raises(ValueError, match="no weights"):
        ModelCard("m", "f", "video", lambda num_classes=None: None, (), 8,
                  get_card("r3d_18").sampling, "x", "y")


def test_registration_is_lazy():
    # Importing the families registers every name but makes no card; a card is made when it is asked for.
    code = textwrap.dedent("""
        from vidvec import registry
        names = registry.list_models()
        assert len(names) == EXPECTED and not registry._CARDS, registry._CARDS
        registry.get_card("r3d_18")
        assert list(registry._CARDS) == ["r3d_18"]
    """).replace("EXPECTED", str(len(list_models())))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _models_table_script():
    """scripts/models_table.py as a module (it is a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "models_table.py"
    spec = importlib.util.spec_from_file_location("models_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("family", [None, "pyslowfast"])
def test_docs_model_tables_are_the_registry(family):
    # docs/models.md (every model but PySlowFast's) and docs/pyslowfast.md (its configs) hold, between their
    # markers, exactly what scripts/models_table.py makes from the cards: one row per registered model.
    script = _models_table_script()
    path, start, end = script.TABLES[family]
    expected = script.table(family)
    assert script.between(path.read_text(), start, end) == expected, (
        f"{path.name}'s table is not the registry's: run python scripts/models_table.py --write")
    names = [n for n in list_models() if (get_card(n).family == "pyslowfast") == (family == "pyslowfast")]
    assert [line.split(" | ")[0] for line in expected.splitlines()[2:]] == [f"| `{n}`" for n in names]


def test_models_table_script_needs_no_torch():
    code = textwrap.dedent("""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("models_table", sys.argv[1])
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        script.table(None), script.table("pyslowfast")
        assert "torch" not in sys.modules and "torchvision" not in sys.modules, "the tables imported torch"
    """)
    path = _models_table_script().__file__
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
