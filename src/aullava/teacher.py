"""MediaPipe's 52 blendshapes as a fast, weak AU teacher: a documented blendshape → FACS mapping, calibrated on
synthetic faces with exact labels.

Why: the default model must be trained without any AU-labelled dataset. `aullava.synth` gives exact labels but only
for geometry warped onto neutral faces; real expressive photos have no labels at all. MediaPipe's Face Landmarker
(already run for alignment, `aullava.faces`) also scores 52 ARKit-style blendshapes in ~10 ms. Several of them are
named after the same muscle movements as FACS Action Units, so a mapping gives *teacher labels* for real photos
and a cheap "MediaPipe-mapping baseline" for evaluation. Blendshape scores are not FACS intensities, though: their
zero points and scales differ per shape (``eyeSquint`` is ~0.45 on a neutral face, ``browDown`` 0.1–0.35), so each
AU gets a monotone calibration map fitted on synthetic warps whose AU intensities are known exactly.

**Mapping** (`MAPPING`; one AU ← the maximum of its source scores). Left/right pairs are combined by the *maximum*:
FACS datasets code a bilateral AU as present when it is visible on either side (a one-sided smile is AU12), and a
mean would halve every unilateral action; the upward bias of a max of two noisy scores is a constant the
calibration removes. Choices beyond the obvious name matches (the reasons are in each entry's ``why``):

- AU23 (lip tightener) ← ``mouthPucker``: of the candidates (mouthPucker, mouthRoll*, mouthPress*, mouthFunnel)
  only pucker and roll respond to synthetic AU23, roll is taken by AU24, and pucker (AU18, the other orbicularis
  oris action narrowing the mouth) is the closest appearance;
- AU24 (lip presser) ← max(``mouthPress*``, ``mouthRoll*``): pressing the lips hard thins their red parts, which
  MediaPipe reports as a roll-in (AU28-like); on synthetic AU24 ``mouthPress`` does not move at all, ``mouthRoll``
  does;
- AU25 (lips part) ← max(``jawOpen``, ``mouthLowerDown*``): lips part either with the jaw or by the lower lip
  alone; AU26 (jaw drop) ← ``jawOpen``;
- AU6 ← ``cheekSquint*`` and AU9 ← ``noseSneer*`` are the name matches, but this MediaPipe model returns 0 for
  them on every face (≤ 0.0004 over 3,861 real photos): the teacher is **blind** to AU6 and AU9 and answers NaN
  ("not labelled"), never a confident 0. ``eyeSquint`` (orbicularis oculi) goes to AU7.

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

**Limits** (read the held-out scores before trusting an AU): the warps change geometry only — no wrinkles, no
teeth, no dark mouth interior — and MediaPipe reacts to geometry-only movement weakly (0.1–0.3 score per unit
intensity against a between-face baseline spread of the same size), so on synthetic data the calibrated teacher is
precise but misses most weak AUs (false-positive rates 0–5 %, recall ≤ 0.4 even at intensity E); agreement there
is a lower bound for cues real faces show by appearance. Synthetic AU25 without a jaw drop shows no lip gap at
all, so AU25 is fitted and scored only on images that can show it (`VISIBLE`); on real photos AU25 is therefore
conservative: lips parted without a dropped jaw (talking, smiles showing teeth) mostly stay 'absent' (present on
17 % of the real faces, against 50 % with raw score >= 0.10). The calibration also inherits the synthetic
sampling prior (`synth.sample_aus`: ~10–25 % prevalence per AU) and is not validated on real AU labels.

Blendshapes are measured on the 224 px aligned crop (`detect_blendshapes`, ``on_crop=True``): that is the input
the calibration was fitted on (scores on a crop and on the whole photo correlate at r = 0.74–0.97 per shape, but
e.g. mouthLowerDown differs by 0.10 on average) and the input the student model sees.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from aullava.answer_format import binary_from_continuous, discrete_from_continuous
from aullava.au_catalogue import au_set

__all__ = [
    "BLIND_MAX",
    "CALIBRATION_FILE",
    "COLUMNS",
    "DEFAULT_AUS",
    "MAPPING",
    "MIN_AUC",
    "PRESENCE_THRESHOLD",
    "VISIBLE",
    "BlendshapeMap",
    "Teacher",
    "apply_monotone",
    "build_calibration",
    "calibrate",
    "detect_blendshapes",
    "evaluate_agreement",
    "fit_monotone",
    "load_calibration",
    "pava",
    "raw_scores",
]

CALIBRATION_FILE = "teacher_calibration.json"
PRESENCE_THRESHOLD = 0.10  # the project's rule: present = x >= 0.10 (answer_format.binary_from_continuous)
_DEFAULT_SET = au_set("default")
DEFAULT_AUS: tuple[str, ...] = tuple(_DEFAULT_SET.ids)  # canonical ids "AU1" … "AU26"
COLUMNS: dict[str, str] = dict(zip(DEFAULT_AUS, _DEFAULT_SET.openface_columns("")))  # "AU1" → "AU01"
TEACHER_CROP = 224  # crop size the calibration was fitted on (synth's default crop_size)


@dataclass(frozen=True)
class BlendshapeMap:
    """One AU's source blendshapes (combined by their maximum) and the reason for the choice."""

    au: str
    blendshapes: tuple[str, ...]
    why: str


