"""A finished output folder in another layout, without computing anything again: ``vidvec convert OUT --to LAYOUT``.

The folder must be in vidvec's own layout (its files hold every array; the other layouts keep only part of them).
Each done video of its ledger is read back (``read_features``) and written through the target layout's sink, into
``into`` (the layouts under an output folder) or beside the videos (pyslowfast, lvs-timeline), as a run with that
layout would have written it; ``csd`` writes one CMU-MultimodalSDK computational sequence holding every video.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .decode import VideoInfo
from .finished import done_files, read_done
from .ledger import LedgerError, VideoRecord
from .registry import get_card
from .runner import VideoResult
from .sinks import (Ego4DSink, HeroSink, LvsTimelineSink, OutputError, PySlowFastSink, Sink, VideoFeaturesSink,
                    video_features_streams)
from .sources import VideoSource
from .writers import write_csd

TARGETS = ("pyslowfast", "lvs-timeline", "hero", "video_features", "ego4d", "csd")


class ConvertError(Exception):
    """The folder cannot be converted as asked (one line)."""


@dataclass
class Converted:
    """One video of the folder: where its converted output went, or why it could not be converted."""

    key: str
    output: Path | None
    reason: str | None = None


def convert(out: Path, to: str, into: Path | None = None) -> Iterator[Converted]:
    """Convert the done videos of output folder ``out`` to layout ``to`` (see the module docstring); ``into`` is
    the new output folder (layouts under one) or the ``.csd`` file. Raises ConvertError before writing anything
    when the conversion cannot hold what the folder has."""
    out = Path(out)
    if to not in TARGETS:
        raise ConvertError(f"unknown layout {to!r}; choose one of {', '.join(TARGETS)}")
    try:
        settings, found = done_files(out)
    except LedgerError as error:
        raise ConvertError(str(error)) from None
    if settings.get("layout", "vidvec") != "vidvec":
        raise ConvertError(f"{out} is in the {settings['layout']} layout, which keeps only part of the arrays; "
                           "convert a folder of vidvec's own layout")
    if to not in ("pyslowfast",) and (settings.get("sampling") or {}).get("crops", 1) > 1:
        raise ConvertError(f"{out} has 3 crops per clip; the {to} layout holds one vector per clip")
    if to == "video_features" and (settings.get("sampling") or {}).get("rule") != "video_features":
        raise ConvertError(f"{out} was not cut with video_features' rule: its files need the timestamps_ms of a run "
                           "with --preset video_features")
    if to in ("pyslowfast", "lvs-timeline"):
        into = out  # their files go beside the videos; nothing is written into the folder itself
    elif into is None:
        raise ConvertError(f"--to {to} needs --into: the new {'.csd file' if to == 'csd' else 'output folder'}")
    elif Path(into).resolve() == out.resolve():
        raise ConvertError("--into must not be the folder being converted (its ledger stays bound to its layout)")
    if to == "csd":
        yield from _to_csd(settings, found, Path(into))
        return
    sources = [VideoSource(Path(record.video_path), record.key) for record, _ in found]
    sink = _sink(to, Path(into), settings, sources)
    try:
        sink.check(sources, absolute_outputs=False)  # the same path checks as a run with that layout
    except OutputError as error:
        raise ConvertError(str(error)) from None
    for (record, path), source in zip(found, sources):
        try:
            arrays, provenance = read_done(path, record.settings_hash)
            result = VideoResult(0, source, True, info=_info(provenance), arrays=arrays)
            yield Converted(record.key, sink.write(result, None))
        except (OSError, ValueError, KeyError, OutputError) as error:
            yield Converted(record.key, None, f"{path}: {error}")


def _sink(to: str, into: Path, settings: dict, sources: list[VideoSource]) -> Sink:
    out_dtype = settings.get("out_dtype", "float32")
    if to == "pyslowfast":
        return PySlowFastSink(into, out_dtype, sources)
    if to == "lvs-timeline":
        return LvsTimelineSink(into, out_dtype, sources)
    if to == "hero":
        return HeroSink(into)
    if to == "ego4d":
        return Ego4DSink(into)
    try:
        card = get_card(settings["model"])
    except (KeyError, ValueError) as error:
        raise ConvertError(f"video_features' files name the model's feature type; {error}") from None
    streams = video_features_streams(card.name, settings.get("model_options") or {})
    return VideoFeaturesSink(into, streams, (settings.get("sampling") or {}).get("fps"), card.input == "audio")


def _info(provenance: dict) -> VideoInfo | None:
    """The video as its file's provenance recorded it (the frame rate video_features' files carry)."""
    video = provenance.get("video")
    if not isinstance(video, dict):
        return None
    try:
        return VideoInfo(**{f.name: video[f.name] for f in dataclasses.fields(VideoInfo) if f.name in video})
    except TypeError:
        return None


def _to_csd(settings: dict, found: list, into: Path) -> Iterator[Converted]:
    entries, done = [], []
    for record, path in found:
        try:
            arrays, _ = read_done(path, record.settings_hash)
            entries.append((record.key, arrays["features"], arrays["timestamps"]))
            done.append(record.key)
        except (OSError, ValueError, KeyError) as error:
            yield Converted(record.key, None, f"{path}: {error}")
    model = settings.get("model", "features")
    metadata = {"root name": model, "computational sequence description": f"vidvec {model} features "
                f"({settings.get('latent')}), one vector per clip; intervals in seconds",
                "dimension names": None, "computational sequence version": "1.0",
                "dimension namescomputational sequence version": None, "alignment compatible": True,
                "creator": "vidvec", "vidvec settings": settings}
    write_csd(into, model.replace("/", "_"), entries, metadata)
    for key in done:
        yield Converted(key, into)
