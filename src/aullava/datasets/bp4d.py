"""BP4D-Spontaneous (Zhang et al., 2014) as distributed, into the unified label table (`labels`).

Layout read (``root`` is the folder holding ``AUCoding``; pointing at ``AUCoding`` itself also works):

``AUCoding/AU_OCC/{subject}_{task}.csv`` -- occurrence, one file per sequence (``F001_T1.csv``)
    First row: a header whose first cell is ``Frame``, empty, or ``0`` (the frame column) and whose other cells
    are AU numbers as integers (``1,2,4,...``). Every following row: the frame number, then one code per AU:
    ``0`` absent, ``1`` present, ``9`` not coded (-> NaN, never a negative or 0). Only the AUs of ``au_set``
    are read (other columns -- AUs outside the protocol, the occlusion flag -- are not interpreted); any other
    code in them is an error naming file and line, as is a frame cell that is not an integer or a repeated frame.

``AUCoding/AU_INT/AU06/{subject}_{task}_AU06.csv`` -- intensity, where present (optional)
    ASSUMED layout, as in the BP4D/BP4D+ releases used by FERA 2015 loaders (e.g. rPPG-Toolbox's BP4D+ loader
    notes: ``AUCoding/AU_INT/AU{nn}/{subj}_{task}_AU{nn}.csv``, read without header, column 0 frame, column 1
    intensity): lines ``frame,intensity`` for AUs 6, 10, 12, 14, 17, intensity 0-5, ``9`` = unknown (-> NaN).
    Folders are matched by AU (``AU06``/``AU6``); a non-numeric first line is taken as a header. Frames not in
    the occurrence file are ignored (noted); other values are errors naming file and line.

Frames: ``{frames_root}/{subject}/{task}/`` + ``frame_pattern`` (default ``{frame:04d}.jpg``, BP4D's own
naming). A labelled frame missing on disk is noted in ``problems`` and dropped (``check_frames=False`` keeps it
without looking). Without ``frames_root`` no image paths are known: ``image`` is None and rows are identified by
``sequence`` + ``frame``.

Formats: occurrence as labelled; where intensity is labelled, continuous = r/5, and occurrence is filled from
intensity only where its own code was 9, with FACS's threshold (r >= 1) -- see `labels.derive_formats`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from aullava.aus.catalogue import AUSet, au_set as resolve_au_set, normalize_au_id
from aullava.datasets.labels import (LabelledFrames, comma_lines, derive_formats, listdir_set, make_frames,
                                     read_csv_rows, relative_name, to_number)

__all__ = ["read_bp4d"]

NOT_CODED = 9
FACS_OCCURRENCE_THRESHOLD = 1  # BP4D codes an AU as occurring at any intensity (A or stronger)
_SEQUENCE_RE = re.compile(r"^([A-Za-z]+\d+)_(.+)$")


def _labels_root(root: Path) -> Path:
    for candidate in (root / "AUCoding", root):
        if (candidate / "AU_OCC").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no AUCoding/AU_OCC folder (BP4D occurrence labels) under it")


def _header_aus(header: list[str], path: Path, line: int) -> dict[str, int]:
    """AU id -> column index, from the header row's AU numbers."""
    if header[0].strip().lower() not in ("", "frame", "0"):
        raise ValueError(f"{path} line {line}: first header cell is {header[0]!r}; expected 'Frame', '0' or empty "
                         "(the frame-number column)")
    columns = {}
    for i, cell in enumerate(header[1:], start=1):
        try:
            au = normalize_au_id(int(cell) if cell.isdigit() else cell)
        except ValueError:
            raise ValueError(f"{path} line {line}: header cell {i + 1} is {cell!r}, not an AU number") from None
        columns.setdefault(au, i)
    return columns


def _read_occurrence(path: Path, au_set: AUSet, rel: str, problems: list[str]):
    rows, lines = read_csv_rows(path)
    if not rows:
        raise ValueError(f"{path}: empty file (expected a header row with AU numbers)")
    columns = _header_aus(rows[0], path, lines[0])
    wanted = [(k, au.id) for k, au in enumerate(au_set)]
    absent = [au for _, au in wanted if au not in columns]
    if absent:
        problems.append(f"{rel}: no column for {', '.join(absent)}; left unlabelled")
    frames, codes, seen = [], [], {}
    for row, line in zip(rows[1:], lines[1:]):
        try:
            frame = int(row[0])
        except ValueError:
            raise ValueError(f"{path} line {line}: frame {row[0]!r} is not an integer") from None
        if frame in seen:
            raise ValueError(f"{path} line {line}: frame {frame} already labelled on line {seen[frame]}")
        seen[frame] = line
        values = np.full(len(au_set), np.nan)
        for k, au in wanted:
            if au not in columns:
                continue
            cell = row[columns[au]] if columns[au] < len(row) else ""
            try:
                code = to_number(cell)
            except ValueError:
                code = -1.0
            if code == NOT_CODED:
                continue
            if code not in (0.0, 1.0):
                raise ValueError(f"{path} line {line}: {au} code {cell!r} is not 0, 1 or 9 (not coded)")
            values[k] = code
        frames.append(frame)
        codes.append(values)
    return frames, np.array(codes).reshape(len(frames), len(au_set))


