"""Plots of a `predict` table: what a practitioner looks at first. A video's AUs as time series (one PNG per
tracked face, one panel per AU, x = time), an image's AUs as a bar chart (one PNG per face).

The table is read back from the file `aullava predict --out` wrote (CSV, JSON or Parquet), so a plot can be redrawn
without the model, and tables written before the column renaming (bare `AU01` for the 0–1 intensity) still plot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = ("binary", "discrete", "continuous", "probability")
DEFAULT_ORDER = ("continuous", "discrete", "binary", "probability")  # when no format is asked: the richest one
PICTURE_SUFFIXES = (".png", ".svg", ".pdf")
_SUFFIX = {"binary": "_c", "discrete": "_r", "continuous": "_i", "probability": "_p"}
_RANGE = {"binary": (0, 1), "discrete": (0, 5), "continuous": (0, 1), "probability": (0, 1)}
_LABEL = {"binary": "occurrence (0/1)", "discrete": "intensity (0–5)", "continuous": "intensity (0–1)",
          "probability": "p(present)"}
_AU = r"(?:AU|AD)\d+[LR]?"  # as `AUSet.openface_columns` writes an AU id: AU01, AU02L, AD30R


def read_results(path: str | Path) -> pd.DataFrame:
    """A table `aullava predict --out` wrote; ValueError (one line, naming the file) when it cannot be read."""
    path = Path(path)
    kind = path.suffix.lower()
    try:
        if kind == ".csv":
            return pd.read_csv(path)
        if kind == ".json":
            return pd.read_json(path, orient="records")
        if kind == ".parquet":
            return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - parsers raise ValueError, OSError, ArrowInvalid, UnicodeDecodeError …
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{path}: cannot read this table ({reason})") from None
    raise ValueError(f"{path}: unknown table format {kind or '(no extension)'!r}; expected .csv, .json or .parquet")


def au_columns(columns, fmt: str) -> dict[str, str]:
    """AU id → the table's column for `fmt`, in table order. The 0–1 intensity is `AU01_i`, or bare `AU01` in
    tables written before the `_i` suffix (and in py-feat's)."""
    columns = [str(c) for c in columns]
    found = {c[:-len(_SUFFIX[fmt])]: c for c in columns if re.fullmatch(_AU + re.escape(_SUFFIX[fmt]), c)}
    if not found and fmt == "continuous":
        found = {c: c for c in columns if re.fullmatch(_AU, c)}
    return found


def formats_in(table: pd.DataFrame) -> list[str]:
    return [fmt for fmt in FORMATS if au_columns(table.columns, fmt)]


def choose_format(table: pd.DataFrame, fmt: str | None) -> str:
    """`fmt` if the table has its columns, else the first of DEFAULT_ORDER it has; ValueError when it has none."""
    present = formats_in(table)
    if not present:
        raise ValueError("no AU columns (such as AU01_c, AU01_r, AU01_i or AU01_p) in this table")
    if fmt is None:
        return next(f for f in DEFAULT_ORDER if f in present)
    if fmt not in present:
        raise ValueError(f"no {fmt} columns (*{_SUFFIX[fmt]}) in this table; it has: {', '.join(present)}")
    return fmt


def is_video_table(table: pd.DataFrame) -> bool:
    return any(c in table.columns and table[c].notna().any() for c in ("frame", "timestamp"))


@dataclass
class Subject:
    """One face to draw: an image's face, or a video's tracked face (all its frames)."""

    file: str
    face: str
    rows: pd.DataFrame

    @property
    def title(self) -> str:
        return f"{Path(self.file).name} — face {self.face}"


def subjects(table: pd.DataFrame, fmt: str) -> list[Subject]:
    """Rows with every AU value of `fmt` (failed files and frames without a face have none), grouped by face: by
    `face_id` (a video's tracked identity) when the table has it, else by `face` (the index within the file)."""
    columns = list(au_columns(table.columns, fmt).values())
    rows = table[table[columns].notna().all(axis=1)] if columns else table.iloc[0:0]
    if "face" in rows.columns:
        rows = rows[pd.to_numeric(rows["face"], errors="coerce").fillna(0) >= 0]
    key = "face_id" if "face_id" in rows.columns and rows["face_id"].notna().any() else "face"
    if "file" not in rows.columns:
        rows = rows.assign(file="table")
    if key not in rows.columns:
        rows = rows.assign(**{key: 0})
    found = []
    for (file, face), group in rows.groupby(["file", key], sort=False, dropna=False):
        label = str(int(face)) if isinstance(face, (int, float, np.number)) and float(face).is_integer() else str(face)
        found.append(Subject(str(file), label, group))
    return found


def picture_paths(items: list[Subject], fmt: str, out: Path) -> list[Path]:
    """One file per subject: `out` itself when it names a picture file (one subject), else `out/<name>_face<N>_
    <format>.png`, with -2, -3 … where two inputs share a name."""
    if out.suffix.lower() in PICTURE_SUFFIXES:
        return [out] * len(items)
    paths, used = [], set()
    for item in items:
        stem = f"{Path(item.file).stem}_face{item.face}_{fmt}"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        paths.append(out / f"{name}.png")
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def draw_time_series(item: Subject, fmt: str, path: Path) -> None:
    """One panel per AU, stacked, sharing the time axis (seconds when the table has timestamps, else frames)."""
    plt = _pyplot()
    columns = au_columns(item.rows.columns, fmt)
    xname = next((c for c in ("timestamp", "frame") if c in item.rows.columns and item.rows[c].notna().all()), None)
    rows = item.rows.sort_values(xname) if xname else item.rows
    x = rows[xname].to_numpy(float) if xname else np.arange(len(rows))
    low, high = _RANGE[fmt]
    fig, axes = plt.subplots(len(columns), 1, sharex=True, squeeze=False,
                             figsize=(10, 1.0 + 0.75 * len(columns)))
    step = fmt in ("binary", "discrete")  # whole-number answers hold until the next frame
    for ax, (au, column) in zip(axes[:, 0], columns.items()):
        y = rows[column].to_numpy(float)
        if step:
            ax.step(x, y, where="post", color="tab:blue", linewidth=1.2)
        else:
            ax.plot(x, y, color="tab:blue", linewidth=1.2, marker="." if len(x) < 60 else None)
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        ax.set_yticks([low, high])
        ax.set_ylabel(au, rotation=0, ha="right", va="center")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel({"timestamp": "time (s)", "frame": "frame"}.get(xname, "row"))
    fig.suptitle(f"{item.title} — {fmt}: {_LABEL[fmt]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_bars(item: Subject, fmt: str, path: Path) -> None:
    """The face's AU values as bars on the format's full scale, so two faces' charts compare at a glance."""
    plt = _pyplot()
    columns = au_columns(item.rows.columns, fmt)
    values = item.rows.iloc[0][list(columns.values())].to_numpy(float)
    low, high = _RANGE[fmt]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(columns) + 2), 3.6))
    x = np.arange(len(columns))
    present = fmt in ("binary", "probability")  # orange: the AUs the face shows (p >= 0.5)
    ax.bar(x, values, color=["tab:orange" if present and v >= 0.5 else "tab:blue" for v in values])
    for xi, v in zip(x, values):
        ax.text(xi, v, f"{v:g}" if fmt in ("binary", "discrete") else f"{v:.2f}", ha="center", va="bottom",
                fontsize=7)
    ax.set_xticks(x, list(columns), rotation=45 if len(columns) > 10 else 0)
    ax.set_ylim(low, high * 1.1)
    ax.set_ylabel(_LABEL[fmt])
    ax.set_title(f"{item.title} — {fmt}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_results(table: pd.DataFrame, out: str | Path, fmt: str | None = None) -> list[Path]:
    """Draws every face of `table` into `out` (a folder, or one picture file when the table has one face); returns
    the files written. ValueError for a table without AU columns or face rows, or several faces for one file."""
    fmt = choose_format(table, fmt)
    items = subjects(table, fmt)
    if not items:
        raise ValueError("no face rows to plot (every row is a failed file or a frame without a face)")
    out = Path(out)
    single = out.suffix.lower() in PICTURE_SUFFIXES
    if single and len(items) > 1:
        raise ValueError(f"{len(items)} faces in this table but one picture file given; give a folder instead")
    paths = picture_paths(items, fmt, out)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    draw = draw_time_series if is_video_table(table) else draw_bars
    for item, path in zip(items, paths):
        draw(item, fmt, path)
    return paths
