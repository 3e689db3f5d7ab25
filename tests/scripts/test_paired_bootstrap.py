"""scripts/paired_bootstrap.py: whether two reports of the same rows differ by more than the rows' noise."""


import numpy as np
import pandas as pd
import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def bootstrap():
    return load_script("paired_bootstrap")


def _setup(tmp_path, noise_b: float):
    """40 people × 5 faces, one AU; model A's scores are the label plus noise 0.3, model B's plus `noise_b`."""
    rng = np.random.default_rng(1)
    n = 200
    label = np.where(rng.uniform(size=n) < 0.3, rng.uniform(0.2, 1.0, n), 0.0)
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "test.csv"
    pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(n)], "subject": [f"p{i // 5}" for i in range(n)],
                  "AU01": label}).to_csv(manifest, index=False)
    images = [str(tmp_path / "data" / "images" / f"{i}.jpg") for i in range(n)]
    reports = []
    for name, noise in (("a", 0.3), ("b", noise_b)):
        score = np.clip(label + rng.normal(0, noise, n), 0, 1)
        (tmp_path / name).mkdir()
        pd.DataFrame({"image": images, "AU01_c": (score >= 0.1) * 1.0, "AU01_p": score,
                      "AU01_i": score}).to_csv(tmp_path / name / "predictions.csv", index=False)
        reports.append(tmp_path / name)
    return manifest, reports


def test_a_much_better_model_gets_an_interval_above_zero(bootstrap, tmp_path):
    manifest, (a, b) = _setup(tmp_path, noise_b=0.05)
    table = bootstrap.paired_bootstrap(manifest, a, b, resamples=200)
    assert (table["B - A low"] > 0).all()
    assert table.loc["ROC-AUC (p)", "B"] > table.loc["ROC-AUC (p)", "A"]


def test_a_model_against_itself_straddles_zero(bootstrap, tmp_path):
    manifest, (a, _) = _setup(tmp_path, noise_b=0.3)
    table = bootstrap.paired_bootstrap(manifest, a, a, resamples=50)
    assert (table["B - A low"] == 0).all() and (table["B - A high"] == 0).all()
