"""Which videos a run processes, and the stable key each one is known by.

`collect_sources` turns folders, files, a ``--list`` file and a CSV manifest into
`VideoSource` records. A source's ``key`` names its output file and its ledger row, so keys
must be unique within a run and the same on every re-run over the same inputs (that is what
makes a run resumable).
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg",
        ".wmv", ".flv", ".ts", ".3gp", ".ogv",
    }
)


class SourceError(Exception):
    """The inputs themselves are unusable (bad list or manifest file); fatal for the run."""


@dataclass(frozen=True)
class VideoSource:
    """One video to process.

    ``path`` is the video path as given (joined onto the list/manifest folder when it was
    relative there); it may not exist, which fails later for that video only. ``key`` is a
    POSIX relative name without extension, unique in the run. ``output`` is an explicit
    output path from the manifest (relative ones are taken relative to the output folder by
    `vidvec.writers.output_path`). ``start``/``end`` limit extraction to ``[start, end)``.
    """

    path: Path
    key: str
    output: Path | None = None
    start: float | None = None
    end: float | None = None


def is_video(path: str | Path) -> bool:
    """True when the file name has a known video extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class _Entry:
    path: Path          # as it will be reported
    absolute: Path      # absolute, symlinks kept: keys come from this
    root: Path | None   # folder the key is relative to; None for loose files until known
    output: Path | None = None
    start: float | None = None
    end: float | None = None
    origin: str = ""    # where it came from, for error messages


def collect_sources(
    inputs: Sequence[str | Path] = (),
    list_file: str | Path | None = None,
    manifest: str | Path | None = None,
    uids: str | Path | None = None,
) -> list[VideoSource]:
    """Collect the videos of a run, in a deterministic order, each with a unique key.

    - A folder (given directly or as a line of the list file) is walked recursively, following
      symlinked folders once; files with a video extension (see `VIDEO_EXTENSIONS`) are kept,
      hidden files and folders (name starting with ``.``, e.g. macOS ``._x.mp4``) are not.
      Its videos come sorted by relative path and are keyed by that path without extension:
      ``videos/a/x.mp4`` and ``videos/b/x.mp4`` give ``a/x`` and ``b/x``.
    - Files given directly, in ``list_file`` (one path per line; blank lines and lines
      starting with ``#`` ignored; relative paths are relative to the list file's folder) or
      in ``manifest`` are "loose" files. They are kept whatever their extension and whether
      or not they exist, and are keyed relative to the common parent folder of all loose
      files, so ``a/x.mp4`` and ``b/x.mp4`` give ``a/x`` and ``b/x``.
    - ``manifest`` is a CSV file with a header: ``video_path`` (required; relative paths are
      relative to the manifest's folder), optional ``output_path`` (or ``feature_path``, as HERO's
      CSV names it), ``start`` and ``end`` (seconds; empty cell means unset).
    - The same file given twice (same resolved path) is kept once, at its first position; a
      later mention may fill in a manifest's output/start/end but not contradict it.

    Key clashes: when several sources would get the same key (``x.mp4`` and ``x.avi`` in one
    folder), every one of them keeps its extension in the key (``x.mp4``, ``x.avi``). If they
    still clash (the same relative name under two different input folders), the clashing
    sources are keyed relative to the common parent of all input folders instead
    (``cam1/x``, ``cam2/x``), again with the extension if needed. Adding a file that clashes
    therefore changes the keys of the files it clashes with; those are then processed again.

    - ``uids`` (Ego4D's uid list) is a text file of video ids: of the videos found, only those
      whose key is an id are kept, in the file's order (see `_named_by_uid`).

    Raises `SourceError` for a missing list/manifest/uid file, a manifest without a
    ``video_path`` column or with a bad value (the message names the row), or keys that
    cannot be made unique.
    """
    entries: dict[Path, _Entry] = {}  # resolved path -> entry; dict keeps first-seen order
    folder_roots: list[Path] = []

    def add(entry: _Entry) -> None:
        # realpath, not Path.resolve: a symlink loop must not end the run (the video fails alone, later).
        ident = Path(os.path.realpath(entry.absolute))
        old = entries.get(ident)
        if old is None:
            entries[ident] = entry
            return
        # Same file again: merge, but a real contradiction means the inputs are ambiguous.
        for field in ("output", "start", "end"):
            new_value, old_value = getattr(entry, field), getattr(old, field)
            if new_value is None:
                continue
            if old_value is None:
                setattr(old, field, new_value)
            elif old_value != new_value:
                raise SourceError(
                    f"{entry.origin}: {entry.path} is already listed ({old.origin}) "
                    f"with a different {field} ({old_value} vs {new_value})"
                )

    def add_path(raw: Path, origin: str) -> None:
        if raw.is_dir():
            root = _absolute(raw)
            folder_roots.append(root)
            for path in _walk_videos(raw):
                add(_Entry(path=path, absolute=_absolute(path), root=root, origin=origin))
        else:
            add(_Entry(path=raw, absolute=_absolute(raw), root=None, origin=origin))

    for item in inputs:
        add_path(Path(item), origin="command line")
    if list_file is not None:
        for line_no, raw in _read_list(Path(list_file)):
            add_path(raw, origin=f"{list_file}:{line_no}")
    if manifest is not None:
        # Manifest rows are always videos (never walked), even if a row names a folder.
        for row_no, raw, output, start, end in _read_manifest(Path(manifest)):
            add(_Entry(path=raw, absolute=_absolute(raw), root=None, output=output,
                       start=start, end=end, origin=f"{manifest} row {row_no}"))

    ordered = list(entries.values())
    roots = list(folder_roots)
    loose = [e for e in ordered if e.root is None]
    if loose:
        loose_root = _common_parent(e.absolute.parent for e in loose)
        roots.append(loose_root)
        for e in loose:
            e.root = loose_root
    keys = _unique_keys(ordered, _common_parent(roots) if roots else Path("/"))
    sources = [
        VideoSource(path=e.path, key=k, output=e.output, start=e.start, end=e.end)
        for e, k in zip(ordered, keys)
    ]
    return sources if uids is None else _named_by_uid(sources, Path(uids), folder_roots)


