"""Constrained decoding: driven directly as a logits processor with random scores, every answer must parse."""

from __future__ import annotations

import pytest
import torch

from conftest import make_char_tokenizer

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, is_complete, is_valid_prefix, parse_answer
from aullava.model.decoding import AnswerConstraint, answer_vocabulary, max_answer_tokens

B, D, C = AnswerFormat.BINARY, AnswerFormat.DISCRETE, AnswerFormat.CONTINUOUS


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_char_tokenizer(tmp_path_factory.mktemp("char_tok"))


def decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def run_constrained(tok, formats, num_aus, *, seed, steps=None, prompt_len=4, extra_columns=0, bias=None,
                    check_each_step=True):
    """Greedy decoding with random scores through one AnswerConstraint. Returns the generated ids per row.
    At every step checks what the processor allows against the prefix checker (independently of its own
    bookkeeping: texts are decoded with the tokenizer)."""
    eos = tok.eos_token_id
    vocab = len(tok)
    width = vocab + extra_columns
    gen = torch.Generator().manual_seed(seed)
    rows = len(formats)
    # a random prompt (it may contain answer characters such as "[" or digits: they are not part of the answer)
    input_ids = torch.randint(4, vocab, (rows, prompt_len), generator=gen)
    constraint = AnswerConstraint(tok, list(formats), num_aus, eos)
    steps = max_answer_tokens(num_aus) if steps is None else steps
    for _ in range(steps):
        scores = torch.randn(rows, width, generator=gen) * 5
        if bias is not None:
            scores = scores + bias[:width]
        out = constraint(input_ids, scores.clone())
        assert out.shape == scores.shape
        if check_each_step:
            for row, fmt in enumerate(formats):
                generated = input_ids[row, prompt_len:].tolist()
                allowed = torch.isfinite(out[row]).nonzero().flatten().tolist()
                assert allowed, f"row {row} ({fmt.value}): nothing allowed after {decode(tok, generated)!r}"
                # allowed scores are the model's scores, unchanged
                assert torch.equal(out[row, allowed], scores[row, allowed])
                if eos in generated:
                    assert allowed == [eos], "a finished row must only get EOS"
                    continue
                text = decode(tok, generated)
                if is_complete(text, fmt, num_aus):
                    assert allowed == [eos], f"EOS not forced after complete answer {text!r}"
                    continue
                assert eos not in allowed, f"EOS allowed after incomplete {text!r}"
                assert all(i < vocab for i in allowed), "padding columns beyond the tokenizer must stay masked"
                for i in allowed:
                    assert is_valid_prefix(text + decode(tok, [i]), fmt, num_aus), (text, decode(tok, [i]))
        next_ids = out.argmax(dim=-1, keepdim=True)
        input_ids = torch.cat([input_ids, next_ids], dim=1)
    return [input_ids[row, prompt_len:].tolist() for row in range(rows)]


def check_answers(tok, formats, num_aus, generated):
    eos = tok.eos_token_id
    texts = []
    for fmt, ids in zip(formats, generated):
        assert eos in ids, f"{fmt.value}: no EOS within the budget: {decode(tok, ids)!r}"
        end = ids.index(eos)
        assert all(t == eos for t in ids[end:]), "after EOS only EOS"
        text = decode(tok, ids[:end])
        values = parse_answer(text, fmt, num_aus)
        assert values.shape == (num_aus,)
        texts.append(text)
    return texts


@pytest.mark.parametrize("num_aus", [1, 5, 12])
@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_random_scores_always_give_parseable_answers(tok, fmt, num_aus):
    formats = [fmt] * 6
    texts = []
    for seed in range(3):
        generated = run_constrained(tok, formats, num_aus, seed=seed)
        texts += check_answers(tok, formats, num_aus, generated)
    # random scores explore the answer space: the answers are not all the same
    if num_aus > 1:
        assert len(set(texts)) > 1


def test_rows_of_different_formats_in_one_batch(tok):
    formats = [B, D, C, C, D, B, C]
    num_aus = 5
    for seed in range(4):
        generated = run_constrained(tok, formats, num_aus, seed=100 + seed)
        texts = check_answers(tok, formats, num_aus, generated)
        for fmt, text in zip(formats, texts):
            values = parse_answer(text, fmt, num_aus)
            assert values.max() <= fmt.max_value
            if fmt is not C:
                assert "." not in text


def test_finished_row_keeps_getting_eos_only(tok):
    """Run far beyond the answer length: rows that finished early get EOS at every later step."""
    formats = [B, B, D, C]
    num_aus = 3
    steps = max_answer_tokens(num_aus) + 15
    generated = run_constrained(tok, formats, num_aus, seed=5, steps=steps)
    check_answers(tok, formats, num_aus, generated)
    # the binary rows finish long before the budget, then pad with EOS
    eos = tok.eos_token_id
    for ids in generated[:2]:
        assert ids.index(eos) < steps - 15 and ids[-15:] == [eos] * 15


def test_eos_is_never_chosen_early_even_if_the_model_prefers_it(tok):
    eos = tok.eos_token_id
    vocab = len(tok)
    bias = torch.zeros(vocab)
    bias[eos] = 1000.0
    close = tok.convert_tokens_to_ids("]")
    bias[close] = 500.0  # and closing the list as soon as possible
    formats = [B, D, C]
    for num_aus in (1, 4):
        generated = run_constrained(tok, formats, num_aus, seed=11, bias=bias)
        check_answers(tok, formats, num_aus, generated)


def test_scores_wider_than_the_tokenizer_are_masked(tok):
    """Model heads often pad the vocabulary; the extra columns must never be picked."""
    formats = [B, D, C]
    generated = run_constrained(tok, formats, 4, seed=3, extra_columns=13)
    check_answers(tok, formats, 4, generated)


def test_generation_from_inputs_embeds_has_no_prompt_ids(tok):
    formats = [D, C]
    generated = run_constrained(tok, formats, 5, seed=21, prompt_len=0)
    check_answers(tok, formats, 5, generated)


@pytest.mark.parametrize("num_aus", [1, 2, 5, 12, 24])
def test_max_answer_tokens_covers_the_longest_continuous_answer(tok, num_aus):
    longest = "[" + ", ".join(["1.00"] * num_aus) + "]"
    assert parse_answer(longest, C, num_aus).shape == (num_aus,)
    ids = tok(longest, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(longest)  # single-character tokens
    assert len(ids) + 1 <= max_answer_tokens(num_aus)  # + EOS
    # continuous answers always have the longest length: decoding with exactly that budget ends on EOS
    if num_aus <= 12:
        generated = run_constrained(tok, [C, C], num_aus, seed=num_aus, check_each_step=False)
        check_answers(tok, [C, C], num_aus, generated)


def test_answer_vocabulary_is_the_answer_characters(tok):
    vocab = answer_vocabulary(tok)
    texts = sorted(t for _, t in vocab)
    assert texts == sorted("[]0123456789., ")
    special = set(tok.all_special_ids)
    assert not any(i in special for i, _ in vocab)
    for i, t in vocab:
        assert decode(tok, [i]) == t
