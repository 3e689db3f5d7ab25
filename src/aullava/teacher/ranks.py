"""Rank (quantile) teacher labels for the AUs whose blendshapes are too small to calibrate but still ordered.

Why: the calibrated teacher (`aullava.teacher.labeler`) leaves AU9, AU10, AU14 and AU15 unlabelled — on the geometry
warps their blendshapes do not move (``noseSneer`` stays below 1e-4 on every photo; the synthetic held-out AUC of
``mouthUpperUp``, ``mouthDimple``, ``mouthFrown`` is 0.46–0.57), so no magnitude map can be fitted and the model
learns these AUs from warps alone, which show no wrinkles or lip texture. On real labelled photos (an outside
check) the same scores still *rank* disgust / sadness faces above neutral ones (ROC-AUC .74 / .67 / .68): the order
carries the signal a magnitude threshold throws away. So these AUs get labels from the photo's **rank** among
reference photos:

- the top ``present_share`` of the reference distribution is labelled present, with an intensity rising linearly
  with the rank from ``PRESENT_FLOOR`` to ``present_top`` (a rank is no measure of strength: the labels stay in the
  weak-to-moderate range);
- the bottom ``absent_share`` is labelled absent (0);
- the band between is left unlabelled (NaN): a mid-ranked face is as likely either way, and a NaN label teaches
  nothing rather than a guess.

The reference is the training photos' own scores (`fit_rank_reference`, never the held-out ones): a quantile table
per AU stored with the manifests (``rank_reference.json``) so the same labels can be made for new photos.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aullava.aus.answer_format import PRESENCE_THRESHOLD
from aullava.teacher.labeler import COLUMNS, MAPPING, raw_matrix

RANK_AUS: tuple[str, ...] = ("AU9", "AU10", "AU14", "AU15")
REFERENCE_FILE = "rank_reference.json"
PRESENT_FLOOR = 0.15  # a present rank label is clearly above the 0.10 presence threshold
KNOTS = 201  # quantile table resolution (0.5 % steps)
assert PRESENT_FLOOR > PRESENCE_THRESHOLD


@dataclass(frozen=True)
class RankRule:
    """Which ranks are labelled present / absent, and the intensity given to the top rank."""

    present_share: float = 0.10
    absent_share: float = 0.50
    present_top: float = 0.60

    def __post_init__(self):
        if not (0 < self.present_share < 1 and 0 < self.absent_share < 1
                and self.present_share + self.absent_share <= 1):
            raise ValueError(f"rank rule: shares must be in (0, 1) and add up to at most 1, got {self}")
        if not PRESENT_FLOOR <= self.present_top <= 1:
            raise ValueError(f"rank rule: present_top must be in [{PRESENT_FLOOR}, 1], got {self.present_top}")


def fit_rank_reference(blendshapes: pd.DataFrame, aus: Sequence[str] = RANK_AUS,
                       rule: RankRule = RankRule()) -> dict:
    """Per AU, the quantile table of its raw score (max of its source blendshapes) over these photos."""
    unknown = [au for au in aus if au not in MAPPING]
    if unknown:
        raise ValueError(f"rank labels: unknown AU(s) {unknown}; expected some of {list(MAPPING)}")
    raw = raw_matrix(blendshapes, list(aus))
    levels = np.linspace(0.0, 1.0, KNOTS)
    table = {}
    for j, au in enumerate(aus):
        x = raw[:, j][np.isfinite(raw[:, j])]
        if x.size < 20:
            raise ValueError(f"rank labels: {au} has {x.size} photos with a score; at least 20 are needed")
        table[au] = {"blendshapes": list(MAPPING[au].blendshapes), "photos": int(x.size),
                     "quantiles": [float(v) for v in np.quantile(x, levels)]}
    return {"version": 1, "rule": asdict(rule), "aus": table}


def ranks(raw: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Each raw score's rank in [0, 1] among the reference photos: linear between the quantile table's knots, the
    middle of a run of equal knots for a tied score, 0 / 1 beyond the ends; NaN stays NaN."""
    q = np.asarray(quantiles, dtype=np.float64)
    x = np.asarray(raw, dtype=np.float64)
    steps = q.size - 1
    left = np.searchsorted(q, x, side="left")
    right = np.searchsorted(q, x, side="right")
    i = np.clip(left, 1, steps)
    span = q[i] - q[i - 1]
    between = (i - 1 + np.divide(x - q[i - 1], span, out=np.zeros_like(x), where=span > 0)) / steps
    tied = 0.5 * (left + right - 1) / steps
    out = np.where(right > left, tied, between)
    out = np.where(x < q[0], 0.0, np.where(x > q[-1], 1.0, out))
    return np.where(np.isnan(x), np.nan, np.clip(out, 0.0, 1.0))


def rank_labels(blendshapes: pd.DataFrame, reference: Mapping) -> pd.DataFrame:
    """Manifest columns (``AU09`` …, continuous in [0, 1], NaN = not labelled) for the reference's AUs."""
    rule = RankRule(**reference["rule"])
    aus = list(reference["aus"])
    raw = raw_matrix(blendshapes, aus)
    top = 1.0 - rule.present_share
    out = {}
    for j, au in enumerate(aus):
        r = ranks(raw[:, j], reference["aus"][au]["quantiles"])  # NaN (no score) fails both tests: unlabelled
        rising = PRESENT_FLOOR + (rule.present_top - PRESENT_FLOOR) * np.clip((r - top) / rule.present_share, 0, 1)
        out[COLUMNS[au]] = np.where(r >= top, rising, np.where(r <= rule.absent_share, 0.0, np.nan))
    return pd.DataFrame(out, index=blendshapes.index)


def save_reference(reference: Mapping, folder: str | os.PathLike) -> Path:
    path = Path(folder) / REFERENCE_FILE
    path.write_text(json.dumps(reference, indent=1), encoding="utf-8")
    return path


def load_reference(path: str | os.PathLike) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    RankRule(**data["rule"])  # validates
    for au, entry in data["aus"].items():
        if au not in MAPPING or np.any(np.diff(entry["quantiles"]) < 0):
            raise ValueError(f"{path}: {au}: unknown AU or quantiles not non-decreasing")
    return data
