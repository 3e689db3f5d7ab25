"""Synthetic images with exact labels for smoke tests of the whole pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from aullava.datasets.base import targets_from_continuous
from aullava.faces.geometry_features import LANDMARK_FEATURES, NUM_BLENDSHAPES


class PatternFaces(Dataset):
    """Synthetic images whose AUs are drawn as visible patterns: AU i is a bright square in grid cell i whose
    brightness is its intensity. Not faces: a fast, exact-label task that proves the whole pipeline can learn.

    `geometry`: samples also carry a geometry vector in `aullava.faces.geometry_features`'s layout, as exact as the image:
    AU i moves its own fixed random set of "landmarks" by its intensity and sets blendshape i + 1 to it (for the
    geometry stream's smoke tests)."""

    def __init__(self, num_aus: int, num_samples: int = 256, image_size: int = 224, seed: int = 0,
                 active_rate: float = 0.4, geometry: bool = False):
        self.num_aus, self.num_samples, self.image_size = num_aus, num_samples, image_size
        rng = np.random.default_rng(seed)
        active = rng.random((num_samples, num_aus)) < active_rate
        levels = rng.integers(1, 6, size=(num_samples, num_aus)) / 5.0  # 0.2 .. 1.0
        self.intensities = np.where(active, levels, 0.0).astype(np.float32)
        self.grid = int(np.ceil(np.sqrt(num_aus)))
        self.with_geometry = geometry
        shapes = np.random.default_rng(1000 + num_aus)  # one layout per AU count, whatever the sample seed
        self._mean_shape = shapes.normal(0.0, 0.15, LANDMARK_FEATURES)
        self._movements = shapes.normal(0.0, 0.02, (num_aus, LANDMARK_FEATURES))

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

    def geometry(self, intensities: np.ndarray) -> np.ndarray:
        blendshapes = np.zeros(NUM_BLENDSHAPES)
        count = min(self.num_aus, NUM_BLENDSHAPES - 1)
        blendshapes[1:1 + count] = intensities[:count]
        landmarks = self._mean_shape + np.asarray(intensities, dtype=np.float64) @ self._movements
        return np.concatenate([landmarks, blendshapes]).astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        values = self.intensities[index]
        sample = {"image": self.render(values), "targets": targets_from_continuous(values),
                  "mask": np.ones(self.num_aus, dtype=bool)}
        if self.with_geometry:
            sample["geometry"] = self.geometry(values)
        return sample
