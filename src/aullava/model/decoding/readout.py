"""What an answer's token distributions say about each AU: the values and their probabilities.

The parallel decoder (`decoding.parallel`) leaves, at each non-forced position of the greedy answer, the calibrated
distribution over the tokens the constraint allowed there. Here they become per-digit distributions, per-AU value
distributions and expectations.

Intensity answers (discrete 0–5, continuous 0–1) are read out as the expected intensity rounded to the format's
grid (`intensity="mean"`, the default), not the greedy digits: the value with the least expected squared error
under the model's own distribution (minimum-Bayes-risk decoding of a number, as in Lukasik et al., "Regression-aware
inference with LLMs", 2024). Greedy digits take the mode one digit at a time, so a model that spreads a face's
tenths digit over 0–3 writes "0.0…" for every such face and ranks them all alike. Before the expectation, the
tilt the training loss put on the digits is undone: a present weight w multiplies the loss of the digits that make
a value present, which multiplies their learned odds by w (the minimiser of a weighted cross-entropy), so their
probabilities are divided by w again. Binary p(present) has its fitted Platt shift instead (`aullava calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aullava.aus.answer_format import AnswerFormat, format_value, parse_answer
from aullava.model.decoding.grammar import AnswerGrammar

INTENSITY_READOUTS = ("mean", "greedy")


@dataclass
class Readout:
    """One answer and what the model thought of each value.

    `text` is the greedy answer the LLM wrote. `values` is the answer: the text's for binary and for
    `intensity="greedy"`; for discrete and continuous under `intensity="mean"` the expectation rounded to the format's
    grid (0..5, two decimals). `distribution` (AUs × values) holds, at each value, the model's distribution over
    the values the constraint allowed there, given the greedy values before it: binary over (0, 1), discrete over
    0..5 (present values divided by the present weight, see the module docstring). `expected` is its expectation:
    binary p(present), discrete the expected intensity 0..5, continuous the expected intensity 0..1 (at each digit
    the expectation over the allowed digits, the tenths digit untilted like the discrete values; a digit off the
    greedy path is followed by the middle of what the remaining digits could add, since the model was not asked
    about that branch)."""

    text: str
    values: np.ndarray
    expected: np.ndarray | None  # None from the sequential decoder (it keeps no distributions)
    distribution: np.ndarray | None
    passes: int = 1
    token_ids: list[int] = field(default_factory=list, repr=False)


def first_digit(text: str) -> str:
    return next((c for c in text if c.isdigit()), "")


def read_out(grammar: AnswerGrammar, fmt: AnswerFormat, ids: list[int],
             dists: dict[int, tuple[tuple[int, ...], np.ndarray]], present_weights: np.ndarray,
             intensity: str = "mean", passes: int = 1) -> Readout:
    """The Readout of the greedy answer `ids`. `dists` maps an answer position to (allowed token ids, their
    calibrated probabilities) given the greedy prefix; `present_weights` (one per AU) is the training tilt that
    discrete and continuous expectations undo; `intensity` is the decoder's readout ("mean" or "greedy")."""
    texts = [grammar.text_of[t] for t in ids]
    text = "".join(texts)
    values = parse_answer(text, fmt, grammar.num_aus)
    starts = np.cumsum([0] + [len(t) for t in texts])
    digit_probs = {}  # character offset of a value digit → {digit: probability} given the greedy prefix
    for j, (allowed, probs) in dists.items():
        if j >= len(ids):
            continue
        for at in range(starts[j], starts[j + 1]):
            if text[at] not in "0123456789":
                continue
            within = at - starts[j]
            dist: dict[str, float] = {}
            for token, p in zip(allowed, probs):
                candidate = grammar.text_of[token]
                if len(candidate) > within and candidate[:within] == text[starts[j]:at] \
                        and candidate[within] in "0123456789":
                    dist[candidate[within]] = dist.get(candidate[within], 0.0) + float(p)
            total = sum(dist.values())
            digit_probs[at] = {d: p / total for d, p in dist.items()} if total > 0 else {text[at]: 1.0}
    weights = None if fmt is AnswerFormat.BINARY else present_weights
    expected, distribution = value_probabilities(text, fmt, grammar.num_aus, digit_probs, weights)
    if intensity == "mean" and fmt is not AnswerFormat.BINARY:
        values = intensity_answer(expected, fmt)
    return Readout(text=text, values=values, expected=expected, distribution=distribution, passes=passes,
                   token_ids=list(ids))


def intensity_answer(expected: np.ndarray, fmt: AnswerFormat) -> np.ndarray:
    """The expected intensities as an answer of `fmt`: rounded to the grid the format writes (0..5, two decimals),
    exactly as parsing that answer gives them."""
    steps = 100 if fmt is AnswerFormat.CONTINUOUS else 1  # grid points per unit
    grid = np.floor(np.clip(np.asarray(expected, dtype=np.float64), 0, fmt.max_value) * steps + 0.5) / steps
    text = "[" + ", ".join(format_value(v, fmt) for v in grid) + "]"
    return parse_answer(text, fmt, len(grid))


def untilt(dist: dict[str, float], weight: float, present) -> dict[str, float]:
    """A digit distribution with the digits that make a value present divided by the present weight."""
    scaled = {d: p / weight if present(d) else p for d, p in dist.items()}
    total = sum(scaled.values())
    return {d: p / total for d, p in scaled.items()}


def value_probabilities(text: str, fmt: AnswerFormat, num_aus: int, digit_probs: dict[int, dict[str, float]],
                         present_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per AU: the distribution over its values (binary, discrete) and the expected value. `present_weights` (one
    per AU, discrete and continuous only): the training tilt to undo (module docstring)."""
    weights = np.ones(num_aus) if present_weights is None else np.asarray(present_weights, dtype=np.float64)
    spans, at = [], 1
    for value in text[1:-1].split(", "):
        spans.append((at, value))
        at += len(value) + 2
    if fmt is not AnswerFormat.CONTINUOUS:
        size = int(fmt.max_value) + 1
        distribution = np.zeros((num_aus, size), dtype=np.float64)
        for i, (offset, _) in enumerate(spans):
            dist = digit_probs.get(offset, {text[offset]: 1.0})
            for digit, p in untilt(dist, weights[i], lambda d: d != "0").items():
                distribution[i, int(digit)] += p
        expected = distribution @ np.arange(size)
        return expected.astype(np.float32), distribution.astype(np.float32)
    expected = np.zeros(num_aus, dtype=np.float64)
    for i, (offset, value) in enumerate(spans):
        # value = d0 . d1 d2; expectation along the greedy path, the middle of the range off it
        first = digit_probs.get(offset, {value[0]: 1.0})
        # the tenths digit decides presence (x ≥ 0.10), so it carries the tilt; "1.00" is too rare to correct
        tenth = untilt(digit_probs.get(offset + 2, {value[2]: 1.0}), weights[i], lambda d: d != "0")
        hundredth = digit_probs.get(offset + 3, {value[3]: 1.0})
        e2 = sum(int(d) * p for d, p in hundredth.items()) / 100
        e1 = sum(p * (int(d) / 10 + (e2 if d == value[2] else 0.045)) for d, p in tenth.items())
        total = 0.0
        for d, p in first.items():
            if d == "1":
                total += p * 1.0
            else:
                total += p * (e1 if value[0] == "0" else 0.495)
        expected[i] = total
    return expected.astype(np.float32), None
