"""scripts/intensity_ranking.py: how well a report's 0–1 intensity column ranks faces by presence."""


import numpy as np
import pandas as pd
import pytest
from conftest import load_script
from sklearn.metrics import roc_auc_score


@pytest.fixture(scope="module")
def ranking():
    return load_script("intensity_ranking")


def _report(tmp_path, name, images, values):
    folder = tmp_path / name
    folder.mkdir()
    pd.DataFrame({"image": images, **values}).to_csv(folder / "predictions.csv", index=False)
    return folder


def test_ties_at_zero_rank_worse_than_the_expectation(ranking, tmp_path, capsys):
    """Relative manifest paths are matched to eval's paths; a column answering 0.00 for the hesitant faces ties
    them, the mean readout ranks them; AUs masked everywhere are left out."""
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    label = np.r_[np.zeros(30), rng.uniform(0.1, 0.9, 10)]
    manifest = tmp_path / "data" / "test.csv"
    pd.DataFrame({"image": [f"images/{i}.jpg" for i in range(40)], "subject": "s", "AU01": label,
                  "AU06": np.nan}).to_csv(manifest, index=False)
    images = [str(tmp_path / "data" / "images" / f"{i}.jpg") for i in range(40)]
    mean = 0.06 + label * 0.5 + rng.uniform(0, 0.04, 40)  # absent faces 0.06–0.10, present ones above
    greedy = np.where(label > 0.5, label, 0.0)
    greedy_folder = _report(tmp_path, "greedy", images, {"AU01_i": greedy, "AU06_i": 0.0})
    mean_folder = _report(tmp_path, "mean", images, {"AU01_i": mean, "AU06_i": 0.1})
    truth = ranking.truth_table(manifest)
    table = ranking.ranking(pd.read_csv(greedy_folder / "predictions.csv"), truth)
    assert list(table.index) == ["AU01"]
    assert table.loc["AU01", "auc"] == pytest.approx(roc_auc_score(label >= 0.1, greedy))
    assert table.loc["AU01", "zero"] == pytest.approx(np.mean(greedy == 0))
    assert ranking.ranking(pd.read_csv(mean_folder / "predictions.csv"), truth).loc["AU01", "auc"] == 1.0
    assert ranking.main(["--truth", str(manifest), f"greedy={greedy_folder}", f"mean={mean_folder}"]) == 0
    out = capsys.readouterr().out
    assert "| ROC-AUC of `AU_i` — mean | 1.00 |" in out and "AU6" not in out


def test_unknown_images_are_an_error(ranking, tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"image": ["/a.jpg"], "AU01": [0.0]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match="not in the manifest"):
        ranking.ranking(pd.DataFrame({"image": ["/b.jpg"], "AU01_i": [0.0]}), ranking.truth_table(manifest))
