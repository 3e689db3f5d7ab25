"""Reading other tools' prediction files into the shared table convention, and writing evaluation reports (running
the model on a dataset is `aullava.eval.run`).

Why: AU-LLaVA is compared with OpenFace and py-feat on the same ground truth, so their CSVs must become the same
kind of table as ours (:func:`aullava.inference.to_dataframe`) before :func:`aullava.eval.metrics.evaluate_tables`:
one row per image (``image``) or video frame (``frame``; ``video`` too when known), OpenFace-style AU columns
``AU01_c`` (occurrence 0/1), ``AU01_r`` (intensity 0..5), ``AU01`` (intensity 0..1), NaN = no prediction.

Tools (``tool="auto"`` picks one from the columns):

- ``aullava`` (``file`` + ``error``): ``file`` becomes ``image``; failed files already hold NaN. The 0..1
  intensity is ``AU01_i`` (tables written before the probability columns: bare ``AU01``); ``AU01_p``
  (p(present)) is kept and scored for ranking (ROC-AUC) and calibration.
- ``openface`` (``success`` / ``face_id`` / ``confidence``): header spaces are stripped (OpenFace writes
  ``" AU01_r"``); rows with ``success == 0`` get NaN predictions (OpenFace writes zeros there, which would count
  as confident "absent" answers); ``AU_c`` -> binary, ``AU_r`` -> discrete (OpenFace's real-valued 0..5).
  OpenFace numbers video frames from 1; ``frame`` is shifted to the 0-based index the label tables use.
- ``pyfeat`` (``input``, bare ``AU01`` columns): py-feat's AU outputs are occurrence *probabilities* in [0, 1]
  for most AUs. They are used as-is for the continuous format (an approximation of intensity: a probability is
  not an intensity, say so when reporting), and thresholded at 0.5 (p >= 0.5 -> 1) for the binary format. No
  0..5 format is derived. ``input`` becomes ``image`` (or, for a video, its stem becomes ``video`` and
  ``frame`` the key).

Image keys are matched to ground truth by path (see :func:`aullava.metrics.match_image_paths`): by whole path,
or by the trailing path components one side shares with the other (relative vs absolute paths, or bare file
names when those are unique in the ground truth).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, binary_from_continuous, binary_from_discrete
from aullava.eval.metrics import FORMAT_METRICS, resolve_au_set

__all__ = ["PredictionTable", "read_predictions", "normalize_predictions", "one_face_per_key", "write_report",
           "report_markdown"]

TOOLS = ("aullava", "openface", "pyfeat")
_AU_COL_RE = re.compile(r"^(AU|AD)0*(\d+)([LR]?)(_(?:c|r|i|p|r_mean|i_mean))?$", re.IGNORECASE)
_IMAGE_COLS = ("image", "file", "input")


class PredictionTable(NamedTuple):
    """A prediction table in the shared convention, the formats it provides, the tool it came from and the key
    columns to join it on (pass ``keys`` and ``formats`` on to :func:`aullava.eval.metrics.evaluate_tables`)."""

    table: pd.DataFrame
    formats: tuple[str, ...]
    tool: str
    keys: tuple[str, ...]


def _canonical_column(name: str) -> str:
    """``"AU1_R"``, ``"au01_r"`` -> ``"AU01_r"``, as AUSet.openface_columns writes them; other names unchanged."""
    m = _AU_COL_RE.match(name)
    if m is None:
        return name
    prefix, number, side, tail = m.groups()
    return f"{prefix.upper()}{int(number):02d}{side.upper()}{(tail or '').lower()}"


def _au_columns(df: pd.DataFrame, suffix: str) -> list[str]:
    out = []
    for c in df.columns:
        m = _AU_COL_RE.match(c)
        if m is not None and (m.group(4) or "")[1:] == suffix:
            out.append(c)
    return out


def _detect_tool(columns: Sequence[str]) -> str:
    cols = set(columns)
    if "file" in cols and "error" in cols:  # first: aullava's tables have success/face_id/confidence too
        return "aullava"
    if "success" in cols or {"face_id", "confidence"} <= cols:
        return "openface"
    if "input" in cols or "FaceScore" in cols:
        return "pyfeat"
    return "aullava"  # a table already in the shared convention


def one_face_per_key(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Keep one row per key: the largest face (dataset images show one subject, usually the largest face),
    else the most confident one, else the first. Warns with the number of rows dropped."""
    keys = list(keys)
    if not df.duplicated(keys).any():
        return df
    score = pd.Series(0.0, index=df.index)
    if {"x0", "y0", "x1", "y1"} <= set(df.columns):
        score = (df["x1"] - df["x0"]) * (df["y1"] - df["y0"])
    elif {"FaceRectWidth", "FaceRectHeight"} <= set(df.columns):
        score = df["FaceRectWidth"] * df["FaceRectHeight"]
    elif "confidence" in df.columns or "FaceScore" in df.columns:
        score = df["confidence" if "confidence" in df.columns else "FaceScore"]
    order = pd.to_numeric(score, errors="coerce").fillna(-np.inf).sort_values(ascending=False, kind="stable").index
    kept = df.loc[order].drop_duplicates(keys, keep="first").sort_index()
    warnings.warn(f"{len(df) - len(kept)} extra face row(s) dropped: one face kept per {keys}", stacklevel=2)
    return kept


