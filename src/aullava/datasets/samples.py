"""Labelled frames of a dataset (a reader's table) + the face-crop cache → training/evaluation samples.

The unified AU space: every dataset keeps its own AU set, and per format only the AUs it labels in that format
(BP4D: occurrence of 12 AUs but intensity of 5). A sample is asked exactly those AUs; a value that is still
unlabelled for a frame (BP4D's 9-code, say) is masked out of the loss. Datasets mix by concatenation.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat
from aullava.aus.catalogue import AUSet
from aullava.datasets.labels import LabelledFrames, au_columns



def frame_source(row) -> Any:
    """The cache's key for a table row: an image path, or (video path, frame index)."""
    video = row.get("video") if hasattr(row, "get") else None
    if isinstance(video, str) and video:
        return (video, int(row["frame"]))
    return row["image"]


def labelled_subsets(frames: LabelledFrames, formats=ALL_FORMATS, ask: str | AUSet = "labelled") -> dict[str, AUSet]:
    """Per format, the AUs (in the dataset's order) that have at least one label in that format. `ask="all"`
    keeps the whole AU set for every format that has any label (unlabelled AUs are then masked, not dropped):
    for a teacher that cannot see some AUs, so its photos are asked the same question as everything else.
    An `AUSet` (a model's own set, what `predict` asks) is asked as it is for every format that has any label."""
    if isinstance(ask, AUSet):
        return {fmt.value: ask for fmt in map(AnswerFormat.parse, formats)
                if any(c in frames.table.columns and frames.table[c].notna().any()
                       for c in au_columns(frames.au_set, fmt))}
    if ask not in ("labelled", "all"):
        raise ValueError(f"ask must be 'labelled', 'all' or 'model', got {ask!r}")
    subsets = {}
    for fmt in map(AnswerFormat.parse, formats):
        columns = au_columns(frames.au_set, fmt)
        keep = [au for au, col in zip(frames.au_set.aus, columns)
                if col in frames.table.columns and frames.table[col].notna().any()]
        if keep and ask == "all":
            keep = list(frames.au_set.aus)
        if keep:
            subsets[fmt.value] = AUSet(name=f"{frames.au_set.name}-{fmt.value}" if len(keep) < len(frames.au_set)
                                       else frames.au_set.name, aus=tuple(keep), description=frames.au_set.description)
    return subsets


class LabelledFaces(Dataset):
    """One sample per table row whose face crop is in the cache (build the cache first; rows whose crop failed
    are dropped and counted in `dropped`). `geometry`: samples also carry the face's geometry vector (for a model
    with the geometry stream; the cache must be built with landmarks), and rows without it are dropped too."""

    def __init__(self, frames: LabelledFrames, cache, formats=ALL_FORMATS, ask: str | AUSet = "labelled",
                 geometry: bool = False):
        self.frames = frames
        self.cache = cache
        self.with_geometry = geometry
        self.au_sets = labelled_subsets(frames, formats, ask)
        table = frames.table.reset_index(drop=True)
        sources = [frame_source(row) for _, row in table.iterrows()]
        if cache is None:
            present = [True] * len(sources)
        elif geometry:
            present = [cache.geometry(source) is not None for source in sources]
        else:
            present = [cache.get(source) is not None for source in sources]
        self.table = table[present].reset_index(drop=True)
        self.sources = [s for s, ok in zip(sources, present) if ok]
        self.dropped = len(table) - len(self.table)
        self.values: dict[str, np.ndarray] = {}
        for fmt_name, subset in self.au_sets.items():
            columns = au_columns(subset, fmt_name)
            present = self.table.reindex(columns=columns)  # an AU column a reader did not write is all NaN
            self.values[fmt_name] = present.to_numpy(dtype=np.float64)  # NaN = not labelled

    def __len__(self) -> int:
        return len(self.table)

    def asked_ids(self) -> set[str]:
        """Every AU some format asks."""
        return {au for subset in self.au_sets.values() for au in subset.ids}

    def formats_of(self, index: int) -> list[str]:
        return [fmt for fmt, values in self.values.items() if not np.all(np.isnan(values[index]))]

    def labels(self, index: int) -> dict[str, Any]:
        targets, masks = {}, {}
        for fmt, values in self.values.items():
            row = values[index]
            masks[fmt] = ~np.isnan(row)
            targets[fmt] = np.where(masks[fmt], row, 0.0)
        return {"targets": targets, "masks": masks, "au_sets": self.au_sets}

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.cache.get(self.sources[index])
        if image is None:
            raise FileNotFoundError(f"face crop of {self.sources[index]} is no longer in the cache {self.cache}")
        if not self.with_geometry:
            return {"image": image, **self.labels(index)}
        return {"image": image, "geometry": self.geometry(index), **self.labels(index)}

    def geometry(self, index: int) -> np.ndarray:
        """The face's geometry vector (`aullava.faces.geometry_features`), from the cache's landmarks and blendshapes."""
        vector = self.cache.geometry(self.sources[index])
        if vector is None:
            raise FileNotFoundError(f"face landmarks of {self.sources[index]} are not in the cache {self.cache}")
        return vector


class MixedDataset(ConcatDataset):
    """One training set over several datasets; each keeps its own AU sets and masks."""

    def formats_of(self, index: int) -> list[str]:
        which = bisect.bisect_right(self.cumulative_sizes, index)
        offset = index - (self.cumulative_sizes[which - 1] if which else 0)
        inner = getattr(self.datasets[which], "formats_of", None)
        return inner(offset) if inner else [f.value for f in ALL_FORMATS]