def _lr(name: str) -> tuple[str, str]:
    return (name + "Left", name + "Right")


MAPPING: dict[str, BlendshapeMap] = {m.au: m for m in (
    BlendshapeMap("AU1", ("browInnerUp",), "inner brow raiser (frontalis, medial) = browInnerUp"),
    BlendshapeMap("AU2", _lr("browOuterUp"), "outer brow raiser (frontalis, lateral) = browOuterUp, either side"),
    BlendshapeMap("AU4", _lr("browDown"), "brow lowerer (corrugator, procerus) = browDown, either side"),
    BlendshapeMap("AU6", _lr("cheekSquint"), "cheek raiser = cheekSquint; BLIND: this model returns 0 for it"),
    BlendshapeMap("AU7", _lr("eyeSquint"), "lid tightener (orbicularis oculi, palpebral) = eyeSquint"),
    BlendshapeMap("AU9", _lr("noseSneer"), "nose wrinkler = noseSneer; BLIND: this model returns 0 for it"),
    BlendshapeMap("AU10", _lr("mouthUpperUp"), "upper lip raiser = mouthUpperUp"),
    BlendshapeMap("AU12", _lr("mouthSmile"), "lip corner puller (zygomaticus major) = mouthSmile"),
    BlendshapeMap("AU14", _lr("mouthDimple"), "dimpler (buccinator) = mouthDimple"),
    BlendshapeMap("AU15", _lr("mouthFrown"), "lip corner depressor = mouthFrown"),
    BlendshapeMap("AU17", ("mouthShrugLower",), "chin raiser (mentalis) pushes the lower lip up = mouthShrugLower"),
    BlendshapeMap("AU23", ("mouthPucker",),
                  "lip tightener: no ARKit shape; mouthPucker (AU18, also orbicularis oris, narrows the mouth) "
                  "responds to synthetic AU23, mouthPress and mouthFunnel do not, mouthRoll is used by AU24"),
    BlendshapeMap("AU24", _lr("mouthPress") + ("mouthRollLower", "mouthRollUpper"),
                  "lip presser = mouthPress; a hard press thins the lips' red parts, which MediaPipe scores as "
                  "mouthRoll (synthetic AU24 moves mouthRoll, not mouthPress), so either counts"),
    BlendshapeMap("AU25", ("jawOpen",) + _lr("mouthLowerDown"),
                  "lips part, with the jaw (jawOpen) or by the lower lip alone (mouthLowerDown)"),
    BlendshapeMap("AU26", ("jawOpen",), "jaw drop = jawOpen"),
)}
assert tuple(MAPPING) == DEFAULT_AUS, "the mapping must cover the default AU set, in its order"


