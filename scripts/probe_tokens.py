"""How much each AU the image side of a checkpoint carries: a ridge probe on its face tokens, fitted on training
faces and scored on held-out ones, for several checkpoints on the same faces.

Why: a linear read-out of the face tokens bounds what the LLM stage gets from the image side (on synthetic warps
the default model's LLM stage reached about the probe's score, MODEL_CARD.md "Targets"; on real photos it stays
below it, docs/default-model-v2-progress.md "Token probe"), and training that stage costs ~1.5 h here against ~25 min
for the vision warm-up. So an arm that changes the data or the image side can be judged from its warm-up checkpoint
(`OUT/vision-warmup`) in minutes, and a drop of the finished model can be traced to the tokens (probe drops too) or
to the LLM stage (probe holds).

    .venv/bin/python scripts/probe_tokens.py "shipped=src/aullava/resources/default_model" \
        "v3b=runs/default-model-v3b/vision-warmup" \
        --train runs/data/teacher/real_train.csv --test runs/data/teacher/real_held_out_test.csv \
        --train-limit 2000 --test-limit 150 --crop-cache runs/data/crops

Labels are the manifests' continuous columns (`AU01` …); an AU is fitted on the training rows that label it and
scored on the test rows that label it: ROC-AUC of the probe's score for presence (label ≥ 0.10, the project's rule)
and Pearson r with the intensity. `--test-limit` draws the same seeded subset `aullava eval --limit` does, so the
probe scores the faces the reports show. Prints a Markdown table (one row per checkpoint, one column per AU).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np


def face_features(model, faces, batch_size: int = 32) -> np.ndarray:
    """Every face's tokens flattened, (N, tokens × width), in float64."""
    import torch
    from tqdm import tqdm

    rows = []
    with torch.no_grad():
        for start in tqdm(range(0, len(faces), batch_size), desc="face tokens", unit="batch", leave=False):
            batch = [faces[i] for i in range(start, min(start + batch_size, len(faces)))]
            images = torch.from_numpy(np.stack([s["image"] for s in batch]))
            geometry = torch.from_numpy(np.stack([s["geometry"] for s in batch]).astype(np.float32)) \
                if model.wants_geometry else None
            rows.append(model.face_tokens(images, geometry).flatten(1).double().numpy())
    return np.concatenate(rows)


def continuous_labels(faces) -> np.ndarray:
    """(N, AUs) continuous labels on the model's AU set (the set the manifest was read with), NaN where
    unlabelled."""
    from aullava.datasets.labels import au_columns

    return faces.table.reindex(columns=au_columns(faces.frames.au_set, "continuous")).to_numpy(dtype=np.float64)


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 alphas: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Per AU: ROC-AUC (presence) and Pearson r (intensity) of a ridge probe on the test rows; NaN where an AU has
    too few labels, or only one class, on either side. The ridge strength is chosen per AU by leave-one-out (GCV)."""
    from scipy.stats import pearsonr
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import roc_auc_score

    from aullava.aus.answer_format import PRESENCE_THRESHOLD

    auc, r = np.full(train_y.shape[1], np.nan), np.full(train_y.shape[1], np.nan)
    for j in range(train_y.shape[1]):
        fit, score = ~np.isnan(train_y[:, j]), ~np.isnan(test_y[:, j])
        if fit.sum() < 20 or score.sum() < 10:
            continue
        # standardised on the rows the AU is fitted on: an unlabelled face plays no part at all
        mean, scale = train_x[fit].mean(0), train_x[fit].std(0) + 1e-6
        predicted = RidgeCV(alphas=alphas).fit((train_x[fit] - mean) / scale, train_y[fit, j]) \
            .predict((test_x[score] - mean) / scale)
        truth = test_y[score, j]
        present = truth >= PRESENCE_THRESHOLD
        if 0 < present.sum() < len(present):
            auc[j] = roc_auc_score(present, predicted)
        if np.std(truth) > 0 and np.std(predicted) > 0:
            r[j] = pearsonr(truth, predicted)[0]
    return {"auc": auc, "pcc": r}


def labelled_faces(path: str, model, limit: int | None, cache):
    from aullava.datasets import LabelledFaces, frame_source, read_frames
    from aullava.eval.predictions import sample_frames

    frames = sample_frames(read_frames({"type": "manifest", "path": path, "au_set": model.au_set.name}), limit)
    cache.build([frame_source(row) for _, row in frames.table.iterrows()], progress=False)
    return LabelledFaces(frames, cache, ["continuous"], ask="all", geometry=model.wants_geometry)


def cell(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2f}".replace("0.", ".", 1).replace("-.", "−.", 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="label=checkpoint folder (a model or a vision-warmup folder)")
    parser.add_argument("--train", required=True, help="manifest the probe is fitted on")
    parser.add_argument("--test", required=True, help="manifest the probe is scored on (held-out identities)")
    parser.add_argument("--train-limit", type=int, default=2000, help="seeded subset of the training rows")
    parser.add_argument("--test-limit", type=int, default=150, help="the same subset `aullava eval --limit` draws")
    parser.add_argument("--crop-cache", help="face-crop cache folder (default: $AULLAVA_HOME/crops)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1e2, 1e3, 1e4, 1e5])
    args = parser.parse_args()
    named = [m.split("=", 1) if "=" in m else [m, m] for m in args.models]

    from aullava.runtime.quiet import set_verbose

    set_verbose(False)
    import torch

    from aullava.faces.crop_cache import FaceCropCache
    from aullava.model.modeling import AuLlavaModel

    torch.manual_seed(0)
    results, au_ids = [], None
    for label, folder in named:
        model = AuLlavaModel.from_pretrained(folder)
        if au_ids is not None and model.au_set.ids != au_ids:
            sys.exit(f"error: {folder}: AU set {model.au_set.ids} differs from the first checkpoint's")
        au_ids = model.au_set.ids
        cache = FaceCropCache(args.crop_cache, crop_size=model.vision_encoder.image_size,
                              landmarks=model.wants_geometry)
        train, test = (labelled_faces(args.train, model, args.train_limit, cache),
                       labelled_faces(args.test, model, args.test_limit, cache))
        print(f"{label}: fitting on {len(train)} faces of {args.train}, scoring {len(test)} of {args.test}",
              file=sys.stderr)
        scores = probe_scores(face_features(model, train), continuous_labels(train),
                              face_features(model, test), continuous_labels(test), tuple(args.alphas))
        results.append((label, scores))
        del model
    for metric, name in (("auc", "ROC-AUC"), ("pcc", "PCC")):
        keep = [j for j in range(len(au_ids)) if any(math.isfinite(s[metric][j]) for _, s in results)]
        print(f"\n| probe {name} | " + " | ".join(au_ids[j] for j in keep) + " | avg |")
        print("|---|" + "---:|" * (len(keep) + 1))
        for label, scores in results:
            values = [scores[metric][j] for j in keep]
            print(f"| {label} | " + " | ".join(map(cell, values)) + f" | {cell(float(np.nanmean(values)))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
