#!/usr/bin/env python
"""Print the model tables of the docs from the registry's cards; ``--write`` puts them into the docs.

    python scripts/models_table.py                      # the models table of docs/models.md
    python scripts/models_table.py --family pyslowfast  # the PySlowFast configs table of docs/pyslowfast.md
    python scripts/models_table.py --write              # rewrite both tables between their marker comments

Each table sits between ``<!-- models-table:start -->`` and ``<!-- models-table:end -->`` (the PySlowFast one
between ``<!-- pyslowfast-table:start -->`` and ``<!-- pyslowfast-table:end -->``); tests/test_registry.py checks
that the docs hold exactly what this prints. Cards are data, so this imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
PYSLOWFAST = "pyslowfast"
# Per table: the file it lives in and the marker comments around it.
TABLES = {
    None: (ROOT / "docs" / "models.md", "<!-- models-table:start -->", "<!-- models-table:end -->"),
    PYSLOWFAST: (ROOT / "docs" / "pyslowfast.md", "<!-- pyslowfast-table:start -->", "<!-- pyslowfast-table:end -->"),
}


def _numbers(values: Any) -> str:
    return "(" + ",".join(f"{round(float(v), 3):g}" for v in values) + ")"


def describe_preprocess(preprocess: Any) -> str:
    """A weights entry's preprocessing in words: frames (Preprocess) or audio (AudioFrontend)."""
    if hasattr(preprocess, "sample_rate"):  # an audio frontend
        p = preprocess
        return (f"PyAV decode, resample to {p.sample_rate} Hz mono (mean of channels), log-mel: "
                f"{p.window_seconds * 1000:g} ms periodic Hann, {p.hop_seconds * 1000:g} ms hop, {p.mel_bands} HTK "
                f"bands {p.fmin:g}-{p.fmax:g} Hz, log(mel + {p.log_offset:g})")
    p = preprocess
    parts = [f"short side {p.resize[0]}" if len(p.resize) == 1 else f"resize {p.resize[0]}x{p.resize[1]}"]
    if p.crop is None:
        parts.append("whole frame (the model crops it)")
    else:
        height, width = p.crop
        parts.append(f"crop {height}" if height == width else f"crop {height}x{width}")
    if p.interpolation != "bilinear":
        parts.append(p.interpolation)
    parts += [f"mean {_numbers(p.mean)}", f"std {_numbers(p.std)}", p.channel_order]
    return ", ".join(parts)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def models_table() -> str:
    """The table of every registered model outside the PySlowFast family, one row per card."""
    from vidvec.registry import get_card, list_models

    lines = [_row(["model", "input", "dim", "default sampling", "preprocessing", "latent (the vector)",
                   "weights (first is default)", "source; licence"]),
             "|---|---|---|---|---|---|---|---|"]
    for name in list_models():
        card = get_card(name)
        if card.family == PYSLOWFAST:
            continue
        preprocess = card.preprocess_for(None)
        entry = card.default_weights
        sampling = preprocess.describe() if card.input == "audio" else card.sampling.describe()
        weights = ", ".join(card.weight_names()) or "none published: `--weights PATH` or `random`"
        source = f"{entry.source}; {entry.license}" if entry else "-"
        lines.append(_row([f"`{name}`", card.input, card.embed_dim, sampling, describe_preprocess(preprocess),
                           card.latent, weights, source]))
    return "\n".join(lines) + "\n"


def describe_pyslowfast_sampling(card: Any) -> str:
    """A PySlowFast config's test sampling and crop, as the configs table words it."""
    spec, crop = card.sampling, card.preprocess_for(None).crop[0]
    crops = f"{spec.crops} crop" + ("s" if spec.crops > 1 else "")
    if spec.rule == "ssv2":
        return f"{spec.clip_len} frames spread over the whole video (SSv2 segments), 1 view, crop {crop}"
    views = f"{spec.views} view" + ("s" if spec.views > 1 else "")
    return f"{spec.clip_len} frames every {spec.sampling_rate} at {spec.fps:g} fps, {views} x {crops}, crop {crop}"


def pyslowfast_table() -> str:
    """The table of the PySlowFast family's configs: dimension, test sampling, MODEL_ZOO weights, reported metrics."""
    from vidvec.registry import get_card, list_models

    lines = [_row(["config", "dim", "default sampling (PySlowFast's test protocol)", "weights (MODEL_ZOO)",
                   "reported"]),
             "|---|---|---|---|---|"]
    for name in list_models(PYSLOWFAST):
        card = get_card(name)
        entry = card.default_weights
        if entry is None or entry.url is None:
            weights, reported = "none published: `--weights PATH` or `random`", "-"
        else:
            weights = f"[`{Path(urlparse(entry.url).path).name}`]({entry.url})"
            metrics = ", ".join(f"{key} {value}" for key, value in entry.metrics.items())
            reported = f"{entry.name}: {metrics}" if metrics else "-"
        lines.append(_row([f"`{name}`", card.embed_dim, describe_pyslowfast_sampling(card), weights, reported]))
    return "\n".join(lines) + "\n"


def table(family: str | None = None) -> str:
    """The table for ``family``: None (every model but PySlowFast's) or "pyslowfast"."""
    if family is None:
        return models_table()
    if family == PYSLOWFAST:
        return pyslowfast_table()
    raise ValueError(f"no table for family {family!r}; choose {PYSLOWFAST} or none")


def between(text: str, start: str, end: str) -> str:
    """What ``text`` holds between the marker lines ``start`` and ``end`` (ValueError without them)."""
    head, found, rest = text.partition(start + "\n")
    body, found_end, _ = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"markers {start} ... {end} not found")
    return body


def replaced(text: str, start: str, end: str, body: str) -> str:
    """``text`` with what lies between the marker lines replaced by ``body``."""
    old = between(text, start, end)
    return text.replace(start + "\n" + old + end, start + "\n" + body + end, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=[PYSLOWFAST], help="the PySlowFast configs table instead")
    parser.add_argument("--write", action="store_true", help="rewrite the tables in docs/ between their markers")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(table(args.family))
        return 0
    for family, (path, start, end) in TABLES.items():
        if args.family is not None and family != args.family:
            continue
        text = path.read_text()
        new = replaced(text, start, end, table(family))
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
