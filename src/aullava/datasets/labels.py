"""The unified label table every dataset reader returns, and the rules that fill in derivable answer formats.

AU-LLaVA trains one model on several datasets at once and asks it for three answer formats (binary occurrence,
0-5 intensity, 0-1 intensity). Datasets label different AUs in different formats, so every reader converts its
dataset *as distributed* into one table, and everything downstream (splits, samples, evaluation) reads only that.

The table (``LabelledFrames.table``, a ``pandas.DataFrame``), one row per labelled frame:

=============  ======================================================================================
``dataset``    str, the dataset's name (``"BP4D"``, ``"DISFA"``, ``"FEAFA"``, or a manifest's name)
``subject``    str, the person; subject-exclusive splits group by (dataset, subject)
``sequence``   str, the recording the frame belongs to (BP4D ``F001_T1``, DISFA ``SN001_left``, a FEAFA
               video); with ``frame`` it identifies a row even when no image path is known
``image``      str path of the frame image, or None (video datasets)
``video``      str path of the video, or None (image datasets)
``frame``      int: the 0-based index into ``video`` for video datasets; the dataset's own frame number
               for image datasets
``AU01_c`` ..  occurrence, 0 or 1            (``AUSet.openface_columns("c")``)
``AU01_r`` ..  FACS intensity, integer 0-5  (``AUSet.openface_columns("r")``; 0 = absent, 1..5 = A..E)
``AU01`` ..    continuous intensity in [0, 1] (``AUSet.openface_columns("")``)
=============  ======================================================================================

AU columns are float; **NaN means "not labelled"** (a dataset's unlabelled AU, BP4D's code 9, a frame an AU file
lacks). NaN is never turned into 0: a training sample masks such AUs out instead of teaching "absent".

``derive_formats`` fills the formats a dataset does not label from the ones it does (see its docstring for the
exact rules); every reader applies it before returning, so a table says both what was labelled and what follows.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, binary_from_continuous, discrete_from_continuous
from aullava.aus.catalogue import AUSet, normalize_au_id

__all__ = [
    "BASE_COLUMNS",
    "DISFA_OCCURRENCE_THRESHOLD",
    "LabelledFrames",
    "au_columns",
    "au_set_from_names",
    "derive_formats",
    "make_frames",
    "merge",
    "read_csv_rows",
]

BASE_COLUMNS = ("dataset", "subject", "sequence", "image", "video", "frame")

DISFA_OCCURRENCE_THRESHOLD = 2
"""DISFA's standard detection protocol: an AU occurs when its 0-5 intensity is >= 2 (B or stronger)."""


def au_columns(au_set: AUSet, fmt: AnswerFormat | str) -> list[str]:
    """The table's column names for one answer format, in AU-set order."""
    return au_set.openface_columns(AnswerFormat.parse(fmt).column_suffix)


def _all_au_columns(au_set: AUSet) -> list[str]:
    return [c for fmt in ALL_FORMATS for c in au_columns(au_set, fmt)]


@dataclass
class LabelledFrames:
    """One dataset (or a merge of several) in the unified table; see the module docstring for the columns.

    ``problems`` lists the quirks a reader handled instead of failing (a skipped garbage line, a frame missing on
    disk, a video shorter than its labels), each naming its file and line, so a user can audit what was dropped.
    """

    name: str
    au_set: AUSet
    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def values(self, fmt: AnswerFormat | str) -> np.ndarray:
        """N×K float array of one format's labels in AU-set order (NaN = not labelled)."""
        return self.table[au_columns(self.au_set, fmt)].to_numpy(dtype=np.float64)

    def labelled(self, fmt: AnswerFormat | str) -> np.ndarray:
        """N×K bool mask: True where the format has a label (what training may use)."""
        return ~np.isnan(self.values(fmt))

    def subset(self, rows: np.ndarray | pd.Series) -> LabelledFrames:
        """The frames selected by a boolean mask, same AU set and problems, fresh index."""
        return replace(self, table=self.table[np.asarray(rows, dtype=bool)].reset_index(drop=True),
                       problems=list(self.problems))

    def validate(self) -> LabelledFrames:
        """Raise ValueError if the table breaks the schema (columns, types, value ranges); return self."""
        expected = list(BASE_COLUMNS) + _all_au_columns(self.au_set)
        missing = [c for c in expected if c not in self.table.columns]
        if missing:
            raise ValueError(f"{self.name}: label table lacks columns {missing}")
        for fmt, (low, high, integral) in {AnswerFormat.BINARY: (0, 1, True), AnswerFormat.DISCRETE: (0, 5, True),
                                           AnswerFormat.CONTINUOUS: (0, 1, False)}.items():
            for col in au_columns(self.au_set, fmt):
                v = self.table[col].to_numpy(dtype=np.float64)
                known = v[~np.isnan(v)]
                bad = (known < low) | (known > high) | (integral & (known != np.round(known)))
                if bad.any():
                    raise ValueError(f"{self.name}: column {col} holds {known[bad][0]!r}, outside the "
                                     f"{fmt.value} range {low}..{high}")
        return self


