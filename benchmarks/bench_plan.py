"""What `vidvec plan` costs at dataset scale.

1. Header reading: files/s of ``runplan.read_durations`` over N links to the shared videos (a warm page cache: the
   figure is the per-file work, not the disk), for several thread counts.
2. Packing: a simulated set of a million videos with a long tail (Pareto, alpha 1.5, from 30 s, capped at 8 h),
   packed longest-first into 64, 1024 and 8192 tasks: seconds to pack, the makespan over its lower bound
   max(longest video, total / tasks), and the same for Ego4D's order (its slurm.py packs videos sorted ascending).

    python benchmarks/bench_plan.py [--files 5000] [--videos 1000000]
"""

from __future__ import annotations

import argparse
import heapq
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vidvec.runplan import lower_bound, pack, read_durations
from vidvec.sources import VideoSource

SHARED = Path(os.environ.get("VIDVEC_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def header_rates(files: int) -> None:
    videos = sorted((SHARED / "assets" / "videos").iterdir())
    with tempfile.TemporaryDirectory() as folder:
        sources = []
        for i in range(files):
            video = videos[i % len(videos)]
            link = Path(folder) / f"{i:07d}{video.suffix}"
            link.symlink_to(video)
            sources.append(VideoSource(link, link.stem))
        read_durations(sources[:200], threads=4)  # warm the page cache
        for threads in (1, 2, 4, 8):
            began = time.perf_counter()
            read = read_durations(sources, threads=threads)
            seconds = time.perf_counter() - began
            assert all(reason is None for _, reason in read)
            print(f"headers: {files} files, {threads} thread(s): {seconds:.2f} s, {files / seconds:.0f} files/s "
                  f"({os.cpu_count()} cores)")


def ascending_makespan(durations: list[float], tasks: int) -> float:
    heap = [(0.0, task) for task in range(tasks)]
    loads = [0.0] * tasks
    for index in sorted(range(len(durations)), key=durations.__getitem__):
        load, task = heapq.heappop(heap)
        loads[task] = load + durations[index]
        heapq.heappush(heap, (loads[task], task))
    return max(loads)


def packing(videos: int) -> None:
    rng = np.random.default_rng(0)
    durations = np.minimum((rng.pareto(1.5, size=videos) + 1) * 30.0, 8 * 3600).tolist()
    print(f"simulated set: {videos} videos, {sum(durations) / 3600:.0f} h, median {np.median(durations):.0f} s, "
          f"longest {max(durations) / 3600:.1f} h")
    for tasks in (64, 1024, 8192):
        began = time.perf_counter()
        _, loads = pack(durations, tasks)
        seconds = time.perf_counter() - began
        bound = lower_bound(durations, tasks)
        print(f"pack into {tasks} tasks: {seconds:.2f} s; longest first makespan / lower bound {max(loads) / bound:.4f}; "
              f"ascending (Ego4D's order) {ascending_makespan(durations, tasks) / bound:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--videos", type=int, default=1_000_000)
    args = parser.parse_args()
    header_rates(args.files)
    packing(args.videos)


if __name__ == "__main__":
    main()