def _intensity_dirs(labels_root: Path, au_set: AUSet) -> dict[int, Path]:
    """AU-set position -> its AU_INT folder."""
    int_root = labels_root / "AU_INT"
    out = {}
    if not int_root.is_dir():
        return out
    for d in sorted(p for p in int_root.iterdir() if p.is_dir()):
        try:
            au = normalize_au_id(d.name)
        except ValueError:
            continue
        if au in au_set:
            out[au_set.index(au)] = d
    return out


def _read_intensity(path: Path, rel: str, problems: list[str]) -> dict[int, float]:
    out: dict[int, float] = {}
    for n, text, parts in comma_lines(path):
        try:
            frame, value = int(parts[0]), to_number(parts[1]) if len(parts) == 2 else None
        except ValueError:
            if not out and n == 1:  # a header line
                continue
            raise ValueError(f"{path} line {n}: {text!r} is not frame,intensity") from None
        if value is None:
            raise ValueError(f"{path} line {n}: {text!r} is not frame,intensity")
        if frame in out:
            raise ValueError(f"{path} line {n}: frame {frame} appears twice")
        if value == NOT_CODED or np.isnan(value):
            out[frame] = np.nan
        elif value in (0, 1, 2, 3, 4, 5):
            out[frame] = float(value)
        else:
            raise ValueError(f"{path} line {n}: intensity {parts[1]!r} is not an integer 0-5 or 9 (unknown)")
    return out


def read_bp4d(root: str | os.PathLike, frames_root: str | os.PathLike | None = None,
              frame_pattern: str = "{frame:04d}.jpg", au_set: str | AUSet = "bp4d", *,
              check_frames: bool = True, subjects: list[str] | None = None) -> LabelledFrames:
    """Read BP4D's occurrence (and, where present, intensity) labels; see the module docstring for the layout.

    ``subjects`` restricts to those subject ids. Raises FileNotFoundError when there is no ``AU_OCC`` folder or
    no label file in it, ValueError (naming file and line) for a label it cannot interpret.
    """
    root = Path(root)
    labels_root = _labels_root(root)
    aus = resolve_au_set(au_set)
    problems: list[str] = []
    if frames_root is None:
        problems.append("no frames_root given: image paths left empty and frames not checked")
    files = sorted((labels_root / "AU_OCC").glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"{labels_root / 'AU_OCC'}: no {{subject}}_{{task}}.csv label files")
    int_dirs = _intensity_dirs(labels_root, aus)
    r_cols, c_cols = aus.openface_columns("r"), aus.openface_columns("c")
    base = {k: [] for k in ("subject", "sequence", "image", "frame")}
    occ_blocks, int_blocks = [], []
    listing: dict[Path, set[str]] = {}
    for path in files:
        rel = relative_name(path, root)
        m = _SEQUENCE_RE.match(path.stem)
        if m is None:
            problems.append(f"{rel}: name is not {{subject}}_{{task}}.csv; file skipped")
            continue
        subject, task = m.groups()
        if subjects is not None and subject not in subjects:
            continue
        frames, occ = _read_occurrence(path, aus, rel, problems)
        intensity = np.full(occ.shape, np.nan)
        index = {f: i for i, f in enumerate(frames)}
        for k, d in int_dirs.items():
            int_path = d / f"{path.stem}_{d.name}.csv"
            if not int_path.is_file():
                problems.append(f"{relative_name(int_path, root)}: missing; {aus[k].id} intensity left unlabelled "
                                f"for {path.stem}")
                continue
            values = _read_intensity(int_path, relative_name(int_path, root), problems)
            extra = sorted(set(values) - set(index))
            if extra:
                problems.append(f"{relative_name(int_path, root)}: {len(extra)} frame(s) not in {rel} ignored "
                                f"(first: {extra[0]})")
            for f, v in values.items():
                if f in index:
                    intensity[index[f], k] = v
        keep = np.ones(len(frames), dtype=bool)
        images: list[str | None] = [None] * len(frames)
        if frames_root is not None:
            seq_dir = Path(frames_root) / subject / task
            names = listdir_set(seq_dir, listing) if check_frames else set()
            for i, f in enumerate(frames):
                name = frame_pattern.format(frame=f)
                images[i] = str(seq_dir / name)
                if check_frames and name not in names:
                    keep[i] = False
            missing = [f for f, k in zip(frames, keep) if not k]
            if missing:
                shown = ", ".join(str(f) for f in missing[:5]) + (" ..." if len(missing) > 5 else "")
                problems.append(f"{rel}: {len(missing)} labelled frame(s) missing under {seq_dir} and dropped: "
                                f"{shown}")
        base["subject"] += [subject] * int(keep.sum())
        base["sequence"] += [path.stem] * int(keep.sum())
        base["image"] += [im for im, k in zip(images, keep) if k]
        base["frame"] += [f for f, k in zip(frames, keep) if k]
        occ_blocks.append(occ[keep])
        int_blocks.append(intensity[keep])
    if not occ_blocks:
        raise FileNotFoundError(f"{labels_root / 'AU_OCC'}: no label file for the requested subjects")
    occ_all, int_all = np.concatenate(occ_blocks), np.concatenate(int_blocks)
    labels = {c: occ_all[:, k] for k, c in enumerate(c_cols)} | {c: int_all[:, k] for k, c in enumerate(r_cols)}
    base["dataset"] = ["BP4D"] * len(base["frame"])
    frames_out = make_frames("BP4D", aus, base, labels, problems)
    return derive_formats(frames_out, occurrence_threshold=FACS_OCCURRENCE_THRESHOLD).validate()