def _check_prediction_values(df: pd.DataFrame, binary, discrete, bare, source: str) -> None:
    """A prediction that is not a number or lies outside its format's range is never scored: an error naming the
    file, the row (1-based, as a spreadsheet counts data rows) and the column."""
    for columns, (low, high) in ((binary, (0, 1)), (discrete, (0, 5)), (bare, (0, 1))):
        for column in columns:
            raw = df[column]
            values = pd.to_numeric(raw, errors="coerce")
            text = raw.astype(str).str.strip()
            not_number = values.isna() & raw.notna() & (text != "") & (text.str.lower() != "nan")
            outside = values.notna() & ((values < low) | (values > high))
            for bad, why in ((not_number, "is not a number"), (outside, f"is outside {low}..{high}")):
                if bad.any():
                    i = int(np.flatnonzero(bad.to_numpy())[0])
                    value = raw.iloc[i]  # a string quoted, a number as written (not numpy's repr)
                    shown = repr(value) if isinstance(value, str) else str(value)
                    raise ValueError(f"{source} row {i + 1}: {column} = {shown} {why} "
                                     f"({int(bad.sum())} such value(s) in this column)")


def normalize_predictions(df: pd.DataFrame, tool: str = "auto", *, video: str | None = None,
                          source: str = "predictions") -> PredictionTable:
    """Bring an in-memory prediction table (ours, OpenFace's or py-feat's) into the shared convention.

    ``video`` names the video of an OpenFace/py-feat per-video table (the ground truth's ``video`` path, which is
    matched by path like ``image``); the keys are then ``("video", "frame")``, else ``("frame",)`` (evaluate one
    video against its own ground-truth rows).
    """
    df = df.rename(columns=lambda c: _canonical_column(str(c).strip())).copy()
    tool = _detect_tool(df.columns) if tool == "auto" else tool.lower().replace("-", "").replace("_", "")
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; expected auto, {', '.join(TOOLS)}")
    intensity = {c: c[:-2] for c in _au_columns(df, "i") if c[:-2] not in df.columns}
    df = df.rename(columns=intensity)  # `AU01_i` (0..1) → the shared convention's bare `AU01`
    binary, discrete, bare = _au_columns(df, "c"), _au_columns(df, "r"), _au_columns(df, "")
    probabilities = _au_columns(df, "p")

    au_cols = binary + discrete + bare + probabilities
    _check_prediction_values(df, binary, discrete, bare + probabilities, source)
    df[au_cols] = df[au_cols].apply(pd.to_numeric, errors="coerce").astype(float)
    if tool == "openface" and "success" in df.columns:
        failed = pd.to_numeric(df["success"], errors="coerce").fillna(0).to_numpy() == 0
        df.loc[failed, au_cols] = np.nan
    if tool == "openface" and "frame" in df.columns:  # OpenFace counts frames from 1; our tables index from 0
        df["frame"] = pd.to_numeric(df["frame"], errors="coerce") - 1
    if tool == "openface" and "face_id" in df.columns and "face" not in df.columns:
        df = df.rename(columns={"face_id": "face"})
    if tool == "pyfeat":
        for c in bare:
            p = pd.to_numeric(df[c], errors="coerce")
            df[c + "_c"] = np.where(p.notna(), (p >= 0.5).astype(float), np.nan)
        binary = [c + "_c" for c in bare]

    if tool == "aullava" and "frame" in df.columns and pd.to_numeric(df["frame"], errors="coerce").notna().any():
        df["video"] = df["file"] if video is None else video  # a video's table: (video, frame) rows
        df = df.drop(columns=["file"])
    image_col = next((c for c in _IMAGE_COLS if c in df.columns), None)
    if image_col is not None and "frame" in df.columns and tool == "pyfeat" \
            and df.groupby(image_col)["frame"].nunique().max() > 1:  # py-feat on a video: input = the video
        df["video"] = df[image_col].map(lambda s: Path(str(s)).stem) if video is None else video
        keys: tuple[str, ...] = ("video", "frame")
    elif image_col is not None and not (tool == "openface" and "frame" in df.columns):
        if image_col != "image":
            df = df.drop(columns=[c for c in ("image",) if c in df.columns]).rename(columns={image_col: "image"})
        keys = ("image",)
    elif "frame" in df.columns:
        if video is not None:
            df["video"] = video
        keys = ("video", "frame") if "video" in df.columns else ("frame",)
    else:
        raise ValueError(f"no key column in the {tool} table: expected one of image/file/input or frame; "
                         f"it has {list(df.columns)[:12]}")
    df = one_face_per_key(df, keys)
    formats = tuple(f for f, cs in (("binary", binary), ("discrete", discrete), ("continuous", bare)) if cs)
    if not formats:
        raise ValueError(f"no AU columns (AU01_c / AU01_r / AU01_i or AU01) in the {tool} table")
    return PredictionTable(df.reset_index(drop=True), formats, tool, keys)