def raw_scores(blendshapes: Mapping[str, float], aus: Iterable[str] = DEFAULT_AUS) -> dict[str, float]:
    """Per AU, the uncalibrated teacher score: the maximum of its source blendshapes (NaN when none is given)."""
    out = {}
    for au in aus:
        values = [float(blendshapes[n]) for n in MAPPING[au].blendshapes if n in blendshapes]
        values = [v for v in values if math.isfinite(v)]
        out[au] = max(values) if values else float("nan")
    return out


def _raw_matrix(table: pd.DataFrame, aus: Sequence[str] = DEFAULT_AUS) -> np.ndarray:
    """(rows, AUs) raw scores from a table with one column per blendshape (NaN rows stay NaN)."""
    cols = []
    for au in aus:
        names = [n for n in MAPPING[au].blendshapes if n in table.columns]
        if not names:
            cols.append(np.full(len(table), np.nan))
            continue
        values = table[names].to_numpy(dtype=np.float64)
        all_nan = np.isnan(values).all(axis=1)
        cols.append(np.where(all_nan, np.nan, np.nanmax(np.where(np.isnan(values), -np.inf, values), axis=1)))
    return np.column_stack(cols) if cols else np.zeros((len(table), 0))


# ------------------------------------------------------------------------------------------------ calibration


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


