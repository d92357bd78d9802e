"""What batching across requests buys: ``vidvec serve`` (efficientnet_lite0 at 1 fps, its default batch of 16)
as a real process on loopback, and 32 short videos (2 s each: 2 clips) sent as jobs one at a time (each waited
for before the next) and then all at once from 32 threads; one client polls /healthz every 10 ms for the jobs
finished. Prints each wall time and the ratio.

    python benchmarks/bench_service.py [--videos 32]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import media  # noqa: E402  (the tests' video maker)

TOKEN = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        videos = []
        for i in range(args.videos):
            videos.append(root / f"v{i:03d}.mp4")
            media.make_video(videos[-1], frames=20, fps=10, size=(320, 240))
        (root / "tokens").write_text(TOKEN)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
        server = subprocess.Popen([str(Path(sys.executable).parent / "vidvec"), "serve", "-m", "efficientnet_lite0",
                                   "--tokens", str(root / "tokens"), "--data", str(root / "data"), "--port",
                                   str(port), "--fps", "1", "--root", str(root), "--max-jobs-per-token", "1000"])
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)

            def submit(video: Path) -> str:
                return httpx.post(f"{url}/v1/jobs", headers=auth, json={"path": str(video),
                                                                        "model": "efficientnet_lite0"}).json()["id"]

            def finished() -> int:
                jobs = httpx.get(f"{url}/healthz").json()["jobs"]
                return jobs["done"] + jobs["failed"]

            def wait_until(count: int) -> None:  # one poller, every 10 ms
                while finished() < count:
                    time.sleep(0.01)

            wait_until(0)
            submit(videos[0])  # the models are warm from here on
            wait_until(1)
            began = time.perf_counter()
            for n, video in enumerate(videos, 2):
                submit(video)
                wait_until(n)
            serial = time.perf_counter() - began
            threads = [threading.Thread(target=submit, args=(video,)) for video in videos]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wait_until(2 * len(videos) + 1)
            concurrent = time.perf_counter() - began
            print(f"{args.videos} jobs of 2 clips: one at a time {serial:.2f} s, {args.videos} at once "
                  f"{concurrent:.2f} s: {serial / concurrent:.2f}x")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
