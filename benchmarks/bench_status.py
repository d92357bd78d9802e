"""`vidvec status` on a big output folder: a generated ledger of N videos (default 100,000: 97% done, 2% failed with a
reason, 1% done partially), then the whole command timed as a process (wall seconds, best and median of runs).

    python benchmarks/bench_status.py [--videos 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidvec.ledger import LEDGER_NAME, Ledger


def generate(out: Path, videos: int) -> None:
    with Ledger(out) as ledger:
        ledger.bind_settings("0" * 16, {"model": "r2plus1d_18"})
    now = time.time()
    rows = []
    for i in range(videos):
        key = f"videos/{i // 1000:04d}/{i:08d}"
        failed, partial = i % 50 == 7, i % 100 == 3
        rows.append((key, f"/data/{key}.mp4", "failed" if failed else "done",
                     "damaged: no decodable frame at 0.60-1.50 s" if failed else None,
                     None if failed else f"{key}.npz", "0" * 16, 0 if failed else 20, 0.0 if failed else 10.0,
                     0.1, 0.4, 0.5, now, 1_000_000, 0, "truncated: data ends at 8.0 s" if partial else None))
    with sqlite3.connect(out / LEDGER_NAME) as conn:
        conn.executemany("INSERT INTO videos (key, video_path, status, reason, output_path, settings_hash, clips, "
                         "seconds, decode_s, model_s, wall_s, updated_at, size, mtime_ns, partial) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        began = time.perf_counter()
        generate(out, args.videos)
        print(f"generated a ledger of {args.videos} videos in {time.perf_counter() - began:.1f} s")
        walls = []
        for _ in range(args.runs):
            began = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "vidvec.cli", "status", str(out)], capture_output=True,
                                    text=True, check=True)
            walls.append(time.perf_counter() - began)
        lines = result.stdout.count("\n")
        print(f"vidvec status: best {min(walls):.2f} s, median {statistics.median(walls):.2f} s wall over "
              f"{args.runs} runs ({lines} lines printed)")


if __name__ == "__main__":
    main()