def apply_monotone(x, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """Evaluate a `fit_monotone` map (flat outside its knots, output clipped to [0, 1]); NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    out = np.interp(np.clip(x, 0.0, 1.0), np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    return np.where(np.isnan(x), np.nan, np.clip(out, 0.0, 1.0))


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
    from aullava.metrics import f1_score, mae

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
    raw_train, raw_held = _raw_matrix(train), _raw_matrix(held_out)
    raw_real = _raw_matrix(real) if real is not None else None
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
    cal_held = probe._calibrate(raw_held)
    cal_real = probe._calibrate(raw_real) if raw_real is not None else None
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


def load_calibration(calibration: str | os.PathLike | Mapping | None = None) -> dict:
    """The bundled calibration (``None``), a JSON file, or an already loaded dict; checks that maps are monotone."""
    if calibration is None:
        text = resources.files("aullava").joinpath("resources", CALIBRATION_FILE).read_text(encoding="utf-8")
        data = json.loads(text)
    elif isinstance(calibration, Mapping):
        data = dict(calibration)
    else:
        data = json.loads(Path(calibration).read_text(encoding="utf-8"))
    for au, entry in data.get("aus", {}).items():
        knots = entry.get("knots")
        if knots is None:
            continue
        xs, ys = np.asarray(knots["x"], float), np.asarray(knots["y"], float)
        if xs.size == 0 or xs.size != ys.size or np.any(np.diff(xs) <= 0) or np.any(np.diff(ys) < 0) \
                or ys.min() < 0 or ys.max() > 1:
            raise ValueError(f"calibration for {au}: knots must be increasing in x, non-decreasing in y, y in [0, 1]")
    return data


# ------------------------------------------------------------------------------------------------- detection


def _largest(faces):
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


def detect_blendshapes(paths: Sequence[str | os.PathLike], detector=None, *, on_crop: bool = True,
                       root: str | os.PathLike | None = None, progress: bool = True) -> pd.DataFrame:
    """Blendshapes of the largest face of each image: DataFrame with ``image`` (as given), ``face`` (bool) and
    the 52 blendshape columns (NaN when no face).

    ``on_crop=True``: after detection on the photo, the face is aligned into a 224 px crop (`faces.align_face`)
    and detected again there, and the crop's scores are used: the calibration was fitted on such crops (if the
    crop yields no face, the photo's scores are kept). Use ``on_crop=False`` for images that already are aligned
    crops (synthetic warps). ``root``: folder that relative paths are resolved against (``image`` keeps the
    path as given). ~25 ms per photo on one CPU core (two MediaPipe passes).
    """
    from tqdm.auto import tqdm

    from aullava.faces import FaceDetector, align_face
    from aullava.imaging import load_image

    own = detector is None
    detector = detector or FaceDetector(crop_size=TEACHER_CROP)
    rows = []
    try:
        for p in tqdm(list(paths), desc="blendshapes", unit="img", disable=not progress):
            path = Path(p)
            if root is not None and not path.is_absolute():
                path = Path(root) / path
            rec: dict = {"image": str(p), "face": False}
            try:
                image = load_image(path)
            except Exception:  # noqa: BLE001 - an unreadable image is a row without a face, never fatal
                rows.append(rec)
                continue
            face = _largest(detector.detect(image))
            if face is not None:
                shapes = face.blendshapes
                if on_crop:
                    crop, _ = align_face(image, face.landmarks, TEACHER_CROP)
                    again = _largest(detector.detect(crop))
                    if again is not None:
                        shapes = again.blendshapes
                rec["face"] = True
                rec.update(shapes)
            rows.append(rec)
    finally:
        if own:
            detector.close()
    return pd.DataFrame(rows) if rows else pd.DataFrame({"image": pd.Series(dtype=str), "face": pd.Series(dtype=bool)})


# --------------------------------------------------------------------------------------------------- teacher


class Teacher:
    """Blendshapes → continuous AU intensities of the default AU set (NaN for AUs the teacher cannot see).

    ``calibration``: None (the bundled ``resources/teacher_calibration.json``), a JSON path or a loaded dict.
    AUs whose status there is ``blind`` are always NaN, ``unverified`` ones unless ``include_unverified=True``
    (see `MIN_AUC`). ``calibrated=False`` gives the raw mapping (max of the source scores used as the intensity,
    same NaN rules): only for comparison, its zero points are wrong (AU7 is 'present' on 96 % of real photos).

    Consistency rule (``calibrated`` mode): where AU26 is present, AU25 is raised to at least AU26's value — the
    synthetic labels follow the same convention (a dropped jaw parts the lips, `synth.sample_aus`), and the two
    maps, fitted on different raw scores, can otherwise disagree.
    """

    def __init__(self, calibration: str | os.PathLike | Mapping | None = None, *, calibrated: bool = True,
                 include_unverified: bool = False):
        self.calibration = load_calibration(calibration)
        self.calibrated = calibrated
        self.aus: tuple[str, ...] = DEFAULT_AUS
        self._maps: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        entries = self.calibration.get("aus", {})
        allowed = {"calibrated", "unverified"} if include_unverified else {"calibrated"}
        for au in self.aus:
            entry = entries.get(au)
            usable = (entry is not None and entry.get("status", "calibrated") in allowed
                      and entry.get("knots") is not None)
            self._maps[au] = (np.asarray(entry["knots"]["x"], float), np.asarray(entry["knots"]["y"], float)) \
                if usable else None

    @property
    def seen(self) -> tuple[str, ...]:
        """The AUs this teacher answers (the others are always NaN)."""
        return tuple(au for au in self.aus if self._maps[au] is not None)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        """(rows, AUs) raw scores → (rows, AUs) intensities, NaN for unseen AUs."""
        out = np.full(raw.shape, np.nan)
        for j, au in enumerate(self.aus):
            knots = self._maps[au]
            if knots is None:
                continue
            out[:, j] = apply_monotone(raw[:, j], *knots) if self.calibrated else np.clip(raw[:, j], 0.0, 1.0)
        if self.calibrated and self._maps.get("AU25") is not None and self._maps.get("AU26") is not None:
            i25, i26 = self.aus.index("AU25"), self.aus.index("AU26")
            jaw = out[:, i26]
            lift = np.isfinite(jaw) & (jaw >= PRESENCE_THRESHOLD)
            out[lift, i25] = np.fmax(out[lift, i25], jaw[lift])
        return out

    def label(self, blendshapes: Mapping[str, float]) -> dict[str, float]:
        """``{AU id: intensity in [0, 1] or NaN}`` for one face's blendshape scores (ids as in `DEFAULT_AUS`)."""
        raw = raw_scores(blendshapes, self.aus)
        values = self._calibrate(np.array([[raw[au] for au in self.aus]]))[0]
        return {au: float(v) for au, v in zip(self.aus, values)}

    def label_table(self, blendshapes: pd.DataFrame) -> pd.DataFrame:
        """Manifest AU columns (``AU01`` … continuous) for a `detect_blendshapes` table, same row order."""
        values = self._calibrate(_raw_matrix(blendshapes, self.aus))
        return pd.DataFrame(values, columns=[COLUMNS[au] for au in self.aus], index=blendshapes.index)

    def label_faces(self, paths: Sequence[str | os.PathLike], detector=None, progress: bool = True, *,
                    subjects: Sequence[str] | None = None, root: str | os.PathLike | None = None,
                    keep_missing: bool = True) -> pd.DataFrame:
        """Teacher labels for photos, in the project's manifest convention: ``image`` (as given), ``subject`` (when
        ``subjects`` is given), ``AU01`` … ``AU26`` continuous in [0, 1], NaN where the teacher cannot see the AU
        or no face was found. ``df.attrs["no_face"]`` lists the images without a face; ``keep_missing=False``
        drops their rows (a training manifest gains nothing from an all-NaN row). Write it with
        ``df.to_csv(path, index=False)``; `aullava.datasets.read_manifest` reads it (empty cells = not labelled).
        """
        paths = list(paths)
        if subjects is not None and len(subjects) != len(paths):
            raise ValueError(f"{len(subjects)} subjects for {len(paths)} paths")
        shapes = detect_blendshapes(paths, detector, root=root, progress=progress)
        df = pd.DataFrame({"image": [str(p) for p in paths]})
        if subjects is not None:
            df["subject"] = [str(s) for s in subjects]
        df = pd.concat([df, self.label_table(shapes)], axis=1)
        missing = ~shapes["face"].to_numpy(dtype=bool)
        df.attrs["no_face"] = df.loc[missing, "image"].tolist()
        if not keep_missing:
            df = df[~missing].reset_index(drop=True)
        return df

    def baseline_predictions(self, paths: Sequence[str | os.PathLike], detector=None, progress: bool = True, *,
                             root: str | os.PathLike | None = None) -> pd.DataFrame:
        """The "MediaPipe-mapping baseline" as a prediction table for `metrics.evaluate_tables`: ``image`` and per AU
        ``AU01_c`` (0/1), ``AU01_r`` (0–5), ``AU01`` (0–1), derived from the continuous value by the project's
        format rules (present = x >= 0.10, discrete = round-half-up(5x)); NaN = no prediction (unseen AU, no
        face)."""
        labels = self.label_faces(paths, detector, progress, root=root)
        return self.predictions_from_labels(labels)

    @staticmethod
    def predictions_from_labels(labels: pd.DataFrame) -> pd.DataFrame:
        """Continuous ``AU01`` … columns → ``image`` + ``AU01_c``, ``AU01_r``, ``AU01`` per AU (NaN kept)."""
        out = {"image": labels["image"].to_numpy()}
        for au in DEFAULT_AUS:
            col = COLUMNS[au]
            x = labels[col].to_numpy(dtype=np.float64)
            finite = np.isfinite(x)
            out[col + "_c"] = np.where(finite, binary_from_continuous(np.nan_to_num(x)), np.nan)
            out[col + "_r"] = np.where(finite, discrete_from_continuous(np.nan_to_num(x)), np.nan)
            out[col] = x
        return pd.DataFrame(out)

