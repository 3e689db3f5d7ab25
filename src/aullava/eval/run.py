"""Evaluation and calibration as library calls: a model and labelled frames in, the scores (or the fit) out — what
`aullava eval` and `aullava calibrate` print, usable from a notebook without building command-line arguments.

    from aullava.datasets import read_frames
    from aullava.eval.run import evaluate_model
    from aullava.inference import load_model

    run = evaluate_model(load_model("runs/my-model"), read_frames({"type": "manifest", "path": "held_out.csv"}))
    run.results["binary"]["average"]["f1"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from aullava.aus.answer_format import AnswerFormat
from aullava.eval.metrics import evaluate_tables
from aullava.eval.predictions import truth_keys
from aullava.eval.probabilities import calibrate_binary

ASK_CHOICES = ("model", "labelled", "all")


@dataclass
class ModelReadout:
    """A model's answers on labelled frames: the predictions and truth tables (same rows), the keys joining them,
    the formats both labelled and asked, and notes for the user (faces not found, AUs not asked)."""

    predictions: pd.DataFrame
    truth: pd.DataFrame
    keys: list[str]
    formats: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class Evaluation(ModelReadout):
    results: dict[str, Any] = field(default_factory=dict)  # per format: per-AU metrics and their average


def predict_dataset(model, faces, formats: Sequence[str] = ("binary", "discrete", "continuous"),
                    batch_size: int = 8, progress: bool = True, decoder: str = "parallel",
                    intensity: str | None = None, precision: str = "fp32") -> pd.DataFrame:
    """Model predictions for every cached face of a `LabelledFaces`, in the shared table convention.

    Each format asks exactly the AUs the dataset labels in that format (its `au_sets`), as in training.
    `decoder="parallel"` (the readout `predict` uses) also gives the expectation columns (`AU01_p` p(present),
    `AU01_r_mean`, `AU01_i_mean`); "sequential" is the one-token-per-pass reference, answers only (greedy).
    `intensity`: the parallel decoder's readout of discrete and continuous values ("mean", its default, or
    "greedy"); decoding is `aullava.model.decoding.AnswerDecoder`, the one `predict` uses."""
    import torch
    from tqdm.auto import tqdm

    from aullava.datasets.labels import au_columns
    from aullava.model.decoding import AnswerDecoder, check_decoder_options

    intensity = check_decoder_options(decoder, precision, intensity)
    keys = truth_keys(faces.table)
    out = faces.table[keys].copy()
    formats = [f for f in formats if f in faces.au_sets]
    groups: dict[tuple[str, ...], tuple[Any, list[str]]] = {}  # formats asking the same AUs share one decoding
    for fmt in formats:
        groups.setdefault(tuple(faces.au_sets[fmt].ids), (faces.au_sets[fmt], []))[1].append(fmt)
    values = {f: np.full((len(faces), len(faces.au_sets[f])), np.nan) for f in formats}
    expected = {f: np.full_like(values[f], np.nan) for f in formats}
    bar = tqdm(total=len(faces) * len(groups), disable=not progress, desc="evaluating", unit="face")
    for au_set, fmts in groups.values():
        answers = AnswerDecoder(model, au_set=au_set, decoder=decoder, precision=precision, intensity=intensity)
        for start in range(0, len(faces), batch_size):
            rows = range(start, min(start + batch_size, len(faces)))
            crops = torch.from_numpy(np.stack([faces.cache.get(faces.sources[i]) for i in rows]))
            geometry = model.processor.geometry_batch([faces.geometry(i) for i in rows]) \
                if getattr(model, "wants_geometry", False) else None
            for i, by_format in zip(rows, answers.decode(crops, fmts, geometry=geometry)):
                for fmt, readout in by_format.items():
                    values[fmt.value][i] = readout.values
                    if readout.expected is not None:
                        expected[fmt.value][i] = readout.expected
            bar.update(len(rows))
    bar.close()
    for fmt in formats:
        out[au_columns(faces.au_sets[fmt], fmt)] = values[fmt]
    if decoder == "parallel":
        for fmt in formats:
            suffix = AnswerFormat.parse(fmt).expectation_suffix
            out[faces.au_sets[fmt].openface_columns(suffix)] = expected[fmt]
    return out


def ask_text(ask: str, model) -> str:
    """What a model is asked, in words (the report's title says it)."""
    if ask == "model":
        return f"the model's whole AU set ({len(model.au_set)} AUs), the question predict asks"
    return "only the AUs the dataset labels, per format" if ask == "labelled" else "the dataset's whole AU set"


def read_model(model, frames, formats: Sequence[str] = ("binary", "discrete", "continuous"), ask: str = "model",
               crop_cache: str | None = None, workers: int = 1, batch_size: int = 8, progress: bool = False,
               intensity: str | None = None, precision: str = "fp32") -> ModelReadout:
    """The model's readout of every labelled frame that has a face. Crops come from the resumable crop cache
    (`crop_cache`, default $AULLAVA_HOME/crops); faces that fail are counted in the notes. `ask`: the model's whole
    AU set (as predict asks), only the AUs the dataset labels per format, or the dataset's whole set."""
    from aullava.datasets import LabelledFaces, frame_source
    from aullava.datasets.spec import dropped_summary
    from aullava.faces.crop_cache import FaceCropCache

    if ask not in ASK_CHOICES:
        raise ValueError(f"ask must be one of {', '.join(ASK_CHOICES)}, got {ask!r}")
    notes = []
    cache = FaceCropCache(crop_cache, crop_size=model.vision_encoder.image_size, landmarks=model.wants_geometry)
    report = cache.build([frame_source(row) for _, row in frames.table.iterrows()], workers=workers,
                         progress=progress)
    if report.failures:
        notes.append(dropped_summary(len(frames.table), report.failures, "not evaluated"))
    faces = LabelledFaces(frames, cache, formats, ask=model.au_set if ask == "model" else ask,
                          geometry=model.wants_geometry)
    unasked = [au for au in frames.au_set.ids if au not in faces.asked_ids()]
    notes.append(f"asked {ask_text(ask, model)}" + (f"; not scored (not asked): {', '.join(unasked)}"
                                                      if unasked else ""))
    formats = [f for f in formats if f in faces.au_sets]
    table = predict_dataset(model, faces, formats, batch_size=batch_size, progress=progress, intensity=intensity,
                            precision=precision)
    return ModelReadout(table, faces.table, truth_keys(faces.table), formats, notes)


def evaluate_model(model, frames, formats: Sequence[str] = ("binary", "discrete", "continuous"),
                   **options) -> Evaluation:
    """`read_model` (same options) and the metrics of the answers against the labels (`aullava.eval.metrics`)."""
    readout = read_model(model, frames, formats, **options)
    if not readout.formats:
        raise ValueError("no answer format is both labelled by the dataset and asked")
    results = evaluate_tables(readout.truth, readout.predictions, frames.au_set, readout.formats, keys=readout.keys)
    return Evaluation(**vars(readout), results=results)


def calibrate_model(model, frames, seed: int = 0, **options) -> dict[str, float]:
    """Platt scaling of the model's binary p(present) fitted on `frames` (binary labels needed), checked as
    `aullava.eval.probabilities.calibrate_binary` does (minimums, a held-out half). The model's own calibration is
    set aside for the fit; nothing is written (the caller stores `temperature` and `bias`)."""
    saved = dict(model.config.probability_temperature), dict(model.config.probability_bias)
    model.config.probability_temperature, model.config.probability_bias = {}, {}  # fit on the raw probabilities
    try:
        readout = read_model(model, frames, ["binary"], **options)
    finally:
        model.config.probability_temperature, model.config.probability_bias = saved
    if "binary" not in readout.formats:
        raise ValueError("no binary labels to calibrate p(present) against")
    fit = calibrate_binary(readout.truth, readout.predictions, frames.au_set, seed=seed)
    fit["notes"] = readout.notes
    return fit
