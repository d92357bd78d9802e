"""vidvec search --like VIDEO and --html, and vidvec extract --index: a query video extracted exactly as the store's
vectors were, a results page whose thumbnails and timelines a real browser (headless Chromium) shows, and a run
that adds its videos to a store (refused before any work when the store could not take them)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import vidvec
from browser import render
from vidvec.cli import app
from vidvec.spec import RunSpec, SpecError

VIDEOS = ("v_SoccerJuggling_g23_c01.avi", "v_SoccerJuggling_g24_c01.avi", "R6llTwEh07w.mp4")


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("search")
    (root / "videos").mkdir()
    for name in VIDEOS:  # copies: a test moves one away
        shutil.copy(shared_dir / "assets" / "videos" / name, root / "videos" / name)
    result = CliRunner().invoke(app, ["extract", str(root / "videos"), "-o", str(root / "feats"), "--fps", "1",
                                      "--num-workers", "0", "-q", "--index", str(root / "store")])
    assert result.exit_code == 0, result.output
    assert "3 video(s) of efficientnet_lite0 added, 0 already" in result.output
    return root


def test_like_a_video_extracts_it_as_the_store_did(store):
    query = store / "videos" / VIDEOS[0]
    result = CliRunner().invoke(app, ["search", str(store / "store"), "--like", str(query), "-k", "3"])
    assert result.exit_code == 0, result.output
    videos = result.output.split("videos (best clip):")[1].split()
    assert videos[1] == "v_SoccerJuggling_g23_c01" and videos[5] == "v_SoccerJuggling_g24_c01", result.output
    # the query is the stored video's own video vector: the same settings give the same vector
    arrays, _ = vidvec.read_features(store / "feats" / "v_SoccerJuggling_g23_c01.npz")
    clips, _ = vidvec.Store(store / "store").search(arrays["video_vector"], k=1)
    assert f"{clips[0].score:.4f}  v_SoccerJuggling_g23_c01  {clips[0].start:.2f}" in result.output


def test_run_spec_from_an_output_folders_settings_has_its_hash(store):
    settings = vidvec.Store(store / "store").manifest()["models"]["efficientnet_lite0"]["settings"]
    spec = RunSpec.from_settings(settings)
    assert json.loads(json.dumps(spec.settings(0))) == settings and spec.output.out is None
    with pytest.raises(SpecError, match="weights random have sha256 random..., the efficientnet_lite0 vectors were "
                                        "made with"):
        RunSpec.from_settings(settings, weights="random")
    with pytest.raises(SpecError, match="were made with weights 'random': give the same weights"):
        RunSpec.from_settings({**settings, "weights": {"name": "random", "sha256": "random", "url": None}})


def test_the_results_page_shows_thumbnails_and_timelines_in_a_browser(store, tmp_path):
    page = tmp_path / "results.html"
    result = CliRunner().invoke(app, ["search", str(store / "store"), "--like-clip", "v_SoccerJuggling_g24_c01@3",
                                      "-k", "2", "--html", str(page)])
    assert result.exit_code == 0 and f"page written to {page}" in result.output, result.output
    shown = render(page, tmp_path)
    assert shown["images"] == 4 and shown["loaded"] == 4, shown  # 2 clips, and each video's best clip
    assert all(width > 0 for width in shown["widths"])
    frames = {v: len(vidvec.read_features(store / "feats" / f"{v}.npz")[0]["features"])
              for v in ("v_SoccerJuggling_g24_c01", "v_SoccerJuggling_g23_c01")}
    assert shown["polylines"] == [frames["v_SoccerJuggling_g24_c01"], frames["v_SoccerJuggling_g23_c01"]]
    assert "v_SoccerJuggling_g24_c01" in shown["text"] and "3.00-4.00 s · 1.0000" in shown["text"], shown["text"]


def test_a_source_that_moved_leaves_its_hits_without_pictures(store, tmp_path):
    moved = store / "videos" / VIDEOS[1]
    moved.rename(tmp_path / VIDEOS[1])
    try:
        page = tmp_path / "results.html"
        result = CliRunner().invoke(app, ["search", str(store / "store"), "--like-clip",
                                          "v_SoccerJuggling_g24_c01@3", "-k", "2", "--html", str(page)])
    finally:
        (tmp_path / VIDEOS[1]).rename(moved)
    assert result.exit_code == 0, result.output
    assert f"{moved}: no thumbnails" in result.output
    shown = render(page, tmp_path)
    assert shown["loaded"] == shown["images"] == 1 and shown["text"].count("no picture") == 3


def test_like_refusals(store, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["search", str(store / "store"), "--like", str(tmp_path)])
    assert result.exit_code == 2 and "--like takes one video file" in result.output
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    result = runner.invoke(app, ["search", str(store / "store"), "--like", str(broken)])
    assert result.exit_code == 2 and str(broken) in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["search", str(store / "store"), "--like", str(broken), "--text", "a ball"])
    assert result.exit_code == 2 and "give one of --text, --like or --like-clip" in result.output


def test_extract_index_is_refused_before_any_work(store, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["extract", str(store / "videos"), "-o", str(tmp_path / "other"), "--fps", "2",
                                 "--index", str(store / "store")])
    assert result.exit_code == 2 and "one store holds one way of extracting per model" in result.output
    assert not (tmp_path / "other").exists()
    result = runner.invoke(app, ["extract", str(store / "videos"), "-o", str(tmp_path / "hero"), "--layout", "hero",
                                 "--index", str(store / "store")])
    assert result.exit_code == 2 and "--index takes the vidvec layout's outputs" in result.output
    # the same run again: nothing new to extract or to add
    result = runner.invoke(app, ["extract", str(store / "videos"), "-o", str(store / "feats"), "--fps", "1", "-q",
                                 "--index", str(store / "store")])
    assert result.exit_code == 0 and "0 video(s) of efficientnet_lite0 added, 3 already" in result.output
    assert np.isfinite(vidvec.Store(store / "store").to_arrow().column("start").to_numpy()).all()


def test_extract_index_adds_videos_as_the_run_goes(store, tmp_path, monkeypatch):
    import vidvec.cli
    import vidvec.store

    monkeypatch.setattr(vidvec.cli, "INDEX_EVERY_S", 0.0)  # after every video
    monkeypatch.setattr(vidvec.store, "ANN_CLIPS", 1)  # an approximate index: built once, at the end
    built = []
    build = vidvec.store.Store._build_ann
    monkeypatch.setattr(vidvec.store.Store, "_build_ann", lambda self, *a: built.append(1) or build(self, *a))
    result = CliRunner().invoke(app, ["extract", str(store / "videos"), "-o", str(tmp_path / "feats"), "--fps", "1",
                                      "--num-workers", "0", "--index", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    added = [int(line.split(": ")[1].split()[0]) for line in result.output.splitlines() if "video(s) of" in line]
    assert added == [1, 1, 1, 0], result.output  # one by one as they were done, then nothing left at the end
    entry = vidvec.Store(tmp_path / "store").manifest()["models"]["efficientnet_lite0"]
    assert len(entry["parts"]) == 3 and entry["ann"]["parts"] == entry["parts"] and built == [1]
