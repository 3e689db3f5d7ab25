"""Synthetic images with exact labels for smoke tests of the whole pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from aullava.datasets.base import targets_from_continuous


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
