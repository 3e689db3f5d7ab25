"""The reference decoder: constrained greedy generation, one token per pass, one answer per (crop, format, AU set) row.

Rows asking the same AU set share the beginning of their text: its key/value cache is computed once and repeated
over the rows, so each row only runs the rest of its text, its face tokens and its answer. The processor lays out
the inputs, the steps here run the model (`start_answers`, `answer_logits`, `continue_answers`), and
`AnswerConstraint` allows at every step only tokens that keep the answer a valid prefix, so every answer parses.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch

from aullava.aus.answer_format import AnswerFormat
from aullava.aus.catalogue import AUSet
from aullava.model.decoding.grammar import AnswerConstraint
from aullava.model.decoding.vocabulary import max_answer_tokens
from aullava.model.llm import cache_argument, final_logits


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
    state = start_answers(model, crops, processor.generation_inputs(formats, au_set), geometry)
    eos = processor.eos_token_id
    constraint = AnswerConstraint(processor.tokenizer, formats, len(au_set), eos)
    device = state.hidden.device
    generated = torch.empty((rows, 0), dtype=torch.long, device=device)
    for _ in range(max_answer_tokens(len(au_set))):
        logits, vocabulary = answer_logits(model, state)
        scores = torch.full((rows, len(processor) + 1), float("-inf"), device=device)
        scores[:, vocabulary] = logits.float()
        token = constraint(generated, scores).argmax(-1, keepdim=True)
        generated = torch.cat([generated, token], dim=1)
        if bool((generated == eos).any(dim=1).all()):
            break
        state = continue_answers(model, state, token)
    return [constraint.answer_text(row.tolist()) for row in generated.cpu()]


class AnswerState(NamedTuple):
    """Where a batch of answers stands: last hidden state per row, the key/value cache, the attention mask so far
    and the position of the next token."""

    hidden: torch.Tensor
    cache: Any
    attention: torch.Tensor
    next_position: torch.Tensor


def start_answers(model, images: torch.Tensor, inputs: dict[str, torch.Tensor],
                  geometry: torch.Tensor | None = None) -> AnswerState:
    """Runs the shared prefix once (its cache repeated over the rows), then each row's rest of the text, face tokens
    and the text after them (`AuLlavaProcessor.generation_inputs`); the state holds the last hidden state and the
    cache."""
    device = model.device
    rows = inputs["input_ids"].shape[0]
    cache = model.prefix_cache(inputs["prefix_ids"].to(device), rows)
    attention = inputs["attention_mask"].to(device)
    positions = inputs["position_ids"].to(device)
    embeds = model.embed(images.to(device), inputs["input_ids"].to(device), inputs["image_mask"].to(device), geometry)
    decoder = model.language_model.get_decoder()
    hidden = decoder(inputs_embeds=embeds, attention_mask=attention, position_ids=positions, use_cache=True,
                     **{cache_argument(decoder): cache}).last_hidden_state[:, -1]
    return AnswerState(hidden, cache, attention, positions[:, -1:] + 1)


def continue_answers(model, state: AnswerState, tokens: torch.Tensor) -> AnswerState:
    """One step: feeds one chosen token per row (B, 1) after the state."""
    attention = torch.cat([state.attention, torch.ones_like(tokens)], dim=1)
    decoder = model.language_model.get_decoder()
    hidden = decoder(input_ids=tokens, attention_mask=attention, position_ids=state.next_position, use_cache=True,
                     **{cache_argument(decoder): state.cache}).last_hidden_state[:, -1]
    return AnswerState(hidden, state.cache, attention, state.next_position + 1)


def answer_logits(model, state: AnswerState) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the next token over the answer vocabulary only (the argmax over the allowed tokens is the same;
    the LM head over Gemma's 262k-entry vocabulary would dominate every step), and those token ids."""
    vocabulary = model.processor.answer_vocabulary_ids()[0].to(model.language_model.device)
    return final_logits(model.language_model, state.hidden, vocabulary), vocabulary
