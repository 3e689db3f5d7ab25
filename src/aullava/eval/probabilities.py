"""Scores of the model's probabilities: ranking (ROC-AUC), calibration (expected calibration error, reliability
diagram) and the temperature and log-odds shift (Platt scaling) that recalibrate binary p(present).

Why beside F1: a greedy 0/1 answer only shows one operating point, while p(present) ranks faces; a researcher
comparing with py-feat's probabilities or choosing a threshold needs to know how well it ranks (AUC) and whether
p = 0.7 means "present 70 % of the time" (calibration). Temperature scaling (Guo et al., 2017) divides the logit
by one fitted number: it changes the probabilities, never which side of 0.5 they fall on. A model trained with a
present-class weight says "present" too readily, which no temperature undoes (p = 0.5 stays 0.5), so binary
calibration also fits a shift of the log-odds (Platt, 1999): p = sigmoid(logit / T + b). Neither changes an answer:
the readout keeps the greedy answer and only reports the recalibrated probability beside it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from aullava.eval.metrics import finite_pairs as _pair

__all__ = ["roc_auc", "expected_calibration_error", "reliability_bins", "fit_temperature", "apply_temperature",
           "fit_platt", "fit_binary_calibration", "plot_reliability"]

_EPS = 1e-6


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve of 0/1 truth against any score (ties count half: the Mann–Whitney statistic).
    NaN when a class is missing, since the ranking is then undefined."""
    from scipy.stats import rankdata

    t, s = _pair(y_true, scores)
    positive = t == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reliability_bins(y_true, probs, bins: int = 10) -> dict[str, list[float]]:
    """Equal-width bins over [0, 1]: per bin the mean predicted probability, the observed share of positives and
    the count (empty bins hold NaN and 0)."""
    t, p = _pair(y_true, probs)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    mean_p, observed, count = [], [], []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        count.append(n)
        mean_p.append(float(p[inside].mean()) if n else float("nan"))
        observed.append(float(t[inside].mean()) if n else float("nan"))
    return {"mean_probability": mean_p, "observed": observed, "count": count}


def expected_calibration_error(y_true, probs, bins: int = 10) -> float:
    """ECE: the count-weighted mean |observed share − mean probability| over equal-width bins; NaN with no rows."""
    r = reliability_bins(y_true, probs, bins)
    count = np.asarray(r["count"], dtype=float)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.nan_to_num(np.asarray(r["observed"]) - np.asarray(r["mean_probability"])))
    return float((count * gap).sum() / count.sum())


def apply_temperature(probs, temperature: float, bias: float = 0.0) -> np.ndarray:
    """p → sigmoid(logit(p) / T + b); T > 1 softens, T < 1 sharpens; with b = 0, 0.5 stays 0.5."""
    p = np.clip(np.asarray(probs, dtype=float), _EPS, 1 - _EPS)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) / float(temperature) + float(bias))))


def fit_temperature(y_true, probs) -> float:
    """The T in [0.05, 20] minimising the negative log-likelihood of the truth (a bounded 1-D search)."""
    from scipy.optimize import minimize_scalar

    t, p = _pair(y_true, probs)
    if t.size == 0 or t.min() == t.max():
        raise ValueError("fitting a temperature needs both present and absent labels")

    def nll(log_t: float) -> float:
        q = np.clip(apply_temperature(p, float(np.exp(log_t))), _EPS, 1 - _EPS)
        return float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))


def fit_platt(y_true, probs) -> tuple[float, float]:
    """The (T, b) minimising the negative log-likelihood of sigmoid(logit(p) / T + b): a logistic regression on the
    log-odds (T kept in [0.05, 20])."""
    from scipy.optimize import minimize

    t, p = _pair(y_true, probs)
    if t.size == 0 or t.min() == t.max():
        raise ValueError("fitting a calibration needs both present and absent labels")
    z = np.log(np.clip(p, _EPS, 1 - _EPS) / (1 - np.clip(p, _EPS, 1 - _EPS)))

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        q = np.clip(1.0 / (1.0 + np.exp(-(a * z + b))), _EPS, 1 - _EPS)
        residual = q - t
        return float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q))), np.array([np.mean(residual * z),
                                                                                    np.mean(residual)])

    best = minimize(nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(0.05, 20.0), (-20.0, 20.0)])
    return float(1.0 / best.x[0]), float(best.x[1])


def _log_loss(t: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))


