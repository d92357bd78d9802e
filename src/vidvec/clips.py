"""Decode worker side: one video in, the clips of every model that wants it out, in one decoding pass.

This is the stateless CPU map of the pipeline: it runs in the decode worker processes and ships each clip
(uint8 pixels, cropped, or an audio example's waveform) to the model process as it completes, so a video's
frames never pile up. Each model of the run is a *slot*: its sampling and its preprocessing. The video frames
all visual slots need are decoded once (at each slot's size); audio slots read the audio track. Nothing here
knows which executor runs it: :func:`video_events` is one video's work, whoever asks for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .decode import DecodeError, PacketTrack, VideoDecoder, VideoInfo, probe
from .sampling import ClipPlan, SamplingSpec, StreamTiming, every_frame, plan
from .sources import VideoSource
from .transforms import Preprocess

_TIME_DECIMALS = 6  # clips that overlap ask for the same instants computed two ways; round before merging


@dataclass(frozen=True)
class Slot:
    """What one model of the run takes from every video: its sampling and preprocessing. ``audio`` slots carry
    an audio frontend (:class:`vidvec.audio.AudioFrontend`) as ``preprocess`` and ignore ``sampling``."""

    sampling: SamplingSpec
    preprocess: Any  # Preprocess, or AudioFrontend for audio slots
    audio: bool = False


@dataclass
class VideoStarted:
    """A video's work begins: its source, the slots it is done for, and its metadata."""

    video: int
    source: VideoSource
    slots: tuple[int, ...]
    info: VideoInfo | None  # None for an audio-only pass over a file without a readable video stream


@dataclass
class Clip:
    video: int
    clip: int
    crop: int
    pixels: torch.Tensor  # uint8 (T, H, W, 3); float32 (samples,) for audio slots
    start: float
    end: float
    padded: bool
    slot: int = 0
    stamp: float | None = None  # the clip's timestamp under rules that define one (video_features)


@dataclass
class ClipGroup:
    """Consecutive clips of one video and slot stacked into one tensor: one message between processes
    instead of many (per-message costs dominate for small clips such as single frames)."""

    video: int
    clips: list[Clip]  # their pixels are views into ``pixels``
    pixels: torch.Tensor  # (N, ...) the clips' pixels stacked

    def unpack(self) -> list[Clip]:
        for clip, pixels in zip(self.clips, self.pixels):
            clip.pixels = pixels
        return self.clips


@dataclass
class Partial:
    """Why a slot's result covers only part of its video (runs with ``partial``): a one-line ``note`` for
    the ledger and the console, and the ``detail`` provenance records (truncation, gaps, clips left out)."""

    note: str
    detail: dict


@dataclass
class VideoFinished:
    video: int
    decode_s: float
    counts: dict[int, int] = field(default_factory=dict)  # clips sent per slot that did not fail
    partial: dict[int, Partial] = field(default_factory=dict)  # slots whose clips cover part of the video


@dataclass
class VideoFailed:
    video: int
    reason: str
    slot: int  # the model that cannot have this video


@dataclass
class VideoRestarted:
    """The video is shorter than its header said, and ``partial`` keeps what was decoded: its clips for these
    slots are planned again on the decoded length, and the ones sent before are void."""

    video: int
    slots: list[int]


@dataclass
class VideoTaken:
    """An executor did not work on this video for this slot: another run has it (done, or working on it)."""

    video: int
    source: VideoSource
    slot: int
    reason: str


Event = VideoStarted | Clip | ClipGroup | VideoFinished | VideoFailed | VideoRestarted | VideoTaken


@dataclass
class FrameView:
    """How one slot sees the decoder's frames: which of its output sizes (None when it has one), then an
    optional transform, run once per distinct frame (the decoder repeats the same array for a repeated frame)."""

    output: int | None = None
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    _last: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __call__(self, decoded: Any) -> np.ndarray | None:
        if decoded is None:  # no decoded frame at this instant
            return None
        frame = decoded if self.output is None else decoded[self.output]
        if self.transform is None:
            return frame
        if self._last is None or self._last[0] is not frame:
            self._last = (frame, self.transform(frame))
        return self._last[1]


def assemble(plans: list[ClipPlan], decoder: VideoDecoder,
             transform: Callable[[np.ndarray], np.ndarray] | None = None
             ) -> Iterator[tuple[ClipPlan, np.ndarray | None]]:
    """Yield each planned clip as (plan, uint8 (T, H, W, 3)) as soon as its last frame is decoded (one
    slot; see :func:`assemble_views`). ``transform`` (e.g. a torch resize) runs once per decoded frame."""
    for _, clip_plan, frames in assemble_views([(0, p) for p in plans], decoder, [FrameView(None, transform)]):
        yield clip_plan, frames