def _named_by_uid(sources: list[VideoSource], uid_file: Path, folders: list[Path]) -> list[VideoSource]:
    """The videos ``uid_file`` names, in its order (Ego4D's uid list: one id per line, the video being
    ``<folder>/<id>.<ext>``, so an id is a key). An id no video has becomes ``<first folder>/<id>.mp4``, which
    the run then reports as a missing file, as it does any other."""
    if not folders:
        raise SourceError(f"--uids {uid_file} names videos by id: give the folder that holds them")
    by_key = {source.key: source for source in sources}
    chosen: dict[str, VideoSource] = {}
    for line in _read_lines(uid_file, "uid list"):
        uid = line.strip()
        if uid and not uid.startswith("#") and uid not in chosen:
            chosen[uid] = by_key.get(uid) or VideoSource(path=folders[0] / f"{uid}.mp4", key=uid)
    return list(chosen.values())


def _absolute(path: Path) -> Path:
    # abspath, not resolve: a symlinked video keeps its own name in the key.
    return Path(os.path.abspath(path))


def _common_parent(folders: Iterable[Path]) -> Path:
    folders = [str(f) for f in folders]
    try:
        return Path(os.path.commonpath(folders))
    except ValueError:  # different drives (Windows): no common parent, key from the anchor
        return Path(Path(folders[0]).anchor)


def _walk_videos(folder: Path) -> list[Path]:
    """Video files under ``folder``, sorted by relative POSIX path."""
    found: list[tuple[str, Path]] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # symlink loop or the same folder linked twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not is_video(name):
                continue
            path = Path(dirpath) / name
            rel = PurePosixPath(*path.relative_to(folder).parts)
            found.append((str(rel), path))
    found.sort(key=lambda item: item[0])
    return [p for _, p in found]


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise SourceError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise SourceError(f"{what} is a folder, not a file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {what} {path}: {exc}") from None