def make_frames(name: str, au_set: AUSet, base: Mapping[str, Sequence] | pd.DataFrame,
                labels: Mapping[str, Sequence[float] | np.ndarray], problems: list[str] | None = None
                ) -> LabelledFrames:
    """Assemble a LabelledFrames: ``base`` holds the base columns (``image``/``video`` may be absent: None),
    ``labels`` any AU columns; AU columns not given are NaN. Columns come out in the documented order."""
    base = pd.DataFrame(base)
    n = len(base)
    data: dict[str, object] = {}
    for col in BASE_COLUMNS:
        if col in base.columns:
            data[col] = base[col].to_numpy()
        elif col in ("image", "video"):
            data[col] = np.full(n, None, dtype=object)
        else:
            raise ValueError(f"{name}: no {col!r} column")
    for col in _all_au_columns(au_set):
        data[col] = np.asarray(labels[col], dtype=np.float64) if col in labels else np.full(n, np.nan)
    table = pd.DataFrame(data)
    table["frame"] = table["frame"].astype(np.int64)
    for col in ("dataset", "subject", "sequence"):
        table[col] = table[col].astype(str)
    for col in ("image", "video"):  # keep None (not NaN) for "no path"
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    return LabelledFrames(name=name, au_set=au_set, table=table, problems=list(problems or []))


# ------------------------------------------------------------------------------------------- derive_formats


def derive_formats(frames: LabelledFrames, occurrence_threshold: float = DISFA_OCCURRENCE_THRESHOLD,
                   continuous_threshold: float = 0.1) -> LabelledFrames:
    """A copy with every format that follows from the labelled ones filled in; labelled cells are never changed.

    Rules, per AU and frame, each applied only where the target cell is NaN and computed from the *labelled*
    values (never from another derived one):

    - from 0-5 intensity ``r``: continuous = ``r / 5``; occurrence = ``r >= occurrence_threshold``. The default 2
      is DISFA's standard protocol; FACS itself calls any intensity >= 1 (A) present, which is what BP4D's reader
      passes. So with threshold 2 a frame of intensity 1 is "absent" in binary but 0.2 in continuous: the
      dataset's protocol, stated, not a bug.
    - from continuous ``x`` in [0, 1]: ``r`` = ``answer_format.discrete_from_continuous(x)`` (round 5x half up,
      0 below ``continuous_threshold``), occurrence = ``answer_format.binary_from_continuous(x)``: the same rules
      the model's answers are converted with.
    - occurrence only: stays occurrence only (intensity cannot be recovered).

    NaN stays NaN: an AU a frame does not label never becomes 0 (or anything else).
    """
    table = frames.table.copy()
    for c_col, r_col, x_col in zip(*(au_columns(frames.au_set, f) for f in ALL_FORMATS)):
        c, r, x = (table[k].to_numpy(dtype=np.float64) for k in (c_col, r_col, x_col))
        has_r, has_x = ~np.isnan(r), ~np.isnan(x)
        new_c, new_r, new_x = c.copy(), r.copy(), x.copy()
        fill = np.isnan(c) & has_r
        new_c[fill] = (r[fill] >= occurrence_threshold).astype(np.float64)
        fill = np.isnan(c) & ~has_r & has_x
        new_c[fill] = binary_from_continuous(x[fill], continuous_threshold)
        fill = ~has_r & has_x
        new_r[fill] = discrete_from_continuous(x[fill], continuous_threshold)
        fill = ~has_x & has_r
        new_x[fill] = r[fill] / 5.0
        table[c_col], table[r_col], table[x_col] = new_c, new_r, new_x
    return replace(frames, table=table, problems=list(frames.problems))


# --------------------------------------------------------------------------------------------------- merge