def assemble_views(clips: Sequence[tuple[int, ClipPlan]], decoder: VideoDecoder, views: Sequence[FrameView]
                   ) -> Iterator[tuple[int, ClipPlan, np.ndarray | None]]:
    """Yield each (view, plan) clip as (view, plan, uint8 (T, H, W, 3)) as soon as its last frame is decoded;
    the pixels are None when one of its instants has no decoded frame (``decoder.gaps`` says where).

    The decoder is asked once for the union of all clips' sample times (converting, per instant, only the
    sizes some view needs there); a frame is dropped as soon as no pending clip can still need it, so
    memory is bounded by the widest clip.
    """
    wanted = [np.round(np.asarray(p.times), _TIME_DECIMALS) for _, p in clips]
    times = np.unique(np.concatenate(wanted))
    slots = [np.searchsorted(times, w) for w in wanted]
    users: list[set[int]] = [set() for _ in times]  # the views that need each instant
    for (view, _), clip_slots in zip(clips, slots):
        for slot in clip_slots.tolist():
            users[slot].add(view)
    several = any(v.output is not None for v in views)
    needed = [sorted({views[v].output for v in u}) for u in users] if several else None
    order = sorted(range(len(clips)), key=lambda i: (int(slots[i].max()), i))
    last = [int(slots[i].max()) for i in order]
    # keep_from[k]: the earliest instant any clip from order[k] on still needs (frames before it can go)
    keep_from = np.minimum.accumulate([int(slots[i].min()) for i in reversed(order)])[::-1].tolist()
    held: dict[tuple[int, int], np.ndarray] = {}
    pending = 0
    frames = decoder.frames_at(times.tolist(), needed) if several else decoder.frames_at(times.tolist())
    for slot, decoded in frames:
        for view in users[slot]:
            held[(view, slot)] = views[view](decoded)
        while pending < len(order) and last[pending] == slot:
            i = order[pending]
            view, clip_plan = clips[i]
            pixels = [held[(view, s)] for s in slots[i].tolist()]
            yield view, clip_plan, None if any(p is None for p in pixels) else np.stack(pixels)
            pending += 1
        if pending < len(order):
            for old in [key for key in held if key[1] < keep_from[pending]]:
                del held[old]


def video_events(index: int, source: VideoSource, slots: Sequence[Slot], threads: int = 0,
                 wanted: Sequence[int] | None = None, partial: bool = False) -> Iterator[Event]:
    """All events of one video for the slots ``wanted`` (default: all): VideoStarted, the clips, VideoFinished.
    A failure of one slot (e.g. no audio track) ends that slot with a VideoFailed naming it; the others go on.

    No clip is ever sent with a frame that was not decoded. A video whose data ends before its header says
    (truncated, or still being written) or whose frames could not all be decoded (damaged) fails by default;
    with ``partial`` it keeps what was decoded: a truncated video is planned again on its decoded length, a
    clip that needs a lost frame is left out, and VideoFinished.partial says so per slot.
    """
    began = time.perf_counter()
    wanted = tuple(range(len(slots))) if wanted is None else tuple(wanted)
    visual = [s for s in wanted if not slots[s].audio]
    audio = [s for s in wanted if slots[s].audio]
    counts: dict[int, int] = {}
    notes: dict[int, Partial] = {}
    started = not visual
    if started:  # audio only: the video's metadata for the record, if it has a readable video stream
        yield VideoStarted(index, source, wanted, _probe_or_none(source))
    else:
        try:
            for event in _visual_events(index, source, slots, wanted, visual, threads, counts, partial, notes):
                started = started or isinstance(event, VideoStarted)
                yield event
        except Exception as error:  # a decoder crash on one file must not end the run
            if not started:  # it did not even open (e.g. an audio-only file): the audio slots still go on
                yield VideoStarted(index, source, wanted, None)
            yield from _fail(index, visual, describe_error(error), counts)
    for s in audio:
        try:
            yield from _audio_events(index, source, s, slots[s], counts, partial, notes)
        except Exception as error:
            yield from _fail(index, [s], describe_error(error), counts)
    yield VideoFinished(index, time.perf_counter() - began, counts, {s: n for s, n in notes.items() if s in counts})


