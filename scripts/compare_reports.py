"""Side-by-side per-AU tables of several `aullava eval` reports on the same rows (model versions, ablation arms), with
the baseline the first report measured, as Markdown for MODEL_CARD.md.

    .venv/bin/python scripts/compare_reports.py "v1=runs/report-synth-v1" "v2=runs/report-synth" \
        --rows binary:f1 binary:auc continuous:mae continuous:pcc discrete:icc

Each report's `metrics.json` holds, per format, per-AU metrics and their average. A report whose rows differ from the
first one's (another `--limit`, another manifest) is refused: the comparison must be on the same faces. The baseline
rows come from the first report; all reports must name the same baseline or none.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

LABEL = {"f1": "F1 %", "accuracy": "accuracy %", "auc": "ROC-AUC", "mae": "MAE", "pcc": "PCC", "icc": "ICC(3,1)"}
PERCENT = {"f1", "accuracy"}


def cell(value, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if metric in PERCENT:
        return f"{100 * value:.1f}"
    text = f"{value:.3f}" if metric in {"mae", "pcc", "icc"} else f"{value:.2f}"
    return text.replace("0.", ".", 1) if text.startswith("0.") else text.replace("-0.", "−.", 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="label=report folder (holding metrics.json)")
    parser.add_argument("--rows", nargs="+", default=["binary:f1", "binary:auc", "continuous:mae", "continuous:pcc"],
                        help="format:metric rows to show")
    parser.add_argument("--no-baseline", action="store_true", help="leave the baseline's rows out")
    args = parser.parse_args()
    loaded = []
    for spec in args.reports:
        label, _, folder = spec.partition("=")
        path = Path(folder) / "metrics.json"
        if not folder or not path.is_file():
            print(f"error: {spec}: expected label=folder with a metrics.json", file=sys.stderr)
            return 2
        loaded.append((label, json.loads(path.read_text())))
    first = loaded[0][1]
    for label, metrics in loaded[1:]:
        for fmt, res in metrics["results"].items():
            ref = first["results"].get(fmt, {})
            if ref and (res.get("n"), res.get("n_truth")) != (ref.get("n"), ref.get("n_truth")):
                print(f"error: {label} ({fmt}) evaluated {res.get('n')} rows, the first report {ref.get('n')}: "
                      "not the same faces", file=sys.stderr)
                return 2
    ids = list(next(iter(first["results"].values()))["per_au"])
    print("| | " + " | ".join(a.replace("AU0", "AU") for a in ids) + " | Avg |")
    print("|---|" + "---:|" * (len(ids) + 1))
    baseline = first.get("baseline")
    for row in args.rows:
        fmt, _, metric = row.partition(":")
        sources = [(label, m["results"].get(fmt)) for label, m in loaded]
        if baseline and not args.no_baseline:
            sources.append((baseline["name"], baseline["results"].get(fmt)))
        for label, res in sources:
            if res is None or metric not in res.get("average", {}):
                continue
            cells = [cell(res["per_au"].get(a, {}).get(metric), metric) for a in ids]
            print(f"| {LABEL.get(metric, metric)} ({fmt}) — {label} | " + " | ".join(cells)
                  + f" | **{cell(res['average'].get(metric), metric)}** |")
    for label, metrics in loaded:
        extra = []
        binary = metrics["results"].get("binary", {})
        if "calibration" in binary:
            extra.append(f"ECE {binary['calibration']['ece']:.3f}")
        agreement = metrics.get("format_agreement", {}).get("share", {})
        extra += [f"{pair} {100 * v:.1f} %" for pair, v in agreement.items() if v is not None]
        print(f"\n{label}: " + "; ".join(extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
