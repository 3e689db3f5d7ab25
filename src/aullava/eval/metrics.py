"""AU recognition metrics as the AU literature reports them, and one join of a ground-truth and a prediction table.

Why our own code instead of scikit-learn/scipy: the metrics are a few lines of numpy each, the package does not
depend on either library, and we need the same NaN and edge-case rules for every metric (the tests check the
values against scikit-learn/scipy to 1e-9).

Metrics per answer format (the paper's tables):

    binary       F1 of the positive class ("f1"), accuracy ("accuracy")         -- occurrence 0/1
    discrete     MAE ("mae"), ICC(3,1) ("icc"), Pearson r ("pcc")              -- intensity 0..5
    continuous   MAE ("mae"), Pearson r ("pcc")                                -- intensity 0..1

Conventions (every function follows them):

- NaN = not labelled / not predicted. Each AU uses only the rows where *both* truth and prediction are finite.
- An AU with no such row gets NaN for every metric; so does a metric that is undefined on its rows (Pearson r or
  ICC with fewer than 2 rows or a zero variance). NaN values are left out of the average over AUs, and the
  result lists them under ``"excluded"`` so a report can say so.
- F1 = 0 when there is no true positive, including an AU with no positive label and no positive prediction.
  This is scikit-learn's ``f1_score(..., zero_division=0)`` and the usual practice in AU detection papers (an
  all-negative AU then counts 0 in the average F1 rather than being skipped).
- ICC is ICC(3,1) of Shrout & Fleiss (1979): two-way mixed model, consistency, single rater, with prediction
  and ground truth as the two raters -- the ICC of the DISFA/BP4D intensity literature.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat
from aullava.aus.catalogue import ActionUnit, AUSet, action_unit, normalize_au_id

__all__ = [
    "FORMAT_METRICS",
    "f1_score",
    "accuracy",
    "mae",
    "pcc",
    "icc",
    "icc_3_1",
    "au_metrics",
    "format_metrics",
    "evaluate_tables",
    "resolve_au_set",
    "match_image_paths",
]

FORMAT_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("f1", "accuracy"),
    "discrete": ("mae", "icc", "pcc"),
    "continuous": ("mae", "pcc"),
}


# ------------------------------------------------------------------------------------------ metrics


def finite_pairs(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as float arrays, restricted to the rows where both are finite (the NaN-masking rule every metric and
    probability score of `aullava.eval` follows)."""
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in length: {t.size} vs {p.size}")
    keep = np.isfinite(t) & np.isfinite(p)
    return t[keep], p[keep]


