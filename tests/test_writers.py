"""Feature files: round trips in every format, atomic writes, stale temp clean-up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from vidvec import writers
from vidvec.writers import (
    FORMATS,
    atomic_path,
    output_path,
    read_features,
    remove_stale_temps,
    write_features,
)

PROVENANCE = {
    "vidvec": "0.1.0",
    "model": "r3d_18",
    "video": "/data/a b/x.mp4",
    "sampling": {"kind": "windows", "fps": 15.0, "clip_len": 16},
    "crops": [0, 1, 2],
    "unicode": "caf\u00e9 \u2603",
    "none": None,
}


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    clips, dim = 5, 8
    # Late timestamps with fine fractions: float16 would visibly round these.
    starts = 3600.0 + np.arange(clips) * 1.0333333333
    return {
        "features": rng.standard_normal((clips, dim)).astype(np.float32),
        "timestamps": np.stack([starts, starts + 1.0666666667], axis=1),
        "video_vector": rng.standard_normal(dim).astype(np.float32),
        "logits": rng.standard_normal((clips, 400)).astype(np.float32),
        "topk_indices": rng.integers(0, 400, (clips, 5)).astype(np.int64),
        "topk_scores": rng.random((clips, 5)).astype(np.float32),
        "padded": np.array([False, False, False, False, True]),
        "crop": np.array([1, 1, 1, 1, 1], dtype=np.int8),
    }


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("out_dtype", ["float32", "float16"])
def test_round_trip(tmp_path: Path, fmt: str, out_dtype: str) -> None:
    arrays = sample_arrays()
    path = output_path(tmp_path, "sub/x", fmt)
    assert write_features(path, fmt, arrays, PROVENANCE, out_dtype=out_dtype) == path
    assert path.is_file()

    got, prov = read_features(path)
    assert prov == PROVENANCE
    assert set(got) == set(arrays)
    for name in ("features", "video_vector", "logits"):
        assert got[name].dtype == np.dtype(out_dtype), name
        np.testing.assert_array_equal(got[name], arrays[name].astype(out_dtype))
    assert got["timestamps"].dtype == np.float64
    np.testing.assert_array_equal(got["timestamps"], arrays["timestamps"])  # bit-exact
    for name in ("topk_indices", "topk_scores", "padded", "crop"):
        assert got[name].dtype == arrays[name].dtype, name
        np.testing.assert_array_equal(got[name], arrays[name])
    # Only the final files are left: no temps.
    expected = ["sub/x.npy", "sub/x.json"] if fmt == "npy" else [f"sub/x.{fmt}"]
    assert files_in(tmp_path) == sorted(expected)


def test_npz_is_plain_numpy_and_provenance_is_0d_json(tmp_path: Path) -> None:
    path = write_features(tmp_path / "x.npz", "npz", sample_arrays(), PROVENANCE)
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        prov = z["provenance"]
        assert prov.shape == () and prov.dtype.kind == "U"
        assert json.loads(str(prov)) == PROVENANCE


def test_npy_sidecar_holds_other_arrays_as_lists(tmp_path: Path) -> None:
    arrays = sample_arrays()
    path = write_features(tmp_path / "x.npy", "npy", arrays, PROVENANCE)
    assert np.load(path).shape == arrays["features"].shape
    sidecar = json.loads((tmp_path / "x.json").read_text())
    assert sidecar["provenance"] == PROVENANCE
    assert sidecar["arrays"]["timestamps"]["data"] == arrays["timestamps"].tolist()
    assert "features" not in sidecar["arrays"]


def test_pt_loads_with_weights_only(tmp_path: Path) -> None:
    path = write_features(tmp_path / "x.pt", "pt", sample_arrays(), PROVENANCE, out_dtype="float16")
    payload = torch.load(path, weights_only=True)
    assert payload["features"].dtype == torch.float16
    assert payload["timestamps"].dtype == torch.float64
    assert payload["provenance"] == PROVENANCE


def test_torch_inputs_and_non_json_provenance(tmp_path: Path) -> None:
    arrays = {"features": torch.ones(2, 3), "timestamps": torch.zeros(2, 2)}
    prov = {"out": tmp_path, "fps": np.float32(2.5), "shape": (2, 3)}
    got, got_prov = read_features(write_features(tmp_path / "x.npz", "npz", arrays, prov))
    assert got["features"].dtype == np.float32 and got["timestamps"].dtype == np.float64
    assert got_prov == {"out": str(tmp_path), "fps": 2.5, "shape": [2, 3]}


def test_empty_video_round_trips(tmp_path: Path) -> None:
    arrays = {"features": np.zeros((0, 4), np.float32), "timestamps": np.zeros((0, 2))}
    for fmt in FORMATS:
        got, _ = read_features(write_features(tmp_path / f"e.{fmt}", fmt, arrays, {}))
        assert got["features"].shape == (0, 4) and got["timestamps"].shape == (0, 2)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown output format"):
        write_features(tmp_path / "x.h5", "h5", sample_arrays(), {})
    with pytest.raises(ValueError, match="out_dtype"):
        write_features(tmp_path / "x.npz", "npz", sample_arrays(), {}, out_dtype="int8")
    with pytest.raises(ValueError, match="features"):
        write_features(tmp_path / "x.npz", "npz", {"timestamps": np.zeros((1, 2))}, {})
    assert files_in(tmp_path) == []


def test_output_path(tmp_path: Path) -> None:
    assert output_path(tmp_path, "a/x", "npz") == tmp_path / "a/x.npz"
    # Keys may carry an extension after a clash: the suffix is appended, never substituted.
    assert output_path(tmp_path, "x.mp4", "pt") == tmp_path / "x.mp4.pt"
    assert output_path(tmp_path, "x", "npy", Path("/abs/y.npy")) == Path("/abs/y.npy")
    assert output_path(tmp_path, "x", "npz", Path("/abs/y.bin")) == Path("/abs/y.bin.npz")
    assert output_path(tmp_path, "x", "npz", Path("rel/y")) == tmp_path / "rel/y.npz"
    with pytest.raises(ValueError):
        output_path(tmp_path, "x", "csv")


def test_atomic_path_success_replaces_existing(tmp_path: Path) -> None:
    final = tmp_path / "deep" / "er" / "out.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.parent.is_dir()
        assert tmp.name.startswith(".") and ".vidvec-tmp" in tmp.name
        tmp.write_bytes(b"one")
        assert not final.exists()  # nothing visible before the block ends
    assert final.read_bytes() == b"one"
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"two")
    assert final.read_bytes() == b"two"
    assert files_in(tmp_path) == ["deep/er/out.bin"]


def test_atomic_path_exception_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert files_in(tmp_path) == []


def test_atomic_path_exception_keeps_previous_version(tmp_path: Path) -> None:
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"new, half")
            raise KeyboardInterrupt
    assert final.read_bytes() == b"old"
    assert files_in(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    def half_write(*args, **kwargs):  # writes some bytes, then dies like a full disk
        file = next(a for a in args if hasattr(a, "write"))
        file.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    target = {"npz": (np, "savez"), "npy": (np, "save"), "pt": (torch, "save")}[fmt]
    monkeypatch.setattr(*target, half_write)
    path = tmp_path / f"x.{fmt}"
    with pytest.raises(OSError, match="No space"):
        write_features(path, fmt, sample_arrays(), PROVENANCE)
    assert not path.exists()
    # npy: the sidecar may be complete, but without the npy the video does not count as done.
    assert [f for f in files_in(tmp_path) if not f.endswith(".json")] == []
    assert remove_stale_temps(tmp_path) == 0


def test_npy_rewrite_never_pairs_old_npy_with_new_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_features(tmp_path / "x.npy", "npy", sample_arrays(), {"run": 1})
    monkeypatch.setattr(np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        write_features(path, "npy", sample_arrays(), {"run": 2})
    assert not path.exists()  # the old npy is gone rather than mismatched with {"run": 2}


def test_remove_stale_temps_after_killed_writer(tmp_path: Path) -> None:
    real = write_features(tmp_path / "a" / "x.npz", "npz", sample_arrays(), PROVENANCE)
    sidecar_npy = write_features(tmp_path / "b" / "y.npy", "npy", sample_arrays(), PROVENANCE)
    # A writer SIGKILLed inside three atomic_path blocks: three abandoned temps.
    finals = [tmp_path / "a" / "z.npz", tmp_path / "b" / "w.npy", tmp_path / "top.pt"]
    script = textwrap.dedent(
        f"""
        import os, signal
        from contextlib import ExitStack
        from pathlib import Path
        from vidvec.writers import atomic_path
        with ExitStack() as stack:
            for final in {[str(f) for f in finals]!r}:
                stack.enter_context(atomic_path(Path(final))).write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == -signal.SIGKILL
    stale = [p for p in tmp_path.rglob("*") if ".vidvec-tmp" in p.name]
    assert len(stale) == 3
    # Files that merely look similar are not ours to delete.
    decoy = tmp_path / "a" / "notes.vidvec-tmp.txt"  # not hidden
    decoy.write_text("keep")
    # Nor is the temp of a live writer, even in this very process.
    with atomic_path(tmp_path / "a" / "live.bin") as live:
        live.write_bytes(b"in flight")
        assert remove_stale_temps(tmp_path) == 3
        assert live.exists()
    assert (tmp_path / "a" / "live.bin").read_bytes() == b"in flight"
    assert not any(p.exists() for p in stale)
    assert decoy.exists()
    assert read_features(real)[1] == PROVENANCE
    assert read_features(sidecar_npy)[1] == PROVENANCE
    assert remove_stale_temps(tmp_path) == 0
    assert remove_stale_temps(tmp_path / "does-not-exist") == 0


