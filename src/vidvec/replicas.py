"""Several replicas of a run's models on one node (``--devices``): one decoding stream, each video's events routed
to one replica, each replica's runner in its own thread.

A video goes, when it starts, to the replica with the fewest events still to finish: a replica held up by a long or slow
video stops getting new ones while the others take them (work goes where there is room, video by video). Every
event of a video goes to the replica it started on, so its clips are pooled there as in a one-device run. The
caller gets every replica's results from one iterator, in this thread (so one thread records them).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence

from .clips import Event, VideoStarted
from .runner import ModelRunner, VideoResult

_END = object()


class _Stopped(Exception):
    """The consumer went away: the feeding thread stops."""


def run_replicated(events: Iterable[Event], runners: Sequence[ModelRunner], depth: int = 32) -> Iterator[VideoResult]:
    """Every result of ``runners`` (one per replica) over ``events``; an error in a replica or in the events is
    raised here. ``depth``: events queued per replica at most (decoding waits beyond it)."""
    inboxes: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in runners]
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    # Events routed to each replica that it has not finished with (it asks for the next one when it has): its
    # backlog, what a new video is routed by.
    pending = [0] * len(runners)
    lock = threading.Lock()

    def put(box: queue.Queue, item: object) -> None:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def feed() -> None:
        owner: dict[int, int] = {}
        try:
            for event in events:
                if isinstance(event, VideoStarted):
                    with lock:
                        owner[event.video] = min(range(len(inboxes)), key=lambda i: (pending[i], i))
                target = owner.get(event.video, 0)
                with lock:
                    pending[target] += 1
                put(inboxes[target], event)
        except _Stopped:
            return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            results.put(("error", error))
        finally:
            for box in inboxes:
                try:
                    put(box, _END)
                except _Stopped:
                    pass

    def work(index: int) -> None:
        def inbox() -> Iterator[Event]:
            while True:
                item = inboxes[index].get()
                if item is _END:
                    return
                yield item
                with lock:
                    pending[index] -= 1

        try:
            for result in runners[index].run(inbox()):
                results.put(("result", result))
        except BaseException as error:  # noqa: BLE001
            results.put(("error", error))
        finally:
            results.put(("done", index))

    threads = [threading.Thread(target=feed, name="vidvec-feed", daemon=True)]
    threads += [threading.Thread(target=work, args=(i,), name=f"vidvec-replica-{i}", daemon=True)
                for i in range(len(runners))]
    for thread in threads:
        thread.start()
    running = len(runners)
    try:
        while running:
            kind, value = results.get()
            if kind == "done":
                running -= 1
            elif kind == "error":
                raise value
            else:
                yield value
    finally:
        stop.set()
        for box in inboxes:  # unblock replicas still waiting for events
            try:
                box.put_nowait(_END)
            except queue.Full:
                pass
