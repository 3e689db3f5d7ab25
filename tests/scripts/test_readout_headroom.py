"""scripts/readout_headroom.py: what per-AU thresholds and per-AU calibration could gain, from an eval report."""


import numpy as np
import pandas as pd
import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def headroom():
    return load_script("readout_headroom")


def _report_and_manifest(tmp_path, labels: dict, columns: dict, people: int):
    (tmp_path / "data").mkdir()
    (tmp_path / "report").mkdir()
    n = len(next(iter(labels.values())))
    manifest = tmp_path / "data" / "test.csv"
    pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(n)], "subject": [f"p{i % people}" for i in range(n)],
                  **labels}).to_csv(manifest, index=False)
    images = [str(tmp_path / "data" / "images" / f"{i}.jpg") for i in range(n)]
    pd.DataFrame({"image": images, **columns}).to_csv(tmp_path / "report" / "predictions.csv", index=False)
    return tmp_path / "report", manifest


def test_a_greedy_answer_that_never_says_present_has_threshold_headroom(headroom, tmp_path):
    """p ranks the faces perfectly but the greedy answer is always absent: greedy F1 0, the best threshold 1."""
    label = np.r_[np.zeros(20), np.full(10, 0.5)]
    p = np.r_[np.linspace(0.05, 0.3, 20), np.linspace(0.35, 0.45, 10)]
    report, manifest = _report_and_manifest(tmp_path, {"AU01": label},
                                            {"AU01_c": np.zeros(30), "AU01_p": p}, people=6)
    table = headroom.thresholds(*headroom.joined(report, manifest)[:2])
    assert table.loc["AU01", "greedy"] == 0 and table.loc["AU01", "p>=0.5"] == 0
    assert table.loc["AU01", "best on these rows"] == pytest.approx(1.0)
    assert table.loc["AU01", "present"] == 10


def test_per_au_calibration_wins_only_when_the_aus_are_miscalibrated_in_opposite_ways(headroom, tmp_path):
    """AU01's p is too high and AU02's too low by the same log-odds: one shared pair cannot fix both, per-AU pairs
    fitted on other identities can."""
    rng = np.random.default_rng(0)
    n = 2000
    truth_p = rng.uniform(0.02, 0.98, (2, n))
    labels = (rng.uniform(size=(2, n)) < truth_p).astype(float)
    logit = np.log(truth_p / (1 - truth_p))
    p01, p02 = 1 / (1 + np.exp(-(logit[0] + 1.5))), 1 / (1 + np.exp(-(logit[1] - 1.5)))
    report, manifest = _report_and_manifest(
        tmp_path, {"AU01": labels[0], "AU02": labels[1]},
        {"AU01_c": (p01 > 0.5) * 1.0, "AU02_c": (p02 > 0.5) * 1.0, "AU01_p": p01, "AU02_p": p02}, people=40)
    ece = headroom.calibration(*headroom.joined(report, manifest), repeats=3)
    assert ece["per AU"] < 0.5 * ece["one pair (as shipped)"]
