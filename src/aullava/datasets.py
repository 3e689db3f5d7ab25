"""Training samples and the datasets that make them.

A sample is a dict: `image` (aligned face crop, uint8 S×S×3), `targets` ({format name: vector in AU order}) and
`mask` (bool per AU: False = not labelled, never trained on). `FormatExpanded` turns each sample into one training
example per answer format, so one image teaches the model all three formats in the same run (the paper's point).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .answer_format import ALL_FORMATS, AnswerFormat, binary_from_continuous, discrete_from_continuous


def targets_from_continuous(values: np.ndarray) -> dict[str, np.ndarray]:
    """All three targets from 0..1 intensities, by the documented rules in `answer_format`."""
    values = np.round(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0), 2)
    return {
        AnswerFormat.BINARY.value: binary_from_continuous(values),
        AnswerFormat.DISCRETE.value: discrete_from_continuous(values),
        AnswerFormat.CONTINUOUS.value: values,
    }


class PatternFaces(Dataset):
    """Synthetic images whose AUs are drawn as visible patterns: AU i is a bright square in grid cell i whose
    brightness is its intensity. Not faces: a fast, exact-label task that proves the whole pipeline can learn."""

    def __init__(self, num_aus: int, num_samples: int = 256, image_size: int = 224, seed: int = 0,
                 active_rate: float = 0.4):
        self.num_aus, self.num_samples, self.image_size = num_aus, num_samples, image_size
        rng = np.random.default_rng(seed)
        active = rng.random((num_samples, num_aus)) < active_rate
        levels = rng.integers(1, 6, size=(num_samples, num_aus)) / 5.0  # 0.2 .. 1.0
        self.intensities = np.where(active, levels, 0.0).astype(np.float32)
        self.grid = int(np.ceil(np.sqrt(num_aus)))

    def __len__(self) -> int:
        return self.num_samples

    def render(self, intensities: np.ndarray) -> np.ndarray:
        size, grid = self.image_size, self.grid
        image = np.full((size, size, 3), 40, dtype=np.uint8)
        cell = size // grid
        for i, value in enumerate(intensities):
            if value <= 0:
                continue
            y, x = divmod(i, grid)
            pad = cell // 6
            image[y * cell + pad:(y + 1) * cell - pad, x * cell + pad:(x + 1) * cell - pad] = int(40 + 215 * value)
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        values = self.intensities[index]
        return {"image": self.render(values), "targets": targets_from_continuous(values),
                "mask": np.ones(self.num_aus, dtype=bool)}


class FormatExpanded(Dataset):
    """Every (sample, format) pair as one example; formats a sample has no target for are skipped."""

    def __init__(self, base: Dataset, formats=ALL_FORMATS):
        self.base = base
        self.formats = [AnswerFormat.parse(f) for f in formats]

    def __len__(self) -> int:
        return len(self.base) * len(self.formats)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.base[index // len(self.formats)]
        fmt = self.formats[index % len(self.formats)]
        if fmt.value not in sample["targets"]:
            raise KeyError(f"sample {index // len(self.formats)} has no {fmt.value} target")
        return {"image": sample["image"], "format": fmt.value, "values": sample["targets"][fmt.value],
                "mask": sample.get("mask")}


DATASET_TYPES = {"patterns": PatternFaces}


def build_dataset(spec: dict[str, Any], num_aus: int, image_size: int) -> Dataset:
    spec = dict(spec)
    kind = spec.pop("type")
    if kind not in DATASET_TYPES:
        raise ValueError(f"unknown dataset type {kind!r}; expected one of {sorted(DATASET_TYPES)}")
    if kind == "patterns":
        return PatternFaces(num_aus=num_aus, image_size=image_size, **spec)
    return DATASET_TYPES[kind](**spec)
