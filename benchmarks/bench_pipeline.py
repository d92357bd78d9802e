"""Pipeline benchmark: prints, for the machine it runs on,

1. decode throughput of vidvec's decoder against `ffmpeg -f null` on the same file (ratio);
2. model-only clips/s against end-to-end clips/s per model (ratio = pipeline efficiency);
3. peak RSS of `vidvec extract` on generated 1-minute and 20-minute 720p videos.

    python benchmarks/bench_pipeline.py                       # everything (about 15 minutes on 2 cores)
    python benchmarks/bench_pipeline.py --skip-rss --models efficientnet_lite0

Targets: end-to-end >= 0.85 x model-only on CPU; peak RSS of the 20-minute video within 10% of the 1-minute one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_decode  # noqa: E402

import vidvec  # noqa: E402
from vidvec.clips import Slot  # noqa: E402
from vidvec.local import VideoEvents  # noqa: E402
from vidvec.extraction import SamplingOverrides, default_workers  # noqa: E402
from vidvec.models.i3d_net import centre_crop  # noqa: E402
from vidvec.sources import collect_sources  # noqa: E402

SHARED = Path(os.environ.get("VIDVEC_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CACHE = Path(os.environ.get("VIDVEC_BENCH_CACHE", Path(tempfile.gettempdir()) / "vidvec-bench"))
DEVICE = "cpu"  # --device: where every model of the benchmark runs


def _sync() -> None:
    """Wait for queued accelerator work, so that a timer read after it counts it."""
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def make_long_video(path: Path, seconds: int, size: tuple[int, int] = (1280, 720), fps: int = 30) -> Path:
    """A textured 720p h264 video, cached; frames cycle through a precomputed set so a 20-minute one
    encodes in a few minutes."""
    if path.exists():
        return path
    import av
    from fractions import Fraction

    w, h = size
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    frames = [av.VideoFrame.from_ndarray(np.roll(base, 8 * i, axis=1), format="rgb24") for i in range(fps)]
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(seconds * fps):
            for packet in stream.encode(frames[i % fps]):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


def model_only(name: str, batch_size: int, clips: int) -> float:
    """clips/s of the model alone on ready-made normalised input of the model's shape."""
    model = vidvec.load_model(name, weights=_weights(name), device=DEVICE)
    spec, pre = model.card.sampling, model.preprocess
    if model.card.input != "audio":
        size = pre.crop or pre.resized_size(256, 340)  # a model without a crop takes whole (here 4:3) frames
    frames = spec.clip_len
    if model.card.input == "audio":
        shape = (batch_size, pre.example_samples)
    elif model.card.input == "video":
        shape = (batch_size, 3, frames, *size)
    else:
        shape = (batch_size * frames, 3, *size)
    x = torch.randn(shape, device=DEVICE)
    with torch.inference_mode():
        model.module(x)  # warm-up
        _sync()
        done, began = 0, time.perf_counter()
        while done < clips:
            model.module(x)
            done += batch_size
        _sync()
    return done / (time.perf_counter() - began)


def end_to_end(name: str, videos: list[Path], batch_size: int, workers: int,
               fps: float | None) -> tuple[float, int, float]:
    """clips/s of a whole extract run (decode workers + model + pooling, nothing written), the clip count,
    and seconds of video processed per second."""
    weights = _weights(name)
    sampling = SamplingOverrides(fps=fps)
    # warm-up on one video so both measurements exclude model loading and first-call costs
    list(vidvec.extract(videos[:1], name, None, weights=weights, batch_size=batch_size, num_workers=0,
                        sampling=sampling, device=DEVICE))
    began = time.perf_counter()
    outcomes = list(vidvec.extract(videos, name, None, weights=weights, batch_size=batch_size,
                                   num_workers=workers, sampling=sampling, device=DEVICE))
    wall = time.perf_counter() - began
    clips = sum(o.result.clips for o in outcomes if o.result)
    video_seconds = sum(o.result.info.duration for o in outcomes if o.result and o.result.info)
    return clips / wall, clips, video_seconds / wall


def _weights(name: str) -> str | None:
    # Only efficientnet_lite0's real weights are at hand without a download; the others run random weights
    # (the same compute).
    return None if name == "efficientnet_lite0" else "random"


