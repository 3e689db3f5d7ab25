"""FEAFA / FEAFA+ (Yan et al. 2019; Gan et al. 2021): per-frame continuous AU values in [0, 1].

ASSUMED LAYOUTS. The public descriptions of FEAFA and FEAFA+ (abstracts and project pages) give what is labelled
-- 24 AUs / action descriptors, some one-sided, each a float in [0, 1] per frame -- but not the label files'
layout. Two layouts are therefore *defined here* and documented; a release laid out otherwise must be converted
to one of them (or to a `manifest`). Nothing below was checked against the real files.

1. CSV (``layout="csv"``): ``path`` is one CSV, or a folder whose ``*.csv`` files (searched recursively; one per
   video or one for all) are read. First row: a header naming
   - an image column (``image``, ``img``, ``image_path``, ``file``, ``filename``, ``file_name`` or ``path``)
     and/or a frame column (``frame``, ``frame_id``, ``frame_number``, ``frame_index``) -- at least one;
   - optionally ``subject`` and a video column (``video``, ``sequence``, ``clip``);
   - every other column is an AU, named as the header names it. Names that spell an AU (``AU1``, ``AU02L``,
     ``AD19``) map to the AU catalogue with `normalize_au_id`; other names (``AU61``, ``Eyes Left``) are kept
     as they are and defined inline (`labels.au_set_from_names`). Pass ``ignore_columns`` for non-AU columns.
   Cells are floats in [0, 1]; empty = not labelled (NaN). Anything else is an error naming file, line, column.
   Relative image paths resolve against ``images_root`` if given, else the CSV's folder. A frame-only CSV gets
   image paths ``images_root/{sequence}/`` + ``frame_pattern`` when both are given.

2. Plain text (``layout="text"``): a folder of per-frame files ``{video}/{frame}.auw`` (or ``.txt`` when there is
   no ``.auw`` file), each holding 24 whitespace-separated floats in [0, 1] in the order of the built-in
   ``feafa`` AU set (itself a reconstruction, see ``au_sets.yaml``) or of ``au_set`` if given. The image is the
   file with the same stem and an image extension, next to it or under ``images_root`` at the same relative path.
   Every such file is read as labels: a stray ``.txt`` (a README) is an error naming it, not skipped silently.

``layout="auto"`` picks CSV for a ``.csv`` path or a folder with CSV files, text otherwise.

Which frames belong to whom: ``sequence`` is the video column, else the image's parent folder (text layout: the
label file's folder), else the CSV's name. ``subject`` is the subject column, else ``subject_of(sequence)``, else
the sequence itself -- FEAFA's subject ids are not part of the assumed layouts, so pass ``subject_of`` when one
person has several videos, or subject-exclusive splits will not be exclusive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aullava.aus.catalogue import AUSet, au_set as resolve_au_set
from aullava.datasets.labels import (LabelledFrames, au_set_from_names, derive_formats, listdir_set, make_frames, read_csv_rows,
                     relative_name, to_number, trailing_number)

__all__ = ["read_feafa"]

IMAGE_COLUMNS = ("image", "img", "image_path", "file", "filename", "file_name", "path")
FRAME_COLUMNS = ("frame", "frame_id", "frame_number", "frame_index")
SUBJECT_COLUMNS = ("subject", "subject_id")
VIDEO_COLUMNS = ("video", "sequence", "clip")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def _pick(header: list[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _check_value(value: float, path: Path, line: int, column: str, cell: str) -> float:
    if not np.isnan(value) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{path} line {line}: {column} = {cell!r} is outside [0, 1]")
    return value


class _Collector:
    """Rows being gathered: base columns plus an N×K value matrix over the final AU set."""

    def __init__(self, k: int):
        self.base = {c: [] for c in ("subject", "sequence", "image", "frame")}
        self.values: list[np.ndarray] = []
        self.k = k

    def add(self, subject: str, sequence: str, image: str | None, frame: int, values: np.ndarray) -> None:
        for key, v in (("subject", subject), ("sequence", sequence), ("image", image), ("frame", frame)):
            self.base[key].append(v)
        self.values.append(values)


def _csv_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.rglob("*.csv"))
    if not files:
        raise FileNotFoundError(f"{path}: no CSV label files")
    return files


def _read_csv_layout(path: Path, au_set, images_root, subject_of, frame_pattern, ignore_columns, problems):
    files = _csv_files(path)
    root = path.parent if path.is_file() else path
    parsed = []
    for f in files:
        rows, lines = read_csv_rows(f)
        if not rows:
            raise ValueError(f"{f}: empty file (expected a header row)")
        header = rows[0]
        meta = {key: _pick(header, names) for key, names in (("image", IMAGE_COLUMNS), ("frame", FRAME_COLUMNS),
                                                               ("subject", SUBJECT_COLUMNS), ("video", VIDEO_COLUMNS))}
        if meta["image"] is None and meta["frame"] is None:
            raise ValueError(f"{f} line {lines[0]}: header has no image column ({', '.join(IMAGE_COLUMNS)}) "
                             f"or frame column ({', '.join(FRAME_COLUMNS)})")
        ignored = {i for i, h in enumerate(header) if h.strip().lower() in {c.lower() for c in ignore_columns}}
        au_idx = [i for i in range(len(header)) if i not in meta.values() and i not in ignored]
        _, ids = au_set_from_names([header[i] for i in au_idx], where=str(f), set_name="feafa")
        parsed.append((f, rows, lines, meta, au_idx, ids))
    if au_set is None:  # union of all headers, first appearance order
        names, seen = [], set()
        for f, rows, _, _, au_idx, ids in parsed:
            for i, au in zip(au_idx, ids):
                if au not in seen:
                    seen.add(au)
                    names.append(rows[0][i])
        aus, _ = au_set_from_names(names, where=str(path), set_name="feafa")
    else:
        aus = resolve_au_set(au_set)
    out = _Collector(len(aus))
    for f, rows, lines, meta, au_idx, ids in parsed:
        rel = relative_name(f, root)
        targets = []
        for i, au in zip(au_idx, ids):
            if au in aus:
                targets.append((i, aus.index(au)))
            else:
                problems.append(f"{rel}: column {rows[0][i]!r} is not in AU set {aus.name!r}; ignored")
        absent = [a.id for a in aus if a.id not in ids]
        if absent:
            problems.append(f"{rel}: no column for {', '.join(absent)}; left unlabelled")
        fallback_frames = False
        for n, (row, line) in enumerate(zip(rows[1:], lines[1:])):
            cell = lambda i: row[i] if i is not None and i < len(row) else ""  # noqa: E731
            image = cell(meta["image"]) or None
            if meta["frame"] is not None:
                try:
                    frame = int(cell(meta["frame"]))
                except ValueError:
                    raise ValueError(f"{f} line {line}: frame {cell(meta['frame'])!r} is not an integer") from None
            else:
                frame = trailing_number(image) if image else None
                if frame is None:
                    frame, fallback_frames = n, True
            sequence = cell(meta["video"]) or (Path(image).parent.name if image and Path(image).parent.name
                                               else f.stem)
            subject = cell(meta["subject"]) or (subject_of(sequence) if subject_of else sequence)
            if image is not None:
                image = str(Path(images_root or f.parent) / image)
            elif images_root is not None and frame_pattern is not None:
                image = str(Path(images_root) / sequence / frame_pattern.format(frame=frame))
            values = np.full(len(aus), np.nan)
            for i, k in targets:
                text = cell(i)
                try:
                    value = to_number(text)
                except ValueError:
                    raise ValueError(f"{f} line {line}: {rows[0][i]} = {text!r} is not a number") from None
                values[k] = _check_value(value, f, line, rows[0][i], text)
            out.add(subject, sequence, image, frame, values)
        if fallback_frames:
            problems.append(f"{rel}: some images have no number in their name; their frame is the row's 0-based "
                            "position in the file")
    return aus, out


def _read_text_layout(path: Path, au_set, images_root, subject_of, problems):
    aus = resolve_au_set(au_set if au_set is not None else "feafa")
    files = [path] if path.is_file() else sorted(path.rglob("*.auw")) or sorted(path.rglob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{path}: no per-frame .auw or .txt label files")
    root = path.parent if path.is_file() else path
    out = _Collector(len(aus))
    unnumbered: dict[Path, int] = {}
    for f in files:
        tokens: list[tuple[str, int]] = []
        with open(f, encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, start=1):
                tokens += [(t, n) for t in line.split()]
        if len(tokens) != len(aus):
            where = f" (line {tokens[len(aus)][1]} has value {len(aus) + 1})" if len(tokens) > len(aus) else ""
            raise ValueError(f"{f}: {len(tokens)} values{where}; expected {len(aus)}, one per AU of set "
                             f"{aus.name!r} in its order")
        values = np.empty(len(aus))
        for k, (text, n) in enumerate(tokens):
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{f} line {n}: value {k + 1} ({aus[k].id}) is {text!r}, not a number") from None
            values[k] = _check_value(value, f, n, aus[k].id, text)
        frame = trailing_number(f.name)
        if frame is None:
            frame = unnumbered.setdefault(f.parent, 0)
            unnumbered[f.parent] += 1
            problems.append(f"{relative_name(f, root)}: no number in the name; frame = its position ({frame}) "
                            "among such files in the folder")
        sequence = f.parent.name
        image_dir = Path(images_root) / f.parent.relative_to(root) if images_root is not None else f.parent
        image = next((str(image_dir / (f.stem + e)) for e in IMAGE_EXTS if (image_dir / (f.stem + e)).is_file()),
                     None)
        out.add(subject_of(sequence) if subject_of else sequence, sequence, image, frame, values)
    return aus, out


def read_feafa(path: str | os.PathLike, *, layout: str = "auto", au_set: str | AUSet | None = None,
               images_root: str | os.PathLike | None = None, subject_of: Callable[[str], str] | None = None,
               frame_pattern: str | None = None, ignore_columns: Sequence[str] = (), check_frames: bool = True,
               name: str = "FEAFA") -> LabelledFrames:
    """Read FEAFA/FEAFA+ labels in one of the two documented layouts (module docstring: what was assumed).

    ``au_set``: CSV layout -- None reads the AUs the header names; a set restricts/orders them (other columns
    ignored, noted). Text layout -- the order of the values (default: built-in ``feafa``).
    ``check_frames``: drop (and note) rows whose image is missing or unknown.
    Raises FileNotFoundError for no label files, ValueError naming file and line for a value it cannot use.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    if layout == "auto":
        layout = "csv" if (path.suffix.lower() == ".csv" or (path.is_dir() and any(path.rglob("*.csv")))) else "text"
    problems: list[str] = []
    if layout == "csv":
        aus, out = _read_csv_layout(path, au_set, images_root, subject_of, frame_pattern, ignore_columns, problems)
    elif layout == "text":
        aus, out = _read_text_layout(path, au_set, images_root, subject_of, problems)
    else:
        raise ValueError(f"layout must be 'auto', 'csv' or 'text', got {layout!r}")
    keep = np.ones(len(out.values), dtype=bool)
    if check_frames:
        listing: dict[Path, set[str]] = {}
        for i, image in enumerate(out.base["image"]):
            keep[i] = image is not None and Path(image).name in listdir_set(Path(image).parent, listing)
        if not keep.all():
            lost = [f"{s}#{fr}" for s, fr, k in zip(out.base["sequence"], out.base["frame"], keep) if not k]
            problems.append(f"{len(lost)} labelled frame(s) without an image on disk dropped (sequence#frame): "
                            + ", ".join(lost[:5]) + (" ..." if len(lost) > 5 else ""))
    base = {key: [v for v, k in zip(vals, keep) if k] for key, vals in out.base.items()}
    base["dataset"] = [name] * int(keep.sum())
    values = np.array(out.values).reshape(len(keep), len(aus))[keep]
    labels = {c: values[:, k] for k, c in enumerate(aus.openface_columns(""))}
    return derive_formats(make_frames(name, aus, base, labels, problems)).validate()
