"""The tokens an answer can be written with, and how many it can take.

Works with any tokenizer: the candidate tokens are those whose text uses only answer characters; the text of an
answer is the concatenation of its tokens' texts.
"""

from __future__ import annotations

import re
from functools import lru_cache

from aullava.aus.answer_format import ANSWER_CHARS


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


def max_answer_tokens(num_aus: int) -> int:
    """Upper bound with single-character tokens: '[' + n values of ≤4 chars + (n-1) ', ' + ']' + EOS."""
    return 2 + 4 * num_aus + 2 * max(num_aus - 1, 0) + 1