def _binary(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bad = np.setdiff1d(np.unique(np.concatenate([t, p])), [0.0, 1.0])
    if bad.size:
        raise ValueError(f"occurrence values must be 0 or 1, got {bad[:5].tolist()}")
    return t == 1, p == 1


def f1_score(y_true, y_pred) -> float:
    """F1 of the positive class (AU present). 0 when there is no true positive; NaN when no row is usable."""
    t, p = finite_pairs(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    t, p = _binary(t, p)
    tp = float(np.sum(t & p))
    if tp == 0:
        return 0.0
    return 2 * tp / (2 * tp + float(np.sum(~t & p)) + float(np.sum(t & ~p)))


def accuracy(y_true, y_pred) -> float:
    """Share of rows where the occurrence is right; NaN when no row is usable."""
    t, p = finite_pairs(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    t, p = _binary(t, p)
    return float(np.mean(t == p))


def mae(y_true, y_pred) -> float:
    """Mean absolute error; NaN when no row is usable."""
    t, p = finite_pairs(y_true, y_pred)
    return float(np.mean(np.abs(t - p))) if t.size else float("nan")


def pcc(y_true, y_pred) -> float:
    """Pearson correlation; NaN with fewer than 2 rows or when either side is constant (r is undefined)."""
    t, p = finite_pairs(y_true, y_pred)
    if t.size < 2:
        return float("nan")
    dt, dp = t - t.mean(), p - p.mean()
    den = np.sqrt(np.sum(dt * dt) * np.sum(dp * dp))
    if den == 0 or not np.isfinite(den):
        return float("nan")
    return float(np.clip(np.sum(dt * dp) / den, -1.0, 1.0))


def icc_3_1(ratings) -> float:
    """ICC(3,1) of an n-targets x k-raters matrix (Shrout & Fleiss 1979): (BMS - EMS) / (BMS + (k-1) EMS).

    Rows with any NaN are dropped. NaN with fewer than 2 complete rows, fewer than 2 raters, or a zero
    denominator (no variance at all).
    """
    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"ratings must be a 2-D targets x raters matrix, got shape {y.shape}")
    y = y[np.all(np.isfinite(y), axis=1)]
    n, k = y.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = y.mean()
    ss_rows = k * np.sum((y.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((y.mean(axis=0) - grand) ** 2)
    ss_err = np.sum((y - grand) ** 2) - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    den = bms + (k - 1) * ems
    if den <= 0 or not np.isfinite(den):
        return float("nan")
    return float((bms - ems) / den)


def icc(y_true, y_pred) -> float:
    """ICC(3,1) between ground truth and prediction (the two "raters"), NaN-masked like the other metrics."""
    t, p = finite_pairs(y_true, y_pred)
    return icc_3_1(np.column_stack([t, p]))


_METRIC_FUNCS = {"f1": f1_score, "accuracy": accuracy, "mae": mae, "icc": icc, "pcc": pcc}


def format_metrics(fmt: str | AnswerFormat) -> tuple[str, ...]:
    """The metric names reported for an answer format, e.g. ``("f1", "accuracy")`` for binary."""
    return FORMAT_METRICS[AnswerFormat.parse(fmt).value]


def au_metrics(truth: dict[str, Any], predictions: dict[str, Any], fmt: str | AnswerFormat) -> dict[str, Any]:
    """Per-AU metrics and their averages for one format, from ``{au: values}`` mappings in the same row order.

    Returns ``{"per_au": {au: {metric: value, "n": rows}}, "average": {metric: value},
    "excluded": {metric: [au, ...]}}`` -- ``excluded`` lists the AUs whose value is NaN and thus not averaged.
    """
    names = format_metrics(fmt)
    per_au: dict[str, dict[str, float]] = {}
    for au, t in truth.items():
        tt, pp = finite_pairs(t, predictions[au])
        row = {m: _METRIC_FUNCS[m](tt, pp) for m in names}
        row["n"] = int(tt.size)
        per_au[au] = row
    average, excluded = {}, {}
    for m in names:
        vals = np.array([per_au[a][m] for a in per_au], dtype=float)
        ok = np.isfinite(vals)
        average[m] = float(vals[ok].mean()) if ok.any() else float("nan")
        excluded[m] = [a for a, good in zip(per_au, ok) if not good]
    return {"per_au": per_au, "average": average, "excluded": {m: v for m, v in excluded.items() if v}}


# ------------------------------------------------------------------------------------------ tables

_COL_RE = re.compile(r"^(AU|AD)(\d+)([LR]?)$", re.IGNORECASE)


def resolve_au_set(au_ids: AUSet | Iterable[str | int]) -> AUSet:
    """An AUSet for column naming. Ids the catalogue does not know (a dataset's own AU) are accepted too: only
    their id matters here."""
    if isinstance(au_ids, AUSet):
        return au_ids
    aus = []
    for raw in au_ids:
        try:
            aus.append(action_unit(raw))
            continue
        except KeyError:
            pass
        try:
            canon = normalize_au_id(raw)
        except ValueError:
            canon = str(raw).strip()
        m = _COL_RE.match(canon)
        aus.append(ActionUnit(id=canon, number=int(m.group(2)) if m else None, name=canon, definition=canon,
                              side=(m.group(3) or None) if m else None))
    return AUSet(name="evaluation", aus=tuple(aus))


def _path_parts(value: Any) -> tuple[str, ...]:
    parts = PurePosixPath(str(value).strip().replace("\\", "/")).parts
    return tuple(p for p in parts if p not in ("/", ".", "") and not p.endswith(":"))


def match_image_paths(truth_images: Iterable[Any], pred_images: Iterable[Any]) -> list[Any]:
    """Map each predicted image path to the ground-truth key it names; unmatched ones are returned unchanged.

    Why: ground truth usually stores paths relative to the dataset root (``F001/T1/0001.jpg``) while a
    prediction CSV holds the paths the tool was given (``/data/BP4D/F001/T1/0001.jpg`` or ``0001.jpg``). Two paths
    match when, compared by path components (``\\`` read as ``/``), one ends with the whole of the other; the
    longest such match wins. A prediction path that is the tail of several ground-truth paths (a bare file name
    shared by subjects) is ambiguous and raises ``ValueError`` rather than guessing.
    """
    full: dict[tuple[str, ...], Any] = {}
    tails: dict[tuple[str, ...], list[Any]] = {}
    for key in dict.fromkeys(truth_images):
        parts = _path_parts(key)
        full.setdefault(parts, key)
        for i in range(len(parts)):
            tails.setdefault(parts[i:], []).append(key)
    out, ambiguous = [], []
    for key in pred_images:
        parts = _path_parts(key)
        hit = full.get(parts)
        if hit is None:  # a ground-truth path is the tail of the predicted one (longest first)
            hit = next((full[parts[i:]] for i in range(1, len(parts)) if parts[i:] in full), None)
        if hit is None:  # the predicted path is the tail of exactly one ground-truth path
            cands = tails.get(parts, [])
            if len(cands) > 1:
                ambiguous.append((key, cands[:3]))
            elif cands:
                hit = cands[0]
        out.append(key if hit is None else hit)
    if ambiguous:
        key, cands = ambiguous[0]
        raise ValueError(f"{len(ambiguous)} predicted image path(s) match several ground-truth images, e.g. "
                         f"{key!r} -> {[str(c) for c in cands]}; give paths relative to the dataset root")
    return out


def _align_key_types(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Frame numbers may be read as int on one side and str/float on the other: compare as numbers when both
    sides are numeric, else as strings."""
    na, nb = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    if na.notna().sum() == a.notna().sum() and nb.notna().sum() == b.notna().sum():
        return na.astype(float), nb.astype(float)
    return a.astype(str), b.astype(str)


def evaluate_tables(truth: pd.DataFrame, predictions: pd.DataFrame, au_ids: AUSet | Iterable[str | int],
                    formats: Sequence[str | AnswerFormat] = ALL_FORMATS,
                    keys: Sequence[str] = ("image",)) -> dict[str, dict[str, Any]]:
    """Join ground truth and predictions on ``keys`` and compute every format's metrics.

    Both tables follow the shared convention (OpenFace-style columns ``AU01_c`` / ``AU01_r`` / ``AU01``, NaN =
    missing). Keys must be unique in both (one face per image/frame: see
    :func:`aullava.eval.predictions.one_face_per_key`); an ``image`` or ``video`` key is matched by path (:func:`match_image_paths`).

    Returns, per format value (``"binary"`` ...)::

        {"per_au": {au: {metric: value, "n": rows}}, "average": {metric: value},
         "excluded": {metric: [au, ...]},      # NaN values, left out of the average
         "n": rows evaluated (joined rows with at least one AU labelled and predicted),
         "n_truth": truth rows, "unmatched_truth": truth rows with no prediction row,
         "missing_predictions": labelled truth rows with no prediction at all in this format}

    Raises ``ValueError`` when no row matches, a key is missing or duplicated, or a table has none of a format's
    columns.
    """
    keys = list(keys)
    aus = resolve_au_set(au_ids)
    for name, df in (("ground truth", truth), ("predictions", predictions)):
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise ValueError(f"{name} table lacks key column(s) {missing}; it has {list(df.columns)[:12]}")
        dup = int(df.duplicated(keys).sum())
        if dup:
            raise ValueError(f"{name} table has {dup} duplicated key row(s) on {keys} (several faces per image? "
                             "keep one with aullava.eval.predictions.one_face_per_key)")
    fmts = [AnswerFormat.parse(f).value for f in formats]
    cols = {f: dict(zip(aus.ids, aus.openface_columns(AnswerFormat.parse(f).column_suffix))) for f in fmts}
    for f in fmts:
        for name, df in (("ground truth", truth), ("predictions", predictions)):
            if not any(c in df.columns for c in cols[f].values()):
                raise ValueError(f"{name} table has none of the {f} columns ({', '.join(list(cols[f].values())[:4])}"
                                 ", ...); drop this format or check the column names")

    t = truth[keys].copy()
    p = predictions[keys].copy()
    for k in ("image", "video"):
        if k in keys:
            p[k] = match_image_paths(t[k], p[k])
    for k in keys:
        t[k], p[k] = _align_key_types(t[k], p[k])
    wanted = [c for f in fmts for c in cols[f].values()]

    def numeric(table: pd.DataFrame, c: str) -> np.ndarray:
        return pd.to_numeric(table[c], errors="coerce").to_numpy() if c in table else np.full(len(table), np.nan)

    scores, has_probabilities = binary_scores(predictions, aus)
    predicted = list(dict.fromkeys([*wanted, *scores.values()]))
    # all columns at once: one insert per AU column fragments the frame (and pandas warns about it)
    t = pd.concat([t, pd.DataFrame({"t:" + c: numeric(truth, c) for c in dict.fromkeys(wanted)}, index=t.index)],
                  axis=1)
    p = pd.concat([p, pd.DataFrame({"p:" + c: numeric(predictions, c) for c in predicted}, index=p.index)], axis=1)
    merged = t.merge(p, on=keys, how="left", indicator=True)
    matched = (merged["_merge"] == "both").to_numpy()
    if not matched.any():
        raise ValueError(f"no ground-truth row matches a prediction on {keys}: e.g. truth "
                         f"{t[keys].head(3).to_dict('records')} vs predictions {p[keys].head(3).to_dict('records')}")
    unmatched = int((~matched).sum())
    if unmatched:
        warnings.warn(f"{unmatched} of {len(t)} ground-truth rows have no prediction row", stacklevel=2)

    results: dict[str, dict[str, Any]] = {}
    for f in fmts:
        tv = {au: merged["t:" + c].to_numpy(float) for au, c in cols[f].items()}
        pv = {au: merged["p:" + c].to_numpy(float) for au, c in cols[f].items()}
        res = au_metrics(tv, pv, f)
        t_any = np.any([np.isfinite(v) for v in tv.values()], axis=0)
        p_any = np.any([np.isfinite(v) for v in pv.values()], axis=0)
        both = np.any([np.isfinite(tv[a]) & np.isfinite(pv[a]) for a in tv], axis=0)
        res.update(n=int(both.sum()), n_truth=int(len(t)), unmatched_truth=unmatched,
                   missing_predictions=int((t_any & ~p_any).sum()))
        if f == "binary" and scores:
            _add_probability_scores(res, tv, {au: merged["p:" + c].to_numpy(float) for au, c in scores.items()},
                                    has_probabilities)
        results[f] = res
    return results


def binary_scores(predictions: pd.DataFrame, aus: AUSet) -> tuple[dict[str, str], bool]:
    """The columns that rank faces for the binary ROC-AUC: p(present) (`AU01_p`) when the table has it, else the
    0–1 intensity (bare `AU01`: OpenFace-free tables such as the MediaPipe baseline's), else none. The flag says
    whether they are probabilities (and so can be scored for calibration)."""
    for suffix, probabilities in (("p", True), ("", False)):
        named = dict(zip(aus.ids, aus.openface_columns(suffix)))
        present = {au: c for au, c in named.items() if c in predictions.columns}
        if present:
            return present, probabilities
    return {}, False


def _add_probability_scores(res: dict[str, Any], truth: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                            probabilities: bool) -> None:
    """Per-AU ROC-AUC (and its average) into a binary result; with probabilities also their calibration, pooled
    over every (face, AU) pair: ECE and the reliability bins."""
    from aullava.eval.probabilities import expected_calibration_error, reliability_bins, roc_auc

    aucs = []
    for au, row in res["per_au"].items():
        row["auc"] = roc_auc(truth[au], scores[au]) if au in scores else float("nan")
        aucs.append(row["auc"])
    values = np.asarray(aucs, dtype=float)
    res["average"]["auc"] = float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")
    left_out = [au for au, v in zip(res["per_au"], values) if not np.isfinite(v)]
    if left_out:
        res.setdefault("excluded", {})["auc"] = left_out
    res["auc_from"] = "p(present)" if probabilities else "0-1 intensity"
    if probabilities:
        t = np.concatenate([truth[au] for au in scores])
        p = np.concatenate([scores[au] for au in scores])
        res["calibration"] = {"ece": expected_calibration_error(t, p), **reliability_bins(t, p)}
