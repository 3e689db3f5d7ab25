"""A manifest: any dataset already listed as one table, CSV or Parquet, into the unified label table.

The way in for data we have no reader for (an in-house set, a converted FEAFA release, OpenFace-style exports).
Columns:

- ``subject`` (required: subject-exclusive splits need it);
- ``image``, or ``video`` + ``frame`` (0-based index into the video); an image-only manifest may still give
  ``frame``, else it is the number ending the image's name, else the row's 0-based position;
- optional ``dataset`` (default: the manifest's file name) and ``sequence`` (default: the video, or the image's
  folder); optional ``source``, the photo an image was made from (``aullava synth`` writes it), read as a note and
  not kept, so synth's own manifests load without a warning;
- AU columns, OpenFace style: ``AU01_c`` occurrence 0/1, ``AU01_r`` intensity as an integer 0-5 (a fractional
  intensity is rejected: give it as continuous ``value / 5`` instead), bare ``AU01`` continuous in [0, 1]; empty
  cells are "not labelled". ``AD`` and one-sided ids work the same (``AU02L_c``).

Relative paths resolve against the manifest's folder. Other columns are ignored (noted in ``problems``); a value
out of range is an error naming file and line (CSV) or row (Parquet, 1-based). Parquet needs ``pyarrow`` (or
``fastparquet``) installed; CSV needs nothing extra.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from aullava.aus.answer_format import AnswerFormat
from aullava.aus.catalogue import AUSet, au_set as resolve_au_set, normalize_au_id
from aullava.datasets.labels import (LabelledFrames, au_columns, au_set_from_names, derive_formats, make_frames, read_csv_rows,
                     trailing_number)

__all__ = ["read_manifest"]

_AU_COLUMN = re.compile(r"^((?:AU|AD)\d+[LR]?)(?:_([cr]))?$", re.IGNORECASE)
_META = ("dataset", "subject", "sequence", "image", "video", "frame", "source")
_RANGE = {AnswerFormat.BINARY: (0, 1, True), AnswerFormat.DISCRETE: (0, 5, True),
          AnswerFormat.CONTINUOUS: (0, 1, False)}
_MISSING_WORDS = {"nan", "none", "null", "n/a", "#n/a"}
_FORMAT_OF_SUFFIX = {"c": AnswerFormat.BINARY, "r": AnswerFormat.DISCRETE, None: AnswerFormat.CONTINUOUS}


def _load(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The manifest as a DataFrame plus, per row, how errors name it ("line 7" / "row 6")."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except ImportError as exc:
            raise ImportError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow): {exc}") from None
        return df.reset_index(drop=True), [f"row {i + 1}" for i in range(len(df))]
    rows, lines = read_csv_rows(path)
    if not rows:
        raise ValueError(f"{path}: empty manifest (expected a header row)")
    header = rows[0]
    width = len(header)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ValueError(f"{path} line {lines[0]}: header names {', '.join(map(repr, dup))} more than once")
    for row, line in zip(rows[1:], lines[1:]):
        if len(row) > width and any(row[width:]):
            raise ValueError(f"{path} line {line}: {len(row)} cells but the header has {width}")
    body = [[c if c != "" else None for c in (row + [""] * width)[:width]] for row in rows[1:]]
    return pd.DataFrame(body, columns=header, dtype=object), [f"line {n}" for n in lines[1:]]


def _numeric(series: pd.Series, path: Path, where: list[str], column: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values) & series.notna().to_numpy())
    if bad.size:
        raise ValueError(f"{path} {where[bad[0]]}: {column} = {series.iloc[bad[0]]!r} is not a number")
    return values


def _resolve(value, folder: Path) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else folder / p)


def read_manifest(path: str | os.PathLike, *, au_set: str | AUSet | None = None, name: str | None = None,
                  occurrence_threshold: float = 2, check_files: bool = False) -> LabelledFrames:
    """Read a CSV/Parquet manifest (see the module docstring).

    ``au_set``: None takes the AUs the columns name (first appearance order); a set keeps only its AUs (other AU
    columns ignored, noted). ``occurrence_threshold``: for rows with ``_r`` but no ``_c`` label (see
    `labels.derive_formats`). ``check_files``: drop (and note) rows whose image or video is missing on disk.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    df, where = _load(path)
    if df.empty:
        raise ValueError(f"{path}: the manifest has no rows (only a header)" if len(df.columns) else
                         f"{path}: the manifest is empty")
    name = name or path.stem
    lower = {str(c).strip().lower(): c for c in df.columns}
    if "subject" not in lower:
        raise ValueError(f"{path}: no 'subject' column (needed for subject-exclusive splits)")
    if "image" not in lower and not ("video" in lower and "frame" in lower):
        raise ValueError(f"{path}: needs an 'image' column, or 'video' and 'frame' columns")
    au_cols, problems = _au_columns(df, path)
    aus = _manifest_au_set(au_cols, au_set, path, name, problems)
    labels = _label_arrays(df, au_cols, aus, path, where)
    base = _locations(df, lower, path, where, name)
    if check_files:
        keep = _files_present(base, where, path, problems)
        base = base[keep].reset_index(drop=True)
        labels = {k: v[keep] for k, v in labels.items()}
    frames_out = make_frames(name, aus, base, labels, problems)
    return derive_formats(frames_out, occurrence_threshold=occurrence_threshold).validate()


