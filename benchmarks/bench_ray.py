"""--executor ray against the local executor on this machine, and what the object store holds for a long video.

Runs itself in a network namespace holding a local Ray cluster (scripts/ray-local.sh: a head and a worker node,
one CPU each), then:
1. the shared videos with one model (efficientnet_lite0, 2 fps), `vidvec extract` local and on Ray alternately,
   each as a whole process, ``--runs`` times: wall seconds and the ratio (the Ray workers are not children of the
   command, so only wall time compares);
2. a generated 1-, 5- and 20-minute video (testsrc, 320x240, 30 fps) on Ray at 1 fps: the object store's bytes in
   use, polled every 0.2 s across the cluster (Ray's memory stats; needs grpcio, which `ray[default]` brings),
   peak per video; and each video's local wall time.

    python benchmarks/bench_ray.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "assets" / "videos"
BIN = Path(sys.executable).parent
ADDRESS = "127.0.0.1:6379"


def _wall(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def _store_bytes() -> int:
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    return int(get_memory_info_reply(get_state_from_address(ADDRESS)).store_stats.object_store_bytes_used)


def inside(runs: int, scratch: Path) -> None:
    vidvec = str(BIN / "vidvec")
    common = [vidvec, "extract", str(SHARED), "--fps", "2", "-q"]
    local, ray = [], []
    for run in range(runs):
        local.append(_wall([*common, "-o", str(scratch / f"local{run}")]))
        ray.append(_wall([*common, "-o", str(scratch / f"ray{run}"), "--executor", "ray", "--ray-address", ADDRESS]))
    print(f"shared videos, efficientnet_lite0 at 2 fps, {runs} runs each: local {' '.join(f'{w:.1f}' for w in local)}"
          f" s, ray {' '.join(f'{w:.1f}' for w in ray)} s; median ray/local "
          f"{statistics.median(ray) / statistics.median(local):.2f}x")
    import ray as ray_module

    ray_module.init(address=ADDRESS, log_to_driver=False, logging_level="ERROR")
    for minutes in (1, 5, 20):
        video = scratch / f"testsrc-{minutes}min.mp4"
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc=duration={minutes * 60}:size=320x240:rate=30", "-c:v", "libx264", "-preset",
                        "ultrafast", "-g", "60", str(video)], check=True)
        peak, done = [0], threading.Event()

        def poll() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _store_bytes())
                time.sleep(0.2)

        poller = threading.Thread(target=poll)
        poller.start()
        wall = _wall([vidvec, "extract", str(video), "--fps", "1", "-q", "-o", str(scratch / f"long{minutes}"),
                      "--executor", "ray", "--ray-address", ADDRESS])
        done.set()
        poller.join()
        local_wall = _wall([vidvec, "extract", str(video), "--fps", "1", "-q", "-o", str(scratch / f"l{minutes}")])
        print(f"{minutes}-minute video, 1 fps ({minutes * 60} clips): on Ray {wall:.1f} s wall, object store peak "
              f"{peak[0] / 2**20:.1f} MiB; local {local_wall:.1f} s wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.runs, args.inside)
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = tempfile.mkdtemp(prefix="vv-ray-", dir="/tmp")
        subprocess.run(["unshare", "-n", "bash", str(ROOT / "scripts" / "ray-local.sh"), root, sys.executable,
                        __file__, "--runs", str(args.runs), "--inside", scratch], check=True,
                       env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})


if __name__ == "__main__":
    main()
