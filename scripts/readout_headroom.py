"""How much a report's binary answers and probabilities could gain from per-AU readout choices, before building them.

Two questions about a trained model, answered from one `aullava eval` report and its manifest (present = label ≥
0.10, as in `intensity_ranking.py`):

- **Thresholds.** The binary answer is the LLM's greedy decision. Would a per-AU threshold on p(present) raise F1?
  Printed per AU: F1 of the greedy answer, of p ≥ 0.5, and of the best threshold chosen *on the test rows
  themselves* (an upper bound: a threshold fitted on other faces does no better than this on average).
- **Per-AU calibration.** The shipped model has one Platt pair (T, b) for all AUs. Would one pair per AU lower the
  pooled ECE? Identities are split in half at random (20 times): per-AU pairs are fitted on one half of the report's
  already calibrated p(present) and the ECE is measured on the other, against the global pair left as it is, and a
  per-AU pair shrunk towards it by n_present / (n_present + 20).

    .venv/bin/python scripts/readout_headroom.py runs/report-synth runs/data/synth/held_out_test.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intensity_ranking import PRESENT, truth_table  # noqa: E402

from aullava.eval.probabilities import apply_temperature, expected_calibration_error, fit_platt  # noqa: E402


def joined(report: str | Path, manifest: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Predictions and labels of the same rows, and each row's identity (the manifest's `subject`)."""
    predictions = pd.read_csv(Path(report) / "predictions.csv")
    predictions.index = predictions["image"].map(lambda p: str(Path(p).resolve()))
    truth = truth_table(manifest)
    truth.index = truth.index.map(lambda p: str(Path(p).resolve()))
    subjects = pd.read_csv(manifest)["subject"]
    subjects.index = truth.index
    rows = predictions.index.intersection(truth.index)
    if len(rows) == 0:
        raise SystemExit(f"{report}: none of its images is in {manifest}")
    return predictions.loc[rows], truth.loc[rows], subjects.loc[rows]


def thresholds(predictions: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    out = []
    for au in truth.columns:
        labelled = truth[au].notna()
        y = (truth.loc[labelled, au] >= PRESENT).astype(int)
        if f"{au}_p" not in predictions or y.sum() == 0:
            continue
        p, c = predictions.loc[labelled, f"{au}_p"], predictions.loc[labelled, f"{au}_c"]
        best = max(f1_score(y, p >= s, zero_division=0) for s in np.unique(p))
        out.append({"au": au, "present": int(y.sum()), "greedy": f1_score(y, c, zero_division=0),
                    "p>=0.5": f1_score(y, p >= 0.5, zero_division=0), "best on these rows": best})
    return pd.DataFrame(out).set_index("au")


def calibration(predictions: pd.DataFrame, truth: pd.DataFrame, subjects: pd.Series, repeats: int = 20,
                seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    people = np.array(sorted(subjects.unique()))
    ece: dict[str, list[float]] = {"one pair (as shipped)": [], "per AU": [], "per AU, shrunk": []}
    for _ in range(repeats):
        fit_half = subjects.isin(rng.choice(people, len(people) // 2, replace=False))
        labels, curves = [], {name: [] for name in ece}
        for au in truth.columns:
            if f"{au}_p" not in predictions:
                continue
            labelled = truth[au].notna()
            y = (truth[au] >= PRESENT).astype(float)
            p = predictions[f"{au}_p"].clip(1e-6, 1 - 1e-6)
            fit, test = labelled & fit_half, labelled & ~fit_half
            labels.append(y[test].to_numpy())
            curves["one pair (as shipped)"].append(p[test].to_numpy())
            if y[fit].sum() < 3 or y[fit].sum() == fit.sum():
                curves["per AU"].append(p[test].to_numpy())
                curves["per AU, shrunk"].append(p[test].to_numpy())
                continue
            temperature, bias = fit_platt(y[fit].to_numpy(), p[fit].to_numpy())
            curves["per AU"].append(apply_temperature(p[test].to_numpy(), temperature, bias))
            w = y[fit].sum() / (y[fit].sum() + 20)
            curves["per AU, shrunk"].append(apply_temperature(p[test].to_numpy(),
                                                              1 / (1 + w * (1 / temperature - 1)), w * bias))
        t = np.concatenate(labels)
        for name in ece:
            ece[name].append(expected_calibration_error(t, np.concatenate(curves[name])))
    return {name: float(np.mean(values)) for name, values in ece.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="an `aullava eval` output folder (predictions.csv)")
    parser.add_argument("manifest", help="the manifest it evaluated (labels and subjects)")
    args = parser.parse_args()
    predictions, truth, subjects = joined(args.report, args.manifest)
    table = thresholds(predictions, truth)
    print(f"{len(predictions)} rows; binary F1 per AU")
    print(table.round(3).to_string())
    print("mean", table.mean().round(3).to_dict())
    print("pooled ECE on held-out identities, mean of 20 splits:",
          {k: round(v, 4) for k, v in calibration(predictions, truth, subjects).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
