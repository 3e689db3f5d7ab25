"""Fitting the MediaPipe-blendshape teacher's calibration (`aullava.teacher.labeler`) on synthetic faces with exact labels.

**Calibration** (`fit_monotone`, `build_calibration`, `calibrate`): per AU, a non-decreasing piecewise-linear map
raw score → intensity in [0, 1], fitted by isotonic regression (pool-adjacent-violators over equal-count quantile
bins of the raw score) to the exact labels of the *training identities* of a synthetic set made by `run_synth`,
with blendshapes detected on the written 224 px aligned crops. The fitted quantity is the conditional **median**
of the intensity given the raw score: it removes each shape's resting baseline (neutral faces map to exactly 0)
and its scale, minimises the absolute error, and calls an AU present only where the score makes presence more
likely than not. The conditional mean was tried first and rejected: with zero-inflated labels and weak evidence
it sits near the 0.10 presence threshold for every face, and on the real photos it called AU25 present on 100 %
and AU1 on 54 % of them. The synthetic sources are neutral faces (`synth.neutral_check` keeps e.g. mouthSmile <
0.30), so raw scores above the synthetic range are never seen in the fit; beyond the last fitted knot the map rises
linearly to (1, 1), the prior that a blendshape at its maximum is the AU at its maximum (a flat continuation would
cap a broad real smile at a synthetic level). Agreement on the synthetic *held-out* identities (F1 at x ≥ 0.10,
MAE, AUC, next to the raw mapping and the all-absent / all-present references) is stored in the JSON with the raw
and calibrated score distributions on real photos.

**Status** per AU (`build_calibration`): ``blind`` when the raw score is dead on real photos (`BLIND_MAX`: AU6,
AU9), ``unverified`` when it ranks the synthetic held-out images no better than AUC `MIN_AUC` = 0.60 (AU10, AU14,
AU15: the warps give no evidence the teacher sees them, their map is a prior), else ``calibrated``. The teacher
answers NaN ("not labelled") for blind and, by default, unverified AUs — a NaN label leaves the AU to the other
data source instead of teaching a confident guess.

The runtime side (the mapping, `apply_monotone`, `load_calibration`, `Teacher`) lives in `aullava.teacher.labeler`; this
module imports from it, never the other way at import time (`aullava.teacher.labeler` re-exports these names lazily).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aullava.aus.answer_format import binary_from_continuous
from aullava.teacher.labeler import (COLUMNS, DEFAULT_AUS, MAPPING, PRESENCE_THRESHOLD, Teacher, raw_matrix,
                             detect_blendshapes)

__all__ = [
    "BLIND_MAX",
    "MIN_AUC",
    "VISIBLE",
    "build_calibration",
    "calibrate",
    "evaluate_agreement",
    "fit_monotone",
    "pava",
]


def pava(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares isotonic (non-decreasing) fit of ``y`` in the given order: pool adjacent violators.

    Plain numpy/Python: the package does not depend on scikit-learn, and with binned input (tens of points) the
    loop is instant. A test checks it against scikit-learn's IsotonicRegression where that is installed.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    counts: list[int] = []
    for value, weight in zip(y, w):
        means.append(float(value))
        weights.append(float(weight))
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            total = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total if total > 0 else means[-1]
            weights[-2] = total
            counts[-2] += counts[-1]
            del means[-1], weights[-1], counts[-1]
    return np.repeat(means, counts)


def _quantile_pava(groups: Sequence[np.ndarray], q: float) -> np.ndarray:
    """Isotonic fit of the ``q``-quantile over ordered groups of samples: one value per group, non-decreasing.

    Pool-adjacent-violators with the pooled samples' quantile as a block's value (the minimiser of the pinball
    loss over the block, which is what makes PAVA exact for quantiles as it is for means)."""
    blocks: list[np.ndarray] = []
    values: list[float] = []
    members: list[int] = []
    for g in groups:
        blocks.append(np.asarray(g, dtype=np.float64))
        values.append(float(np.quantile(blocks[-1], q)))
        members.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            pooled = np.concatenate(blocks[-2:])
            blocks[-2:] = [pooled]
            values[-2:] = [float(np.quantile(pooled, q))]
            members[-2:] = [members[-2] + members[-1]]
    return np.repeat(values, members)


def fit_monotone(x: np.ndarray, y: np.ndarray, bins: int = 40, quantile: float | None = 0.5,
                 top_anchor: bool = True) -> tuple[list[float], list[float]]:
    """Knots ``(xs, ys)`` of a non-decreasing piecewise-linear map ``x → y`` (both in [0, 1]) by isotonic regression.

    The samples are sorted by ``x`` and cut into ``bins`` equal-count bins; each bin gives one knot at its mean x,
    whose y is the isotonic fit over the bins of the conditional ``quantile`` of y (`_quantile_pava`; 0.5 = the
    median, which minimises the absolute error) or, with ``quantile=None``, of the conditional mean (`pava`,
    squared error). Binning smooths the staircase of a raw isotonic fit (tens of knots instead of thousands of
    steps) at no cost in monotonicity. Equal-x knots are merged and runs of equal y reduced to their two ends. With
    ``top_anchor`` the map continues linearly from the last knot to (1, max(1, last y)) instead of staying flat:
    the fit only sees the raw range of its data (see the module docstring).

    Why the median by default: the labels are zero-inflated (an AU is absent in ~80 % of the synthetic images)
    and the raw scores are weak evidence, so the conditional mean hovers near the prevalence-weighted average —
    around the 0.10 presence threshold — for every face, and calls an AU present wherever the synthetic prior is
    high (fitted on the mean, AU25 came out 'present' on 100 % of real photos and AU1 on 54 %). The median stays 0
    until the score makes presence more likely than not, which is the accuracy-optimal presence decision and the
    MAE-optimal intensity.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.clip(x[ok], 0.0, 1.0), np.clip(y[ok], 0.0, 1.0)
    if x.size == 0:
        raise ValueError("no finite samples to fit")
    if quantile is not None and not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1) or None, got {quantile}")
    order = np.argsort(x, kind="stable")
    chunks = [c for c in np.array_split(order, min(max(1, bins), x.size)) if c.size]
    px = np.array([x[c].mean() for c in chunks])
    pw = np.array([float(c.size) for c in chunks])
    if quantile is None:
        fy = pava(np.array([y[c].mean() for c in chunks]), pw)
    else:
        fy = _quantile_pava([y[c] for c in chunks], quantile)
    # merge equal x (ties spanning bins), weighted; the result stays non-decreasing
    xs: list[float] = []
    ys: list[float] = []
    ws: list[float] = []
    for a, b, c in zip(px, fy, pw):
        if xs and math.isclose(a, xs[-1], abs_tol=1e-12):
            ys[-1] = (ys[-1] * ws[-1] + b * c) / (ws[-1] + c)
            ws[-1] += c
        else:
            xs.append(float(a))
            ys.append(float(b))
            ws.append(float(c))
    # keep only the ends of flat runs (the map between them is the same)
    keep = [i for i in range(len(xs)) if i in (0, len(xs) - 1)
            or not (math.isclose(ys[i - 1], ys[i], abs_tol=1e-12) and math.isclose(ys[i], ys[i + 1], abs_tol=1e-12))]
    xs, ys = [round(xs[i], 6) for i in keep], [round(min(max(ys[i], 0.0), 1.0), 6) for i in keep]
    if top_anchor and xs[-1] < 1.0:
        xs.append(1.0)
        ys.append(max(1.0, ys[-1]))
    return xs, ys


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties count one half); NaN without both classes."""
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def evaluate_agreement(pred: np.ndarray, truth: np.ndarray, threshold: float = PRESENCE_THRESHOLD) -> dict:
    """Agreement of continuous predictions with continuous labels: F1 of presence (x >= threshold on both sides,
    `metrics.f1_score`'s zero-division rule), MAE, and AUC of the prediction as a presence score."""
    from aullava.eval.metrics import f1_score, mae

    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(truth)
    pred, truth = pred[ok], truth[ok]
    t, p = binary_from_continuous(truth, threshold), binary_from_continuous(pred, threshold)
    return {"f1": round(f1_score(t, p), 4), "mae": round(mae(truth, np.clip(pred, 0, 1)), 4),
            "auc": round(_auc(pred, t == 1), 4), "predicted_present": round(float(p.mean()), 4)}


def _quantiles(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"n": 0}
    q = np.quantile(v, [0.5, 0.9, 0.99])
    return {"n": int(v.size), "q50": round(float(q[0]), 4), "q90": round(float(q[1]), 4),
            "q99": round(float(q[2]), 4), "max": round(float(v.max()), 4),
            "share_ge_0.10": round(float((v >= PRESENCE_THRESHOLD).mean()), 4)}


BLIND_MAX = 0.01
"""An AU whose raw score stays below this on 99 % of real photos is *blind*: the source blendshape is dead in this
MediaPipe model, there is nothing to calibrate, and the teacher answers NaN."""
MIN_AUC = 0.60
"""An AU whose raw score ranks the synthetic held-out images by presence with an AUC below this is *unverified*:
the warps give no evidence that the teacher sees it (its map is then the synthetic floor plus the top anchor, i.e.
a prior). By default the teacher answers NaN for it too (``Teacher(include_unverified=True)`` keeps it)."""


def _visible_au25(table: pd.DataFrame) -> np.ndarray:
    """Synthetic AU25 without AU26 renders no lip gap (the warp stretches the lips' skin over it: no teeth, no dark
    mouth interior; MediaPipe's raw AU25 score ranks those images at AUC 0.50), so AU25 is fitted and scored only
    on images that can show it: a jaw drop, or AU25 absent."""
    return ((table[COLUMNS["AU26"]].to_numpy(dtype=np.float64) > 0)
            | (table[COLUMNS["AU25"]].to_numpy(dtype=np.float64) == 0))


VISIBLE = {"AU25": ("images with a jaw drop (AU26 > 0) or without AU25", _visible_au25)}
"""Per AU, which synthetic images can show it at all (default: all): (description, table → row mask)."""


def build_calibration(train: pd.DataFrame, held_out: pd.DataFrame, real: pd.DataFrame | None = None, *,
                      bins: int = 40, quantile: float | None = 0.5, top_anchor: bool = True,
                      fit_data: Mapping | None = None) -> dict:
    """The calibration JSON (as a dict) from blendshape tables.

    ``train`` / ``held_out``: one row per synthetic image with the 52 blendshape columns and the exact continuous
    labels as manifest columns (``AU01`` …, as `run_synth` writes them); fitted on ``train`` (`fit_monotone`),
    scored on ``held_out`` against the raw mapping and two trivial references (all absent: the MAE floor of a
    constant 0; all present: the F1 of answering 'present' everywhere). ``real``: optional blendshape table of
    real photos (rows without a face: NaN), for the raw and calibrated score distributions and the blind test
    (`BLIND_MAX`; without it no AU is declared blind). Status per AU: ``blind``, ``unverified`` (`MIN_AUC`) or
    ``calibrated``. ``fit_data``: free-form description stored as is.
    """
    raw_train, raw_held = raw_matrix(train), raw_matrix(held_out)
    raw_real = raw_matrix(real) if real is not None else None
    visible: dict[str, np.ndarray] = {}
    knots: dict[str, tuple[list[float], list[float]]] = {}
    n_train: dict[str, int] = {}
    for j, au in enumerate(DEFAULT_AUS):
        vis_tr = VISIBLE[au][1](train) if au in VISIBLE else np.ones(len(train), bool)
        visible[au] = VISIBLE[au][1](held_out) if au in VISIBLE else np.ones(len(held_out), bool)
        y_tr = train[COLUMNS[au]].to_numpy(dtype=np.float64)[vis_tr]
        knots[au] = fit_monotone(raw_train[vis_tr, j], y_tr, bins=bins, quantile=quantile, top_anchor=top_anchor)
        n_train[au] = int(np.isfinite(y_tr).sum())
    # score exactly what the teacher answers (its AU25/AU26 rule included), every AU switched on
    probe = Teacher({"aus": {au: {"status": "calibrated", "knots": {"x": xs, "y": ys}}
                             for au, (xs, ys) in knots.items()}})
    cal_held = probe.intensities(raw_held)
    cal_real = probe.intensities(raw_real) if raw_real is not None else None
    aus_out = {}
    for j, au in enumerate(DEFAULT_AUS):
        xs, ys = knots[au]
        vis = visible[au]
        y_all = held_out[COLUMNS[au]].to_numpy(dtype=np.float64)
        x_all, c_all = raw_held[:, j], cal_held[:, j]
        y_ho, x_ho, c_ho = y_all[vis], x_all[vis], c_all[vis]
        held = {
            "images": int(np.isfinite(y_ho).sum()),
            "positives": int((y_ho >= PRESENCE_THRESHOLD).sum()),
            "raw": evaluate_agreement(x_ho, y_ho),
            "calibrated": evaluate_agreement(c_ho, y_ho),
            "all_absent_mae": round(float(np.nanmean(np.abs(y_ho))), 4),
            "all_present_f1": evaluate_agreement(np.ones_like(y_ho), y_ho)["f1"],
        }
        if au in VISIBLE:
            held["subset"] = VISIBLE[au][0]
            held["all_images"] = {"images": int(np.isfinite(y_all).sum()),
                                  "positives": int((y_all >= PRESENCE_THRESHOLD).sum()),
                                  "raw": evaluate_agreement(x_all, y_all),
                                  "calibrated": evaluate_agreement(c_all, y_all)}
        entry: dict = {"blendshapes": list(MAPPING[au].blendshapes), "combine": "max", "why": MAPPING[au].why}
        status = "calibrated"
        auc = held["raw"]["auc"]
        if not (math.isfinite(auc) and auc >= MIN_AUC):
            status = "unverified"
        real_raw = _quantiles(raw_real[:, j]) if raw_real is not None else None
        if real_raw is not None and real_raw.get("n", 0) > 0 and real_raw["q99"] < BLIND_MAX:
            status = "blind"
        entry.update(status=status, knots={"x": xs, "y": ys}, train_images=n_train[au], held_out=held)
        if real_raw is not None:
            entry["real_raw"] = real_raw
            entry["real_calibrated"] = _quantiles(cal_real[:, j])
        aus_out[au] = entry
    target = "median" if quantile == 0.5 else ("mean" if quantile is None else f"{quantile:g}-quantile")
    return {
        "version": 1,
        "presence_threshold": PRESENCE_THRESHOLD,
        "method": (f"isotonic regression of the conditional {target} of the exact synthetic intensity on the raw "
                   f"score (pool-adjacent-violators over {bins} equal-count quantile bins of the raw score; one "
                   "knot per bin at its mean raw score), piecewise-linear between knots, flat below the first knot"
                   + (", linear from the last knot to (1, 1)" if top_anchor else ", flat above the last knot")
                   + ". Raw score = max of the AU's source blendshapes, measured on 224 px aligned crops. "
                   "Present = calibrated >= 0.10."),
        "status_rule": {"blind": f"raw score q99 on real photos < {BLIND_MAX}: NaN",
                        "unverified": f"synthetic held-out AUC of the raw score < {MIN_AUC}: NaN unless "
                                      "Teacher(include_unverified=True)",
                        "calibrated": "otherwise"},
        "fit_data": dict(fit_data or {}),
        "aus": aus_out,
    }


def calibrate(synth_dir: str | os.PathLike, real_index: str | os.PathLike | None = None, *,
              out: str | os.PathLike | None = None, progress: bool = True, **fit_options) -> dict:
    """Fit the teacher calibration on a `run_synth` output folder and return (and with ``out``, write) the JSON dict.

    Blendshapes of the synthetic crops are cached in ``<synth_dir>/teacher_blendshapes.csv`` and those of the real
    photos of ``real_index`` (CSV with an ``image`` column, paths relative to it; optional, see
    `build_calibration`) in ``<synth_dir>/teacher_real_blendshapes.csv``, so a refit with other ``fit_options``
    (``bins``, ``quantile``, ``top_anchor``) costs nothing. Regenerating the bundled file::

        run_synth("/work/shared/faces/index.csv", "/tmp/synth_calib", per_image=8, held_out=0.2, seed=17)
        calibrate("/tmp/synth_calib", "/work/shared/faces/index.csv", out="src/aullava/resources/" + CALIBRATION_FILE)
    """
    import datetime

    root = Path(synth_dir)
    cache = root / "teacher_blendshapes.csv"
    tables = {split: pd.read_csv(root / f"{split}.csv") for split in ("train", "held_out")}
    if cache.is_file():
        shapes = pd.read_csv(cache)
    else:
        images = pd.concat([t["image"] for t in tables.values()], ignore_index=True)
        shapes = detect_blendshapes(images.tolist(), on_crop=False, root=root, progress=progress)
        shapes.to_csv(cache, index=False, float_format="%.5f")
    shapes = shapes.drop_duplicates("image").set_index("image")
    found = {split: t.join(shapes, on="image") for split, t in tables.items()}
    found = {split: t[t["face"].fillna(False).astype(bool)] for split, t in found.items()}
    real = None
    if real_index is not None:
        real_cache = root / "teacher_real_blendshapes.csv"
        if real_cache.is_file():
            real = pd.read_csv(real_cache)
        else:
            index = pd.read_csv(real_index)
            real = detect_blendshapes(index["image"].tolist(), root=Path(real_index).parent, progress=progress)
            real.to_csv(real_cache, index=False, float_format="%.5f")
    config_path = root / "synth_config.json"
    fit_data = {
        "synthetic_set": str(root),
        "synth_config": json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None,
        "train_images": int(len(found["train"])),
        "train_identities": int(found["train"]["subject"].nunique()),
        "held_out_images": int(len(found["held_out"])),
        "held_out_identities": int(found["held_out"]["subject"].nunique()),
        "images_without_face": int(sum(len(tables[s]) - len(found[s]) for s in tables)),
        "blendshapes": "MediaPipe Face Landmarker (aullava.faces.FaceDetector) on the written 224 px aligned crops",
        "real_photos": None if real is None else {"index": str(real_index), "photos": int(len(real)),
                                                  "with_face": int(real["face"].sum()),
                                                  "blendshapes": "detect_blendshapes(on_crop=True)"},
        "created": datetime.date.today().isoformat(),
    }
    data = build_calibration(found["train"], found["held_out"], real, fit_data=fit_data, **fit_options)
    if out is not None:
        Path(out).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data
