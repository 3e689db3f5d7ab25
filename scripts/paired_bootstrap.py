"""Is one model's report better than another's on the same rows, or is the difference noise? A paired bootstrap.

Two `aullava eval` reports of the same manifest rows (e.g. two training arms) are resampled together, by identity
(the manifest's `subject`: faces of one person are not independent), 1,000 times. Each resample gives both models'
averages over the AUs that have present and absent faces in it; the script prints each average, the difference
(B − A) and its 95 % interval. An interval that straddles 0 says the test rows cannot tell the two apart.

Averages: binary F1 of the answers (`AU01_c`), ROC-AUC of p(present) (`AU01_p`), ROC-AUC of the 0–1 intensity as a
presence score (`AU01_i`), PCC of the 0–1 intensity with the label. Present = label ≥ 0.10.

    .venv/bin/python scripts/paired_bootstrap.py runs/data/teacher/real_held_out_test.csv \
        runs/report-real-default-model-v2-long runs/report-real-default-model-v2-3k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intensity_ranking import PRESENT  # noqa: E402
from readout_headroom import joined  # noqa: E402

METRICS = ("F1 (answers)", "ROC-AUC (p)", "ROC-AUC (AU_i)", "PCC (AU_i)")


def averages(predictions: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """The four averages over the AUs with both present and absent labelled faces in these rows (NaN if none)."""
    scores: list[list[float]] = [[] for _ in METRICS]
    for au in truth.columns:
        labelled = truth[au].notna().to_numpy()
        if f"{au}_p" not in predictions or labelled.sum() < 2:
            continue
        label = truth[au].to_numpy()[labelled]
        present = (label >= PRESENT).astype(int)
        if present.min() == present.max():
            continue
        intensity = predictions[f"{au}_i"].to_numpy()[labelled]
        scores[0].append(f1_score(present, predictions[f"{au}_c"].to_numpy()[labelled], zero_division=0))
        scores[1].append(roc_auc_score(present, predictions[f"{au}_p"].to_numpy()[labelled]))
        scores[2].append(roc_auc_score(present, intensity))
        if intensity.std() > 0 and label.std() > 0:
            scores[3].append(float(np.corrcoef(intensity, label)[0, 1]))
    return np.array([np.mean(s) if s else np.nan for s in scores])


def paired_bootstrap(manifest, report_a, report_b, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    pred_a, truth, subjects = joined(report_a, manifest)
    pred_b, _, _ = joined(report_b, manifest)
    if list(pred_b.index) != list(pred_a.index):
        pred_b = pred_b.reindex(pred_a.index)
        if pred_b.isna().all(axis=1).any():
            raise SystemExit(f"{report_b} does not cover the same rows as {report_a}")
    rows_of = {s: np.flatnonzero(subjects.to_numpy() == s) for s in subjects.unique()}
    people = list(rows_of)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        rows = np.concatenate([rows_of[p] for p in rng.choice(people, len(people), replace=True)])
        a = averages(pred_a.iloc[rows].reset_index(drop=True), truth.iloc[rows].reset_index(drop=True))
        b = averages(pred_b.iloc[rows].reset_index(drop=True), truth.iloc[rows].reset_index(drop=True))
        differences.append(b - a)
    differences = np.array(differences)
    low, high = np.nanpercentile(differences, [2.5, 97.5], axis=0)
    return pd.DataFrame({"A": averages(pred_a, truth), "B": averages(pred_b, truth), "B - A low": low,
                         "B - A high": high}, index=list(METRICS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="the manifest both reports evaluated (labels and subjects)")
    parser.add_argument("report_a", help="`aullava eval` output folder of model A")
    parser.add_argument("report_b", help="`aullava eval` output folder of model B")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    table = paired_bootstrap(args.manifest, args.report_a, args.report_b, args.resamples)
    print(f"A = {args.report_a}\nB = {args.report_b}\n95 % interval of B − A, {args.resamples} resamples by identity")
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
