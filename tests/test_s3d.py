"""S3D models: kylemin Kinetics-400 weights on torchvision's S3D, and MIL-NCE's HowTo100M video and text towers.

Fidelity data in tests/data (regenerate with ``python tests/test_s3d.py KYLEMIN_MODEL_PY VF_S3D_PY S3DG_PY``, the
upstream files named in each JSON's ``source``):
- ``s3d_kylemin_keys.json`` / ``s3d_howto100m_keys.json``: every state_dict key and shape of the upstream models
  (the published checkpoints' layouts);
- ``s3d_kylemin_reference.json`` / ``s3d_howto100m_reference.json``: what the upstream code computes with the
  deterministic weights of :func:`seeded_state` on a small seeded clip (and, for MIL-NCE, sentences and a
  small dictionary).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import vidvec.models.s3d as s3d
import vidvec.models.s3d_net as s3d_net
from vidvec import weights
from vidvec.weights import WeightsError

DATA = Path(__file__).parent / "data"


def seeded_state(shapes: Iterable[tuple[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    """Deterministic weights for a key list, each tensor from its own generator seeded by the key name (so the
    same values come out whatever builds them). Scales keep activations finite through the deep net; BatchNorm
    statistics are randomised so every layer matters."""
    state = {}
    for key, shape in shapes:
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(0)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            value = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("running_mean", ".bias")):
            value = 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            value = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        state[key] = value
    return state


def seeded_clip(shape: Sequence[int], seed: int) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(seed))


def _shapes(module: torch.nn.Module) -> list[list]:
    """[[key, shape], ...] in state_dict order, as the JSON key lists store them."""
    return [[k, list(v.shape)] for k, v in module.state_dict().items()]


def _close(actual: torch.Tensor, expected: Sequence[float], rel: float = 1e-4) -> None:
    expected_t = torch.tensor(expected, dtype=torch.float64)
    actual = actual.detach().to(torch.float64).flatten()
    scale = float(expected_t.abs().max())
    assert actual.shape == expected_t.shape
    assert float((actual - expected_t).abs().max()) <= rel * scale, float((actual - expected_t).abs().max())


def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


# ----------------------------------------------------------------------------------------- s3d_kinetics400

def test_kylemin_keys_map_one_to_one_onto_torchvision_s3d():
    upstream = _load("s3d_kylemin_keys.json")
    assert upstream["same_keys_in_video_features"]
    mapped = [[s3d.kylemin_to_torchvision(k), shape] for k, shape in upstream["keys"]]
    assert len({k for k, _ in mapped}) == len(mapped)  # distinct
    model = s3d.build_kinetics400()
    assert mapped == _shapes(model)  # complete, same shapes, same order
    assert sum(p.numel() for p in model.parameters()) == upstream["num_params"]
    from torchvision.models.video import s3d as tv_s3d
    assert _shapes(tv_s3d(weights=None)) == _shapes(model)  # torchvision's own S3D has the same layout


@pytest.mark.parametrize("kylemin, torchvision", [
    ("base.0.conv_s.weight", "features.0.0.0.weight"),
    ("base.0.bn_t.running_var", "features.0.1.1.running_var"),
    ("base.2.conv.weight", "features.2.0.weight"),
    ("base.5.branch0.0.conv.weight", "features.5.branch0.0.weight"),
    ("base.5.branch0.0.bn.bias", "features.5.branch0.1.bias"),
    ("base.15.branch1.1.conv_t.weight", "features.15.branch1.1.1.0.weight"),
    ("base.12.branch3.1.bn.num_batches_tracked", "features.12.branch3.1.1.num_batches_tracked"),
    ("fc.0.bias", "classifier.1.bias"),
])
def test_kylemin_key_examples(kylemin, torchvision):
    assert s3d.kylemin_to_torchvision(kylemin) == torchvision


def _kylemin_checkpoint(path: Path, prefix: str = "module.", counters: bool = False) -> dict:
    """kylemin-keyed seeded weights saved as its Drive file is (DataParallel prefix, no BatchNorm counters)."""
    state = seeded_state(_load("s3d_kylemin_keys.json")["keys"])
    torch.save({prefix + k: v for k, v in state.items() if counters or not k.endswith("num_batches_tracked")}, path)
    return state


def test_kylemin_checkpoint_gives_upstream_outputs(tmp_path):
    ref = _load("s3d_kylemin_reference.json")
    path = tmp_path / "S3D_kinetics400.pt"
    _kylemin_checkpoint(path)
    loaded = weights.load_model("s3d_kinetics400", weights=path)  # the card's reader: names, prefix, counters
    with torch.no_grad():
        latent = loaded.module(seeded_clip(ref["clip_shape"], 0))
        logits = loaded.module.classify(latent)
    assert latent.shape == (1, 1024) and logits.shape == (1, 400)
    _close(latent, ref["latent"])  # video_features' S3D(features=True)
    _close(logits, ref["logits"])  # kylemin's S3D


def test_kylemin_weights_in_torchvision_s3d_match_at_224():
    # torchvision's own S3D with the renamed weights loads strictly and, on the (T, 7, 7) map a 224 px clip
    # leaves, its fixed AvgPool3d((2, 7, 7)) + classifier + mean give what kylemin's pooling, the latent and
    # classify give. The layers before the pooling are the same torchvision modules holding the same tensors,
    # so only the head runs here (a full 224 px pass costs seconds).
    from torchvision.models.video import s3d as tv_s3d

    keys = _load("s3d_kylemin_keys.json")["keys"]
    state = {s3d.kylemin_to_torchvision(k): v for k, v in seeded_state(keys).items()}
    reference = tv_s3d(weights=None).eval()
    reference.load_state_dict(state, strict=True)
    model = s3d.build_kinetics400().eval()
    weights.load_into(model, state, "seeded")
    feature_map = seeded_clip((2, 1024, 4, 7, 7), 2)
    with torch.no_grad():
        expected = reference.classifier(reference.avgpool(feature_map)).mean(dim=(2, 3, 4))
        latent = model.net.avgpool(feature_map).mean(dim=(2, 3, 4))
        torch.testing.assert_close(model.classify(latent), expected, rtol=1e-5, atol=1e-6)


def test_kylemin_reader_takes_torchvision_names_and_refuses_mixed(tmp_path):
    state = _kylemin_checkpoint(tmp_path / "k.pt", prefix="", counters=True)
    tv_names = {s3d.kylemin_to_torchvision(k): v for k, v in state.items()}
    torch.save(tv_names, tmp_path / "tv.pt")
    assert s3d.read_kylemin_checkpoint(tmp_path / "tv.pt").keys() == tv_names.keys()
    torch.save({"fc.0.bias": state["fc.0.bias"], "classifier.1.bias": state["fc.0.bias"]}, tmp_path / "mixed.pt")
    with pytest.raises(WeightsError, match="classifier.1.bias"):
        s3d.read_kylemin_checkpoint(tmp_path / "mixed.pt")


def test_kinetics400_card_and_small_clips():
    card = s3d.s3d_kinetics400()
    assert (card.family, card.input, card.embed_dim) == ("s3d", "video", 1024)
    assert (card.sampling.kind, card.sampling.fps, card.sampling.clip_len, card.sampling.stride) == \
        ("windows", 25, 64, 64)
    assert card.presets["video_features"].sampling.rule == "video_features"
    assert card.presets["video_features"].sampling.clip_len == 64
    trained, video_features = card.weights
    assert trained.url == video_features.url and trained.file_name == "S3D_kinetics400_torchified.pt"
    assert (trained.preprocess.mean, trained.preprocess.std) == ((0.5,) * 3, (0.5,) * 3)  # [-1, 1]
    assert (video_features.preprocess.mean, video_features.preprocess.std) == ((0.0,) * 3, (1.0,) * 3)
    assert trained.preprocess.crop == (224, 224) and trained.preprocess.resize == (224,)
    assert len(trained.categories) == 400 and trained.categories[0] == "abseiling"
    model = card.build(num_classes=0).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 32, 48))  # any size: kylemin's pooling spans the whole map
    assert out.shape == (1, 1024) and model.classify(out) is None


# ------------------------------------------------------------------------------------------- s3d_howto100m

def test_howto100m_keys_match_upstream():
    upstream = _load("s3d_howto100m_keys.json")
    model = s3d.build_howto100m()
    assert _shapes(model) == upstream["keys"]
    assert dict(upstream["keys"])["text_module.word_embd.weight"] == [66250, 300]
    assert sum(p.numel() for p in model.parameters()) == upstream["num_params"]


@pytest.fixture(scope="module")
def reference_milnce():
    ref = _load("s3d_howto100m_reference.json")
    model = s3d.build_howto100m(vocabulary=ref["words"], num_embeddings=ref["word_rows"]).eval()
    weights.load_into(model, seeded_state(_shapes(model)), "seeded")
    return model, ref


def test_howto100m_video_tower_gives_upstream_outputs(reference_milnce):
    model, ref = reference_milnce
    clip = seeded_clip(ref["clip_shape"], 1)
    with torch.no_grad():
        _close(model(clip), ref["video_embedding"])
        _close(model.features(clip), ref["mixed_5c"])


def test_howto100m_video_tower_alone_gives_the_same_vectors(reference_milnce):
    """text=False (what a run builds): no sentence tower, the checkpoint's other tensors strictly, the same
    vectors; encode_text refuses in one line."""
    model, ref = reference_milnce
    alone = s3d.build_howto100m(num_embeddings=ref["word_rows"], text=False).eval()
    state = {**model.state_dict(), s3d.VOCABULARY_KEY: s3d.pack_vocabulary(ref["words"])}
    s3d.load_howto100m_state(alone, state, "seeded")
    assert not alone.has_text and not any(k.startswith("text_module.") for k in alone.state_dict())
    clip = seeded_clip(ref["clip_shape"], 1)
    with torch.no_grad():
        assert torch.equal(alone(clip), model(clip))
    with pytest.raises(ValueError, match="built without its text tower"):
        alone.encode_text(["open the door"])
    del state["fc.bias"]
    with pytest.raises(WeightsError, match="1 missing: fc.bias"):
        s3d.load_howto100m_state(s3d.build_howto100m(num_embeddings=ref["word_rows"], text=False), state, "seeded")


def test_howto100m_text_tower_gives_upstream_outputs(reference_milnce):
    model, ref = reference_milnce
    assert model.text_module.token_ids(ref["sentences"]).tolist() == ref["token_ids"]
    with torch.no_grad():
        text = model.encode_text(ref["sentences"])
    assert text.shape == (len(ref["sentences"]), 512)
    for row, expected in zip(text, ref["text_embedding"]):
        _close(row, expected)


def test_tokenisation_rules():
    encoder = s3d_net.SentenceEncoder(num_embeddings=16, vocabulary=["cut", "the", "tomato", "it's", "cut"])
    ids = encoder.token_ids(["Cut THE tomato!", "slice a tomato", "It's cut-cut", "", "the " * 20]).tolist()
    assert ids[0] == [5, 2, 3] + [0] * 13    # lowercased; 'cut' listed twice: its last position (5) wins
    assert ids[1] == [3] + [0] * 15          # unknown words dropped
    assert ids[2] == [4, 5, 5] + [0] * 13    # apostrophes stay in words, '-' splits
    assert ids[3] == [0] * 16                # nothing known: all padding
    assert ids[4] == [2] * 16                # at most 16 words
    with pytest.raises(TypeError):
        encoder.token_ids("one string")
    too_small = s3d_net.SentenceEncoder(num_embeddings=3, vocabulary=["a", "b", "c"])
    with pytest.raises(ValueError, match="does not fit"):
        too_small.token_ids(["c"])


def test_encode_text_shape_and_determinism():
    model = s3d.build_howto100m(vocabulary=["open", "door"], num_embeddings=8).eval()
    assert model.has_text
    with torch.no_grad():
        first = model.encode_text(["open the door", "close it"])
        again = model.encode_text(("open the door", "close it"))
    assert first.shape == (2, 512) and first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    blank = s3d.build_howto100m(num_embeddings=8).eval()  # random build: no words until weights bring them
    with torch.no_grad():
        out = blank.encode_text(["open the door", "anything"])
    torch.testing.assert_close(out[0], out[1])


def test_howto100m_video_shapes_and_odd_sizes():
    model = s3d.build_howto100m(num_embeddings=8).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 8, 32, 32)).shape == (2, 512)
        assert model.features(torch.rand(1, 3, 8, 32, 48)).shape == (1, 1024)
    with pytest.raises(ValueError, match="even"):
        model(torch.rand(1, 3, 7, 32, 32))
    assert model.classify(torch.zeros(1, 512)) is None
    with pytest.raises(ValueError, match="no classifier"):
        s3d.build_howto100m(num_classes=400)


def test_howto100m_card():
    card = s3d.s3d_howto100m()
    assert (card.family, card.input, card.embed_dim) == ("s3d", "video", 512)
    assert (card.sampling.kind, card.sampling.fps, card.sampling.clip_len) == ("windows", 10, 32)
    entry = card.default_weights
    assert entry.file_name == "s3d_howto100m.pth" and s3d.S3D_DICT.file_name == "s3d_dict.npy"
    assert (entry.preprocess.mean, entry.preprocess.std, entry.preprocess.crop) == ((0.0,) * 3, (1.0,) * 3, (224, 224))
    assert card.read_checkpoint is s3d.read_howto100m_checkpoint and card.load_state is s3d.load_howto100m_state
    assert entry.companions == (s3d.S3D_DICT,) and card.text


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDVEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDVEC_OFFLINE", "1")
    folder = tmp_path / "home" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_howto100m_checkpoint_brings_its_dictionary_offline(offline_home, tmp_path):
    words = ["open", "door", "cut", "tomato"]
    dict_path = offline_home / "s3d_dict.npy"
    np.save(dict_path, np.array(words))
    model = s3d.build_howto100m(num_embeddings=8).eval()
    state = seeded_state(_shapes(model))
    checkpoint = tmp_path / "s3d_howto100m.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, checkpoint)

    merged = s3d.read_howto100m_checkpoint(checkpoint)
    assert weights.sidecar_path(dict_path).is_file()  # no published hash: recorded on first use
    s3d.load_howto100m_state(model, merged, str(checkpoint))
    assert model.text_module.vocabulary == tuple(words)
    assert model.text_module.token_ids(["cut the tomato"])[0, :2].tolist() == [3, 4]
    torch.testing.assert_close(model.fc.weight, state["fc.weight"])

    s3d.read_howto100m_checkpoint(checkpoint)  # the recorded digest still matches
    np.save(dict_path, np.array(words + ["changed"]))
    with pytest.raises(WeightsError, match="changed"):
        s3d.read_howto100m_checkpoint(checkpoint)
    with pytest.raises(WeightsError, match="no word dictionary"):
        s3d.load_howto100m_state(model, state, "bare.pth")


def test_missing_dictionary_offline_says_where_to_put_it(offline_home, tmp_path):
    checkpoint = tmp_path / "s3d_howto100m.pth"
    torch.save({"fc.bias": torch.zeros(512)}, checkpoint)
    with pytest.raises(WeightsError, match="s3d_dict.npy.*VIDVEC_OFFLINE"):
        s3d.read_howto100m_checkpoint(checkpoint)


class _RunsCode:
    """Pickles as a call to open(marker, 'w'): a file appears if unpickling ever runs it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_dictionary_is_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "s3d_dict.npy"
    np.save(evil, np.array([_RunsCode(marker), "word"], dtype=object), allow_pickle=True)
    with pytest.raises(WeightsError, match="not a plain numpy array"):
        s3d.read_vocabulary(evil)
    assert not marker.exists()
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(WeightsError):
        s3d.read_vocabulary(tmp_path / "junk.npy")
    np.save(tmp_path / "grid.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(WeightsError, match="1-d array of words"):
        s3d.read_vocabulary(tmp_path / "grid.npy")


def test_vocabulary_packing_round_trip():
    words = ["open", "café", "don't", "", "x"]
    assert s3d.unpack_vocabulary(s3d.pack_vocabulary(words)) == words
    assert s3d.unpack_vocabulary(s3d.pack_vocabulary([])) == []
    with pytest.raises(ValueError, match="newline"):
        s3d.pack_vocabulary(["two\nlines"])


# --------------------------------------------------------------------------------------- regenerating the data

REF_CLIP = (1, 3, 16, 64, 64)  # the smallest clip both nets take: 16 frames (2 time steps at mixed_5c), 64 px
REF_WORDS = ["open", "door", "cut", "tomato", "the", "don't", "café", "door", "onion", "knife", "salt",
             "water", "boil", "pan", "oil", "stir", "egg"]  # "door" twice: its later position wins
REF_SENTENCES = ["Open the door", "CUT the tomato, then cut the TOMATO again!", "nothing known here",
                 "", "Don't cut the CAFÉ onion with a knife; boil water, salt, pan, oil, stir, egg, door, open "
                 "the door, cut tomato"]
REF_WORD_ROWS = 64  # the reference word table is cut to 64 rows (upstream's is 66250) to keep tests light


def _import_file(path: str, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _floats(t: torch.Tensor) -> list[float]:
    return [float(f"{v:.7g}") for v in t.detach().flatten().tolist()]


def _dump(name: str, data: dict) -> None:
    """One line per field, and per item of a list of lists (key lists, per-sentence rows)."""
    def value(v: object) -> str:
        if isinstance(v, list) and v and isinstance(v[0], (list, tuple)):
            return "[\n  " + ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in v) + "\n ]"
        return json.dumps(v, ensure_ascii=False)

    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in data.items()) + "\n}"
    (DATA / name).write_text(text + "\n", encoding="utf-8")
    print(f"wrote {DATA / name} ({len(text)} chars)")