def merge(frames_list: Iterable[LabelledFrames], name: str | None = None) -> LabelledFrames:
    """One table over the union of the AU sets (first appearance order; an AU's first definition wins).

    This is the unified AU space of mixed-dataset training: each row keeps its ``dataset``, and the AUs its
    dataset does not label are NaN (masked out), never 0.
    """
    parts = list(frames_list)
    if not parts:
        raise ValueError("merge() needs at least one LabelledFrames")
    aus, seen = [], set()
    for part in parts:
        for au in part.au_set:
            if au.id not in seen:
                seen.add(au.id)
                aus.append(au)
    set_names = list(dict.fromkeys(p.au_set.name for p in parts))
    union = parts[0].au_set if len(parts) == 1 else AUSet(
        name="+".join(set_names), aus=tuple(aus),
        description="union of " + ", ".join(set_names) + " (AUs a dataset does not label are NaN)")
    columns = list(BASE_COLUMNS) + _all_au_columns(union)
    tables = [p.table.reindex(columns=columns) for p in parts]
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0].copy()
    for col in _all_au_columns(union):
        table[col] = table[col].astype(np.float64)
    table["frame"] = table["frame"].astype(np.int64)
    problems = [f"[{p.name}] {msg}" for p in parts for msg in p.problems] if len(parts) > 1 else \
        list(parts[0].problems)
    return LabelledFrames(name=name or "+".join(dict.fromkeys(p.name for p in parts)), au_set=union,
                          table=table, problems=problems)


# ------------------------------------------------------------------------------------------ reading helpers


def read_csv_rows(path: Path) -> tuple[list[list[str]], list[int]]:
    """All non-blank rows of a CSV file (cells stripped) with the 1-based line number each starts on, so an
    error can name the exact line even when blank lines are skipped."""
    rows, lines = [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        start = 1
        for row in reader:
            cells = [c.strip() for c in row]
            if any(cells):
                rows.append(cells)
                lines.append(start)
            start = reader.line_num + 1
    return rows, lines


def comma_lines(path: Path, errors: str = "strict"):
    """(line number, stripped text, comma-separated fields) of every non-empty line: the per-frame label files of
    BP4D and DISFA (`frame,value` lines) are read through it."""
    with open(path, encoding="utf-8-sig", errors=errors) as fh:
        for n, raw in enumerate(fh, start=1):
            text = raw.strip()
            if text:
                yield n, text, [p.strip() for p in text.split(",")]


def to_number(text: str) -> float:
    """A cell as float; empty / "nan" / "NA" -> NaN; anything else non-numeric raises ValueError."""
    t = text.strip()
    if t == "" or t.lower() in ("nan", "na", "n/a"):
        return math.nan
    value = float(t)  # ValueError for garbage
    if math.isinf(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


_FREE_ID_BAD = re.compile(r"[^A-Za-z0-9_+\-]")


def au_set_from_names(names: Sequence[str], *, where: str, set_name: str) -> tuple[AUSet, list[str]]:
    """An AUSet from a label file's header names, plus each name's canonical id (same order).

    A name that spells an AU (``AU01``, ``au2L``, ``AD19``) maps to the catalogue's AU. A spelt AU the catalogue
    lacks (``AU61``), or a free name (``Eyes Left``), is defined inline: its id is the canonical id, or the name
    with characters other than letters, digits, ``_+-`` replaced by ``_``; its prompt name is the header name and
    its definition says it came from this header, so the prompt never invents a description.
    """
    from aullava.aus.catalogue import lookup_au  # the catalogue's own lookup rules (AU/AD prefix, one-sided variants)

    items: list[object] = []
    ids: list[str] = []
    for raw in names:
        try:
            canon = normalize_au_id(raw)
        except ValueError:
            canon = _FREE_ID_BAD.sub("_", raw.strip())
            if not canon or not canon[0].isalpha():
                canon = "X_" + canon
            found = None
        else:
            found = lookup_au(canon)
        if found is not None:
            items.append(found.id)
            canon = found.id
        else:
            items.append({"id": canon, "name": raw.strip() or canon,
                          "definition": f"the action labelled {raw.strip()!r} in {where} (not in the AU catalogue)"})
        if canon in ids:
            raise ValueError(f"{where}: header names {raw!r} and {names[ids.index(canon)]!r} are the same AU "
                             f"{canon}")
        ids.append(canon)
    return AUSet.from_dict({"aus": items}, name=set_name), ids


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (short problem notes), else the full path."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


_TRAILING_DIGITS = re.compile(r"(\d+)$")


def trailing_number(name: str) -> int | None:
    """The number at the end of a file stem (``"frame_0012"`` -> 12), or None."""
    m = _TRAILING_DIGITS.search(Path(name).stem)
    return int(m.group(1)) if m else None


def listdir_set(directory: Path, cache: dict[Path, set[str]]) -> set[str]:
    """Names in a directory (cached: checking 100k frames one ``stat`` at a time is slow on network disks)."""
    if directory not in cache:
        try:
            cache[directory] = set(os.listdir(directory))
        except OSError:
            cache[directory] = set()
    return cache[directory]