def several_vs_sequential(names: list[str], videos: list[Path], batch_size: int, workers: int,
                          fps: float | None) -> tuple[float, float, dict[str, float]]:
    """Wall seconds of one run with all models (one decoding pass per video) and of the models run one
    after another, each run warm (models loaded, first-call costs paid on one video beforehand)."""
    weights = [_weights(n) for n in names]
    sampling = SamplingOverrides(fps=fps)

    def timed(models, weight) -> float:
        list(vidvec.extract(videos[:1], models, None, weights=weight, batch_size=batch_size, num_workers=0,
                            sampling=sampling, device=DEVICE))
        began = time.perf_counter()
        outcomes = list(vidvec.extract(videos, models, None, weights=weight, batch_size=batch_size,
                                       num_workers=workers, sampling=sampling, device=DEVICE))
        failed = [o for o in outcomes if o.status == "failed" and "no audio" not in (o.reason or "")]
        if failed:
            raise SystemExit(f"benchmark run failed: {failed[0].source.path} [{failed[0].model}]: {failed[0].reason}")
        return time.perf_counter() - began

    alone = {name: timed(name, weight) for name, weight in zip(names, weights)}
    together = timed(names, weights)
    return together, sum(alone.values()), alone


def several_vs_sequential_cli(names: list[str], videos: list[Path], batch_size: int, workers: int,
                              fps: float | None) -> tuple[float, float, dict[str, float]]:
    """The same as a user runs it: wall seconds of one `vidvec extract -m A -m B ...` and of one `vidvec extract`
    per model (each a fresh process: start-up, model load, decoding and the model, writing outputs)."""
    def timed(models: list[str]) -> float:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "vidvec.cli", "extract", *map(str, videos), "-o", out, "--quiet",
                   "--device", DEVICE, "--batch-size", str(batch_size), "--num-workers", str(workers)]
            for name in models:
                cmd += ["-m", name, "--weights", _weights(name) or "default"]
            if fps:
                cmd += ["--fps", str(fps)]
            began = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - began
            if done.returncode not in (0, 1):  # 1: some videos have no audio track for vggish
                raise SystemExit(f"benchmark run failed: {done.stderr.strip()[-500:]}")
            return wall

    alone = {name: timed([name]) for name in names}
    together = timed(names)
    return together, sum(alone.values()), alone


def best_of(repeat: int, comparison, *args) -> tuple[float, float, dict[str, float]]:
    """A several-models comparison run ``repeat`` times, keeping each run's fastest wall time (the least
    disturbed by the rest of the machine), as timeit does."""
    runs = [comparison(*args) for _ in range(repeat)]
    alone = {name: min(run[2][name] for run in runs) for name in runs[0][2]}
    return min(run[0] for run in runs), sum(alone.values()), alone


def decode_only(names: list[str], videos: list[Path], fps: float | None) -> tuple[float, dict[str, float]]:
    """Seconds of the decode side alone (decoding, resizing, cropping, audio examples; no model), inline:
    once for all models' streams together, and once per model alone. On an accelerator the models take a
    small part of the time, so this ratio is what one decoding pass for several models approaches there."""
    loaded = [vidvec.load_model(name, weights="random") for name in names]
    sampling = SamplingOverrides(fps=fps)
    slots = [Slot(sampling.apply(m.card), m.preprocess, m.card.input == "audio") for m in loaded]
    sources = collect_sources(videos)

    def timed(chosen: list[int]) -> float:
        jobs = [(i, source, chosen) for i, source in enumerate(sources)]
        began = time.perf_counter()
        for _ in VideoEvents(jobs, slots):
            pass
        return time.perf_counter() - began

    timed(list(range(len(slots))))  # warm-up (file cache, first-call costs)
    alone = {name: timed([i]) for i, name in enumerate(names)}
    return timed(list(range(len(slots)))), alone


def i3d_flow_share(flow: str, size: tuple[int, int] = (256, 340)) -> tuple[float, float]:
    """Seconds RAFT takes for one I3D clip's 64 flows, and seconds the two I3D streams take on that clip."""
    model = vidvec.load_model("i3d", weights="random", build_options={"flow": flow}, device=DEVICE).module
    x = torch.rand(1, 3, 65, *size, device=DEVICE) * 2 - 1
    with torch.inference_mode():
        if DEVICE != "cpu":  # warm up (CUDA kernel selection); on a CPU one more pass would cost 30-120 s
            model.flow(model.flow_input(x))
        _sync()
        began = time.perf_counter()
        flow_input = model.flow_input(x)
        _sync()
        flow_s = time.perf_counter() - began
        began = time.perf_counter()
        model.rgb(centre_crop(x[:, :, :-1], model.crop))
        model.flow(flow_input)
        _sync()
        streams_s = time.perf_counter() - began
    return flow_s, streams_s