def regenerate(kylemin_py: str, vf_py: str, s3dg_py: str) -> None:
    """Write the four JSON files from the upstream sources (kylemin/S3D model.py, video_features
    models/s3d/s3d_src/s3d.py, antoine77340/S3D_HowTo100M s3dg.py)."""
    import tempfile

    torch.set_grad_enabled(False)
    env = f"torch {torch.__version__}, numpy {np.__version__}, CPU float32"
    kylemin = _import_file(kylemin_py, "kylemin_model").S3D(400).eval()
    vf = _import_file(vf_py, "vf_s3d").S3D(400).eval()
    _dump("s3d_kylemin_keys.json", {
        "source": "kylemin/S3D@ecd3786ae8c6212b3c3777dbd18089c2649dd552 model.py: S3D(num_class=400).state_dict(), "
                  "the layout of S3D_kinetics400.pt; v-iashin/video_features@a2f61b7 models/s3d/s3d_src/s3d.py "
                  "(S3D_kinetics400_torchified.pt) has the same keys; " + env,
        "same_keys_in_video_features": _shapes(vf) == _shapes(kylemin),
        "num_params": sum(p.numel() for p in kylemin.parameters()),
        "keys": _shapes(kylemin),
    })
    state = seeded_state(_shapes(kylemin))
    kylemin.load_state_dict(state)
    vf.load_state_dict(state)
    clip = seeded_clip(REF_CLIP, 0)
    _dump("s3d_kylemin_reference.json", {
        "source": "outputs of kylemin/S3D model.py (logits) and video_features s3d.py (forward(x, features=True): "
                  "latent) with test_s3d.seeded_state weights on test_s3d.seeded_clip(clip_shape, 0); " + env,
        "clip_shape": list(REF_CLIP),
        "latent": _floats(vf(clip, features=True)),
        "logits": _floats(kylemin(clip)),
        "logits_video_features": _floats(vf(clip)),
    })

    with tempfile.TemporaryDirectory() as tmp:
        dict_path = Path(tmp) / "dict.npy"
        np.save(dict_path, np.array(REF_WORDS))
        s3dg = _import_file(s3dg_py, "s3dg")
        net = s3dg.S3D(str(dict_path), 512).eval()
        published = _shapes(net)
        net.text_module.word_embd = torch.nn.Embedding(REF_WORD_ROWS, 300)
        _dump("s3d_howto100m_keys.json", {
            "source": "antoine77340/S3D_HowTo100M@b8cd0bbfd16fe41629d1b15e0cf384d75f56101a s3dg.py: "
                      "S3D(dict_path, 512).state_dict(), the layout of s3d_howto100m.pth (net.load_state_dict("
                      "th.load('s3d_howto100m.pth')) in its README); the word table has Sentence_Embedding's "
                      "default num_embeddings=66250 rows whatever the dictionary's length; " + env,
            "num_params": sum(p.numel() for p in s3dg.S3D(str(dict_path), 512).parameters()),
            "keys": published,
        })
        net.load_state_dict(seeded_state(_shapes(net)))
        out = net(seeded_clip(REF_CLIP, 1))
        text = net.text_module(REF_SENTENCES)["text_embedding"]
        ids = net.text_module._words_to_ids(REF_SENTENCES)
    _dump("s3d_howto100m_reference.json", {
        "source": "outputs of antoine77340/S3D_HowTo100M s3dg.py S3D(dict, 512) with its word table cut to "
                  "word_rows rows, test_s3d.seeded_state weights, on test_s3d.seeded_clip(clip_shape, 1) and "
                  "text_module(sentences) with dictionary words (np.save(np.array(words))); " + env,
        "clip_shape": list(REF_CLIP),
        "word_rows": REF_WORD_ROWS,
        "words": REF_WORDS,
        "sentences": REF_SENTENCES,
        "token_ids": ids.tolist(),
        "video_embedding": _floats(out["video_embedding"]),
        "mixed_5c": _floats(out["mixed_5c"]),
        "text_embedding": [_floats(row) for row in text],
    })


if __name__ == "__main__":
    import sys

    regenerate(*sys.argv[1:4])
