"""Per-model CPU benchmark: model-only against end-to-end, CPU time split, memory of the process tree.

For each model, at its default settings (frame-wise models at --image-fps, on every shared video; clip models on
one 10 s shared video):

- model only: one batch of real decoded clips through the model as ``vidvec extract`` runs it (the model runner's
  forward, its CPU fast paths included), repeated, in a process of its own: clips/s, and that process's peak PSS
  (the model's working set: interpreter, torch, weights, one batch and its activations);
- end to end: ``python -m vidvec.cli extract VIDEOS -m MODEL --weights random -o TMP`` as a whole process: wall
  seconds, clips/s, user and system CPU seconds of the whole tree (getrusage of the children), and the tree's peak
  PSS (shared pages counted once), also as a ratio to the model-only working set. PSS is sampled every 0.2 s:
  reading it is itself work (the kernel walks the page tables), which at 20 ms slowed the runs by a quarter.

    python benchmarks/bench_models.py                        # the five models, 3 runs each (about 15 minutes)
    python benchmarks/bench_models.py --models resnet50 --repeat 5
    python benchmarks/bench_models.py --before /tmp/old/src  # also an older checkout's package, runs alternated

``--before SRC`` runs each end-to-end command also with the package in SRC (``PYTHONPATH=SRC``), alternating the
two, and prints the speed-up; its model-only column is the plain fp32 forward of the module (contiguous input, no
fast path: what vidvec ran before them). Medians are printed; the machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("VIDVEC_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CLIP_VIDEOS = ["R6llTwEh07w.mp4"]  # for clip models: 9 to 30 clips of a 10 s video
MODELS = ["r2plus1d_18", "resnet50", "clip_vit_b32", "Kinetics/c2/SLOWFAST_8x8_R50", "Kinetics/X3D_M"]


def tree_pss(pid: int) -> int:
    """PSS bytes of a process and all its descendants (each shared page counted once, split among its users)."""
    pids, total = _descendants(pid), 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except OSError:
            pass
    return found


def measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, int, str]:
    """Run ``command`` to its end: (wall s, user s, sys s of its whole tree, peak tree PSS bytes, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_pss(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {proc.returncode}: {err.read()[-2000:]}")
        return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, peak, out.read()


def model_only(name: str, batch_size: int, videos: list[Path], image_fps: float, plain: bool, seconds: float) -> None:
    """In this process: one batch of ``name``'s first decoded clips through the model, repeated for at least
    ``seconds``; prints clips/s."""
    import torch

    import vidvec
    from vidvec.clips import Clip, Slot
    from vidvec.extraction import SamplingOverrides
    from vidvec.local import VideoEvents
    from vidvec.runner import ModelOptions, ModelRunner
    from vidvec.sources import collect_sources

    model = vidvec.load_model(name, weights="random", text=False)  # as a run loads it
    sampling = SamplingOverrides(fps=image_fps if model.card.input == "image" else None)
    slot = Slot(sampling.apply(model.card), model.preprocess, model.card.input == "audio")
    jobs = [(i, source, [0]) for i, source in enumerate(collect_sources(videos))]
    clips = list(itertools.islice((e for e in VideoEvents(jobs, [slot]) if isinstance(e, Clip)), batch_size))
    clips = (clips * batch_size)[:batch_size]
    if plain:  # the module's own fp32 forward on contiguous normalised input: no fast path
        pixels = torch.stack([c.pixels for c in clips])
        x = model.preprocess.normalize(pixels, torch.float32, video=model.card.input == "video")

        def forward() -> None:
            with torch.inference_mode():
                model.module(x)
    else:
        runner = ModelRunner([model], ModelOptions(batch_size=batch_size))

        def forward() -> None:
            runner.forward(0, clips)
    forward()  # warm-up: first-call costs
    done, began = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - began < seconds:
        forward()
        done += len(clips)
    print(f"{done / (time.perf_counter() - began):.4f}")


def end_to_end(name: str, videos: list[Path], image_fps: float | None, src: str | None) -> tuple[float, ...]:
    """(wall, clips/s, user, sys, peak PSS) of one ``vidvec extract`` process over ``videos`` (frame-wise models
    at ``image_fps``)."""
    import numpy as np

    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vidvec.cli", "extract", *map(str, videos), "-m", name, "--weights",
                   "random", "-o", out, "--quiet"]
        if image_fps:
            command += ["--fps", str(image_fps)]
        wall, user, system, peak, _ = measured(command, env)
        clips = sum(np.load(f)["features"].shape[0] for f in Path(out).rglob("*.npz"))
    return wall, clips / wall, user, system, peak


def _videos(names: list[str] | None) -> list[Path]:
    """Shared videos by name (or paths); None: every shared video."""
    folder = SHARED / "assets" / "videos"
    if names is None:
        return sorted(folder.iterdir())
    return [Path(v) if Path(v).exists() else folder / v for v in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--videos", nargs="+", help="names in shared/assets/videos, or paths (default: every shared "
                        f"video for frame-wise models, {' '.join(CLIP_VIDEOS)} for clip models)")
    parser.add_argument("--image-fps", type=float, default=1.0, help="frame rate for the frame-wise models")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="model-only batch (default: the batch vidvec extract uses for the model)")
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs of each version")
    parser.add_argument("--seconds", type=float, default=20.0, help="least time of each model-only measurement")
    parser.add_argument("--before", metavar="SRC", help="an older checkout's src folder to compare with")
    parser.add_argument("--model-only", metavar="MODEL", help=argparse.SUPPRESS)  # the model-only child process
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_only:
        model_only(args.model_only, args.batch_size, _videos(args.videos), args.image_fps, args.plain, args.seconds)
        return

    print(f"machine: {os.cpu_count()} CPUs; frame-wise models at {args.image_fps:g} fps on "
          f"{'every shared video' if not args.videos else ' '.join(args.videos)}, clip models on "
          f"{' '.join(args.videos or CLIP_VIDEOS)}; {args.repeat} end-to-end runs per version (medians)")
    versions = [("now", None)] + ([("before", args.before)] if args.before else [])
    print("| model | version | batch | model-only clips/s | working set MiB | end-to-end clips/s | wall s | user s "
          "| sys s | sys/user | tree peak PSS MiB | PSS / working set |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    from vidvec.registry import get_card
    from vidvec.runner import default_batch_size

    for name in args.models:
        image = get_card(name).input == "image"
        videos = _videos(args.videos or (None if image else CLIP_VIDEOS))
        # before them, every model ran 16 clips per batch
        batches = {"now": args.batch_size or default_batch_size(get_card(name).input, "cpu"),
                   "before": args.batch_size or 16}
        runs: dict[str, list[tuple[float, ...]]] = {label: [] for label, _ in versions}
        for _ in range(args.repeat):
            for label, src in versions:
                runs[label].append(end_to_end(name, videos, args.image_fps if image else None, src))
        speed = {}
        for label, src in versions:
            batch = batches[label]
            child = [sys.executable, __file__, "--model-only", name, "--batch-size", str(batch), "--videos",
                     *map(str, videos), "--image-fps", str(args.image_fps), "--seconds", str(args.seconds)]
            _, _, _, working_set, printed = measured(child + (["--plain"] if src else []))
            wall, rate, user, system, peak = (statistics.median(column) for column in zip(*runs[label]))
            speed[label] = rate
            print(f"| {name} | {label} | {batch} | {float(printed):.2f} | {working_set / 2**20:.0f} | {rate:.2f} | "
                  f"{wall:.1f} | {user:.1f} | {system:.1f} | {system / user:.0%} | {peak / 2**20:.0f} | "
                  f"{peak / working_set:.2f} |", flush=True)
        if args.before:
            print(f"| {name} | now / before | | | | {speed['now'] / speed['before']:.2f}x | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