def test_remove_stale_temps_spares_a_writer_in_another_process(tmp_path: Path) -> None:
    """Another run writing into the same folder keeps its in-flight temp, and its rename succeeds."""
    final = tmp_path / "x.bin"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from vidvec.writers import atomic_path
        with atomic_path(Path({str(final)!r})) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"first half, ")
                f.flush()
                print(tmp, flush=True)
                sys.stdin.readline()  # the test cleans the folder now
                f.write(b"second half")
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        tmp = Path(writer.stdout.readline().strip())
        assert tmp.name.startswith(".x.bin.vidvec-tmp") and tmp.exists()
        assert remove_stale_temps(tmp_path) == 0
        assert tmp.exists()
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
        writer.wait()
    assert final.read_bytes() == b"first half, second half"
    assert files_in(tmp_path) == ["x.bin"]


def test_writer_takes_a_new_temp_when_a_cleaner_removed_its_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleaner may remove a temp between its creation and its lock: the writer starts over."""
    fcntl = pytest.importorskip("fcntl")
    real_flock = fcntl.flock
    names = []

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not names:  # the writer, not yet holding its first temp
            names.extend(p.name for p in tmp_path.iterdir())
            assert remove_stale_temps(tmp_path) == 1  # not locked yet: it looks abandoned
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    with atomic_path(tmp_path / "x.bin") as tmp:
        assert tmp.exists() and tmp.name not in names
        tmp.write_bytes(b"data")
    assert len(names) == 1
    assert files_in(tmp_path) == ["x.bin"]


def test_without_fcntl_temps_are_neither_locked_nor_spared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no fcntl: atomic writes work as before locks, and every temp counts as stale."""
    monkeypatch.setattr(writers, "fcntl", None)
    with pytest.raises(FileNotFoundError):  # as before: the write in flight loses its temp
        with atomic_path(tmp_path / "x.bin") as tmp:
            assert not tmp.exists()  # the caller creates it
            tmp.write_bytes(b"in flight")
            assert remove_stale_temps(tmp_path) == 1
    assert files_in(tmp_path) == []
    with atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data"


