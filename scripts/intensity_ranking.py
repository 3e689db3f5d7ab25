"""How well each report's 0–1 intensity answers (`AU01_i`) rank faces by presence: per AU the ROC-AUC of the answer
as a score against the labels (present = label ≥ 0.10), and the share of faces answered 0.00.

`aullava eval` ranks by p(present) (`AU01_p`); a user who reads only the intensity column ranks by `AU01_i`, and a
column that answers 0.00 for most faces ranks them all alike, whatever its PCC. Several reports of the same rows
(e.g. the greedy and the mean intensity readout) sit side by side.

    .venv/bin/python scripts/intensity_ranking.py --truth runs/data/teacher/real_held_out_test.csv \
        greedy=runs/report-real-greedy mean=runs/report-real
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

PRESENT = 0.10


def truth_table(manifest: str | Path) -> pd.DataFrame:
    """The manifest's AU labels indexed by image path as `aullava eval` writes it (relative paths joined to the
    manifest's folder)."""
    table = pd.read_csv(manifest)
    folder = Path(manifest).parent
    table.index = [os.path.normpath(p if os.path.isabs(p) else folder / p) for p in table["image"]]
    return table[[c for c in table.columns if c.startswith("AU") and c[2:].isdigit()]]


def ranking(predictions: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per AU: ROC-AUC of `AUxx_i` against presence, and the share of answers at 0.00, over the labelled rows."""
    predictions = predictions.set_index(predictions["image"].map(os.path.normpath))
    missing = predictions.index.difference(truth.index)
    if len(missing):
        raise ValueError(f"{len(missing)} predicted images are not in the manifest, e.g. {missing[0]}")
    truth = truth.loc[predictions.index]
    rows = {}
    for au in truth.columns:
        column = f"{au}_i"
        if column not in predictions:
            continue
        labelled = truth[au].notna().to_numpy()
        if not labelled.any():  # masked for every row (the teacher's blind AUs on real photos)
            continue
        present = truth[au].to_numpy()[labelled] >= PRESENT
        answers = predictions[column].to_numpy()[labelled]
        auc = roc_auc_score(present, answers) if 0 < present.sum() < len(present) else np.nan
        rows[au] = {"auc": auc, "zero": float(np.mean(answers == 0.0)), "present": int(present.sum())}
    return pd.DataFrame(rows).T


def markdown(results: dict[str, pd.DataFrame]) -> str:
    aus = list(next(iter(results.values())).index)
    head = "| | " + " | ".join(a.replace("AU0", "AU") for a in aus) + " | Avg |"
    lines = [head, "|---|" + "---:|" * (len(aus) + 1)]
    def row(name: str, cells: list[str], average: str) -> str:
        return f"| {name} | " + " | ".join(cells) + f" | {average} |"

    for label, table in results.items():
        auc = table["auc"].astype(float)
        cells = ["–" if np.isnan(v) else f"{v:.2f}".lstrip("0") for v in auc]
        lines.append(row(f"ROC-AUC of `AU_i` — {label}", cells, f"**{np.nanmean(auc):.2f}**".replace("0.", ".")))
    for label, table in results.items():
        zero = table["zero"].astype(float)
        lines.append(row(f"answered 0.00 — {label}", [f"{v:.0%}" for v in zero], f"{zero.mean():.0%}"))
    present = next(iter(results.values()))["present"]
    lines.append(row("present faces", [str(int(v)) for v in present], str(int(present.sum()))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", required=True, help="the manifest the reports were evaluated on")
    parser.add_argument("reports", nargs="+", help="label=report folder (holding predictions.csv)")
    args = parser.parse_args(argv)
    truth = truth_table(args.truth)
    results = {}
    for item in args.reports:
        label, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: expected label=report folder")
        path = Path(folder) / "predictions.csv"
        if not path.is_file():
            parser.error(f"{path}: no such file")
        results[label] = ranking(pd.read_csv(path), truth)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
