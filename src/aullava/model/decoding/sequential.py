"""The reference decoder: constrained greedy generation, one token per pass, one answer per (crop, format, AU set) row.

Rows asking the same AU set share its fixed description: its key/value cache is computed once and repeated over the
rows, so each row only runs its image tokens, its format question and its answer. The processor lays out the
inputs, the model runs the steps (`start_answers`, `answer_logits`, `continue_answers`), and `AnswerConstraint`
allows at every step only tokens that keep the answer a valid prefix, so every answer parses.
"""

from __future__ import annotations

from typing import Sequence

import torch

from aullava.answer_format import AnswerFormat
from aullava.au_catalogue import AUSet
from aullava.model.decoding.grammar import AnswerConstraint
from aullava.model.decoding.vocabulary import max_answer_tokens


@torch.no_grad()
def generate_answers(model, crops: torch.Tensor, formats: Sequence[AnswerFormat | str],
                     au_sets: Sequence[AUSet] | None = None, geometry: torch.Tensor | None = None) -> list[str]:
    """`crops` are uint8 (B, S, S, 3) aligned faces, one format (and optionally one AU set to ask; default the
    model's) per row. `model` is an `AuLlavaModel`; one with the geometry stream also needs each row's face
    `geometry` (B, FEATURE_SIZE)."""
    formats = [AnswerFormat.parse(f) for f in formats]
    au_sets = list(au_sets) if au_sets is not None else [model.au_set] * len(formats)
    groups: dict[tuple, list[int]] = {}
    for row, au_set in enumerate(au_sets):
        groups.setdefault((au_set.name, au_set.ids), []).append(row)
    texts: list[str] = [""] * len(formats)
    for rows in groups.values():
        answers = _generate_with_shared_prefix(model, crops[rows], [formats[r] for r in rows], au_sets[rows[0]],
                                               None if geometry is None else geometry[rows])
        for row, text in zip(rows, answers):
            texts[row] = text
    return texts


def _generate_with_shared_prefix(model, crops: torch.Tensor, formats: list[AnswerFormat], au_set: AUSet,
                                 geometry: torch.Tensor | None = None) -> list[str]:
    processor = model.processor
    rows = len(formats)
    state = model.start_answers(crops, processor.generation_inputs(formats, au_set), geometry)
    eos = processor.eos_token_id
    constraint = AnswerConstraint(processor.tokenizer, formats, len(au_set), eos)
    device = state.hidden.device
    generated = torch.empty((rows, 0), dtype=torch.long, device=device)
    for _ in range(max_answer_tokens(len(au_set))):
        logits, vocabulary = model.answer_logits(state)
        scores = torch.full((rows, len(processor) + 1), float("-inf"), device=device)
        scores[:, vocabulary] = logits.float()
        token = constraint(generated, scores).argmax(-1, keepdim=True)
        generated = torch.cat([generated, token], dim=1)
        if bool((generated == eos).any(dim=1).all()):
            break
        state = model.continue_answers(state, token)
    return [constraint.answer_text(row.tolist()) for row in generated.cpu()]