def i3d_end_to_end(video: Path, flow: str, batch_size: int, workers: int) -> tuple[float, int, float]:
    """clips/s, clips and seconds of video per second of I3D two-stream (RAFT included) on one video."""
    began = time.perf_counter()
    (outcome,) = vidvec.extract([video], "i3d", None, weights="random", batch_size=batch_size,
                                num_workers=workers, model_options={"flow": flow}, device=DEVICE)
    wall = time.perf_counter() - began
    return outcome.result.clips / wall, outcome.result.clips, outcome.result.info.duration / wall


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def high_water_mark(pid: int) -> int | None:
    """The kernel's exact peak resident memory (VmHWM, bytes) of one process so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss(video: Path, workers: int) -> tuple[int, float]:
    """Peak RSS of `vidvec extract` on one video: the sum of each process's own peak (VmHWM, read by the
    kernel, so short spikes are not missed by sampling), and the wall time."""
    out = Path(tempfile.mkdtemp(prefix="vidvec-rss-"))
    args = [sys.executable, "-m", "vidvec.cli", "extract", str(video), "--out", str(out), "--fps", "1",
            "--num-workers", str(workers), "--quiet"]
    began = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, int] = {}

    def sample() -> None:
        while proc.poll() is None:
            for pid in tree_pids(proc.pid):
                mark = high_water_mark(pid)
                if mark is not None:
                    peaks[pid] = max(peaks.get(pid, 0), mark)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = proc.communicate()
    sampler.join()
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"extract failed on {video}: {stderr.decode()[-500:]}")
    return sum(peaks.values()), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["r2plus1d_18", "efficientnet_lite0"],
                        help="models for the model-only vs end-to-end table (empty: skip it)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda, cuda:N)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="decode workers for the RSS runs")
    parser.add_argument("--worker-counts", type=int, nargs="+", default=[0, default_workers()],
                        help="decode worker counts to compare end to end")
    parser.add_argument("--videos", type=int, default=6, help="how many of the shared videos to use")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--several", nargs="*", default=["clip_vit_b32", "resnet18", "vggish"],
                        help="models for the one-decode vs sequential comparison (empty: skip it)")
    parser.add_argument("--several-fps", type=float, default=1.0, help="frame rate of the frame-wise models there")
    parser.add_argument("--i3d-flows", nargs="*", default=["raft_small", "raft_large"],
                        help="RAFT variants to time inside I3D two-stream (empty: skip I3D)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, device {DEVICE}, torch {torch.__version__} "
          f"threads {torch.get_num_threads()}, decode workers {args.workers}")

    if not args.skip_decode:
        clip = CACHE / "bench_720p_60s.mp4"
        if not clip.exists():
            bench_decode.make_benchmark_video(clip)
        print("\n## decode, 720p h264, 60 s (benchmarks/bench_decode.py)", flush=True)
        bench_decode.main([str(clip), "--no-torchcodec"])

    videos = [] if args.skip_models else sorted((SHARED / "assets" / "videos").glob("*"))[: args.videos]
    if not videos and not args.skip_models:
        raise SystemExit(f"no videos in {SHARED}/assets/videos (set VIDVEC_SHARED)")
    # This machine's speed drifts by tens of percent between runs (shared VM): measure model-only and
    # end-to-end alternately, several times, and compare the best of each.
    if videos and args.models:
        print(f"\n## model-only vs end-to-end, {len(videos)} videos from shared/assets, batch {args.batch_size}, "
              f"best of {args.repeat} alternating runs, each model's default sampling")
        print("| model | workers | clips | model-only clips/s | end-to-end clips/s | efficiency | video s per s |")
        print("|---|---|---|---|---|---|---|")
    for name in args.models if videos else []:
        for workers in args.worker_counts:
            alone, e2e = [], []
            for _ in range(args.repeat):
                rate, clips, seconds = end_to_end(name, videos, args.batch_size, workers, None)
                e2e.append((rate, seconds))
                alone.append(model_only(name, args.batch_size, max(min(clips, 200), args.batch_size * 4)))
            best_e2e, seconds = max(e2e)
            print(f"| {name} | {workers} | {clips} | {max(alone):.2f} | {best_e2e:.2f} | "
                  f"{best_e2e / max(alone):.2f} | {seconds:.1f} |", flush=True)

    if args.several and not args.skip_models:
        every = sorted((SHARED / "assets" / "videos").glob("*"))
        print(f"\n## several models on one decoding pass vs one after another: {', '.join(args.several)}, all "
              f"{len(every)} shared videos, frame-wise models at {args.several_fps:g} fps, workers {args.workers}, "
              f"best of {args.repeat}")
        print("| run | in-process, warm: wall (s) | `vidvec extract` processes: wall (s) |\n|---|---|---|")
        warm = best_of(args.repeat, several_vs_sequential, args.several, every, args.batch_size, args.workers,
                       args.several_fps)
        cli = best_of(args.repeat, several_vs_sequential_cli, args.several, every, args.batch_size, args.workers,
                      args.several_fps)
        for name in args.several:
            print(f"| {name} alone | {warm[2][name]:.1f} | {cli[2][name]:.1f} |")
        print(f"| sum of the single runs | {warm[1]:.1f} | {cli[1]:.1f} |\n"
              f"| all models, one decode | {warm[0]:.1f} | {cli[0]:.1f} |")
        print(f"one decode / sequential: {warm[0] / warm[1]:.2f} warm, {cli[0] / cli[1]:.2f} as processes "
              "(target <= 0.7)", flush=True)
        together, alone = decode_only(args.several, every, args.several_fps)
        print(f"decode side only (no model, inline): {together:.1f} s for all models at once vs "
              f"{sum(alone.values()):.1f} s one after another ("
              + ", ".join(f"{name} {seconds:.1f}" for name, seconds in alone.items())
              + f"): {together / sum(alone.values()):.2f}, the ratio where the models' own time is negligible",
              flush=True)

    if args.i3d_flows and not args.skip_models:
        video = SHARED / "assets" / "videos" / "R6llTwEh07w.mp4"
        print("\n## I3D two-stream with RAFT flow: one 65-frame 340x256 clip (RAFT on the whole frame, the streams "
              "on the 224 crop), model only, and end to end on "
              f"{video.name} ({args.workers} workers, batch 2)")
        print("| flow | RAFT s per clip | I3D streams s per clip | RAFT share | end-to-end clips/s | efficiency | "
              "video s per s |\n|---|---|---|---|---|---|---|")
        for flow in args.i3d_flows:
            flow_s, streams_s = i3d_flow_share(flow)
            rate, clips, seconds = i3d_end_to_end(video, flow, 2, args.workers)
            model_rate = 1 / (flow_s + streams_s)
            print(f"| {flow} | {flow_s:.1f} | {streams_s:.1f} | {flow_s / (flow_s + streams_s):.0%} | {rate:.3f} | "
                  f"{rate / model_rate:.2f} | {seconds:.3f} |", flush=True)

    if not args.skip_rss:
        print("\n## peak RSS, efficientnet_lite0 at 1 fps on generated 720p h264 30 fps")
        print("| video | peak RSS (MiB): median (each run) | wall (s) |\n|---|---|---|")
        # A run's peak varies by tens of MB with where the heap trims fall: the median of --repeat runs, alternated.
        videos = {m: make_long_video(CACHE / f"720p_{m}min.mp4", seconds=60 * m) for m in (1, 20)}
        runs: dict[int, list[tuple[int, float]]] = {1: [], 20: []}
        for _ in range(args.repeat):
            for minutes, video in videos.items():
                runs[minutes].append(peak_rss(video, args.workers))
        results = {}
        for minutes, measured in runs.items():
            results[minutes] = statistics.median(rss for rss, _ in measured)
            peaks = ", ".join(f"{rss / 2**20:.0f}" for rss, _ in measured)
            print(f"| {minutes} min | {results[minutes] / 2**20:.0f} ({peaks}) | "
                  f"{statistics.median(wall for _, wall in measured):.0f} |", flush=True)
        print(f"20-minute / 1-minute peak RSS (medians): {results[20] / results[1]:.3f}")


if __name__ == "__main__":
    main()
