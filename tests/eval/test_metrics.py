"""Metrics against scikit-learn / scipy and a hand-written ANOVA ICC, NaN masking, edge cases, table joins."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score as sk_f1, mean_absolute_error

from aullava.eval import metrics as M

TOL = 1e-9


def _rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("seed", range(5))
def test_f1_accuracy_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, 50)
    p = rng.integers(0, 2, 50)
    assert M.f1_score(t, p) == pytest.approx(sk_f1(t, p, zero_division=0), abs=TOL)
    assert M.accuracy(t, p) == pytest.approx(accuracy_score(t, p), abs=TOL)


def test_f1_edge_cases():
    # no positive label and no positive prediction: F1 = 0 (no true positive), like zero_division=0
    assert M.f1_score([0, 0, 0], [0, 0, 0]) == 0.0 == sk_f1([0, 0, 0], [0, 0, 0], zero_division=0)
    assert M.accuracy([0, 0, 0], [0, 0, 0]) == 1.0
    assert M.f1_score([1, 1, 0], [0, 0, 1]) == 0.0
    assert M.f1_score([1, 1], [1, 1]) == 1.0
    assert math.isnan(M.f1_score([], []))
    assert math.isnan(M.accuracy([np.nan, 1], [0, np.nan]))
    with pytest.raises(ValueError, match="0 or 1"):
        M.f1_score([0, 1, 2], [0, 1, 1])


def test_nan_masking_uses_rows_where_both_present():
    rng = _rng()
    t = rng.integers(0, 2, 40).astype(float)
    p = rng.integers(0, 2, 40).astype(float)
    t[[1, 5, 9]] = np.nan
    p[[2, 5, 30]] = np.nan
    keep = np.isfinite(t) & np.isfinite(p)
    assert keep.sum() == 35
    assert M.f1_score(t, p) == pytest.approx(sk_f1(t[keep], p[keep]), abs=TOL)
    assert M.accuracy(t, p) == pytest.approx(accuracy_score(t[keep], p[keep]), abs=TOL)
    ti, pi = rng.integers(0, 6, 40).astype(float), rng.uniform(0, 5, 40)
    ti[3], pi[7] = np.nan, np.nan
    k = np.isfinite(ti) & np.isfinite(pi)
    assert M.mae(ti, pi) == pytest.approx(mean_absolute_error(ti[k], pi[k]), abs=TOL)
    assert M.pcc(ti, pi) == pytest.approx(pearsonr(ti[k], pi[k])[0], abs=TOL)
    with pytest.raises(ValueError, match="length"):
        M.mae([1, 2], [1])


@pytest.mark.parametrize("seed", range(3))
def test_mae_pcc_match_sklearn_scipy(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 6, 30).astype(float)
    p = np.clip(t + rng.normal(0, 1, 30), 0, 5)
    assert M.mae(t, p) == pytest.approx(mean_absolute_error(t, p), abs=TOL)
    assert M.pcc(t, p) == pytest.approx(pearsonr(t, p)[0], abs=TOL)
    tc, pc = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
    assert M.mae(tc, pc) == pytest.approx(mean_absolute_error(tc, pc), abs=TOL)
    assert M.pcc(tc, pc) == pytest.approx(pearsonr(tc, pc)[0], abs=TOL)


def test_pcc_icc_degenerate():
    assert math.isnan(M.pcc([1, 1, 1], [0, 1, 2]))  # constant truth: r undefined
    assert math.isnan(M.pcc([1], [1]))
    assert math.isnan(M.icc([2], [2]))
    assert math.isnan(M.icc([3, 3, 3], [3, 3, 3]))  # no variance at all
    assert math.isnan(M.mae([np.nan], [1.0]))


def _icc31_by_hand(y):
    """Shrout & Fleiss (1979) ICC(3,1) from explicit two-way ANOVA sums of squares, written with loops."""
    n, k = len(y), len(y[0])
    grand = sum(sum(r) for r in y) / (n * k)
    row_means = [sum(r) / k for r in y]
    col_means = [sum(y[i][j] for i in range(n)) / n for j in range(k)]
    bss = sum(k * (m - grand) ** 2 for m in row_means)
    jss = sum(n * (m - grand) ** 2 for m in col_means)
    tss = sum((y[i][j] - grand) ** 2 for i in range(n) for j in range(k))
    bms = bss / (n - 1)
    ems = (tss - bss - jss) / ((n - 1) * (k - 1))
    return (bms - ems) / (bms + (k - 1) * ems)


def test_icc_shrout_fleiss_table():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; their Table 4 gives ICC(3,1) = .71
    y = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    assert M.icc_3_1(y) == pytest.approx(_icc31_by_hand(y), abs=TOL)
    assert round(M.icc_3_1(y), 2) == 0.71
    # BMS = 11.24, EMS = 1.02 in their Table 3 (rounded)
    assert M.icc_3_1(y) == pytest.approx((11.241667 - 1.019444) / (11.241667 + 3 * 1.019444), abs=1e-6)


def test_icc_two_raters_and_consistency():
    rng = _rng()
    t = rng.integers(0, 6, 25).astype(float)
    p = np.clip(t + rng.normal(0, 0.8, 25), 0, 5)
    expected = _icc31_by_hand([[a, b] for a, b in zip(t, p)])
    assert M.icc(t, p) == pytest.approx(expected, abs=TOL)
    # consistency ICC: a constant offset of the prediction does not change it
    assert M.icc(t, p + 1.5) == pytest.approx(expected, abs=TOL)
    assert M.icc(t, t) == pytest.approx(1.0, abs=TOL)
    t2, p2 = t.copy(), p.copy()
    t2[0], p2[4] = np.nan, np.nan
    assert M.icc(t2, p2) == pytest.approx(_icc31_by_hand([[a, b] for a, b in zip(t2, p2) if a == a and b == b]),
                                          abs=TOL)


def test_au_metrics_average_excludes_nan_aus():
    truth = {"AU1": [1, 0, 1, 1], "AU2": [np.nan] * 4, "AU4": [0, 0, 0, 0]}
    pred = {"AU1": [1, 0, 0, 1], "AU2": [1, 1, 1, 1], "AU4": [0, 0, 0, 0]}
    res = M.au_metrics(truth, pred, "binary")
    assert res["per_au"]["AU1"]["f1"] == pytest.approx(0.8, abs=TOL)
    assert math.isnan(res["per_au"]["AU2"]["f1"]) and res["per_au"]["AU2"]["n"] == 0
    assert res["per_au"]["AU4"]["f1"] == 0.0  # all-negative AU counts 0, not skipped
    assert res["average"]["f1"] == pytest.approx(0.4, abs=TOL)
    assert res["average"]["accuracy"] == pytest.approx((0.75 + 1.0) / 2, abs=TOL)
    assert res["excluded"] == {"f1": ["AU2"], "accuracy": ["AU2"]}


def _tables():
    truth = pd.DataFrame({
        "image": [f"S1/T1/{i:04d}.jpg" for i in range(6)], "subject": "S1", "dataset": "toy",
        "AU01_c": [1, 0, 1, 0, 1, np.nan], "AU02_c": [0, 0, 1, 1, 0, 1],
        "AU01_r": [3, 0, 2, 0, 4, np.nan], "AU02_r": [0, 1, 2, 3, 0, 5],
    })
    pred = pd.DataFrame({
        "image": [f"/data/toy/S1/T1/{i:04d}.jpg" for i in range(5)],  # absolute paths, last image missing
        "AU01_c": [1, 0, 0, 0, 1], "AU02_c": [0, 1, 1, 1, np.nan],
        "AU01_r": [2, 0, 1, 0, 5], "AU02_r": [0, 1, 3, 3, np.nan],
    })
    return truth, pred


def test_evaluate_tables_join_and_counts():
    truth, pred = _tables()
    with pytest.warns(UserWarning, match="1 of 6"):
        res = M.evaluate_tables(truth, pred, ["AU1", "AU2"], ["binary", "discrete"])
    b = res["binary"]
    assert set(b["per_au"]) == {"AU1", "AU2"}
    assert b["per_au"]["AU1"]["n"] == 5 and b["per_au"]["AU2"]["n"] == 4
    assert b["per_au"]["AU1"]["f1"] == pytest.approx(sk_f1([1, 0, 1, 0, 1], [1, 0, 0, 0, 1]), abs=TOL)
    assert b["per_au"]["AU2"]["accuracy"] == pytest.approx(accuracy_score([0, 0, 1, 1], [0, 1, 1, 1]), abs=TOL)
    assert b["n_truth"] == 6 and b["unmatched_truth"] == 1 and b["missing_predictions"] == 1 and b["n"] == 5
    d = res["discrete"]
    assert d["per_au"]["AU2"]["mae"] == pytest.approx(mean_absolute_error([0, 1, 2, 3], [0, 1, 3, 3]), abs=TOL)
    assert d["average"]["pcc"] == pytest.approx(
        (pearsonr([3, 0, 2, 0, 4], [2, 0, 1, 0, 5])[0] + pearsonr([0, 1, 2, 3], [0, 1, 3, 3])[0]) / 2, abs=TOL)


def test_evaluate_tables_errors():
    truth, pred = _tables()
    other = pred.assign(image=[f"X{i}.jpg" for i in range(5)])
    with pytest.raises(ValueError, match="no ground-truth row matches"):
        M.evaluate_tables(truth, other, ["AU1"], ["binary"])
    with pytest.raises(ValueError, match="duplicated"):
        M.evaluate_tables(truth, pd.concat([pred, pred.iloc[:1]]), ["AU1"], ["binary"])
    with pytest.raises(ValueError, match="key column"):
        M.evaluate_tables(truth, pred.rename(columns={"image": "x"}), ["AU1"], ["binary"])
    with pytest.raises(ValueError, match="continuous"):
        M.evaluate_tables(truth, pred, ["AU1"], ["continuous"])


def test_match_image_paths():
    truth = ["S1/T1/0001.jpg", "S2/T1/0001.jpg", "S1/T1/0002.jpg"]
    got = M.match_image_paths(truth, ["/abs/S1/T1/0001.jpg", "S2\\T1\\0001.jpg", "0002.jpg", "nope.jpg"])
    assert got == ["S1/T1/0001.jpg", "S2/T1/0001.jpg", "S1/T1/0002.jpg", "nope.jpg"]
    with pytest.raises(ValueError, match="several"):
        M.match_image_paths(truth, ["0001.jpg"])  # two subjects have a 0001.jpg
