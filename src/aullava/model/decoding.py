"""Constrained decoding: at every step only tokens that keep the answer a valid prefix of the canonical syntax
(`answer_format.is_valid_prefix`) may be chosen, and EOS only once the answer is complete. So every answer parses,
with the right length and range, even from a random-init model.

Works with any tokenizer: the candidate tokens are those whose text uses only answer characters; the text of an
answer is the concatenation of its tokens' texts.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch
from transformers import LogitsProcessor

from aullava.answer_format import ANSWER_CHARS, AnswerFormat, is_complete, is_valid_prefix


BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@lru_cache(maxsize=8)
def _answer_vocabulary(tokenizer) -> tuple[tuple[int, str], ...]:
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    # byte-fallback pieces ("<0x30>") decode like the real ones but are never produced by tokenizing an answer
    return tuple((i, t) for i, t, piece in zip(ids, texts, pieces)
                 if t and len(t) <= 8 and set(t) <= ANSWER_CHARS and not BYTE_PIECE.fullmatch(str(piece)))


def answer_vocabulary(tokenizer) -> tuple[tuple[int, str], ...]:
    return _answer_vocabulary(tokenizer)


class AnswerConstraint(LogitsProcessor):
    """A `transformers` logits processor; one per batch, rows may have different formats and lengths."""

    def __init__(self, tokenizer, formats: list[AnswerFormat], num_aus: int | list[int], eos_token_id: int):
        self.vocab = answer_vocabulary(tokenizer)
        self.text_of = dict(self.vocab)
        self.formats = formats
        self.num_aus = [num_aus] * len(formats) if isinstance(num_aus, int) else list(num_aus)
        self.eos = eos_token_id
        self.prompt_len: int | None = None

    def answer_text(self, generated: list[int]) -> str:
        return "".join(self.text_of.get(t, "") for t in generated if t != self.eos)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]  # 0 when generation starts from inputs_embeds
        mask = torch.full_like(scores, float("-inf"))
        for row, (fmt, num_aus) in enumerate(zip(self.formats, self.num_aus)):
            generated = input_ids[row, self.prompt_len:].tolist()
            if self.eos in generated:
                mask[row, self.eos] = 0.0  # finished: keep padding with EOS
                continue
            text = self.answer_text(generated)
            if is_complete(text, fmt, num_aus):
                mask[row, self.eos] = 0.0
                continue
            allowed = [i for i, t in self.vocab if is_valid_prefix(text + t, fmt, num_aus)]
            mask[row, allowed] = 0.0
        return scores + mask


def max_answer_tokens(num_aus: int) -> int:
    """Upper bound with single-character tokens: '[' + n values of ≤4 chars + (n-1) ', ' + ']' + EOS."""
    return 2 + 4 * num_aus + 2 * max(num_aus - 1, 0) + 1
