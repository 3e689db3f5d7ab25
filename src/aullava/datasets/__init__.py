"""Training and evaluation data: the sample protocol (`base`), dataset readers, and `build_dataset` for recipes."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from .base import FormatExpanded, targets_from_continuous
from .patterns import PatternFaces

__all__ = ["FormatExpanded", "PatternFaces", "build_dataset", "targets_from_continuous"]


def build_dataset(spec: dict[str, Any], num_aus: int, image_size: int) -> Dataset:
    """A recipe's `data.train` block → a dataset of samples. `type` picks the reader."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind == "patterns":
        return PatternFaces(num_aus=num_aus, image_size=image_size, **spec)
    raise ValueError(f"unknown dataset type {kind!r}; expected one of: patterns")
