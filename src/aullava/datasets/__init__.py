"""Training and evaluation data: dataset readers → one label table → face crops → samples.

A recipe's `data.train` (or `aullava eval --data`) is one dataset spec or a list of them (mixed training):

    {type: bp4d, root: /data/BP4D, frames_root: /data/BP4D/frames, fold: 1, split: train}
    {type: disfa, root: /data/DISFA, camera: left, fold: 1, split: test}
    {type: feafa, path: /data/FEAFA/labels.csv, images_root: /data/FEAFA/images}
    {type: manifest, path: my_lab.csv, fold: 1, split: train}
    {type: patterns, num_samples: 256}             # synthetic smoke-test images

`ask: all` asks a dataset the whole AU set even where it labels only some AUs (the rest are masked); the default,
`labelled`, asks only the AUs it labels. `repeat: N` (training only) puts a dataset N times into the mix, the way
to give a small set its share next to a large one (3,000 real photos beside 24,000 synthetic warps, say); evaluation
reads every frame once and ignores it.

`fold` + `split` pick the subject-exclusive partition (the standard 3 folds for BP4D/DISFA, seeded folds for the
rest); other keys go to the reader.
"""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import Dataset

from aullava.datasets.base import FormatExpanded, targets_from_continuous
from aullava.datasets.bp4d import read_bp4d
from aullava.datasets.disfa import read_disfa
from aullava.datasets.feafa import read_feafa
from aullava.datasets.samples import LabelledFaces, MixedDataset, frame_source, labelled_subsets
from aullava.datasets.labels import LabelledFrames, derive_formats, merge
from aullava.datasets.manifest import read_manifest
from aullava.datasets.patterns import PatternFaces
from aullava.datasets.spec import (SPLIT_KEYS, check_keys, closest_hint, dropped_summary, reader_keys,
                                   training_repeat)
from aullava.datasets.splits import split_frames

log = logging.getLogger(__name__)

__all__ = ["FormatExpanded", "LabelledFaces", "LabelledFrames", "MixedDataset", "PatternFaces", "build_dataset",
           "derive_formats", "frame_source", "labelled_subsets", "merge", "read_frames", "targets_from_continuous"]

READERS = {"bp4d": read_bp4d, "disfa": read_disfa, "feafa": read_feafa, "manifest": read_manifest}


def read_frames(spec: dict[str, Any], where: str = "dataset spec") -> LabelledFrames:
    """One dataset spec → its label table, restricted to the requested fold's split. Unknown keys are errors."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a dataset spec must be a mapping with a type, found {type(spec).__name__}")
    spec = dict(spec)
    kind = spec.get("type")
    if kind not in READERS:
        raise ValueError(f"{where}: unknown dataset type {kind!r}; expected one of: {', '.join(sorted(READERS))}, "
                         f"patterns{closest_hint(kind, [*READERS, 'patterns'])}")
    check_keys(spec, [*SPLIT_KEYS, *reader_keys(READERS[kind])], where, kind)
    spec.pop("type")
    fold, split, seed = spec.pop("fold", None), spec.pop("split", "train"), spec.pop("fold_seed", 0)
    frames = READERS[kind](**spec)
    if fold is None:
        return frames
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    train, test = split_frames(frames, int(fold), dataset=kind if kind in ("bp4d", "disfa") else None, seed=seed)
    return train if split == "train" else test


def build_dataset(spec: dict[str, Any] | list[dict[str, Any]], num_aus: int, image_size: int,
                  cache_root: str | None = None, workers: int = 1, geometry: bool = False) -> Dataset:
    """A recipe's `data.train` → samples. Real datasets get their face crops built (or found) in the cache;
    `geometry` (a model with the geometry stream): with their landmarks, and samples carry the geometry vector."""
    if isinstance(spec, list):
        return MixedDataset([build_dataset(s, num_aus, image_size, cache_root, workers, geometry) for s in spec])
    if not isinstance(spec, dict):
        raise ValueError(f"data.train: a dataset spec must be a mapping with a type, found {type(spec).__name__}")
    spec = dict(spec)
    repeat = training_repeat(spec.pop("repeat", 1), "data.train")
    if repeat > 1:
        one = build_dataset(spec, num_aus, image_size, cache_root, workers, geometry)
        log.info("%s: %d samples, repeated %d times in the training mix", spec.get("path") or spec.get("root")
                 or spec.get("type"), len(one), repeat)
        return MixedDataset([one] * repeat)
    if spec.get("type") == "patterns":
        check_keys(spec, ["type", *reader_keys(PatternFaces, skip=("num_aus", "image_size", "geometry"))],
                   "data.train", "patterns")
        spec.pop("type")
        return PatternFaces(num_aus=num_aus, image_size=image_size, geometry=geometry, **spec)
    from aullava.faces.crop_cache import FaceCropCache

    ask = spec.pop("ask", "labelled")
    frames = read_frames(spec, where="data.train")
    for problem in frames.problems:
        log.warning("%s", problem)
    cache = FaceCropCache(cache_root, crop_size=image_size, landmarks=geometry)
    report = cache.build([frame_source(row) for _, row in frames.table.iterrows()], workers=workers)
    faces = LabelledFaces(frames, cache, ask=ask, geometry=geometry)
    if faces.dropped:
        log.warning("%s: %s", frames.name, dropped_summary(len(frames.table), report.failures or
                                                           [f"{faces.dropped} rows without a face crop"],
                                                           "dropped from training"))
    return faces
