"""vidvec index / search and vidvec.Store: Parquet parts readable without vidvec, append-only and idempotent, one
settings hash per model, exact cosine search, damaged parts detected, one indexer at a time."""

from __future__ import annotations

import fcntl
import glob
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import media
import vidvec
from vidvec.cli import app
from vidvec.extraction import SamplingOverrides
from vidvec.store import Store, StoreError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    # frame i has colour i: at 2 fps a and c show frames 0, 5, 10, ..., b (7 fps) frames 0, 3, 7, ...
    for name, frames, fps in (("a", 30, 10), ("b", 35, 7), ("c", 20, 10)):
        folder = root / ("videos1" if name != "c" else "videos2")
        folder.mkdir(exist_ok=True)
        media.make_video(folder / f"{name}.mp4", frames=frames, fps=fps, size=(96, 64))
    fps1 = SamplingOverrides(fps=2.0)
    for videos, out in (("videos1", "feats1"), ("videos2", "feats2")):
        assert all(o.status == "done" for o in vidvec.extract([root / videos], "efficientnet_lite0", root / out,
                                                              sampling=fps1, num_workers=0))
    assert all(o.status == "done" for o in vidvec.extract([root / "videos1"], "efficientnet_lite0", root / "other",
                                                          sampling=SamplingOverrides(fps=1.0), num_workers=0))
    return root


def test_index_is_append_only_and_idempotent_and_readable_without_vidvec(folders, tmp_path):
    store = vidvec.Store(tmp_path / "store")
    assert store.index(folders / "feats1") == {"model": "efficientnet_lite0", "added": 2, "already": 0, "failed": []}
    assert store.index(folders / "feats1")["added"] == 0  # the same folder again: nothing changes
    assert store.index(folders / "feats2")["added"] == 1  # new videos are appended
    table = pq.read_table(glob.glob(str(tmp_path / "store" / "efficientnet_lite0" / "clips-*.parquet")))
    assert sorted(set(table.column("video").to_pylist())) == ["a", "b", "c"]
    assert table.schema.field("vector").type.list_size == 1280
    arrays, _ = vidvec.read_features(folders / "feats1" / "b.npz")
    rows = [i for i, v in enumerate(table.column("video").to_pylist()) if v == "b"]
    stored = np.stack([table.column("vector")[i].values.to_numpy() for i in rows])
    np.testing.assert_array_equal(stored, arrays["features"])
    assert table.column("start").to_pylist()[rows[1]] == arrays["timestamps"][1, 0]
    videos = store.to_arrow(kind="videos")
    assert videos.num_rows == 3 and json.loads(videos.column("provenance")[0].as_py())["model"] == "efficientnet_lite0"


def test_other_settings_for_a_model_are_refused(folders, tmp_path):
    store = Store(tmp_path / "store")
    store.index(folders / "feats1")
    with pytest.raises(StoreError, match="one store holds one way of extracting per model"):
        store.index(folders / "other")


def test_search_finds_the_clip_itself_first_and_ranks_videos_by_their_best_clip(folders, tmp_path):
    store = Store(tmp_path / "store")
    store.index(folders / "feats1")
    store.index(folders / "feats2")
    query = store.vector_of("b", 1.2)
    clips, videos = store.search(query, k=3)
    assert (clips[0].video, clips[0].start, clips[0].end) == ("b", 1.0, 1.5) and clips[0].score == pytest.approx(1.0)
    assert [c.score for c in clips] == sorted((c.score for c in clips), reverse=True)
    assert videos[0].video == "b" and {v.video for v in videos} == {"a", "b", "c"}
    for video in videos:  # a video's score is its best clip's
        assert video.score == max(c.score for c in store.search(query, k=100)[0] if c.video == video.video)
    with pytest.raises(StoreError, match="the query has 512 dimensions, the store's efficientnet_lite0 vectors 1280"):
        store.search(np.ones(512), k=3)
    result = CliRunner().invoke(app, ["search", str(tmp_path / "store"), "--like-clip", "b@1.2s", "-k", "2"])
    assert result.exit_code == 0 and "1.0000  b  1.00-1.50 s" in result.output, result.output


def test_a_damaged_part_is_an_error_not_a_wrong_answer(folders, tmp_path):
    store = Store(tmp_path / "store")
    store.index(folders / "feats1")
    (part,) = glob.glob(str(tmp_path / "store" / "efficientnet_lite0" / "clips-*.parquet"))
    data = bytearray(open(part, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    open(part, "wb").write(bytes(data))
    with pytest.raises(StoreError, match="is damaged or missing"):
        store.search(np.ones(1280), k=3)


def test_one_indexer_at_a_time(folders, tmp_path):
    store = Store(tmp_path / "store")
    store.index(folders / "feats1")
    with open(tmp_path / "store" / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(StoreError, match="is being indexed by another process"):
            store.index(folders / "feats2")


def test_cli_index_and_search_refusals(folders, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(folders / "feats1"), "--into", str(tmp_path / "store")])
    assert result.exit_code == 0 and "2 video(s) of efficientnet_lite0 added, 0 already" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "store"), "--text", "a red square"])
    assert result.exit_code == 2 and "model efficientnet_lite0 has no text encoder" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "nowhere"), "--like-clip", "a@1s"])
    assert result.exit_code == 2 and "is not a store" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "store"), "--like-clip", "zz@1s"])
    assert result.exit_code == 2 and "no video 'zz' in the store" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "store")])
    assert result.exit_code == 2 and "give one of --text, --like or --like-clip" in result.output