def _relative_to_file(value: str, base_file: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_file.parent / path


def _read_list(list_file: Path) -> list[tuple[int, Path]]:
    out = []
    for line_no, line in enumerate(_read_lines(list_file, "list file"), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            out.append((line_no, _relative_to_file(text, list_file)))
    return out


def _read_manifest(
    manifest: Path,
) -> list[tuple[int, Path, Path | None, float | None, float | None]]:
    lines = _read_lines(manifest, "manifest")
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError(f"manifest {manifest} is empty (need a header with video_path)") from None
    columns = [c.strip().lower() for c in header]
    if "video_path" not in columns:
        raise SourceError(
            f"manifest {manifest} has no video_path column (columns: {', '.join(columns) or 'none'})"
        )
    if "feature_path" in columns:  # HERO's extraction CSV: video_path,feature_path
        if "output_path" in columns:
            raise SourceError(f"manifest {manifest} has both output_path and feature_path (HERO's name for it); "
                              "keep one")
        columns[columns.index("feature_path")] = "output_path"
    index = {name: columns.index(name) for name in ("video_path", "output_path", "start", "end")
             if name in columns}

    out = []
    for cells in reader:
        row_no = reader.line_num  # the spreadsheet row number: header is row 1
        if not any(c.strip() for c in cells):
            continue
        where = f"manifest {manifest} row {row_no}"

        def cell(name: str) -> str:
            i = index.get(name)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        video = cell("video_path")
        if not video:
            raise SourceError(f"{where}: empty video_path")
        start = _seconds(cell("start"), "start", where)
        end = _seconds(cell("end"), "end", where)
        if start is not None and end is not None and start >= end:
            raise SourceError(f"{where}: start ({start:g}) must be less than end ({end:g})")
        output = Path(cell("output_path")).expanduser() if cell("output_path") else None
        out.append((row_no, _relative_to_file(video, manifest), output, start, end))
    return out


def _seconds(text: str, name: str, where: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SourceError(f"{where}: {name} is not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SourceError(f"{where}: {name} must be a finite number >= 0, got {text!r}")
    return value


def _key_candidates(entry: _Entry, top: Path) -> tuple[str, str, str, str]:
    """Keys in order of preference: relative to the entry's root, then to ``top``."""
    assert entry.root is not None
    near = PurePosixPath(*entry.absolute.relative_to(entry.root).parts)
    try:
        far = PurePosixPath(*entry.absolute.relative_to(top).parts)
    except ValueError:
        far = PurePosixPath(*entry.absolute.parts[1:])
    return (str(near.with_suffix("")), str(near), str(far.with_suffix("")), str(far))


def _unique_keys(entries: list[_Entry], top: Path) -> list[str]:
    """Pick each entry's most preferred key that no other entry shares."""
    candidates = [_key_candidates(e, top) for e in entries]
    level = [0] * len(entries)
    while True:
        holders: dict[str, list[int]] = defaultdict(list)
        for i, cands in enumerate(candidates):
            holders[cands[level[i]]].append(i)
        clashes = [ids for ids in holders.values() if len(ids) > 1]
        if not clashes:
            return [cands[level[i]] for i, cands in enumerate(candidates)]
        # Everyone in a clash moves on together, so the result doesn't depend on order.
        for ids in clashes:
            movable = [i for i in ids if level[i] < len(candidates[i]) - 1]
            if not movable:
                a, b = (entries[j].path for j in ids[:2])
                raise SourceError(
                    f"{a} and {b} would both be saved as {candidates[ids[0]][level[ids[0]]]!r}; "
                    "rename one or process them in separate runs"
                )
            for i in movable:
                level[i] += 1