def read_predictions(path: str | Path, tool: str = "auto", *, video: str | None = None) -> PredictionTable:
    """Read a predictions CSV of aullava, OpenFace or py-feat (see the module docstring for each tool's rules).

    For an OpenFace per-video CSV, ``video`` (e.g. the CSV's stem) adds a ``video`` key column.
    """
    df = pd.read_csv(path, skipinitialspace=True)
    return normalize_predictions(df, tool, video=video, source=str(path))


# ------------------------------------------------------------------------------------------ reports

_FORMAT_TITLE = {"binary": "Occurrence (binary 0/1)", "discrete": "Intensity 0–5 (discrete)",
                 "continuous": "Intensity 0–1 (continuous)"}
_METRIC_LABEL = {"f1": "F1 (%)", "accuracy": "Accuracy (%)", "mae": "MAE", "icc": "ICC(3,1)", "pcc": "PCC",
                 "auc": "ROC-AUC"}
_PERCENT = {"f1", "accuracy"}  # shown x100 with one decimal, as in the paper


def _fmt(value: Any, metric: str, fmt: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if metric in _PERCENT:
        return f"{100 * value:.1f}"
    return f"{value:.3f}" if fmt == "continuous" else f"{value:.2f}"


def _jsonable(obj: Any) -> Any:
    """NaN is not JSON: write null instead; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def report_markdown(results: dict[str, dict[str, Any]], title: str, au_ids,
                    baseline: tuple[str, dict[str, dict[str, Any]]] | None = None,
                    agreement: dict[str, Any] | None = None) -> str:
    """The Markdown report: one table per format in the paper's layout (metrics as rows, AUs as columns, Avg
    last), then the row counts and the AUs left out of an average. `baseline` = (name, its results on the same
    rows): its metrics become extra rows of the same tables. `agreement`: `format_agreement` of the predictions."""
    ids = list(resolve_au_set(au_ids).ids)
    lines = [f"# {title}", ""]
    for fmt, res in results.items():
        lines += [f"## {_FORMAT_TITLE.get(fmt, fmt)}", ""]
        lines.append("| Metric | " + " | ".join(ids) + " | **Avg** |")
        lines.append("|---|" + "---:|" * (len(ids) + 1))
        rows = [("", res)] + ([(f" — {baseline[0]}", baseline[1][fmt])] if baseline and fmt in baseline[1] else [])
        for m in _metrics(res, fmt):
            for suffix, r in rows:
                cells = [_fmt(r["per_au"].get(a, {}).get(m), m, fmt) for a in ids]
                lines.append(f"| {_METRIC_LABEL[m]}{suffix} | " + " | ".join(cells)
                             + f" | {_fmt(r['average'].get(m), m, fmt)} |")
        lines += ["", f"Rows evaluated: {res.get('n', '?')} of {res.get('n_truth', '?')} ground-truth rows; "
                      f"{res.get('missing_predictions', 0)} labelled ground-truth row(s) had no prediction."]
        for m, left_out in res.get("excluded", {}).items():
            lines.append(f"{_METRIC_LABEL[m]}: {', '.join(left_out)} left out of the average (no valid value).")
        if "auc" in res["average"]:
            lines.append(f"ROC-AUC ranks faces by {res['auc_from']}"
                         + (f"; the baseline's by {baseline[1][fmt]['auc_from']}." if baseline and
                            "auc_from" in baseline[1].get(fmt, {}) else "."))
        if "calibration" in res:
            lines.append(f"Calibration of p(present), pooled over (face, AU) pairs: expected calibration error "
                         f"{res['calibration']['ece']:.3f} (10 bins; reliability diagram in reliability_binary.png).")
        lines.append("")
    if agreement:
        lines += ["## Agreement between formats", "",
                  "Share of (face, AU) answers whose formats agree on presence (binary 1 = intensity ≥ 1 = "
                  "continuous ≥ 0.10), over the answers the model gave in both formats:", ""]
        lines += [f"- {pair}: {100 * value:.1f}% of {agreement['n'][pair]}"
                  for pair, value in agreement["share"].items()]
        lines.append("")
    return "\n".join(lines)


def format_agreement(table: pd.DataFrame, au_ids) -> dict[str, Any]:
    """How often one model's answers in different formats agree on presence, per pair of formats (and all three):
    binary 1 ⇔ discrete ≥ 1 ⇔ continuous ≥ 0.10, the rules the training targets follow (`answer_format`)."""
    aus = resolve_au_set(au_ids)
    to_presence = {AnswerFormat.BINARY: lambda v: v >= 0.5, AnswerFormat.DISCRETE: binary_from_discrete,
                   AnswerFormat.CONTINUOUS: binary_from_continuous}
    presence = {}
    for fmt in ALL_FORMATS:
        cols = aus.openface_columns(fmt.column_suffix)
        if all(c in table.columns for c in cols):
            values = table[cols].to_numpy(dtype=float)
            presence[fmt.value] = np.where(np.isnan(values), np.nan, to_presence[fmt](values))
    share, counts = {}, {}
    names = list(presence)
    groups = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]] + ([tuple(names)] if len(names) > 2 else [])
    for group in groups:
        stack = np.stack([presence[g] for g in group])
        valid = ~np.isnan(stack).any(0)
        agree = (stack == stack[0]).all(0) & valid
        key = " = ".join(group)
        counts[key] = int(valid.sum())
        share[key] = float(agree.sum() / valid.sum()) if valid.any() else float("nan")
    return {"share": share, "n": counts}


def _bar_chart(res: dict[str, Any], fmt: str, ids: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    metrics = _metrics(res, fmt)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 0.6 * len(ids) + 2), 2.8 * len(metrics)),
                             squeeze=False)
    x = np.arange(len(ids))
    for ax, m in zip(axes[:, 0], metrics):
        scale = 100.0 if m in _PERCENT else 1.0
        vals = np.array([res["per_au"].get(a, {}).get(m, np.nan) for a in ids], dtype=float) * scale
        ax.bar(x, np.nan_to_num(vals), color="tab:blue")
        for xi, v in zip(x, vals):
            if not np.isfinite(v):
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8)
        avg = res["average"][m] * scale
        if np.isfinite(avg):  # the average in the subplot title, so no legend can hide a bar
            ax.axhline(avg, color="tab:red", linestyle="--")
        ax.set_title(f"{_METRIC_LABEL[m]} per AU; dashed line = Avg ({_fmt(res['average'][m], m, fmt)})",
                     fontsize=9)
        ax.set_xticks(x, ids, rotation=45 if len(ids) > 10 else 0)
        ax.set_ylabel(_METRIC_LABEL[m])
        ax.set_xlabel("Action Unit")
    fig.suptitle(f"{title} — {_FORMAT_TITLE.get(fmt, fmt)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: dict[str, dict[str, Any]], out_dir: str | Path, title: str, au_ids,
                 baseline: tuple[str, dict[str, dict[str, Any]]] | None = None,
                 agreement: dict[str, Any] | None = None) -> str:
    """Write ``metrics.json`` (NaN as null), ``report.md`` and one ``per_au_<format>.png`` per format into
    ``out_dir`` (created); return the Markdown text. `baseline`, `agreement`: see `report_markdown`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"title": title, "results": results}
    if baseline:
        payload["baseline"] = {"name": baseline[0], "results": baseline[1]}
    if agreement:
        payload["format_agreement"] = agreement
    (out / "metrics.json").write_text(json.dumps(_jsonable(payload), indent=2), encoding="utf-8")
    text = report_markdown(results, title, au_ids, baseline, agreement)
    (out / "report.md").write_text(text, encoding="utf-8")
    ids = list(resolve_au_set(au_ids).ids)
    for fmt, res in results.items():
        _bar_chart(res, fmt, ids, title, out / f"per_au_{fmt}.png")
    if "calibration" in results.get("binary", {}):
        from aullava.eval.probabilities import plot_reliability

        plot_reliability({"model": results["binary"]["calibration"]}, out / "reliability_binary.png",
                         f"{title}\nreliability of p(present)")
    return text


