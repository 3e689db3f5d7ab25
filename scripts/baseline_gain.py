"""Measures what `predict --baseline person` gains on sequences with exact labels: per person, one source photo
whose *resting* face carries an AU (the synth's mesh warp adds e.g. AU12 at 0.6 to every frame: a naturally raised
lip corner), and on about half of the frames an expression added on top (`aullava.synth.sampling.sample_aus`,
without the resting AU and its antagonists). The labels are the added AUs only: what the person does, relative to
their neutral. Each frame gets ±1 grey level of noise, as a video's frames differ.

    .venv/bin/python scripts/baseline_gain.py --index ../shared/faces/index.csv \\
        --held-out runs/data/synth/held_out.csv --out runs/baseline-gain [--model DIR] [--persons 8] [--frames 30]

Writes the frames (one folder per person), labels.csv, runs `aullava predict FOLDER --formats binary continuous
--baseline person --out aus.csv`, and prints F1 (binary answers) and PCC (expected 0-1 intensity) per AU and on
average, raw against baseline-corrected; and the same for each person's resting AU alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# (resting expression, the AU it is named by), in the AU set's ids (AU1, not AU01)
RESTING = (({"AU12": 0.6}, "AU12"), ({"AU4": 0.6}, "AU4"), ({"AU15": 0.6}, "AU15"), ({"AU1": 0.5, "AU2": 0.5}, "AU1"),
           ({"AU10": 0.5}, "AU10"), ({"AU14": 0.6}, "AU14"), ({"AU7": 0.6}, "AU7"), ({"AU17": 0.6}, "AU17"))
ANTAGONISTS = {"AU12": ("AU15",), "AU15": ("AU12",), "AU17": ("AU26", "AU25"), "AU1": ("AU4",), "AU4": ("AU1", "AU2")}
PRESENT = 0.10  # the project's rule: present = intensity >= 0.10
GAIN = 2.5  # the synth's gain of the shipped model's training data


def build(args) -> pd.DataFrame:
    from aullava.aus.catalogue import au_set
    from aullava.faces.detector import FaceDetector
    from aullava.faces.images import load_image
    from aullava.synth.sampling import sample_aus
    from aullava.synth.warp import warp_face
    from PIL import Image

    index = pd.read_csv(args.index)
    if args.held_out:
        people = set(pd.read_csv(args.held_out)["subject"])
        index = index[index["identity"].isin(people)]
    index = index.drop_duplicates("identity").sort_values("identity")
    rng = np.random.default_rng(args.seed)
    ids = list(au_set("default").ids)
    assert all(a in ids for rest, _ in RESTING for a in rest), "RESTING names AUs outside the default set"
    rows, persons = [], 0
    with FaceDetector() as detector:
        for _, entry in index.sample(frac=1.0, random_state=args.seed).iterrows():
            if persons == args.persons:
                break
            image = load_image(args.index.parent / entry["image"])
            faces = detector.detect(image)
            if len(faces) != 1 or abs(faces[0].pose[1]) > 15:
                continue
            rest, rest_au = RESTING[persons % len(RESTING)]
            folder = args.out / "frames" / f"person{persons:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(args.frames):
                added = sample_aus(rng, ids) if rng.random() < 0.5 else {a: 0.0 for a in ids}
                for au in (*rest, *(b for a in rest for b in ANTAGONISTS.get(a, ()))):
                    added[au] = 0.0
                combined = {a: min(1.0, v + rest.get(a, 0.0)) for a, v in added.items()}
                warped = warp_face(image, faces[0].landmarks, combined, gain=GAIN).image.astype(np.int16)
                warped = np.clip(warped + rng.integers(-1, 2, warped.shape), 0, 255).astype(np.uint8)
                name = folder / f"frame{k:03d}.png"
                Image.fromarray(warped).save(name)
                rows.append({"file": str(name), "person": folder.name, "resting_au": rest_au,
                             **{a: round(float(added[a]), 3) for a in ids}})
            persons += 1
    labels = pd.DataFrame(rows)
    labels.to_csv(args.out / "labels.csv", index=False)
    return labels


def f1(truth: np.ndarray, answer: np.ndarray) -> float:
    tp = float(np.sum(truth & answer))
    fp, fn = float(np.sum(~truth & answer)), float(np.sum(truth & ~answer))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def report(labels: pd.DataFrame, table: pd.DataFrame) -> None:
    from aullava.aus.catalogue import au_set

    merged = labels.merge(table, on="file", suffixes=("", "_table"))
    ids = [c for c in labels.columns if c.startswith("AU")]
    column = dict(zip(au_set("default").ids, au_set("default").openface_columns("")))  # AU1 → AU01_ (table names)
    lines = []
    for au in ids:
        truth = merged[au].to_numpy() >= PRESENT
        if truth.sum() == 0:
            continue
        row = {"AU": au, "positives": int(truth.sum())}
        name = column[au].rstrip("_")
        for tag, c, i in (("raw", f"{name}_c", f"{name}_i_mean"), ("corrected", f"{name}_c_bc", f"{name}_i_mean_bc")):
            answer = merged[c].fillna(0).to_numpy().astype(int) == 1
            row[f"F1 {tag}"] = f1(truth, answer)
            row[f"PCC {tag}"] = float(np.corrcoef(merged[au], merged[i].fillna(0))[0, 1])
        lines.append(row)
    per_au = pd.DataFrame(lines).set_index("AU")
    print(per_au.round(3).to_string())
    print(f"\nmean over {len(per_au)} AUs: F1 raw {per_au['F1 raw'].mean():.3f} -> corrected "
          f"{per_au['F1 corrected'].mean():.3f}; PCC raw {per_au['PCC raw'].mean():.3f} -> corrected "
          f"{per_au['PCC corrected'].mean():.3f}")
    resting = []
    for person, group in merged.groupby("person"):
        au = group["resting_au"].iloc[0]
        name = column[au].rstrip("_")
        resting.append({"person": person, "resting AU": au,
                        "raw: frames read present": float((group[f"{name}_c"] == 1).mean()),
                        "corrected: frames read present": float((group[f"{name}_c_bc"] == 1).mean())})
    resting = pd.DataFrame(resting)
    print("\neach person's resting AU (never in the labels), share of frames read as present:")
    print(resting.round(3).to_string(index=False))
    print(f"mean: raw {resting.iloc[:, 2].mean():.3f} -> corrected {resting.iloc[:, 3].mean():.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="CSV with image and identity columns")
    parser.add_argument("--held-out", type=Path, help="a manifest whose `subject`s are the people to use "
                        "(people the model was not trained on)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", help="checkpoint directory (default: the shipped model)")
    parser.add_argument("--persons", type=int, default=8)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    labels_path = args.out / "labels.csv"
    labels = pd.read_csv(labels_path) if labels_path.is_file() else build(args)
    table_path = args.out / "aus.csv"
    if not table_path.is_file():
        command = [str(Path(sys.executable).with_name("aullava")), "predict", str(args.out / "frames"), "--formats",
                   "binary", "continuous", "--baseline", "person", "--out", str(table_path), "-q"]
        if args.model:
            command += ["--model", args.model]
        subprocess.run(command, check=True)
    report(labels, pd.read_csv(table_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
