"""Decode throughput: ffmpeg CLI vs vidvec's VideoDecoder (full size, resized) vs torchcodec (if installed).

    python benchmarks/bench_decode.py [VIDEO] [--threads N] [--short-side 256] [--samples 64]

Without VIDEO, a 60 s 1280x720 h264 video (moving texture, 2 s GOP) is generated into a temporary folder.
Every row decodes every frame (to RGB for the library rows); ffmpeg's row decodes only (-f null), which is
the ceiling. The last rows fetch --samples timestamps spread over the video (sparse access, seeking).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidvec.decode import VideoDecoder, probe


def make_benchmark_video(path: Path, seconds: int = 60, fps: int = 30, size: tuple[int, int] = (1280, 720)) -> Path:
    """A textured, moving h264 video, so that decoding costs what a real one does (solid frames decode
    unrealistically fast)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (h, w), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps), options={"preset": "veryfast", "crf": "23"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = 2 * fps
        for i in range(seconds * fps):
            r = (128 + 100 * np.sin((xx + 4 * i) / 40)).astype(np.uint8)
            g = (128 + 100 * np.cos((yy - 3 * i) / 30)).astype(np.uint8)
            b = np.roll(noise, 5 * i, axis=1)
            img = np.stack([r, g, b], axis=-1)
            x0 = (7 * i) % (w - 200)
            img[200:400, x0 : x0 + 200] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def find_ffmpeg() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found]

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return None


def timed(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Best wall time of ``repeat`` runs and the frame count fn returned."""
    best, frames = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        frames = fn()
        best = min(best, time.perf_counter() - t0)
    return best, frames


def short_side(n: int) -> Callable[[int, int], tuple[int, int]]:
    def size(h: int, w: int) -> tuple[int, int]:
        return (n, max(1, round(w * n / h))) if h <= w else (max(1, round(h * n / w)), n)

    return size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", help="video file (default: generate 720p h264 60 s)")
    ap.add_argument("--threads", type=int, default=0, help="decoder threads, 0 = auto (default)")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--samples", type=int, default=64, help="timestamps for the sparse-access rows")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the best is reported")
    ap.add_argument("--no-torchcodec", action="store_true")
    args = ap.parse_args(argv)

    tmp = None
    if args.video:
        path = Path(args.video)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vidvec-bench-")
        path = Path(tmp.name) / "bench_720p_60s.mp4"
        t0 = time.perf_counter()
        make_benchmark_video(path)
        print(f"generated {path.name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    info = probe(path)
    print(
        f"video: {path.name}  {info.codec} {info.width}x{info.height} {info.fps:.3f} fps  "
        f"{info.num_frames} frames  {info.duration:.2f} s  threads={args.threads or 'auto'}  "
        f"cpus={os.cpu_count()}  PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})"
    )
    rows: list[tuple[str, float, int]] = []

    ffmpeg = find_ffmpeg()
    if ffmpeg:

        def run_ffmpeg() -> int:
            cmd = [ffmpeg, "-hide_banner", "-nostats", "-threads", str(args.threads), "-i", str(path)]
            subprocess.run(cmd + ["-an", "-f", "null", "-"], check=True, capture_output=True)
            return info.num_frames or 0

        version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
        rows.append((f"ffmpeg -f null (decode only; {version.split(' Copyright')[0]})", *timed(run_ffmpeg, args.repeat)))
    else:
        print("ffmpeg not found")

    def vidvec_all(size) -> Callable[[], int]:
        def run() -> int:
            with VideoDecoder(path, size=size, threads=args.threads) as dec:
                return sum(1 for _ in dec.frames())

        return run

    rows.append(("vidvec VideoDecoder, all frames, full-size RGB", *timed(vidvec_all(None), args.repeat)))
    rows.append(
        (f"vidvec VideoDecoder, all frames, short side {args.short_side}", *timed(vidvec_all(short_side(args.short_side)), args.repeat))
    )

    times = list(np.linspace(0, info.duration - 1 / info.fps, args.samples))

    def vidvec_sparse() -> int:
        with VideoDecoder(path, threads=args.threads) as dec:
            return sum(1 for _ in dec.frames_at(times))

    rows.append((f"vidvec frames_at, {args.samples} timestamps, full-size", *timed(vidvec_sparse, args.repeat)))

    if not args.no_torchcodec:
        try:
            import torchcodec
            from torchcodec.decoders import VideoDecoder as TCDecoder
        except Exception as err:  # optional: only to compare
            print(f"torchcodec not available: {type(err).__name__}: {err}")
        else:

            def tc_all() -> int:
                dec = TCDecoder(str(path), num_ffmpeg_threads=args.threads, seek_mode="exact")
                n = 0
                for frame in dec:  # (3, H, W) uint8 tensors, one at a time: bounded memory like vidvec
                    n += 1
                return n

            rows.append((f"torchcodec {torchcodec.__version__}, all frames, full-size", *timed(tc_all, args.repeat)))

            def tc_sparse() -> int:
                dec = TCDecoder(str(path), num_ffmpeg_threads=args.threads, seek_mode="exact")
                return int(dec.get_frames_played_at(seconds=times).data.shape[0])

            rows.append((f"torchcodec get_frames_played_at, {args.samples} timestamps", *timed(tc_sparse, args.repeat)))

            def tc_sparse_approx() -> int:
                dec = TCDecoder(str(path), num_ffmpeg_threads=args.threads, seek_mode="approximate")
                return int(dec.get_frames_played_at(seconds=times).data.shape[0])

            rows.append((f"torchcodec get_frames_played_at, {args.samples} ts, approximate", *timed(tc_sparse_approx, args.repeat)))

    ref = rows[0][1] / max(rows[0][2], 1) if ffmpeg else None
    width = max(len(r[0]) for r in rows)
    print(f"{'method':<{width}}  {'seconds':>8}  {'frames':>6}  {'frames/s':>9}  {'vs ffmpeg':>9}")
    for name, secs, frames in rows:
        fps = frames / secs if secs > 0 else float("nan")
        ratio = f"{(ref * frames) / secs:8.2f}x" if ref and frames else "       -"
        print(f"{name:<{width}}  {secs:8.3f}  {frames:6d}  {fps:9.1f}  {ratio:>9}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
