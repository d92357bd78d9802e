"""The runner's Flush event: clips of several videos share a batch until a Flush makes it compute what it holds
(what lets a service batch across requests with a maximum wait)."""

from __future__ import annotations

import media
from vidvec.clips import Slot
from vidvec.extraction import SamplingOverrides, plan_one
from vidvec.local import job_events
from vidvec.runner import Flush, ModelOptions, ModelRunner
from vidvec.sources import VideoSource


def test_clips_of_two_videos_share_a_batch_until_a_flush(tmp_path):
    spec = plan_one("efficientnet_lite0", "random", SamplingOverrides(fps=1.0))
    slots = [Slot(spec.sampling, spec.preprocess, False)]
    jobs = []
    for i in range(2):
        media.make_video(tmp_path / f"{i}.mp4", frames=20, fps=10, size=(64, 48))  # 2 s: 2 clips at 1 fps
        jobs.append((i, VideoSource(tmp_path / f"{i}.mp4", str(i)), (0,)))
    batches: list[int] = []
    runner = ModelRunner([spec.load()], ModelOptions(batch_size=16), on_batch=batches.append)

    def stream(flush: bool):
        for job in jobs:
            yield from job_events(job, slots)
            if flush:
                yield Flush()

    assert [r.clips for r in runner.run(stream(False))] == [2, 2] and batches == [4]  # one batch for both
    batches.clear()
    assert [r.clips for r in runner.run(stream(True))] == [2, 2] and batches == [2, 2]  # each computed at its flush