def _metrics(res: dict[str, Any], fmt: str) -> tuple[str, ...]:
    """A format's metrics, plus the ROC-AUC when the predictions had scores to rank by."""
    return FORMAT_METRICS[fmt] + (("auc",) if "auc" in res.get("average", {}) else ())


def as_prediction_table(table: pd.DataFrame) -> pd.DataFrame:
    """`aullava.eval.run.predict_dataset`'s table under `predict`'s column names (the 0..1 intensity as `AU01_i`), for writing: the
    0/1 and 0–5 answers as whole numbers (`1`, not `1.0`), the 0–1 intensities to two decimals, as predict writes."""
    renames = {c: c + "_i" for c in _au_columns(table, "")}
    out = table.rename(columns=renames)
    for suffix in ("c", "r"):
        for column in _au_columns(out, suffix):
            out[column] = pd.to_numeric(out[column]).round().astype("Int64")
    for column in renames.values():
        out[column] = pd.to_numeric(out[column]).round(2)
    return out


def _has_video(table: pd.DataFrame) -> bool:
    return "video" in table.columns and table["video"].notna().any()


def truth_keys(table: pd.DataFrame) -> list[str]:
    return ["video", "frame"] if _has_video(table) else ["image"]


def sample_frames(frames, limit: int | None, seed: int = 0):
    """At most `limit` rows of a `LabelledFrames`, drawn without replacement by a seeded RNG (evaluating an LLM
    on a CPU is slow: a fixed random subset keeps runs comparable)."""
    if limit is None or len(frames.table) <= limit:
        return frames
    keep = np.zeros(len(frames.table), dtype=bool)
    keep[np.random.default_rng(seed).choice(len(frames.table), size=limit, replace=False)] = True
    return frames.subset(keep)
