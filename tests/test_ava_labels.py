"""The AVA v2.2 action names of PySlowFast's AVA SlowFast card: the shipped list, and the card's head naming
its 80 outputs with it. No network; the full-size net is built on the meta device only."""

from __future__ import annotations

import json

import pytest
import torch

from vidvec import categories
from vidvec.models.pyslowfast.zoo import categories_for_count, config_for
from vidvec.registry import get_card

AVA_CARD = "AVA/c2/SLOWFAST_32x2_R101_50_50"


@pytest.fixture(scope="module")
def ava_fixture(shared_dir) -> dict:
    index = shared_dir / "fixtures" / "pyslowfast" / "keys" / "index.json"
    if not index.is_file():
        pytest.fail(f"PySlowFast fixtures missing: {index}", pytrace=False)
    return json.loads(index.read_text())[AVA_CARD]


def test_the_list_is_the_80_ava_actions_in_id_order():
    names = categories.ava()
    assert len(names) == len(set(names)) == 80
    assert all(name == name.strip() and name for name in names)
    # Spot checks against ava_action_list_v2.2.pbtxt (id: name); index = id - 1.
    by_id = dict(enumerate(names, start=1))
    assert by_id[1] == "bend/bow (at the waist)"
    assert by_id[2] == "crawl"              # one of the 20 ids outside the 60-class ActivityNet subset
    assert by_id[14] == "walk"              # last PERSON_MOVEMENT action
    assert by_id[15] == "answer phone"      # first OBJECT_MANIPULATION action
    assert by_id[57] == "text on/look at a cellphone"
    assert by_id[64] == "fight/hit (a person)"  # first PERSON_INTERACTION action
    assert by_id[75] == "play with kids"
    assert by_id[80] == "watch (a person)"


def test_ava_card_names_its_80_outputs(ava_fixture):
    card = get_card(AVA_CARD)
    names = categories.ava()
    assert card.categories_for(None) == card.default_weights.categories == names
    num_classes = ava_fixture["cfg"]["MODEL"]["NUM_CLASSES"]
    assert num_classes == ava_fixture["num_classes_out"] == config_for(AVA_CARD).MODEL.NUM_CLASSES == len(names)
    with torch.device("meta"):  # the real network, built without allocating
        model = card.build()
    assert model.num_classes == len(names)


def test_80_outputs_alone_are_not_taken_for_ava():
    # An ad-hoc 80-way head (a fine-tuned checkpoint's cfg) may be any dataset: only AVA's weights get AVA's names.
    assert categories_for_count(80) is None