def test_text_search_through_the_models_text_tower(tmp_path, shared_dir):
    video = shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4"
    list(vidvec.extract([video], "clip_vit_b32", tmp_path / "feats", weights="random", num_workers=0,
                        sampling=SamplingOverrides(fps=1.0)))
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(tmp_path / "feats"), "--into", str(tmp_path / "store")]).exit_code == 0
    result = runner.invoke(app, ["search", str(tmp_path / "store"), "--text", "a person lifting weights"])
    assert result.exit_code == 2 and "made with weights 'random': give --weights" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "store"), "--text", "a person lifting weights",
                                 "--weights", "random", "-k", "3"])
    assert result.exit_code == 0 and result.output.count("R6llTwEh07w") == 4, result.output  # 3 clips + 1 video


def test_indexing_writes_parts_of_bounded_size(folders, tmp_path, monkeypatch):
    import vidvec.store as store_module

    monkeypatch.setattr(store_module, "PART_CLIPS", 5)  # a part as soon as 5 clips are gathered
    monkeypatch.setattr(store_module, "ROW_GROUP_CLIPS", 4)  # written (and read for the index) 4 clips at a time
    store = Store(tmp_path / "store")
    assert store.index(folders / "feats1")["added"] == 2
    parts = store.manifest()["models"]["efficientnet_lite0"]["parts"]
    assert len(parts) == 2  # a (6 clips), then b (10 clips): a part each
    b = pq.ParquetFile(tmp_path / "store" / "efficientnet_lite0" / f"clips-{parts[1]}.parquet")
    assert b.metadata.num_rows == 10 and b.metadata.num_row_groups == 1  # one video is one row group, whole
    assert store.to_arrow().num_rows == sum(len(vidvec.read_features(folders / "feats1" / f"{k}.npz")[0]["features"])
                                            for k in ("a", "b"))


def test_a_big_store_searches_through_its_approximate_index(folders, tmp_path, monkeypatch):
    import vidvec.store as store_module

    exact = Store(tmp_path / "exact")
    exact.index(folders / "feats1")
    monkeypatch.setattr(store_module, "ANN_CLIPS", 10)  # "big" from 10 clips on
    monkeypatch.setattr(store_module, "PART_CLIPS", 5)  # and built from two parts, one at a time
    store = Store(tmp_path / "store")
    store.index(folders / "feats1")
    ann = store.manifest()["models"]["efficientnet_lite0"]["ann"]
    assert ann["rows"] == 16 and len(ann["parts"]) == 2
    assert (tmp_path / "store" / "efficientnet_lite0" / "ivf.faiss").is_file()
    query = exact.vector_of("b", 1.2)
    clips, videos = store.search(query, k=5)
    expected, expected_videos = exact.search(query, k=5)
    assert (clips[0].video, clips[0].clip) == (expected[0].video, expected[0].clip)  # 16 lists probed: exact
    np.testing.assert_allclose([c.score for c in clips], [c.score for c in expected], rtol=1e-5)  # (ties in any order)
    np.testing.assert_allclose([v.score for v in videos], [v.score for v in expected_videos], rtol=1e-5)
    store.index(folders / "feats2")  # adding videos rebuilds it over every part
    assert store.manifest()["models"]["efficientnet_lite0"]["ann"]["rows"] == 16 + 4


def test_a_damaged_approximate_index_is_an_error_and_indexing_rebuilds_it(folders, tmp_path, monkeypatch):
    import vidvec.store as store_module

    monkeypatch.setattr(store_module, "ANN_CLIPS", 10)
    store = Store(tmp_path / "store")
    store.index(folders / "feats1")
    path = tmp_path / "store" / "efficientnet_lite0" / "ivf.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: faiss itself would read it and answer wrongly
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="ivf.faiss is damaged or missing .*sha256"):
        Store(tmp_path / "store").search(np.ones(1280), k=3)
    assert Store(tmp_path / "store").index(folders / "feats1")["added"] == 0  # nothing new, but the index is rebuilt
    clips, _ = Store(tmp_path / "store").search(store.vector_of("b", 1.2), k=1)
    assert (clips[0].video, clips[0].start) == ("b", 1.0)


def test_clips_of_gives_each_videos_clips_in_order(folders, tmp_path):
    store = Store(tmp_path / "store")
    store.index(folders / "feats1")
    clips = store.clips_of(["b", "a"])
    arrays, _ = vidvec.read_features(folders / "feats1" / "b.npz")
    np.testing.assert_array_equal(clips["b"][0], arrays["timestamps"])
    np.testing.assert_array_equal(clips["b"][1], arrays["features"])
    assert len(clips["a"][0]) == len(vidvec.read_features(folders / "feats1" / "a.npz")[0]["features"])


def test_an_index_stopped_midway_leaves_no_part_and_no_temporary_file(folders, tmp_path, monkeypatch):
    import vidvec.finished

    read = vidvec.finished.read_done
    calls = []

    def stopped(path, digest):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill would, between two videos of one part
        return read(path, digest)

    monkeypatch.setattr(vidvec.finished, "read_done", stopped)
    store = Store(tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        store.index(folders / "feats1")
    assert [p.name for p in (tmp_path / "store" / "efficientnet_lite0").iterdir()] == []
    assert store.models() == []
    monkeypatch.setattr(vidvec.finished, "read_done", read)
    assert store.index(folders / "feats1")["added"] == 2
