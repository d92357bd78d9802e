"""Decoding while the models load: vidvec.local.read_ahead and local_events(meanwhile=...)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vidvec
from vidvec.clips import Clip, VideoFinished
from vidvec.extraction import SamplingOverrides
from vidvec.local import DecodeOptions, local_events, read_ahead

SHARED_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "assets" / "videos" / "R6llTwEh07w.mp4"


def _clip(i: int, nbytes: int = 1000) -> Clip:
    return Clip(video=0, clip=i, crop=0, pixels=torch.zeros(nbytes, dtype=torch.uint8), start=i, end=i + 1,
                padded=False)


def _stream(n: int, taken: list[int], nbytes: int = 1000, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise OSError(f"disk gone at {i}")
        taken.append(i)
        yield _clip(i, nbytes)
    yield VideoFinished(video=0, decode_s=0.0)


def test_events_are_decoded_while_meanwhile_runs_and_come_out_in_order():
    taken: list[int] = []
    first = threading.Event()

    def stream():
        for event in _stream(5, taken):
            first.set()
            yield event

    def load():  # returns only once the other thread has decoded something: proof that both ran at once
        assert first.wait(10), "nothing was decoded while the models loaded"

    events = list(read_ahead(stream(), load))
    assert [e.clip for e in events[:-1]] == [0, 1, 2, 3, 4]
    assert isinstance(events[-1], VideoFinished)


def test_reading_ahead_stops_at_the_byte_limit_and_the_rest_comes_after():
    taken: list[int] = []

    def load():
        time.sleep(0.5)  # time enough to take far more than the limit, if it were not held

    events = read_ahead(_stream(100, taken, nbytes=1000), load, limit=3500)
    assert len(taken) == 4  # 4 clips (4,000 bytes) reach the limit; no more were decoded while loading
    assert [e.clip for e in list(events)[:-1]] == list(range(100))


def test_an_error_of_the_stream_comes_in_its_place():
    taken: list[int] = []
    events = read_ahead(_stream(10, taken, fail_at=3), lambda: None)
    got = []
    with pytest.raises(OSError, match="disk gone at 3"):
        for event in events:
            got.append(event.clip)
    assert got == [0, 1, 2]


def test_an_error_while_loading_stops_the_reader_first():
    stopped = threading.Event()

    def stream():
        try:
            for i in range(10_000):
                yield _clip(i)
        finally:
            stopped.set()

    def load():
        raise ValueError("a bad checkpoint")

    source = stream()
    with pytest.raises(ValueError, match="a bad checkpoint"):
        read_ahead(source, load, limit=10**12)
    assert not any(t.name == "vidvec-read-ahead" and t.is_alive() for t in threading.enumerate())
    source.close()  # the reader had let go of the stream: it can be closed here
    assert stopped.is_set()


def test_local_events_runs_meanwhile_once_in_both_modes(tmp_path: Path):
    """In this process (read ahead) and with a worker process: meanwhile runs once before the first event, and
    the events are those of a run without it."""
    if not SHARED_VIDEO.exists():
        pytest.fail(f"shared test video missing: {SHARED_VIDEO}")
    run = vidvec.prepare([SHARED_VIDEO], "efficientnet_lite0", tmp_path / "out",
                          sampling=SamplingOverrides(fps=1))
    slots = [t.slot for t in run.targets]
    jobs = [(0, run.sources[0], (0,))]
    expected = [e.pixels.numpy() for e in local_events(jobs, slots, DecodeOptions(num_workers=0))
                if isinstance(e, Clip)]
    for workers in (0, 1):
        calls = []
        events = local_events(jobs, slots, DecodeOptions(num_workers=workers, group=1),
                              meanwhile=lambda: calls.append(1))
        assert calls == [1]
        clips = [e for e in events if isinstance(e, Clip)]
        assert len(clips) == len(expected) > 0
        for clip, pixels in zip(clips, expected):
            np.testing.assert_array_equal(clip.pixels.numpy(), pixels)
    run.close()
