"""--devices: one replica of the models per device, each video to the replica with the least waiting, outputs equal
to a one-device run (tested with CPU replicas; no GPU here)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import media
import vidvec
from vidvec.cli import app
from vidvec.clips import Clip, VideoFinished, VideoStarted
from vidvec.extraction import ExtractError, execution_options
from vidvec.ledger import Ledger
from vidvec.replicas import run_replicated


class _Replica:
    """Stands in for a ModelRunner: takes ``seconds`` per clip, yields (replica, video) when a video finishes."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds, self.threads = name, seconds, set()

    def run(self, events):
        for event in events:
            self.threads.add(threading.get_ident())
            if isinstance(event, Clip):
                time.sleep(self.seconds)
            elif isinstance(event, VideoFinished):
                yield self.name, event.video


def _events(videos: int, clips: int):
    for video in range(videos):
        time.sleep(0.005)  # decoding takes time: the replicas run meanwhile
        yield VideoStarted(video, None, (0,), None)
        for clip in range(clips):
            yield Clip(video, clip, 0, torch.zeros(1), 0.0, 1.0, False)
        yield VideoFinished(video, 0.0)


def test_videos_go_where_there_is_room_and_each_once():
    slow, fast = _Replica("slow", 0.02), _Replica("fast", 0.0)
    results = list(run_replicated(_events(40, 5), [slow, fast], depth=4))
    assert sorted(video for _, video in results) == list(range(40))  # every video once
    done = {name: sum(1 for n, _ in results if n == name) for name in ("slow", "fast")}
    assert done["fast"] > 3 * done["slow"] > 0
    assert slow.threads and fast.threads and slow.threads.isdisjoint(fast.threads)  # a thread each


def test_an_error_in_a_replica_is_raised_to_the_caller():
    class Broken(_Replica):
        def run(self, events):
            for _ in events:
                raise RuntimeError("replica lost")
            yield from ()

    with pytest.raises(RuntimeError, match="replica lost"):
        list(run_replicated(_events(10, 2), [Broken("broken", 0.0), _Replica("ok", 0.0)]))  # video 0: the first


def test_cpu_replicas_give_the_one_device_outputs(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, frames in enumerate((30, 8, 45, 12, 20)):
        media.make_video(videos / f"v{i}.mp4", frames=frames, fps=10, size=(96, 64))
    one = list(vidvec.extract([videos], "efficientnet_lite0", tmp_path / "one", num_workers=0))
    two = list(vidvec.extract([videos], "efficientnet_lite0", tmp_path / "two", num_workers=0, devices="cpu,cpu"))
    assert [o.status for o in one] == [o.status for o in two] == ["done"] * 5
    for name in (f"v{i}" for i in range(5)):
        with np.load(tmp_path / "one" / f"{name}.npz") as a, np.load(tmp_path / "two" / f"{name}.npz") as b:
            np.testing.assert_allclose(b["features"], a["features"], rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(b["timestamps"], a["timestamps"])
    with Ledger(tmp_path / "two", readonly=True) as ledger:
        assert ledger.summary()["done"] == 5


def test_device_lists_are_checked():
    assert execution_options(devices="cpu,cpu").replicas == ("cpu", "cpu")
    assert execution_options().replicas == ("cpu",)
    with pytest.raises(ExtractError, match="give --device or --devices, not both"):
        execution_options("cuda", "cpu,cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ExtractError, match="CUDA is not available"):
            execution_options(devices="all")
        with pytest.raises(ExtractError, match="CUDA is not available"):
            execution_options(devices="cuda:0,cuda:1")
    with pytest.raises(ExtractError, match="takes a comma-separated list"):
        execution_options(devices=" , ")
    result = CliRunner().invoke(app, ["extract", "x.mp4", "-o", "o", "--devices", "tpu:0"])
    assert result.exit_code == 2 and "unknown device 'tpu:0'" in result.output
