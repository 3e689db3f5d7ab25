"""Photometric and small geometric perturbations of training face crops: what a camera, a re-save or a detector
that lands a pixel or two elsewhere does to the same face.

Why: the default model of 2026-12-05 answered differently for the same face under one grey level of noise, a JPEG
re-save or a 3 px shift (outside check: a JPEG q85 re-save moved the face tokens 2.9x the distance between
different people's faces, and training had made the image side 2-3x more sensitive than the ImageNet weights it
started from). Its synthetic warps are resampled images, so resampling texture could become a cue; resampling
*every* training crop by a random sub-pixel affine map, and compressing, blurring and adding noise to them, takes
that cue away and makes those changes carry no label.

Crops are the cache's aligned uint8 (S, S, 3) faces; the perturbations (`aullava.faces.perturb`) keep their size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from torch.utils.data import Dataset

from aullava.faces.perturb import affine, blurred, jpeg, noisy
from aullava.model.config import check_keys


@dataclass
class AugmentConfig:
    """Each perturbation is applied with its probability, with a strength drawn uniformly from its range.
    `shift_px`: translation in pixels of the crop (sub-pixel included); `scale`: relative zoom; `rotate_deg`;
    `blur_sigma`: Gaussian blur in pixels; `noise_grey`: Gaussian noise in grey levels (of 255); `jpeg_quality`:
    a JPEG re-save at that quality."""

    p_affine: float = 0.8
    shift_px: float = 4.0
    scale: float = 0.04
    rotate_deg: float = 3.0
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    p_noise: float = 0.5
    noise_grey: tuple[float, float] = (0.5, 3.0)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (50, 95)

    def __post_init__(self):
        for name in ("p_affine", "p_blur", "p_noise", "p_jpeg"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"data.augment.{name} must be a probability in [0, 1], got {value!r}")
        for name in ("shift_px", "scale", "rotate_deg"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"data.augment.{name} must be a number ≥ 0, got {value!r}")
        for name in ("blur_sigma", "noise_grey", "jpeg_quality"):
            value = getattr(self, name)
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or not 0 <= value[0] <= value[1]):
                raise ValueError(f"data.augment.{name} must be a range [low, high] with 0 ≤ low ≤ high, "
                                 f"got {value!r}")
            setattr(self, name, tuple(value))
        if self.jpeg_quality[1] > 100:
            raise ValueError(f"data.augment.jpeg_quality must lie within [0, 100], got {list(self.jpeg_quality)}")

    @classmethod
    def from_spec(cls, spec: bool | Mapping[str, Any] | None) -> "AugmentConfig | None":
        """A recipe's `data.augment`: true (these defaults), a mapping of some keys, or false/absent (none)."""
        if spec is None or spec is False:
            return None
        if spec is True:
            return cls()
        check_keys(spec, [f.name for f in dataclasses.fields(cls)], "data.augment")
        return cls(**spec)


def perturb(crop: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random perturbation of a uint8 (S, S, 3) crop, as a new uint8 array of the same shape."""
    image = np.ascontiguousarray(crop)
    if rng.random() < config.p_affine:
        angle = rng.uniform(-config.rotate_deg, config.rotate_deg)
        zoom = 1.0 + rng.uniform(-config.scale, config.scale)
        dx, dy = rng.uniform(-config.shift_px, config.shift_px, size=2)
        image = affine(image, dx, dy, zoom, angle)
    if rng.random() < config.p_blur:
        image = blurred(image, rng.uniform(*config.blur_sigma))
    if rng.random() < config.p_noise:
        image = noisy(image, rng.uniform(*config.noise_grey), rng)
    if rng.random() < config.p_jpeg:
        image = jpeg(image, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
    return image


class AugmentedFaces(Dataset):
    """A dataset of face samples (`image` + labels) whose `image` is perturbed anew each time it is read.

    Randomness comes from a generator per sample read, seeded from (`seed`, index, how often this process has read
    it), so a run is reproducible in one process and workers never share a stream."""

    def __init__(self, base: Dataset, config: AugmentConfig, seed: int = 0):
        self.base, self.config, self.seed = base, config, int(seed)
        self._reads: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):  # formats_of, labels, au_sets, … of the wrapped dataset
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.base[index])
        count = self._reads.get(index, 0)
        self._reads[index] = count + 1
        rng = np.random.default_rng([self.seed, int(index), count])
        sample["image"] = perturb(sample["image"], self.config, rng)
        return sample