def describe_error(error: BaseException) -> str:
    """A failure's one-line reason: the message of vidvec's own errors, the type and message of others, and
    never an empty text (``MemoryError()`` has none)."""
    if isinstance(error, MemoryError):
        return "out of memory" + (f": {error}" if str(error) else "")
    text = " ".join(str(error).split())
    if isinstance(error, (DecodeError, ValueError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _probe_or_none(source: VideoSource) -> VideoInfo | None:
    try:
        return probe(source.path)
    except DecodeError:  # e.g. an audio-only file: the audio pass gives the reason if the sound fails too
        return None


def _fail(index: int, failed: Sequence[int], reason: str, counts: dict[int, int]) -> Iterator[VideoFailed]:
    for s in failed:
        counts.pop(s, None)
        yield VideoFailed(index, reason, s)


class _Truncated(Exception):
    """The first pass found the data ending before the header said (``partial`` runs plan again)."""


def _decoder(source: VideoSource, pres: Sequence[Preprocess], threads: int) -> VideoDecoder:
    sizes = [p.decoder_size for p in pres]
    filters = [p.decoder_filter for p in pres]
    several = len(pres) > 1
    return VideoDecoder(source.path, size=sizes if several else sizes[0], threads=threads,
                        interpolation=filters if several else filters[0])


def _visual_events(index: int, source: VideoSource, slots: Sequence[Slot], wanted: tuple[int, ...],
                   visual: list[int], threads: int, counts: dict[int, int], partial: bool,
                   notes: dict[int, Partial]) -> Iterator[Event]:
    pres: list[Preprocess] = [slots[s].preprocess for s in visual]
    with _decoder(source, pres, threads) as decoder:
        info = decoder.info
        yield VideoStarted(index, source, wanted, info)
        try:
            yield from _visual_clips(index, source, decoder, info, slots, visual, counts, partial, notes)
            return
        except _Truncated:
            data_end = decoder.data_end
    # partial: plan again on what the file really holds, as if it had been cut there
    assert data_end is not None
    yield VideoRestarted(index, [s for s in visual if s in counts])
    header = _header(info)
    decoded = replace(info, duration=data_end, num_frames=max(1, round(data_end * info.fps)), stream_duration=None)
    with _decoder(source, pres, threads) as decoder:
        yield from _visual_clips(index, source, decoder, decoded, slots, visual, counts, partial, notes, header)


def _visual_clips(index: int, source: VideoSource, decoder: VideoDecoder, info: VideoInfo,
                  slots: Sequence[Slot], visual: list[int], counts: dict[int, int], partial: bool,
                  notes: dict[int, Partial], truncated: dict | None = None) -> Iterator[Event]:
    """Plan every visual slot on ``info`` and send its clips; ``truncated`` (the header's claims) when this
    is the second pass over a truncated video."""
    timing = StreamTiming.from_info(info)
    needs_times = info.variable_rate and any(every_frame(slots[s].sampling, info.fps) for s in visual)
    frame_times = decoder.frame_times() if needs_times else None
    clips: list[tuple[int, ClipPlan]] = []
    planned: dict[int, int] = {}
    for k, s in enumerate(visual):
        try:
            plans = plan(slots[s].sampling, info.duration, info.fps, source.start or 0.0, source.end, timing=timing,
                         frame_times=frame_times)
        except ValueError as error:
            counts.pop(s, None)
            yield VideoFailed(index, str(error), s)
            continue
        clips.extend((k, p) for p in plans)
        counts[s], planned[s] = 0, len(plans)
    if not clips:
        return
    pres = [slots[s].preprocess for s in visual]
    several = len(visual) > 1
    views = [FrameView(k if several else None, p.resize_frames if p.decoder_size is None else None)
             for k, p in enumerate(pres)]
    left_out = dict.fromkeys(planned, 0)
    for k, clip_plan, frames in assemble_views(clips, decoder, views):
        s = visual[k]
        if frames is None:
            if not partial:
                raise DecodeError(_damage_reason(decoder, info))
            if truncated is None and any(end is None for _, end in decoder.gaps):
                raise _Truncated  # the data ends early: plan again on what it holds
            left_out[s] += 1
            continue
        for crop, pixels in enumerate(pres[k].crop_frames(frames, slots[s].sampling.crops)):
            counts[s] += 1
            yield Clip(index, clip_plan.index, crop, torch.from_numpy(pixels), clip_plan.start, clip_plan.end,
                       clip_plan.padded, s, clip_plan.stamp)
    for s in planned:
        if s not in counts:
            continue
        if left_out[s] and not counts[s]:
            yield from _fail(index, [s], f"{_damage_reason(decoder, info)}; every clip needs a lost frame", counts)
        elif left_out[s] or truncated:
            notes[s] = _partial_note(decoder, info, truncated, left_out[s], planned[s])


def _audio_events(index: int, source: VideoSource, s: int, slot: Slot, counts: dict[int, int], partial: bool,
                  notes: dict[int, Partial]) -> Iterator[Clip]:
    """The audio examples of one file. Decoding stops at the first damaged packet (the samples after a lost
    packet would sit at the wrong times): the slot then fails, or with ``partial`` keeps the examples
    before it."""
    from .audio import audio_examples, decode_audio  # audio models only

    frontend = slot.preprocess
    counts[s] = 0
    track = PacketTrack(timestamps=False)
    decoded = [0]  # samples

    def counted(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            decoded[0] += chunk.size
            yield chunk

    t0, t1 = source.start or 0.0, source.end
    kept_until = t0
    chunks = counted(decode_audio(source.path, frontend.sample_rate, track=track))
    for k, start, end, waveform in audio_examples(chunks, frontend):
        if start < t0 - 1e-9:
            continue
        if t1 is not None and end > t1 + 1e-9:
            break
        counts[s] += 1
        kept_until = end
        yield Clip(index, k, 0, torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), start, end,
                   False, s)
    if track.errors:
        at = decoded[0] / frontend.sample_rate
        reason = f"damaged audio: a packet could not be decoded after {at:.2f} s of sound"
        if not partial:
            raise DecodeError(reason)
        notes[s] = Partial(f"{reason}; examples cover {t0:.2f}-{kept_until:.2f} s",
                           {"audio_damaged_at": at, "packets": {"rejected": track.errors}})


def _header(info: VideoInfo) -> dict:
    """What the file's header claims: its duration and frame count."""
    return {"duration": info.duration, "frames": info.num_frames or max(1, round(info.duration * info.fps))}


def _truncation(header: dict, data_end: float, fps: float) -> str:
    return (f"truncated: data ends at {data_end:.2f} s of the {header['duration']:.2f} s the header claims "
            f"({round(data_end * fps)} of {header['frames']} frames)")


def _spans(gaps: Sequence[tuple[float, float | None]], shown: int = 3) -> str:
    text = ", ".join(f"{a:.2f}-{b:.2f} s" if b is not None else f"{a:.2f} s to the end" for a, b in gaps[:shown])
    return text + (f" and {len(gaps) - shown} more" if len(gaps) > shown else "")


def _damage_reason(decoder: VideoDecoder, info: VideoInfo) -> str:
    """The first frame the decoder could not give, as one line: where the data ends, or where frames are lost."""
    start, end = decoder.gaps[0]
    if end is None and decoder.data_end is not None and start >= decoder.data_end - 1e-6:
        return _truncation(_header(info), decoder.data_end, info.fps)
    lost = decoder.damage["lost"]
    return f"damaged: no decodable frame at {_spans(decoder.gaps[:1])} ({lost} packet(s) could not be decoded)"


def _partial_note(decoder: VideoDecoder, info: VideoInfo, header: dict | None, left_out: int,
                  planned: int) -> Partial:
    """What a ``partial`` result leaves out: ``header`` is set on the second pass over a truncated video (whose
    ``info`` then holds the decoded length)."""
    notes, detail = [], {"packets": decoder.damage}
    if header is not None:
        notes.append(_truncation(header, info.duration, info.fps))
        detail["truncated"] = {"data_end": info.duration, "header_duration": header["duration"],
                               "frames": round(info.duration * info.fps), "header_frames": header["frames"]}
    if left_out:
        notes.append(f"damaged: {left_out} of {planned} clips left out (no decodable frame at "
                     f"{_spans(decoder.gaps)})")
        detail.update(gaps=[list(g) for g in decoder.gaps], clips_left_out=left_out, clips_planned=planned)
    return Partial("; ".join(notes), detail)


GROUP_BYTES = 32 * 2**20  # a group never holds more than this (bounded memory with big clips)


def grouped(events: Iterable[Event], size: int, max_bytes: int = GROUP_BYTES) -> Iterator[Event]:
    """Stack each slot's consecutive clips, up to ``size`` (and ``max_bytes``), into ClipGroups; other events
    pass through in order, after every clip that came before them. Slots are grouped apart because several
    models' clips arrive interleaved (one per model at each sampled instant): grouping only runs of one slot
    would send them one by one. A group stacks clips of one shape (models given whole frames see videos of
    different sizes)."""
    runs: dict[int, list[Clip]] = {}

    def flush(slot: int) -> Iterator[ClipGroup]:
        run = runs.pop(slot, [])
        if run:
            yield ClipGroup(run[0].video, run, torch.stack([c.pixels for c in run]))

    for event in events:
        if isinstance(event, Clip):
            run = runs.get(event.slot)
            if run and run[0].pixels.shape != event.pixels.shape:  # whole frames: videos differ in size
                yield from flush(event.slot)
            run = runs.setdefault(event.slot, [])
            run.append(event)
            if len(run) >= size or len(run) * event.pixels.numel() >= max_bytes:  # one shape per run
                yield from flush(event.slot)
        else:
            for slot in list(runs):
                yield from flush(slot)
            yield event
    for slot in list(runs):
        yield from flush(slot)
