"""collect_sources: folder walking, keys that never collide, list files and manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vidvec.sources import VIDEO_EXTENSIONS, SourceError, VideoSource, collect_sources


def touch(root: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        paths.append(path)
    return paths


def keys(sources: list[VideoSource]) -> list[str]:
    return [s.key for s in sources]


def test_extensions_are_lowercase_with_dot() -> None:
    assert ".mp4" in VIDEO_EXTENSIONS and ".3gp" in VIDEO_EXTENSIONS and ".ogv" in VIDEO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in VIDEO_EXTENSIONS)


def test_folder_is_walked_recursively_sorted_and_filtered(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    touch(videos, "b.mp4", "a/z.MKV", "a/y.webm", "notes.txt", "c/d/e.ts", "thumb.jpg",
          ".hidden.mp4", "._a.mov", ".cache/q.mp4", "noext")
    sources = collect_sources([videos])
    assert keys(sources) == ["a/y", "a/z", "b", "c/d/e"]
    assert sources[1].path == videos / "a" / "z.MKV"
    assert all(s.output is None and s.start is None and s.end is None for s in sources)


def test_same_name_in_different_subfolders_keeps_folders(tmp_path: Path) -> None:
    touch(tmp_path, "videos/a/x.mp4", "videos/b/x.mp4")
    assert keys(collect_sources([tmp_path / "videos"])) == ["a/x", "b/x"]


def test_direct_files_keyed_relative_to_common_parent(tmp_path: Path) -> None:
    a, b = touch(tmp_path, "a/x.mp4", "b/x.mp4")
    assert keys(collect_sources([a, b])) == ["a/x", "b/x"]
    # A single file is keyed by its own name.
    assert keys(collect_sources([a])) == ["x"]


def test_same_stem_different_extension_keeps_extensions(tmp_path: Path) -> None:
    touch(tmp_path, "v/x.mp4", "v/x.avi", "v/y.mp4")
    assert keys(collect_sources([tmp_path / "v"])) == ["x.avi", "x.mp4", "y"]
    # The same holds for files given directly.
    direct = collect_sources([tmp_path / "v/x.mp4", tmp_path / "v/x.avi"])
    assert keys(direct) == ["x.mp4", "x.avi"]


def test_same_relative_name_under_two_input_folders(tmp_path: Path) -> None:
    touch(tmp_path, "cam1/0001.mp4", "cam2/0001.mp4", "cam2/0002.mp4")
    sources = collect_sources([tmp_path / "cam1", tmp_path / "cam2"])
    assert keys(sources) == ["cam1/0001", "cam2/0001", "0002"]


def test_folder_and_direct_file_with_same_name(tmp_path: Path) -> None:
    touch(tmp_path, "videos/x.mp4", "other/x.mp4")
    sources = collect_sources([tmp_path / "videos", tmp_path / "other/x.mp4"])
    assert keys(sources) == ["videos/x", "other/x"]


def test_keys_are_unique_and_stable(tmp_path: Path) -> None:
    touch(tmp_path, "v/a/x.mp4", "v/a/x.mkv", "v/b/x.mp4", "w/a/x.mp4", "w/x.mp4")
    inputs = [tmp_path / "v", tmp_path / "w"]
    first = keys(collect_sources(inputs))
    assert len(set(first)) == len(first) == 5
    assert keys(collect_sources(inputs)) == first


def test_duplicate_paths_kept_once(tmp_path: Path) -> None:
    (x,) = touch(tmp_path, "v/x.mp4")
    os.symlink(x, tmp_path / "link.mp4")
    sources = collect_sources([tmp_path / "v", x, str(x), tmp_path / "v" / ".." / "v" / "x.mp4"])
    assert keys(sources) == ["x"]
    # A symlink resolves to the same file, so it is a duplicate too.
    assert len(collect_sources([x, tmp_path / "link.mp4"])) == 1


def test_missing_path_is_kept(tmp_path: Path) -> None:
    (real,) = touch(tmp_path, "real.mp4")
    sources = collect_sources([real, tmp_path / "gone.mp4"])
    assert keys(sources) == ["real", "gone"]
    assert sources[1].path == tmp_path / "gone.mp4"


def test_list_file_comments_blank_lines_relative_paths(tmp_path: Path) -> None:
    touch(tmp_path, "data/a.mp4", "data/sub/b.mkv", "abs/c.mov")
    list_file = tmp_path / "data" / "videos.txt"
    list_file.write_text(
        "# my videos\n"
        "\n"
        "a.mp4\n"
        "   sub/b.mkv  \n"
        "  # indented comment\n"
        f"{tmp_path / 'abs' / 'c.mov'}\n"
        "missing.mp4\n"
    )
    sources = collect_sources(list_file=list_file)
    assert [s.path for s in sources] == [
        tmp_path / "data/a.mp4",
        tmp_path / "data/sub/b.mkv",
        tmp_path / "abs/c.mov",
        tmp_path / "data/missing.mp4",
    ]
    assert keys(sources) == ["data/a", "data/sub/b", "abs/c", "data/missing"]


def test_list_file_may_name_folders(tmp_path: Path) -> None:
    touch(tmp_path, "lib/one/a.mp4", "lib/one/b.mp4")
    list_file = tmp_path / "list.txt"
    list_file.write_text("lib/one\n")
    assert keys(collect_sources(list_file=list_file)) == ["a", "b"]


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="list file not found"):
        collect_sources(list_file=tmp_path / "nope.txt")


def test_manifest_columns(tmp_path: Path) -> None:
    touch(tmp_path, "m/v1.mp4", "m/v2.mp4", "m/v3.mp4")
    manifest = tmp_path / "m" / "manifest.csv"
    manifest.write_text(
        "video_path,output_path,start,end,label\n"
        "v1.mp4,custom/one.npz,1.5,4\n"
        "v2.mp4,,,10,cat\n"
        "\n"
        f"{tmp_path / 'm' / 'v3.mp4'},,2,,dog\n"
    )
    v1, v2, v3 = collect_sources(manifest=manifest)
    assert v1 == VideoSource(tmp_path / "m/v1.mp4", "v1", Path("custom/one.npz"), 1.5, 4.0)
    assert v2 == VideoSource(tmp_path / "m/v2.mp4", "v2", None, None, 10.0)
    assert v3 == VideoSource(tmp_path / "m/v3.mp4", "v3", None, 2.0, None)


def test_heros_csv_names_the_output_feature_path(tmp_path: Path) -> None:
    # HERO's extraction CSV (its gather_video_paths step writes it): video_path,feature_path.
    touch(tmp_path, "v1.mp4")
    manifest = tmp_path / "hero.csv"
    manifest.write_text("video_path,feature_path\nv1.mp4,feats/v1.npz\n")
    (v1,) = collect_sources(manifest=manifest)
    assert v1.output == Path("feats/v1.npz")
    manifest.write_text("video_path,output_path,feature_path\nv1.mp4,a.npz,b.npz\n")
    with pytest.raises(SourceError, match="both output_path and feature_path"):
        collect_sources(manifest=manifest)


def test_manifest_only_video_path_column_and_bom(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes("\ufeffvideo_path\nx.mp4\n".encode())
    (x,) = collect_sources(manifest=manifest)
    assert x.path == tmp_path / "x.mp4" and x.key == "x"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("v.mp4,5,2", r"row 3: start \(5\) must be less than end \(2\)"),
        ("v.mp4,3,3", r"row 3: start \(3\) must be less than end \(3\)"),
        ("v.mp4,-1,2", r"row 3: start must be a finite number >= 0"),
        ("v.mp4,abc,2", r"row 3: start is not a number of seconds: 'abc'"),
        ("v.mp4,1,nan", r"row 3: end must be a finite number >= 0"),
        (",1,2", r"row 3: empty video_path"),
    ],
)
def test_manifest_bad_values_name_the_row(tmp_path: Path, row: str, message: str) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"video_path,start,end\nok.mp4,0,1\n{row}\n")
    with pytest.raises(SourceError, match=message):
        collect_sources(manifest=manifest)


def test_manifest_missing_file_or_column(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="manifest not found"):
        collect_sources(manifest=tmp_path / "nope.csv")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,start\nv.mp4,1\n")
    with pytest.raises(SourceError, match="no video_path column"):
        collect_sources(manifest=manifest)
    manifest.write_text("")
    with pytest.raises(SourceError, match="empty"):
        collect_sources(manifest=manifest)


def test_manifest_contradicting_duplicate(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("video_path,start,end\nv.mp4,0,5\nv.mp4,5,10\n")
    with pytest.raises(SourceError, match="row 3.*already listed.*different start"):
        collect_sources(manifest=manifest)


def test_mixed_inputs(tmp_path: Path) -> None:
    touch(tmp_path, "folder/a.mp4", "folder/sub/b.mp4", "loose/c.mp4", "listed/d.mp4",
          "manifested/e.mp4")
    list_file = tmp_path / "list.txt"
    list_file.write_text("listed/d.mp4\nfolder/a.mp4\n")  # a.mp4 duplicates the folder's
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("video_path,start,end\nmanifested/e.mp4,1,2\nfolder/sub/b.mp4,3,4\n")
    sources = collect_sources(
        [tmp_path / "folder", tmp_path / "loose/c.mp4"], list_file=list_file, manifest=manifest
    )
    assert keys(sources) == ["a", "sub/b", "loose/c", "listed/d", "manifested/e"]
    by_key = {s.key: s for s in sources}
    # The manifest fills in the segment for a video first found in the folder.
    assert (by_key["sub/b"].start, by_key["sub/b"].end) == (3.0, 4.0)
    assert (by_key["manifested/e"].start, by_key["manifested/e"].end) == (1.0, 2.0)


def test_no_inputs_gives_nothing(tmp_path: Path) -> None:
    assert collect_sources() == []
    (tmp_path / "empty").mkdir()
    assert collect_sources([tmp_path / "empty"]) == []


def test_a_uid_list_picks_videos_of_the_folder_by_id_in_its_order(tmp_path: Path) -> None:
    # Ego4D's io.uid_list: ids, the videos being <video_dir_path>/<uid>.mp4.
    touch(tmp_path, "videos/aaa.mp4", "videos/bbb.mp4", "videos/ccc.mp4")
    uid_file = tmp_path / "uids.txt"
    uid_file.write_text("ccc\n\n# a comment\naaa\nzzz\naaa\n")
    ccc, aaa, zzz = collect_sources([tmp_path / "videos"], uids=uid_file)
    assert (ccc.key, aaa.key, zzz.key) == ("ccc", "aaa", "zzz")
    assert ccc.path == tmp_path / "videos/ccc.mp4" and aaa.path == tmp_path / "videos/aaa.mp4"
    assert zzz.path == tmp_path / "videos/zzz.mp4" and not zzz.path.exists()  # fails later as a missing file
    with pytest.raises(SourceError, match="give the folder that holds them"):
        collect_sources([], uids=uid_file)
    with pytest.raises(SourceError, match="uid list not found"):
        collect_sources([tmp_path / "videos"], uids=tmp_path / "nope.txt")


def test_an_id_without_a_video_fails_alone_and_the_run_goes_on(tmp_path: Path) -> None:
    import media
    import vidvec

    (tmp_path / "videos").mkdir()
    media.make_video(tmp_path / "videos" / "aaa.mp4", frames=2)
    (tmp_path / "uids.txt").write_text("aaa\nmissing\n")
    outcomes = {o.source.key: o for o in vidvec.extract([tmp_path / "videos"], "efficientnet_lite0", tmp_path / "out",
                                                        uids=tmp_path / "uids.txt", num_workers=0)}
    assert outcomes["aaa"].status == "done"
    assert outcomes["missing"].status == "failed" and "missing.mp4" in str(outcomes["missing"].source.path)