def fit_binary_calibration(truth, predictions, au_set) -> dict[str, float]:
    """Platt scaling of p(present) fitted over every (face, AU) pair labelled in `truth` (`AU01_c`) and read out
    in `predictions` (`AU01_p`), two tables of the same rows in the same order (`predict_dataset` and its faces),
    with ECE and log-loss before and after. It also reports the best temperature alone, for comparison."""
    t_cols, p_cols = au_set.openface_columns("c"), au_set.openface_columns("p")
    pairs = [(truth[tc].to_numpy(float), predictions[pc].to_numpy(float))
             for tc, pc in zip(t_cols, p_cols) if tc in truth.columns and pc in predictions.columns]
    if not pairs:
        raise ValueError("no AU has both binary labels and p(present) predictions")
    t, p = _pair(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))
    temperature, bias = fit_platt(t, p)
    after = apply_temperature(p, temperature, bias)
    temperature_only = fit_temperature(t, p)
    return {"temperature": temperature, "bias": bias, "pairs": int(t.size),
            "ece_before": expected_calibration_error(t, p), "ece_after": expected_calibration_error(t, after),
            "nll_before": _log_loss(t, p), "nll_after": _log_loss(t, after),
            "temperature_only": temperature_only,
            "ece_temperature_only": expected_calibration_error(t, apply_temperature(p, temperature_only))}


def plot_reliability(curves: dict[str, dict[str, Any]], path: str | Path, title: str) -> None:
    """A reliability diagram: observed share of positives against mean p(present) per bin, one line per curve
    (`reliability_bins` output plus its "ece"), the diagonal being perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect calibration")
    for name, c in curves.items():
        x = np.asarray(c["mean_probability"], dtype=float)
        y = np.asarray(c["observed"], dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        ax.plot(x[ok], y[ok], marker="o", label=f"{name} (ECE {c['ece']:.3f})")
        n = len(c["count"])
        hist.bar((np.arange(n) + 0.5) / n, c["count"], width=0.9 / n, alpha=0.5, label=name)
    ax.set_ylabel("observed share present")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)  # a dataset name + model path can be long
    hist.set_xlabel("p(present), binned")
    hist.set_ylabel("(face, AU) pairs")
    hist.set_yscale("symlog")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MIN_CALIBRATION_FACES = 40  # below this a held-out half has too few faces to tell a fit from noise
MIN_CALIBRATION_POSITIVES = 20  # present (face, AU) pairs: Platt scaling fits two numbers from them


class CalibrationRefused(ValueError):
    """Too little data to calibrate, or a fit that does not help on faces it was not fitted to."""


def calibrate_binary(truth, predictions, au_set, seed: int = 0) -> dict[str, float]:
    """`fit_binary_calibration` with the checks a fit needs before it is written: at least
    `MIN_CALIBRATION_FACES` faces and `MIN_CALIBRATION_POSITIVES` present pairs, and a held-out check — fitted on a
    random half of the faces, the other half's log-loss must not get worse (`heldout_*` in the result). The fit
    returned is the one on all faces. Raises `CalibrationRefused` saying why."""
    t_cols = [c for c in au_set.openface_columns("c") if c in truth.columns]
    labels = truth[t_cols].to_numpy(float) if t_cols else np.zeros((len(truth), 0))
    faces, positives = len(truth), int(np.nansum(labels == 1))
    if faces < MIN_CALIBRATION_FACES or positives < MIN_CALIBRATION_POSITIVES:
        raise CalibrationRefused(
            f"{faces} faces with {positives} present (face, AU) pairs: calibrating needs at least "
            f"{MIN_CALIBRATION_FACES} faces and {MIN_CALIBRATION_POSITIVES} present pairs (a fit on fewer follows "
            "the noise, e.g. every p pushed to 0 or 1)")
    order = np.random.default_rng(seed).permutation(faces)
    fit_rows, check_rows = np.sort(order[: faces // 2]), np.sort(order[faces // 2:])
    half = fit_binary_calibration(truth.iloc[fit_rows], predictions.iloc[fit_rows], au_set)
    p_cols = au_set.openface_columns("p")
    pairs = [(truth.iloc[check_rows][tc].to_numpy(float), predictions.iloc[check_rows][pc].to_numpy(float))
             for tc, pc in zip(au_set.openface_columns("c"), p_cols)
             if tc in truth.columns and pc in predictions.columns]
    t, p = _pair(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))
    after = apply_temperature(p, half["temperature"], half["bias"])
    fit = fit_binary_calibration(truth, predictions, au_set)
    fit.update({"heldout_pairs": int(t.size), "heldout_nll_before": _log_loss(t, p),
                "heldout_nll_after": _log_loss(t, after), "heldout_ece_before": expected_calibration_error(t, p),
                "heldout_ece_after": expected_calibration_error(t, after)})
    if fit["heldout_nll_after"] > fit["heldout_nll_before"]:
        raise CalibrationRefused(
            f"a fit on half of the faces makes the other half's log-loss worse ({fit['heldout_nll_before']:.3f} → "
            f"{fit['heldout_nll_after']:.3f}): the model's probabilities are left as they are")
    return fit