def _au_columns(df: pd.DataFrame, path: Path) -> tuple[list[tuple[str, str, AnswerFormat]], list[str]]:
    """(column, AU id, format) of every AU column, and a note naming the columns outside the schema."""
    au_cols: list[tuple[str, str, AnswerFormat]] = []
    unknown, problems = [], []
    for col in df.columns:
        text = str(col).strip()
        m = _AU_COLUMN.match(text)
        if m:
            au_cols.append((col, normalize_au_id(m.group(1)), _FORMAT_OF_SUFFIX[(m.group(2) or "").lower() or None]))
        elif text.lower() not in _META:
            unknown.append(text)
    if unknown:
        problems.append(f"{path.name}: columns ignored (not part of the manifest schema): {', '.join(unknown)}")
    return au_cols, problems


def _manifest_au_set(au_cols, au_set, path: Path, name: str, problems: list[str]) -> AUSet:
    """The AUs the columns name (no `au_set` given), or `au_set` with the columns outside it noted."""
    if au_set is None:
        ids = list(dict.fromkeys(au for _, au, _ in au_cols))
        if not ids:
            raise ValueError(f"{path}: no AU columns (AU01_c, AU01_r or AU01)")
        return au_set_from_names(ids, where=str(path), set_name=name)[0]
    aus = resolve_au_set(au_set)
    outside = [str(c) for c, au, _ in au_cols if au not in aus]
    if outside:
        problems.append(f"{path.name}: AU columns not in set {aus.name!r} ignored: {', '.join(outside)}")
    return aus


def _label_arrays(df: pd.DataFrame, au_cols, aus: AUSet, path: Path, where) -> dict[str, np.ndarray]:
    """Label column (the set's name for that AU and format) → values, each checked against its format's range."""
    labels: dict[str, np.ndarray] = {}
    for col, au, fmt in au_cols:
        if au not in aus:
            continue
        target = au_columns(aus, fmt)[aus.index(au)]
        if target in labels:
            raise ValueError(f"{path}: columns {col!r} and another one both give {target}")
        values = _numeric(df[col], path, where, str(col))
        low, high, integral = _RANGE[fmt]
        bad = ~np.isnan(values) & ((values < low) | (values > high) | (integral & (values != np.round(values))))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            hint = " (give fractional intensities as continuous AUxx = value / 5)" if fmt is AnswerFormat.DISCRETE \
                else ""
            raise ValueError(f"{path} {where[i]}: {col} = {df[col].iloc[i]!r} is outside the {fmt.value} range "
                             f"{low}..{high}{' (integers)' if integral else ''}{hint}")
        labels[target] = values
    return labels


def _locations(df: pd.DataFrame, lower: dict, path: Path, where, name: str) -> pd.DataFrame:
    """Per row: dataset, subject, sequence, image or video (resolved beside the manifest) and frame."""
    folder = path.parent
    col = lambda key: df[lower[key]] if key in lower else pd.Series([None] * len(df), dtype=object)  # noqa: E731
    images = [_resolve(v, folder) for v in col("image")]
    videos = [_resolve(v, folder) for v in col("video")]
    subjects = col("subject")
    for i, (im, vid, subj) in enumerate(zip(images, videos, subjects)):
        if im is None and vid is None:
            raise ValueError(f"{path} {where[i]}: neither image nor video given")
        if subj is None or (isinstance(subj, float) and np.isnan(subj)) or str(subj).strip() == "":
            raise ValueError(f"{path} {where[i]}: empty subject")
        if str(subj).strip().lower() in _MISSING_WORDS:  # a spreadsheet's or pandas' way of writing "missing"
            raise ValueError(f"{path} {where[i]}: subject {str(subj).strip()!r} looks like a missing value; "
                             "give every row its subject id")
    if "frame" in lower:
        raw = _numeric(df[lower["frame"]], path, where, "frame")
        bad = np.isnan(raw) | (raw != np.round(raw)) | (raw < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path} {where[i]}: frame = {df[lower['frame']].iloc[i]!r} is not an integer >= 0")
        frames = raw.astype(np.int64)
    else:
        numbers = [trailing_number(im) for im in images]
        frames = np.array(numbers if all(n is not None for n in numbers) else range(len(df)), dtype=np.int64)
    sequences = [str(s) if s is not None and not (isinstance(s, float) and np.isnan(s)) else
                 (Path(vid).stem if vid else Path(im).parent.name) for s, im, vid in zip(col("sequence"), images,
                                                                                          videos)]
    datasets = [str(d) if d is not None and not (isinstance(d, float) and np.isnan(d)) else name
                for d in col("dataset")]
    return pd.DataFrame({"dataset": datasets, "subject": [str(s).strip() for s in subjects], "sequence": sequences,
                         "image": images, "video": videos, "frame": frames})


def _files_present(base: pd.DataFrame, where, path: Path, problems: list[str]) -> np.ndarray:
    """Rows whose image or video exists (`check_files`); the others are noted."""
    keep = np.ones(len(base), dtype=bool)
    exists: dict[str, bool] = {}
    for i, p in enumerate(im or vid for im, vid in zip(base["image"], base["video"])):
        keep[i] = exists.setdefault(p, os.path.exists(p))
    if not keep.all():
        lost = [where[i] for i in np.flatnonzero(~keep)]
        problems.append(f"{path.name}: {len(lost)} row(s) whose file is missing dropped: "
                        + ", ".join(lost[:5]) + (" ..." if len(lost) > 5 else ""))
    return keep
