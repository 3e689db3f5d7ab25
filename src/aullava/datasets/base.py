"""Training samples and the datasets that make them.

A sample is a dict: `image` (aligned face crop, uint8 S×S×3), `targets` ({format name: vector in AU order}),
`mask` (bool per AU: False = not labelled, never trained on) and optionally `au_set` (the AUSet its vectors follow
and its prompt asks; default: the model's). `FormatExpanded` turns each sample into one training
example per answer format, so one image teaches the model all three formats in the same run (the paper's point).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..answer_format import ALL_FORMATS, AnswerFormat, binary_from_continuous, discrete_from_continuous


def targets_from_continuous(values: np.ndarray) -> dict[str, np.ndarray]:
    """All three targets from 0..1 intensities, by the documented rules in `answer_format`."""
    values = np.round(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0), 2)
    return {
        AnswerFormat.BINARY.value: binary_from_continuous(values),
        AnswerFormat.DISCRETE.value: discrete_from_continuous(values),
        AnswerFormat.CONTINUOUS.value: values,
    }


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
                "mask": sample.get("mask"), "au_set": sample.get("au_set")}


