"""A search's results as one self-contained HTML page (``vidvec search ... --html results.html``).

Each clip found shows a thumbnail (the frame at the middle of its span, decoded by vidvec's own decoder, inlined
as a JPEG), its video, time span and score; each video found shows its score and a timeline: the similarity of
every stored clip of it to the query over time (plain SVG), its best clip shaded. The page loads nothing else.
A source that cannot be decoded any more (moved, damaged) leaves its hits without pictures: :func:`write_page`
returns one line per such file.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .decode import DecodeError, VideoDecoder
from .store import Hit, VideoHit
from .writers import atomic_path

THUMB_HEIGHT = 120  # pixels
_PLOT_W, _PLOT_H, _PAD = 640, 110, 28


def thumbnails(hits: Sequence[Hit]) -> tuple[dict[tuple[str, float], str], list[str]]:
    """The JPEG (as a data URI) of each hit's middle frame by (source, time), decoding each source once, and
    one line per source that could not give them."""
    wanted: dict[str, set[float]] = {}
    for hit in hits:
        wanted.setdefault(hit.source, set()).add(_middle(hit))
    pictures, problems = {}, []
    for source, times in wanted.items():
        ordered = sorted(times)
        try:
            with VideoDecoder(source, size=_thumb_size, threads=1) as decoder:
                for i, frame in decoder.frames_at(ordered):
                    if frame is not None:
                        pictures[source, ordered[i]] = _jpeg(frame)
        except (DecodeError, OSError, ValueError) as error:
            problems.append(f"{source}: no thumbnails ({str(error).splitlines()[0]})")
            continue
        if any((source, t) not in pictures for t in ordered):
            missing = ", ".join(f"{t:.2f} s" for t in ordered if (source, t) not in pictures)
            problems.append(f"{source}: no frame at {missing}")
    return pictures, problems


def jpeg_at(source: str, seconds: float) -> bytes | None:
    """The JPEG of ``source``'s frame at ``seconds`` (None when it cannot be decoded there)."""
    at = Hit("", source, 0, seconds, seconds, 0.0)  # a span of no length: its middle is ``seconds``
    picture = thumbnails([at])[0].get((source, _middle(at)))
    return None if picture is None else base64.b64decode(picture.split(",", 1)[1])


def write_page(path: str | os.PathLike, query: str, model: str, clips: Sequence[Hit], videos: Sequence[VideoHit],
               timelines: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Write the page for a search (``query`` in words) of ``model``'s vectors; ``timelines``: per video found,
    its clips' spans (clips, 2) and their scores. Returns the lines of sources without pictures."""
    pictures, problems = thumbnails([*clips, *(v.best for v in videos)])
    cards = "\n".join(_card(hit, pictures.get((hit.source, _middle(hit)))) for hit in clips)
    rows = "\n".join(
        f'<section class="video"><h3>{_e(v.video)} <small>score {v.score:.4f}, best clip '
        f'{_span(v.best)}</small></h3><div class="row">{_card(v.best, pictures.get((v.source, _middle(v.best))))}'
        f'{_timeline(*timelines[v.video], v.best)}</div></section>' for v in videos)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vidvec search: {_e(query)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.row {{ display: flex; gap: 16px; align-items: center; }}
figure {{ margin: 0; width: 220px; }}
figure img {{ height: {THUMB_HEIGHT}px; max-width: 220px; object-fit: contain; background: #eee; display: block; }}
figcaption {{ font-size: 0.85em; }}
.missing {{ height: {THUMB_HEIGHT}px; background: #eee; color: #888; display: flex; align-items: center;
  justify-content: center; }}
svg text {{ font-size: 11px; fill: #555; }}
</style></head>
<body>
<h1>{_e(query)}</h1>
<p>model {_e(model)}: {len(clips)} clip(s) and {len(videos)} video(s), by cosine similarity; a video scores as its
best clip.</p>
<h2>Clips</h2>
<div class="grid">
{cards}
</div>
<h2>Videos</h2>
{rows}
</body></html>
"""
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return problems


def _middle(hit: Hit) -> float:
    return round((hit.start + hit.end) / 2, 6)


def _thumb_size(height: int, width: int) -> tuple[int, int]:
    return THUMB_HEIGHT, max(2, round(width * THUMB_HEIGHT / max(height, 1) / 2) * 2)


def _jpeg(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _span(hit: Hit) -> str:
    return f"{hit.start:.2f}-{hit.end:.2f} s"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _card(hit: Hit, picture: str | None) -> str:
    image = (f'<img src="{picture}" alt="{_e(hit.video)} at {_middle(hit):.2f} s">' if picture else
             '<div class="missing">no picture</div>')
    return (f'<figure>{image}<figcaption><b>{_e(hit.video)}</b><br>{_span(hit)} &middot; {hit.score:.4f}'
            f'</figcaption></figure>')


def _timeline(spans: np.ndarray, scores: np.ndarray, best: Hit) -> str:
    """An SVG plot of ``scores`` at the middle of each span, the best clip's span shaded."""
    end = float(max(spans[:, 1].max(), best.end)) if len(spans) else best.end
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5

    def x(t: float) -> float:
        return _PAD + (_PLOT_W - 2 * _PAD) * t / max(end, 1e-9)

    def y(s: float) -> float:
        return _PLOT_H - _PAD + (2 * _PAD - _PLOT_H) * (s - low) / (high - low)

    points = " ".join(f"{x((a + b) / 2):.1f},{y(s):.1f}" for (a, b), s in zip(spans.tolist(), scores.tolist()))
    return (f'<svg class="timeline" width="{_PLOT_W}" height="{_PLOT_H}" viewBox="0 0 {_PLOT_W} {_PLOT_H}" '
            f'role="img" aria-label="similarity over time">'
            f'<rect x="{x(best.start):.1f}" y="{_PAD / 2:.1f}" width="{max(x(best.end) - x(best.start), 1):.1f}" '
            f'height="{_PLOT_H - 1.5 * _PAD:.1f}" fill="#fde68a"/>'
            f'<line x1="{_PAD}" y1="{_PLOT_H - _PAD}" x2="{_PLOT_W - _PAD}" y2="{_PLOT_H - _PAD}" stroke="#999"/>'
            f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
            f'<text x="{_PAD}" y="{_PLOT_H - 8}">0 s</text>'
            f'<text x="{_PLOT_W - _PAD}" y="{_PLOT_H - 8}" text-anchor="end">{end:.1f} s</text>'
            f'<text x="2" y="{y(high) + 4:.1f}">{high:.2f}</text>'
            f'<text x="2" y="{y(low) + 4:.1f}">{low:.2f}</text></svg>')
