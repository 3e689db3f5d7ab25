"""Training samples and the datasets that make them.

A sample is a dict: `image` (aligned face crop, uint8 S×S×3), `targets` ({format name: vector in AU order}),
`masks` ({format name: bool per AU}, False = not labelled: never asked, never trained on; a single `mask` for all
formats is accepted too) and optionally `au_set` (the AUSet its vectors follow and its prompt asks; default: the
model's), or `au_sets` ({format name: AUSet}) where a dataset labels different AUs per format (BP4D: occurrence
of 12 AUs, intensity of 5); for a model with the geometry stream also `geometry` (the face's
`aullava.faces.geometry_features` vector). `FormatExpanded` turns each sample into one training
example per answer format, so one image teaches the model all three formats in the same run (the paper's point).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, binary_from_continuous, discrete_from_continuous


def targets_from_continuous(values: np.ndarray) -> dict[str, np.ndarray]:
    """All three targets from 0..1 intensities, by the documented rules in `answer_format`."""
    values = np.round(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0), 2)
    return {
        AnswerFormat.BINARY.value: binary_from_continuous(values),
        AnswerFormat.DISCRETE.value: discrete_from_continuous(values),
        AnswerFormat.CONTINUOUS.value: values,
    }


class FormatExpanded(Dataset):
    """Every (sample, format) pair that has at least one labelled AU, as one training example.

    A base dataset may offer `formats_of(index)` (which formats sample `index` labels, without loading its image)
    so pairs without labels are never created; otherwise every requested format is assumed labelled."""

    def __init__(self, base: Dataset, formats=ALL_FORMATS):
        self.base = base
        self.formats = [AnswerFormat.parse(f) for f in formats]
        labelled = getattr(base, "formats_of", None)
        self.pairs = [(i, fmt) for i in range(len(base)) for fmt in self.formats
                      if labelled is None or fmt.value in labelled(i)]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_index, fmt = self.pairs[index]
        sample = self.base[sample_index]
        if fmt.value not in sample["targets"]:
            raise KeyError(f"sample {sample_index} has no {fmt.value} target")
        masks = sample.get("masks") or {}
        example = {"image": sample["image"], "format": fmt.value, "values": sample["targets"][fmt.value],
                   "mask": masks.get(fmt.value, sample.get("mask")),
                   "au_set": (sample.get("au_sets") or {}).get(fmt.value, sample.get("au_set"))}
        if "geometry" in sample:
            example["geometry"] = sample["geometry"]
        return example
