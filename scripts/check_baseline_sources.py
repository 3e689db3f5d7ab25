"""Check `aullava synth --baseline-sources` (non-neutral photos as warp sources) by eye and by re-detection.

A built synthetic set is read as it is (nothing is warped again). By eye: a contact sheet PNG, one row per
non-neutral source: the source photo with the teacher's baseline, then its first warps with their labels (AUs
at ≥ 0.1; the teacher-blind AUs of such a source are unknown and not shown).

By re-detection: MediaPipe and the bundled teacher read every checked warp again. A warp's label is baseline +
the warp's movement, so the teacher's reading of the warp should follow the label as closely for a non-neutral
source as for a neutral one (whose label is the movement alone). Per source kind it prints, over the AUs the
teacher sees, the mean absolute difference between label and reading, their Pearson r, and F1 of presence
(≥ 0.1) with the label as truth.

    .venv/bin/python scripts/check_baseline_sources.py --synth runs/data/synth-v3 \
        --index ../shared/faces/index.csv --out docs/synth-baseline-sources.png --faces 6 --redetect 300
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synth", required=True, help="an `aullava synth --baseline-sources` output folder")
    parser.add_argument("--index", required=True, help="the photo index the set was built from (image, identity)")
    parser.add_argument("--out", required=True, help="contact sheet PNG to write")
    parser.add_argument("--faces", type=int, default=6, help="rows of the contact sheet")
    parser.add_argument("--warps", type=int, default=4, help="warps shown per row")
    parser.add_argument("--redetect", type=int, default=300, help="warps read again per source kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from tqdm import tqdm

    from aullava.aus.answer_format import PRESENCE_THRESHOLD
    from aullava.aus.catalogue import normalize_au_id
    from aullava.faces.detector import FaceDetector, largest_face
    from aullava.faces.images import load_image
    from aullava.runtime.quiet import set_verbose
    from aullava.teacher.labeler import Teacher

    set_verbose(False)
    root = Path(args.synth)
    if not (root / "sources.csv").is_file():
        raise SystemExit(f"error: {root}: no sources.csv (built without --baseline-sources?)")
    sources = pd.read_csv(root / "sources.csv").set_index("source")
    warps = pd.read_csv(root / "train.csv")
    aus = [c for c in sources.columns if c.startswith("AU")]
    warps["kind"] = warps["source"].map(sources["baseline"])
    teacher = Teacher()
    teacher_id = {au: normalize_au_id(au) for au in aus}  # table columns are AU01, the teacher's ids AU1
    seen = [au for au in aus if teacher_id[au] in teacher.seen]
    rng = np.random.default_rng(args.seed)
    photo_root = Path(args.index).parent  # sources are the index's paths, relative to its folder

    def photo(path: str) -> np.ndarray:
        candidate = Path(path)
        return load_image(candidate if candidate.is_absolute() else photo_root / candidate)

    def labels_text(row) -> str:
        shown = [f"{au} {row[au]:.2f}" for au in aus if pd.notna(row[au]) and row[au] >= PRESENCE_THRESHOLD]
        return "\n".join(shown[:5]) or "(none)"

    labelled = warps[warps["kind"] == "labelled"]
    chosen = rng.choice(labelled["source"].unique(), size=args.faces, replace=False)
    fig, axes = plt.subplots(args.faces, 1 + args.warps, figsize=(2.0 * (1 + args.warps), 2.5 * args.faces))
    axes = np.atleast_2d(axes)
    for r, source in enumerate(chosen):
        picture = photo(source)
        cells = [(picture, "source (baseline)\n" + labels_text(sources.loc[source]))]
        for _, row in labelled[labelled["source"] == source].head(args.warps).iterrows():
            cells.append((load_image(root / row["image"]), labels_text(row)))
        for c in range(1 + args.warps):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(cells):
                ax.imshow(cells[c][0])
                ax.set_title(cells[c][1], fontsize=6)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"contact sheet: {args.out}")

    print(f"\nre-detection (teacher's reading of the warp against its label; AUs {', '.join(seen)}):")
    print(f"{'source kind':<12} {'warps':>5} {'MAE':>6} {'r':>6} {'F1':>6}")
    with FaceDetector() as detector:
        for kind in ("neutral", "labelled"):
            rows = warps[warps["kind"] == kind]
            rows = rows.iloc[rng.permutation(len(rows))[: args.redetect]]
            label, read = [], []
            for _, row in tqdm(list(rows.iterrows()), desc=kind, unit="warp", leave=False, disable=None):
                face = largest_face(detector.detect(load_image(root / row["image"])))
                if face is None:
                    continue
                reading = teacher.label(face.blendshapes)
                label.append([row[au] for au in seen])
                read.append([reading[teacher_id[au]] for au in seen])
            y, x = np.asarray(label, float).ravel(), np.asarray(read, float).ravel()
            ok = np.isfinite(y) & np.isfinite(x)
            y, x = y[ok], x[ok]
            truth, guess = y >= PRESENCE_THRESHOLD, x >= PRESENCE_THRESHOLD
            f1 = 2 * (truth & guess).sum() / max(truth.sum() + guess.sum(), 1)
            print(f"{kind:<12} {len(label):5d} {np.abs(y - x).mean():6.3f} {np.corrcoef(y, x)[0, 1]:6.3f} {f1:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
