"""Fits a model's draft head (`aullava.model.draft_head`): logistic regression from the mean of a face's projected
tokens to the model's own exact binary answer, on training faces from the crop cache; reports on a held-out fifth
how often the guess is the whole answer and how many passes the exact readout takes from it and from all-absent;
writes `draft_head.safetensors` into the model folder (answers do not change, only the passes).

    .venv/bin/python scripts/fit_draft_head.py --model runs/default-model-v5 \\
        --manifest runs/data/synth/train.csv --manifest runs/data/teacher/real_train.csv \\
        --crop-cache runs/data/crops --faces 1200 [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def read_faces(manifests: list[Path], cache_dir: str, faces: int, seed: int, crop_size: int) -> np.ndarray:
    """`faces` crops drawn evenly from the manifests' rows whose crop the cache holds."""
    from aullava.datasets.manifest import read_manifest
    from aullava.datasets.samples import frame_source
    from aullava.faces.crop_cache import FaceCropCache

    cache = FaceCropCache(cache_dir, crop_size=crop_size)
    crops = []
    per = faces // len(manifests)
    for path in manifests:
        table = read_manifest(path).table.sample(frac=1.0, random_state=seed)
        found = 0
        for _, row in table.iterrows():
            crop = cache.get(frame_source(row))
            if crop is not None:
                crops.append(crop)
                found += 1
                if found == per:
                    break
    return np.stack(crops)


def readout(model, crops: np.ndarray, batch: int, head=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled face tokens, exact binary answers and passes per face (with `head` as the model's draft head)."""
    from aullava.aus.answer_format import AnswerFormat
    from aullava.model.decoding.parallel import ParallelDecoder
    from aullava.model.draft_head import DraftHead

    model.draft_head = head
    decoder = ParallelDecoder(model)
    features, answers, passes = [], [], []
    for start in range(0, len(crops), batch):
        part = torch.from_numpy(crops[start:start + batch])
        features.append(DraftHead.features(decoder.face_embeds(part)).numpy())
        for result in decoder.decode(part, [AnswerFormat.BINARY]):
            answers.append(result[AnswerFormat.BINARY].values)
            passes.append(result[AnswerFormat.BINARY].passes)
    return np.concatenate(features), np.asarray(answers), np.asarray(passes)


def fit(features: np.ndarray, answers: np.ndarray, hidden: int, l2: float = 1e-3):
    """Logistic regression of every AU at once (L-BFGS on the mean binary cross-entropy plus `l2` times the squared
    weights); an AU answered the same on every face gets a constant guess."""
    from aullava.model.draft_head import DraftHead

    head = DraftHead(hidden, answers.shape[1])
    x = torch.from_numpy(features).float()
    y = torch.from_numpy((answers >= 0.5).astype(np.float32))
    weight = torch.zeros(answers.shape[1], hidden, requires_grad=True)
    bias = torch.zeros(answers.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight.T + bias, y) \
            + l2 * (weight ** 2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        constant = (y.mean(dim=0) == 0) | (y.mean(dim=0) == 1)
        weight[constant] = 0
        bias[constant] = torch.where(y.mean(dim=0)[constant] == 1, 10.0, -10.0)
        head.linear.weight.copy_(weight)
        head.linear.bias.copy_(bias)
    return head.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder (the head is written into it)")
    parser.add_argument("--manifest", type=Path, action="append", required=True)
    parser.add_argument("--crop-cache", required=True)
    parser.add_argument("--faces", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    args = parser.parse_args()
    from aullava.model.modeling import AuLlavaModel

    torch.manual_seed(args.seed)
    model = AuLlavaModel.from_pretrained(args.model)
    crops = read_faces(args.manifest, args.crop_cache, args.faces, args.seed, model.vision_encoder.image_size)
    order = np.random.default_rng(args.seed).permutation(len(crops))
    train, test = order[: len(crops) * 4 // 5], order[len(crops) * 4 // 5:]
    features, answers, passes_absent = readout(model, crops, args.batch_size)
    hidden = features.shape[1]
    head = fit(features[train], answers[train], hidden)
    guessed = np.stack(head.draft(torch.from_numpy(features[test])[:, None, :]))
    _, answers_check, passes_head = readout(model, crops[test], args.batch_size, head=head)
    assert np.array_equal(answers_check, answers[test]), "the draft changed an answer: the readout is not exact"
    whole = float(np.mean(np.all(guessed == answers[test], axis=1)))
    per_au = np.mean(guessed == answers[test], axis=0)
    print(f"{len(crops)} faces ({len(train)} fitted, {len(test)} held out); held out: the guess is the whole "
          f"answer for {whole:.1%} of faces; per-AU agreement {per_au.min():.3f}-{per_au.max():.3f} "
          f"(mean {per_au.mean():.3f}); passes per binary answer: all-absent draft "
          f"{passes_absent[test].mean():.2f}, head's draft {passes_head.mean():.2f}; answers identical")
    if not args.dry_run:
        final = fit(features, answers, hidden)
        print(f"wrote {final.save(args.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
