"""Reading answers out of a model: the one entry point (`AnswerDecoder`) that `Predictor`, `eval` and `serve` use.

    grammar     which tokens an answer may continue with (one rule, memoised), drafts
    sequential  the reference: constrained greedy decoding, one token per pass (texts only)
    parallel    Jacobi decoding: the same greedy answers in a few wide passes, with every value's distribution
    readout     values, expectations and p(present) from those distributions
    vocabulary  the tokens answers are written with

Where to add a decoder or a readout: a module here returning `Readout`s per face and format, and a name in
`DECODERS` that `AnswerDecoder` dispatches on; the tests compare every decoder with `sequential` on tiny models.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, parse_answer
from aullava.aus.catalogue import AUSet
from aullava.model.decoding.grammar import AnswerConstraint, AnswerGrammar
from aullava.model.decoding.parallel import ParallelDecoder
from aullava.model.decoding.readout import INTENSITY_READOUTS, Readout
from aullava.model.decoding.sequential import generate_answers
from aullava.model.decoding.vocabulary import answer_vocabulary, max_answer_tokens
from aullava.model.precision import DEFAULT_PRECISION, PRECISION_CHOICES, native_bf16, resolve_precision

DECODERS = ("parallel", "sequential")
READOUTS = ("exact", "one-pass")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

__all__ = ["AnswerConstraint", "AnswerDecoder", "AnswerGrammar", "DECODERS", "INTENSITY_READOUTS", "PRECISIONS",
           "DEFAULT_PRECISION", "PRECISION_CHOICES", "READOUTS", "native_bf16", "resolve_precision",
           "ParallelDecoder", "Readout", "answer_vocabulary", "check_decoder_options", "generate_answers",
           "max_answer_tokens"]


def check_decoder_options(decoder: str, precision: str, intensity: str | None, readout: str = "exact") -> str:
    """Checks the choices together; returns the intensity readout (each decoder's default if None)."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; expected one of {', '.join(READOUTS)}")
    if readout == "one-pass" and decoder != "parallel":
        raise ValueError("the one-pass readout is the parallel decoder's first pass; use decoder 'parallel'")
    intensity = intensity or ("mean" if decoder == "parallel" else "greedy")
    if intensity not in INTENSITY_READOUTS:
        raise ValueError(f"unknown intensity readout {intensity!r}; expected {', '.join(INTENSITY_READOUTS)}")
    if intensity == "mean" and decoder != "parallel":
        raise ValueError("the mean intensity readout needs the parallel decoder's probabilities")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISION_CHOICES)}")
    return intensity


class AnswerDecoder:
    """Answers of one model for batches of face crops, by the chosen decoder, precision and intensity readout.

    `decode` returns, per face, format → `Readout`. The parallel decoder keeps caches of the text before the face
    (build a new `AnswerDecoder` after changing the model's weights); the sequential one gives texts and values only
    (`expected` None).

    `readout`: "exact" (the greedy answer, token for token, and each value's distribution given the greedy values
    before it) or "one-pass" (a single pass over a draft — all absent for the first format, the previous format's
    answer for the next: each value's distribution given the *draft's* values before it, the answer from each
    value's most likely digits; faster, and one flipped value does not move the ones after it, but not the greedy
    text in general)."""

    def __init__(self, model, au_set: AUSet | None = None, decoder: str = "parallel", precision: str = "fp32",
                 intensity: str | None = None, readout: str = "exact"):
        self.intensity = check_decoder_options(decoder, precision, intensity, readout)
        precision = resolve_precision(precision, next(model.parameters()).device)
        self.model, self.decoder, self.precision, self.readout = model, decoder, precision, readout
        self.au_set = au_set or model.au_set
        self.parallel = ParallelDecoder(model, au_set=self.au_set, autocast_dtype=PRECISIONS[precision],
                                        intensity=self.intensity, one_pass=readout == "one-pass") \
            if decoder == "parallel" else None

    @property
    def with_probabilities(self) -> bool:
        return self.parallel is not None

    def decode(self, crops: torch.Tensor, formats: Sequence[AnswerFormat | str] = ALL_FORMATS,
               geometry: torch.Tensor | None = None) -> list[dict[AnswerFormat, Readout]]:
        formats = [AnswerFormat.parse(f) for f in formats]
        if self.parallel is not None:
            return self.parallel.decode(crops, formats, geometry=geometry)
        results: list[dict[AnswerFormat, Readout]] = [{} for _ in range(crops.shape[0])]
        dtype = PRECISIONS[self.precision]
        device = next(self.model.parameters()).device
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        for fmt in formats:
            with autocast:
                texts = generate_answers(self.model, crops, [fmt] * crops.shape[0], [self.au_set] * crops.shape[0],
                                         geometry)
            for face, text in enumerate(texts):
                values = parse_answer(text, fmt, len(self.au_set))
                results[face][fmt] = Readout(text=text, values=np.asarray(values), expected=None, distribution=None)
        return results
