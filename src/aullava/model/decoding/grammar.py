"""The answer grammar as token constraints, and the drafts parallel decoding starts from.

Constrained decoding may only write tokens that keep the text a valid prefix of an answer in the asked format
(`answer_format.is_valid_prefix`), and EOS only once the answer is complete, so every answer parses, with the right
length and range, even from a random-init model. Which tokens those are depends only on a few dozen grammar states,
so `AnswerGrammar` memoises them; both decoders ask it (`AnswerConstraint` is the same rule as a `transformers`
logits processor). `draft_values` and `repair_value` turn a guessed vector (another format's answer, or a pass's
argmaxes) into value texts the grammar accepts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from aullava.aus.answer_format import (AnswerFormat, binary_from_continuous, binary_from_discrete, format_value,
                                   is_complete, is_valid_prefix)
from aullava.model.decoding.vocabulary import answer_vocabulary


class AnswerGrammar:
    """The tokens constrained decoding allows after a text prefix, memoised by the prefix's grammar state.

    Allowed continuations of a valid prefix depend only on its unfinished last value and on how many values are
    still to come (capped: one token holds at most a few separators), so a few dozen states cover every answer."""

    def __init__(self, tokenizer, fmt: AnswerFormat, num_aus: int, eos_token_id: int | None = None):
        self.fmt, self.num_aus = fmt, num_aus
        self.eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        self.vocab = sorted(answer_vocabulary(tokenizer))  # (id, text) in id order: argmax ties break like torch's
        self.text_of = dict(self.vocab)
        self.text_of[self.eos] = ""
        self._allowed: dict[tuple, tuple[int, ...]] = {}

    def state(self, text: str) -> tuple:
        if not text:
            return ("start",)
        if is_complete(text, self.fmt, self.num_aus):
            return ("done",)
        parts = text[1:].split(", ")
        return (min(self.num_aus - len(parts), 8), parts[-1])

    def allowed(self, text: str) -> tuple[int, ...]:
        """Token ids in ascending order; `(eos,)` once the answer is complete."""
        key = self.state(text)
        if key not in self._allowed:
            if key == ("done",):
                self._allowed[key] = (self.eos,)
            else:
                self._allowed[key] = tuple(i for i, t in self.vocab if is_valid_prefix(text + t, self.fmt,
                                                                                         self.num_aus))
        return self._allowed[key]

    def complete(self, prefix: str, guesses: Sequence[str]) -> str:
        """A continuation that turns the valid `prefix` into a complete answer, using `guesses` (one canonical value
        text per AU) where they fit."""
        if not prefix:
            return "[" + ", ".join(guesses) + "]"
        if is_complete(prefix, self.fmt, self.num_aus):
            return ""
        parts = prefix[1:].split(", ")
        index, current = len(parts) - 1, parts[-1]
        if current.endswith(","):
            rest = " "
        else:
            zero = "0.00" if self.fmt is AnswerFormat.CONTINUOUS else "0"
            candidates = [guesses[index], zero, current + zero[len(current):], "1.00"]
            value = next(c for c in candidates if c.startswith(current) and is_valid_prefix(
                prefix + c[len(current):], self.fmt, self.num_aus))
            rest = value[len(current):]
            if index == self.num_aus - 1:
                return rest + "]"
            rest += ", "
        return rest + ", ".join(guesses[index + 1:]) + "]"


class AnswerConstraint(LogitsProcessor):
    """The grammar as a `transformers` logits processor (the sequential decoder, `generate`); one per batch, rows may
    have different formats and lengths."""

    def __init__(self, tokenizer, formats: list[AnswerFormat], num_aus: int | list[int], eos_token_id: int):
        self.tokenizer = tokenizer
        self.text_of = dict(answer_vocabulary(tokenizer))
        self.formats = formats
        self.num_aus = [num_aus] * len(formats) if isinstance(num_aus, int) else list(num_aus)
        self.eos = eos_token_id
        self.prompt_len: int | None = None
        self._grammars: dict[tuple[AnswerFormat, int], AnswerGrammar] = {}

    def answer_text(self, generated: list[int]) -> str:
        return "".join(self.text_of.get(t, "") for t in generated if t != self.eos)

    def grammar(self, fmt: AnswerFormat, num_aus: int) -> AnswerGrammar:
        if (fmt, num_aus) not in self._grammars:
            self._grammars[fmt, num_aus] = AnswerGrammar(self.tokenizer, fmt, num_aus, self.eos)
        return self._grammars[fmt, num_aus]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]  # 0 when generation starts from inputs_embeds
        mask = torch.full_like(scores, float("-inf"))
        for row, (fmt, num_aus) in enumerate(zip(self.formats, self.num_aus)):
            generated = input_ids[row, self.prompt_len:].tolist()
            if self.eos in generated:
                mask[row, self.eos] = 0.0  # finished: keep padding with EOS
                continue
            mask[row, list(self.grammar(fmt, num_aus).allowed(self.answer_text(generated)))] = 0.0
        return scores + mask


def repair_value(value: str, grammar: AnswerGrammar) -> str:
    """The guessed value if it is one the format allows, else its longest usable beginning completed ("1.60" →
    "1.00", "0.7" → "0.70")."""
    zero = "0.00" if grammar.fmt is AnswerFormat.CONTINUOUS else "0"
    for keep in range(len(value), -1, -1):
        for tail in (zero, "1.00"):
            candidate = value[:keep] + tail[keep:]
            if is_complete("[" + candidate + "]", grammar.fmt, 1):
                return candidate
    return zero


def draft_values(guess, fmt: AnswerFormat) -> list[str]:
    """A draft in `fmt`: a vector already in `fmt`, or (vector, its format) converted by the format rules."""
    values, source = guess if isinstance(guess, tuple) else (guess, fmt)
    values = np.asarray(values, dtype=np.float64)
    to_continuous = {AnswerFormat.BINARY: 0.2, AnswerFormat.DISCRETE: 0.2, AnswerFormat.CONTINUOUS: 1.0}
    if fmt is AnswerFormat.BINARY and source is AnswerFormat.DISCRETE:
        values = binary_from_discrete(values)
    elif fmt is AnswerFormat.BINARY and source is AnswerFormat.CONTINUOUS:
        values = binary_from_continuous(values)
    elif fmt is AnswerFormat.DISCRETE and source is AnswerFormat.CONTINUOUS:
        values = np.floor(values * 5 + 0.5)
    elif fmt is AnswerFormat.CONTINUOUS:
        values = values * to_continuous[source]
    return [format_value(v, fmt) for v in np.clip(values, 0, fmt.max_value)]