def test_sigkilled_writer_leaves_only_a_temp(tmp_path: Path) -> None:
    """A process killed mid-write leaves the old output intact and a temp to clean up."""
    final = write_features(tmp_path / "x.npz", "npz", sample_arrays(), {"run": 1})
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from vidvec.writers import atomic_path
        with atomic_path(Path({str(final)!r})) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half of run 2")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p for p in tmp_path.iterdir() if p != final]
    assert len(leftovers) == 1 and ".vidvec-tmp" in leftovers[0].name
    assert read_features(final)[1] == {"run": 1}
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(tmp_path.iterdir()) == [final]


def test_temp_name_fits_long_final_names(tmp_path: Path) -> None:
    final = tmp_path / ("v" * 250 + ".npz")
    with atomic_path(final) as tmp:
        assert len(tmp.name) <= 255
        tmp.write_bytes(b"x")
    assert final.exists()


def test_feature_like_names_are_documented() -> None:
    assert writers.FEATURE_LIKE == {"features", "video_vector", "logits"}


# --- the pyslowfast layout: <video folder>/output_vecs/output_latent_vec_<stem>.npy ---


def test_pyslowfast_paths(tmp_path: Path) -> None:
    a, b = tmp_path / "v" / "a.mp4", tmp_path / "v" / "sub" / "b.avi"
    assert writers.pyslowfast_path(a) == tmp_path / "v" / "output_vecs" / "output_latent_vec_a.npy"
    assert writers.pyslowfast_paths([a, b]) == [tmp_path / "v" / "output_vecs" / "output_latent_vec_a.npy",
                                                tmp_path / "v" / "sub" / "output_vecs" / "output_latent_vec_b.npy"]
    # Same stem in one folder: both keep their extension rather than overwrite each other.
    x_mp4, x_avi, x_other = tmp_path / "v" / "x.mp4", tmp_path / "v" / "x.avi", tmp_path / "w" / "x.mp4"
    assert [p.name for p in writers.pyslowfast_paths([x_mp4, x_avi, x_other])] == [
        "output_latent_vec_x.mp4.npy", "output_latent_vec_x.avi.npy", "output_latent_vec_x.npy"]


def test_write_latent_vector_atomic_plain_npy(tmp_path: Path) -> None:
    path = tmp_path / "v" / "output_vecs" / "output_latent_vec_a.npy"
    vec = np.arange(6, dtype=np.float64)
    assert writers.write_latent_vector(path, vec) == path
    back = np.load(path, allow_pickle=False)
    assert back.dtype == np.float32 and back.shape == (6,) and np.array_equal(back, vec)
    writers.write_latent_vector(path, torch.ones(6), "float16")  # tensors too; replaces atomically
    assert np.load(path).dtype == np.float16
    assert files_in(tmp_path) == ["v/output_vecs/output_latent_vec_a.npy"]
    with pytest.raises(ValueError, match="1-D float"):
        writers.write_latent_vector(path, np.zeros((2, 3), np.float32))
    assert np.load(path).shape == (6,)  # the failed write left the old file
