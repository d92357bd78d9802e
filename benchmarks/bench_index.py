"""Indexing an output folder of N generated clips: ``vidvec index OUT --into STORE`` as a whole process, its wall
time, user/system CPU seconds and peak memory (the process's peak RSS, it starts no children), at two sizes, to show
what grows with N; and the same without the approximate index (the Parquet parts alone). The folder is written the way ``vidvec extract`` writes one (ledger, one npz per video with
its provenance), with 512-d clustered unit vectors, 1,000 clips per video.

    python benchmarks/bench_index.py [--clips 250000 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vidvec.ledger import LEDGER_NAME, Ledger, settings_hash
from vidvec.writers import write_features

PER_VIDEO, DIM = 1000, 512


def make_out(out: Path, clips: int) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    settings = {"model": "generated", "weights": {"name": "random", "sha256": "random", "url": None},
                "format": "npz", "out_dtype": "float32"}
    digest = settings_hash(settings)
    spans = np.stack([np.arange(PER_VIDEO), np.arange(1, PER_VIDEO + 1)], 1).astype(np.float64)
    with Ledger(out) as ledger:
        ledger.bind_settings(digest, settings)
        for video in range(clips // PER_VIDEO):
            x = centres[rng.integers(0, len(centres), PER_VIDEO)] + 0.6 * rng.normal(size=(PER_VIDEO, DIM))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            key = f"v{video:06d}"
            path = write_features(out / f"{key}.npz", "npz", {"features": x, "timestamps": spans,
                                                              "video_vector": x.mean(0)},
                                  {"settings_hash": digest, "model": "generated"})
            ledger.mark_done(key, f"/data/{key}.mp4", path, PER_VIDEO, float(PER_VIDEO), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--keep", type=Path, help="Write the folders here and keep them (default: a temporary one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        for clips in args.clips:
            out, store = root / f"out-{clips}", root / f"store-{clips}"
            if not (out / LEDGER_NAME).exists():
                began = time.perf_counter()
                make_out(out, clips)
                print(f"{clips} clips: output folder written in {time.perf_counter() - began:.0f} s")
            parts_only = (f"import vidvec.store as s; s.ANN_CLIPS = 10**15; "
                          f"s.Store({str(store) + '-parts'!r}).index({str(out)!r})")
            for label, command in (("vidvec index", [str(Path(sys.executable).parent / "vidvec"), "index", str(out),
                                                     "--into", str(store)]),
                                   ("the parts alone (no approximate index)", [sys.executable, "-c", parts_only])):
                wall, user, system, peak = _measured(command)
                print(f"{clips} clips, {label}: {wall:.1f} s wall, user {user:.1f} s, sys {system:.1f} s, peak RSS "
                      f"{peak:.0f} MiB")


def _measured(command: list[str]) -> tuple[float, float, float, float]:
    """Run ``command`` as a child process: its wall, user and system seconds and peak RSS (MiB)."""
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{command[0]} failed")
    return time.perf_counter() - began, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024


if __name__ == "__main__":
    main()
