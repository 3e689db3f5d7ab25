"""`present_weight: balanced` in a recipe: one loss weight per AU for the answer tokens of present values.

Why: the class-balanced loss (`AuLlavaConfig.present_weight`) weights present values against the ~85 % absent ones
AU data usually has. One number fits one label distribution: the v2 default model's data had ~14 % present values
and weight 4, which makes the weighted odds of present 4 × 0.14 / 0.86 ≈ 0.65. Trained with the same 4 on data where
AU12 is present in half the faces (the v3 synthetic set), the weighted odds became 4 and the model answered
"present" for faces it was unsure about (MODEL_CARD.md, "Ablation: the v3 data"). Here each AU gets the weight that
gives it the same weighted odds, from its share of present values in the training labels, computed once when
training starts and saved in the model's `config.json` (`present_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

BALANCED = "balanced"
BALANCED_ODDS = 4.0 * 0.14 / 0.86  # the v2 default model's weighted odds of present (weight 4, ~14 % present)
MIN_WEIGHT, MAX_WEIGHT = 0.25, 20.0  # an AU present almost always / almost never is not weighted without bound


def split_present_weight(model_spec: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A recipe's `model:` section → (the section a model config accepts, whether the weights are `balanced`).
    `present_weight` must be a number > 0 or `balanced`."""
    spec = dict(model_spec)
    value = spec.get("present_weight", 1.0)
    if value == BALANCED:
        spec["present_weight"] = 1.0  # replaced per AU once the training labels are read
        return spec, True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"model.present_weight must be a number > 0 or '{BALANCED}', got {value!r}")
    return spec, False


def present_shares(dataset) -> dict[str, tuple[int, int]]:
    """AU id → (present values, labelled values) over every format of every labelled dataset in `dataset` (a
    `LabelledFaces` or a mix of them). Present is what the answer writes as non-zero (continuous rounded to the
    answer's two decimals), i.e. exactly the values whose tokens `present_weight` weights."""
    parts = getattr(dataset, "datasets", None)
    if parts is not None:
        total: dict[str, list[int]] = {}
        for part in parts:
            for au, (present, labelled) in present_shares(part).items():
                counts = total.setdefault(au, [0, 0])
                counts[0] += present
                counts[1] += labelled
        return {au: (p, n) for au, (p, n) in total.items()}
    values, au_sets = getattr(dataset, "values", None), getattr(dataset, "au_sets", None)
    if not isinstance(values, dict) or not isinstance(au_sets, dict):
        raise ValueError(f"present_weight: {BALANCED} needs datasets with label tables (manifests, BP4D, DISFA, "
                         f"FEAFA readers); {type(dataset).__name__} has none")
    out: dict[str, list[int]] = {}
    for fmt, table in values.items():
        labelled = ~np.isnan(table)
        present = labelled & (np.round(np.where(labelled, table, 0.0), 2) > 0)
        for j, au in enumerate(au_sets[fmt].ids):
            counts = out.setdefault(au, [0, 0])
            counts[0] += int(present[:, j].sum())
            counts[1] += int(labelled[:, j].sum())
    return {au: (p, n) for au, (p, n) in out.items()}


def balanced_weights(shares: Mapping[str, tuple[int, int]], odds: float = BALANCED_ODDS) -> dict[str, float]:
    """AU id → the weight w with w × r / (1 − r) = `odds` for its present share r, within [MIN_WEIGHT, MAX_WEIGHT].
    AUs never present or never labelled get no entry (their weight never applies)."""
    weights = {}
    for au, (present, labelled) in shares.items():
        if present == 0 or labelled == 0:
            continue
        r = present / labelled
        weight = MAX_WEIGHT if r >= 1.0 else odds * (1.0 - r) / r
        weights[au] = round(float(min(MAX_WEIGHT, max(MIN_WEIGHT, weight))), 4)
    return weights


def apply_balanced_weights(model, dataset) -> dict[str, float]:
    """Sets the model's per-AU present weights (config and processor) from `dataset`'s labels; returns them."""
    weights = balanced_weights(present_shares(dataset))
    model.config.present_weights = weights
    model.processor.present_weights = dict(weights)
    return weights
