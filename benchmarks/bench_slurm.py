"""What a SLURM array costs per task: `vidvec extract --executor slurm` on the local cluster (scripts/slurm-local.sh)
with one short video per task; the seconds from submission to each task's first video recorded in the ledger,
against a local `vidvec extract` of one such video as a whole process (which carries the same start-up: Python,
torch, the model).

    bash scripts/slurm-local.sh start
    SLURM_CONF=/tmp/vidvec-slurm/slurm.conf python benchmarks/bench_slurm.py [--tasks 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("VIDVEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
VIDEO = SHARED / "assets" / "videos" / "R6llTwEh07w.mp4"
OPTIONS = ["-m", "efficientnet_lite0", "--fps", "1", "-q"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()
    env = {**os.environ, "LD_PRELOAD": str(Path(os.environ["SLURM_CONF"]).parent / "loopback-bind.so")}
    with tempfile.TemporaryDirectory() as folder:
        videos = Path(folder) / "videos"
        videos.mkdir()
        for i in range(args.tasks):
            (videos / f"v{i}.mp4").symlink_to(VIDEO)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vidvec.cli", "extract", str(videos / "v0.mp4"), "-o",
                        str(Path(folder) / "local"), *OPTIONS], check=True, env=env)
        local = time.perf_counter() - began
        out = Path(folder) / "out"
        submitted = time.time()
        subprocess.run([sys.executable, "-m", "vidvec.cli", "extract", str(videos), "-o", str(out), "--executor",
                        "slurm", "--tasks", str(args.tasks), "--cpus-per-task", "1", "--mem-gb", "2", *OPTIONS],
                       check=True, env=env, capture_output=True)
        waited = time.time() - submitted
        with sqlite3.connect(out / "vidvec-ledger.sqlite") as conn:
            recorded = sorted(t for (t,) in conn.execute("SELECT updated_at FROM videos"))
        firsts = [t - submitted for t in recorded]
        jobs = json.loads((out / ".vidvec-slurm" / "jobs.json").read_text())["attempts"]
        print(f"local: one video as a whole process {local:.1f} s")
        print(f"slurm: {args.tasks} tasks of one video each ({len(jobs)} submitted once); submission to each task's "
              f"video recorded: median {statistics.median(firsts):.1f} s, min {min(firsts):.1f}, max "
              f"{max(firsts):.1f}; the command returned after {waited:.1f} s")


if __name__ == "__main__":
    main()
