"""Reading OpenFace / py-feat / aullava prediction CSVs, and the written report (JSON, Markdown, PNG)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aullava.eval.predictions import format_agreement, normalize_predictions, read_predictions, write_report
from aullava.eval.metrics import evaluate_tables

OPENFACE_CSV = """frame, face_id, timestamp, confidence, success, AU01_r, AU02_r, AU01_c, AU02_c
1, 0, 0.000, 0.98, 1, 2.50, 0.00, 1, 0
2, 0, 0.033, 0.10, 0, 0.00, 0.00, 0, 0
3, 0, 0.067, 0.97, 1, 0.20, 1.40, 0, 1
4, 0, 0.100, 0.95, 1, 3.10, 0.30, 1, 0
"""


def test_read_openface_strips_headers_and_blanks_failed_frames(tmp_path):
    path = tmp_path / "vid.csv"
    path.write_text(OPENFACE_CSV)
    pt = read_predictions(path)
    assert pt.tool == "openface" and pt.keys == ("frame",)
    assert set(pt.formats) == {"binary", "discrete"}
    df = pt.table
    assert {"AU01_r", "AU02_c", "frame", "success"} <= set(df.columns)
    assert df["frame"].tolist() == [0, 1, 2, 3]  # OpenFace's 1-based frames -> 0-based index
    failed = df[df["frame"] == 1].iloc[0]
    assert all(math.isnan(failed[c]) for c in ("AU01_r", "AU02_r", "AU01_c", "AU02_c"))
    assert df.loc[df["frame"] == 0, "AU01_r"].item() == 2.5
    assert read_predictions(path, video="vid").keys == ("video", "frame")

    truth = pd.DataFrame({"video": "/data/toy/vid.avi", "frame": [0, 1, 2, 3, 4], "subject": "S", "dataset": "toy",
                          "AU01_c": [1, 1, 0, 1, 0], "AU02_c": [0, 0, 1, 0, 1],
                          "AU01_r": [2, 3, 0, 3, 0], "AU02_r": [0, 0, 1, 0, 2]})
    with pytest.warns(UserWarning, match="1 of 5"):
        res = evaluate_tables(truth, df, ["AU1", "AU2"], pt.formats, keys=pt.keys)
    vt = read_predictions(path, video="vid.avi")  # matched to the ground truth's video path by file name
    with pytest.warns(UserWarning, match="1 of 5"):
        assert evaluate_tables(truth, vt.table, ["AU1"], vt.formats, keys=vt.keys)["binary"]["n"] == 3
    b = res["binary"]
    # frame 1 failed (NaN), frame 4 has no row: both count as missing, 3 rows evaluated
    assert b["missing_predictions"] == 2 and b["unmatched_truth"] == 1 and b["n"] == 3
    assert b["per_au"]["AU1"]["f1"] == 1.0 and b["average"]["accuracy"] == 1.0
    assert res["discrete"]["per_au"]["AU1"]["mae"] == pytest.approx((0.5 + 0.2 + 0.1) / 3, abs=1e-9)


PYFEAT_CSV = """,frame,FaceRectX,FaceRectY,FaceRectWidth,FaceRectHeight,FaceScore,AU01,AU02,AU04,input
0,0,10,10,100,120,0.99,0.81,0.10,0.50,/data/toy/S1/a.jpg
1,1,10,10,100,120,0.99,0.20,0.70,0.49,/data/toy/S1/b.jpg
2,1,300,10,30,40,0.90,0.90,0.90,0.90,/data/toy/S1/b.jpg
3,2,,,,,,,,,/data/toy/S1/c.jpg
"""


def test_read_pyfeat_thresholds_probabilities(tmp_path):
    path = tmp_path / "feat.csv"
    path.write_text(PYFEAT_CSV)
    with pytest.warns(UserWarning, match="1 extra face"):
        pt = read_predictions(path)
    assert pt.tool == "pyfeat" and pt.keys == ("image",)
    assert pt.formats == ("binary", "continuous")  # no 0-5 from probabilities
    df = pt.table.set_index("image")
    assert len(df) == 3
    assert df.loc["/data/toy/S1/a.jpg", ["AU01_c", "AU02_c", "AU04_c"]].tolist() == [1.0, 0.0, 1.0]  # p >= 0.5
    assert df.loc["/data/toy/S1/b.jpg", "AU01"] == 0.20  # the larger face is kept
    assert df.loc["/data/toy/S1/c.jpg", ["AU01", "AU01_c"]].isna().all()

    truth = pd.DataFrame({"image": ["S1/a.jpg", "S1/b.jpg", "S1/c.jpg"], "subject": "S1", "dataset": "toy",
                          "AU01_c": [1, 0, 1], "AU02_c": [0, 1, 0], "AU04_c": [1, 0, 0],
                          "AU01": [0.9, 0.1, 0.5], "AU02": [0.0, 0.8, 0.1], "AU04": [0.6, 0.2, 0.0]})
    res = evaluate_tables(truth, pt.table, ["AU1", "AU2", "AU4"], pt.formats, keys=pt.keys)
    assert res["binary"]["average"]["f1"] == 1.0 and res["binary"]["missing_predictions"] == 1
    assert res["continuous"]["per_au"]["AU1"]["mae"] == pytest.approx((0.09 + 0.1) / 2, abs=1e-9)


def test_normalize_aullava_table_keeps_largest_face():
    df = pd.DataFrame([
        {"file": "x/a.jpg", "face": 0, "x0": 0, "y0": 0, "x1": 10, "y1": 10, "AU01_c": 1, "AU01_r": 3, "AU01": 0.6,
         "error": None},
        {"file": "x/a.jpg", "face": 1, "x0": 20, "y0": 0, "x1": 80, "y1": 60, "AU01_c": 0, "AU01_r": 0, "AU01": 0.0,
         "error": None},
        {"file": "x/b.jpg", "face": -1, "error": "no face found"},
    ])
    with pytest.warns(UserWarning):
        pt = normalize_predictions(df)
    assert pt.tool == "aullava" and pt.keys == ("image",) and pt.formats == ("binary", "discrete", "continuous")
    assert pt.table.set_index("image").loc["x/a.jpg", "face"] == 1


def test_write_report(tmp_path):
    truth = pd.DataFrame({"image": list("abcdef"), "AU01_c": [1, 0, 1, 0, 1, 1], "AU02_c": [0, 0, 1, 1, 0, 1],
                          "AU04_c": np.nan, "AU01_r": [3, 0, 2, 0, 4, 1], "AU02_r": [0, 1, 2, 3, 0, 5],
                          "AU04_r": np.nan})
    pred = truth.drop(index=5).assign(AU01_c=[1, 0, 0, 0, 1], AU01_r=[2, 0, 1, 0, 5], AU04_c=0, AU04_r=0)
    with pytest.warns(UserWarning):
        res = evaluate_tables(truth, pred, ["AU1", "AU2", "AU4"], ["binary", "discrete"])
    md = write_report(res, tmp_path / "rep", "Toy evaluation", ["AU1", "AU2", "AU4"])
    out = tmp_path / "rep"
    assert (out / "report.md").read_text() == md
    header = next(line for line in md.splitlines() if line.startswith("| Metric"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == ["Metric", "AU1", "AU2", "AU4", "**Avg**"]
    f1_row = next(line for line in md.splitlines() if line.startswith("| F1"))
    assert f1_row.split("|")[2].strip() == "80.0" and f1_row.split("|")[4].strip() == "–"
    assert "1 labelled ground-truth row(s) had no prediction" in md
    assert "AU4 left out of the average" in md
    data = json.loads((out / "metrics.json").read_text())
    assert data["results"]["binary"]["per_au"]["AU4"]["f1"] is None
    for fmt in ("binary", "discrete"):
        with Image.open(out / f"per_au_{fmt}.png") as im:
            im.verify()
        with Image.open(out / f"per_au_{fmt}.png") as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def test_report_puts_the_baseline_in_the_same_table(tmp_path):
    truth = pd.DataFrame({"image": list("abcd"), "AU01_c": [1, 0, 1, 0], "AU02_c": [0, 1, 1, 0]})
    model = truth.assign(AU02_c=[0, 0, 1, 0])  # AU1 perfect, AU2 F1 2/3
    base = truth.assign(AU01_c=[0, 0, 0, 0])  # AU1 never found
    res = evaluate_tables(truth, model, ["AU1", "AU2"], ["binary"])
    base_res = evaluate_tables(truth, base, ["AU1", "AU2"], ["binary"])
    md = write_report(res, tmp_path / "rep", "With baseline", ["AU1", "AU2"], baseline=("MediaPipe", base_res))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
            for line in md.splitlines() if line.startswith("| F1")}
    assert rows == {"F1 (%)": ["100.0", "66.7", "83.3"], "F1 (%) — MediaPipe": ["0.0", "100.0", "50.0"]}
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["baseline"]["name"] == "MediaPipe"


def test_format_agreement_counts_presence_disagreements():
    table = pd.DataFrame({"image": list("abc"),
                          "AU01_c": [1, 0, 1], "AU01_r": [2, 0, 0], "AU01": [0.35, 0.10, 0.0],
                          "AU02_c": [0, 0, np.nan], "AU02_r": [0, 1, 3], "AU02": [0.0, 0.09, 0.6]})
    agreement = format_agreement(table, ["AU1", "AU2"])
    # AU1: a agrees everywhere; b: c=0 but continuous 0.10 is present; c: c=1 but r=0 and x=0.
    # AU2: a agrees; b: r=1 but c=0 and x=0.09 absent; c: no binary answer (only r/x, which agree).
    assert agreement["n"] == {"binary = discrete": 5, "binary = continuous": 5, "discrete = continuous": 6,
                              "binary = discrete = continuous": 5}
    assert agreement["share"]["binary = discrete"] == pytest.approx(3 / 5)
    assert agreement["share"]["binary = continuous"] == pytest.approx(3 / 5)
    assert agreement["share"]["discrete = continuous"] == pytest.approx(4 / 6)
    assert agreement["share"]["binary = discrete = continuous"] == pytest.approx(2 / 5)
