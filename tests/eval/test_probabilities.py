"""Scores of p(present): ROC-AUC against scikit-learn, ECE and reliability bins by hand, temperature scaling, and
the evaluation reading and reporting probability columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from aullava.eval import probabilities as P
from aullava.eval.metrics import evaluate_tables
from aullava.eval.predictions import normalize_predictions, write_report


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_sklearn_with_ties_and_nan(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, 80).astype(float)
    s = np.round(rng.random(80) + 0.4 * t, 1)  # rounded: many ties
    t[:5] = np.nan
    keep = np.isfinite(t)
    assert P.roc_auc(t, s) == pytest.approx(roc_auc_score(t[keep], s[keep]), abs=1e-12)


def test_roc_auc_undefined_without_both_classes():
    assert np.isnan(P.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_ece_and_bins_by_hand():
    # bin [0.1, 0.2): p 0.15, 0.15 with truths 0, 1 → gap |0.5 − 0.15|; bin [0.9, 1.0]: p 0.95, 1.0, truths 1, 1
    t = [0, 1, 1, 1]
    p = [0.15, 0.15, 0.95, 1.0]
    bins = P.reliability_bins(t, p)
    assert bins["count"][1] == 2 and bins["count"][9] == 2 and sum(bins["count"]) == 4
    assert bins["observed"][1] == 0.5 and bins["mean_probability"][9] == pytest.approx(0.975)
    assert P.expected_calibration_error(t, p) == pytest.approx((2 * 0.35 + 2 * 0.025) / 4)


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_do_not():
    rng = np.random.default_rng(0)
    p = rng.random(40_000)
    t = (rng.random(p.size) < p).astype(float)
    assert P.expected_calibration_error(t, p) < 0.01
    sharp = P.apply_temperature(p, 0.4)
    assert P.expected_calibration_error(t, sharp) > 0.08


def test_fit_temperature_undoes_a_known_sharpening_and_keeps_answers():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 40_000)
    t = (rng.random(p.size) < p).astype(float)
    sharp = P.apply_temperature(p, 0.5)  # over-confident by a factor 2 in the logit
    temperature = P.fit_temperature(t, sharp)
    assert temperature == pytest.approx(2.0, rel=0.05)
    fixed = P.apply_temperature(sharp, temperature)
    assert P.expected_calibration_error(t, fixed) < P.expected_calibration_error(t, sharp) / 4
    assert np.array_equal(fixed >= 0.5, sharp >= 0.5)


def test_fit_platt_undoes_a_shift_no_temperature_can():
    """An over-eager model (log-odds shifted by +1.5, like training with a present-class weight): a temperature
    leaves p = 0.5 in place and cannot fix it; the temperature and shift together recover the truth."""
    rng = np.random.default_rng(2)
    p = rng.uniform(0.02, 0.98, 40_000)
    t = (rng.random(p.size) < p).astype(float)
    eager = P.apply_temperature(p, 0.8, 1.5)
    temperature, bias = P.fit_platt(t, eager)
    assert temperature == pytest.approx(1 / 0.8, rel=0.05) and bias == pytest.approx(-1.5 * 0.8, abs=0.1)
    fixed = P.apply_temperature(eager, temperature, bias)
    assert P.expected_calibration_error(t, fixed) < 0.01
    only_t = P.apply_temperature(eager, P.fit_temperature(t, eager))
    assert P.expected_calibration_error(t, only_t) > 5 * P.expected_calibration_error(t, fixed)


def test_fit_temperature_needs_both_labels():
    with pytest.raises(ValueError, match="both present and absent"):
        P.fit_temperature([1, 1], [0.3, 0.8])
    with pytest.raises(ValueError, match="both present and absent"):
        P.fit_platt([0, 0], [0.3, 0.8])


def _truth_and_predictions():
    truth = pd.DataFrame({"image": list("abcdefgh"), "AU01_c": [1, 1, 1, 0, 0, 0, 0, 1],
                          "AU02_c": [0, 0, 1, 1, 0, 0, 1, 0], "AU01": 0.5, "AU02": 0.2})
    predictions = pd.DataFrame({
        "file": list("abcdefgh"), "face": 0, "x0": 0, "y0": 0, "x1": 9, "y1": 9,
        "AU01_c": [1, 1, 0, 0, 0, 0, 0, 1], "AU02_c": [0, 0, 1, 0, 0, 0, 0, 0],
        "AU01_i": [0.7, 0.6, 0.2, 0.0, 0.0, 0.1, 0.0, 0.9], "AU02_i": 0.0,
        "AU01_p": [0.9, 0.8, 0.4, 0.1, 0.2, 0.3, 0.05, 0.95],  # ranks AU1 perfectly
        "AU02_p": [0.1, 0.2, 0.6, 0.3, 0.4, 0.1, 0.2, 0.9],  # AU2: 3 of 15 pairs in order → AUC 0.25
        "AU01_r_mean": 1.0, "AU02_r_mean": 0.5, "AU01_i_mean": 0.3, "AU02_i_mean": 0.1, "error": None})
    return truth, predictions


def test_prediction_table_columns_are_read_and_probabilities_scored(tmp_path):
    truth, predictions = _truth_and_predictions()
    table = normalize_predictions(predictions)
    assert table.tool == "aullava" and table.formats == ("binary", "continuous")
    assert list(table.table["AU01"]) == list(predictions["AU01_i"])  # AU01_i is the 0..1 intensity
    res = evaluate_tables(truth, table.table, ["AU1", "AU2"], table.formats, keys=table.keys)
    binary = res["binary"]
    assert binary["per_au"]["AU1"]["auc"] == 1.0
    assert binary["per_au"]["AU2"]["auc"] == pytest.approx(roc_auc_score([0, 0, 1, 1, 0, 0, 1, 0],
                                                                         predictions["AU02_p"]))
    assert binary["auc_from"] == "p(present)"
    all_t = np.r_[truth["AU01_c"], truth["AU02_c"]]
    all_p = np.r_[predictions["AU01_p"], predictions["AU02_p"]]
    assert binary["calibration"]["ece"] == pytest.approx(P.expected_calibration_error(all_t, all_p))
    md = write_report(res, tmp_path / "rep", "Probabilities", ["AU1", "AU2"])
    auc_row = next(line for line in md.splitlines() if line.startswith("| ROC-AUC"))
    assert [c.strip() for c in auc_row.split("|")[2:5]] == ["1.00", f"{binary['per_au']['AU2']['auc']:.2f}",
                                                            f"{binary['average']['auc']:.2f}"]
    assert "expected calibration error" in md
    with Image.open(tmp_path / "rep" / "reliability_binary.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["results"]["binary"]["calibration"]["count"] == [int(c) for c in binary["calibration"]["count"]]


def test_old_tables_with_a_bare_intensity_still_evaluate_and_rank_by_it():
    truth, predictions = _truth_and_predictions()
    old = predictions.drop(columns=[c for c in predictions if c.endswith(("_p", "_mean"))])
    old = old.rename(columns={"AU01_i": "AU01", "AU02_i": "AU02"})
    table = normalize_predictions(old)
    assert table.formats == ("binary", "continuous")
    res = evaluate_tables(truth, table.table, ["AU1", "AU2"], table.formats, keys=table.keys)
    assert res["binary"]["auc_from"] == "0-1 intensity" and "calibration" not in res["binary"]
    assert res["binary"]["per_au"]["AU1"]["auc"] == pytest.approx(
        roc_auc_score(truth["AU01_c"], old["AU01"]))


def test_a_probability_outside_0_1_is_refused_naming_the_column():
    _, predictions = _truth_and_predictions()
    predictions.loc[2, "AU02_p"] = 1.7
    with pytest.raises(ValueError, match="AU02_p = 1.7 is outside 0..1"):
        normalize_predictions(predictions, source="preds.csv")


def _calibration_tables(faces: int, seed: int = 0, overconfidence: float = 3.0):
    """Labels drawn from known probabilities, and predictions that state them overconfidently (logit × k)."""
    import pandas as pd

    from aullava.aus.catalogue import au_set

    aus = au_set(["AU1", "AU2", "AU4", "AU6"])
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.02, 0.98, size=(faces, len(aus)))
    labels = (rng.random(true_p.shape) < true_p).astype(float)
    logit = np.log(true_p / (1 - true_p)) * overconfidence
    stated = 1 / (1 + np.exp(-logit))
    truth = pd.DataFrame(labels, columns=aus.openface_columns("c"))
    predictions = pd.DataFrame(stated, columns=aus.openface_columns("p"))
    return truth, predictions, aus


def test_calibration_of_an_overconfident_model_passes_its_held_out_check():
    from aullava.eval.probabilities import calibrate_binary

    truth, predictions, aus = _calibration_tables(200)
    fit = calibrate_binary(truth, predictions, aus)
    assert fit["temperature"] == pytest.approx(3.0, rel=0.25)  # it finds the overconfidence
    assert fit["heldout_nll_after"] < fit["heldout_nll_before"]
    assert fit["heldout_ece_after"] < fit["heldout_ece_before"]


def test_calibration_refuses_too_few_faces_or_positives():
    from aullava.eval.probabilities import CalibrationRefused, calibrate_binary

    truth, predictions, aus = _calibration_tables(6)
    with pytest.raises(CalibrationRefused, match="at least 40 faces"):
        calibrate_binary(truth, predictions, aus)
    truth, predictions, aus = _calibration_tables(60)
    with pytest.raises(CalibrationRefused, match="20 present"):
        calibrate_binary(truth * 0, predictions, aus)
