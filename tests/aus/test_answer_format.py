"""The answer formats: canonical serialization, the strict parser, the prefix checker used by constrained decoding,
and the conversion rules between formats."""

from __future__ import annotations

import re

import numpy as np
import pytest

from aullava.aus.answer_format import (
    ALL_FORMATS,
    ANSWER_CHARS,
    AnswerFormat,
    AnswerParseError,
    binary_from_continuous,
    binary_from_discrete,
    discrete_from_continuous,
    is_complete,
    is_valid_prefix,
    parse_answer,
    serialize_answer,
)

B, D, C = AnswerFormat.BINARY, AnswerFormat.DISCRETE, AnswerFormat.CONTINUOUS
CANONICAL_VALUE = {
    B: re.compile(r"[01]"),
    D: re.compile(r"[0-5]"),
    C: re.compile(r"(0\.\d\d|1\.00)"),
}


def random_values(rng: np.random.Generator, fmt: AnswerFormat, n: int) -> np.ndarray:
    if fmt is B:
        return rng.integers(0, 2, n).astype(float)
    if fmt is D:
        return rng.integers(0, 6, n).astype(float)
    return rng.integers(0, 101, n) / 100.0


def random_answers(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        fmt = ALL_FORMATS[rng.integers(0, 3)]
        n = int(rng.integers(1, 25))
        values = random_values(rng, fmt, n)
        yield fmt, values, serialize_answer(values, fmt)


# ------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_serialize_parse_round_trip_random_vectors(fmt):
    rng = np.random.default_rng(1234)
    for _ in range(300):
        n = int(rng.integers(1, 25))
        values = random_values(rng, fmt, n)
        text = serialize_answer(values, fmt)
        # the one canonical syntax: "[v, v, v]"
        inner = text[1:-1].split(", ")
        assert text[0] == "[" and text[-1] == "]" and len(inner) == n
        assert all(CANONICAL_VALUE[fmt].fullmatch(tok) for tok in inner), text
        parsed = parse_answer(text, fmt, n)
        assert parsed.shape == (n,)
        np.testing.assert_allclose(parsed, values, atol=1e-6)
        # parsing then serializing gives back the very same text
        assert serialize_answer(parsed, fmt) == text


def test_format_accepts_strings_and_enum_members():
    assert serialize_answer([1, 0], "binary") == serialize_answer([1, 0], B) == "[1, 0]"
    assert serialize_answer([5, 0, 3], "DISCRETE") == "[5, 0, 3]"
    np.testing.assert_array_equal(parse_answer("[0.25, 1.00]", "continuous", 2), [0.25, 1.0])
    with pytest.raises(ValueError, match="unknown answer format"):
        serialize_answer([1], "ordinal")


def test_continuous_values_are_rounded_to_two_decimals():
    assert serialize_answer([0.123, 0.126, 0.0, 1.0, 0.999], C) == "[0.12, 0.13, 0.00, 1.00, 1.00]"


def test_discrete_and_binary_accept_integral_floats_and_numpy_ints():
    assert serialize_answer(np.array([0, 5, 2], dtype=np.int64), D) == "[0, 5, 2]"
    assert serialize_answer(np.array([1.0, 0.0], dtype=np.float32), B) == "[1, 0]"


@pytest.mark.parametrize("fmt,values", [
    (D, [0, 6]), (D, [-1]), (D, [2.5]), (D, [5.4]), (D, [float("nan")]),
    (B, [0, 2]), (B, [-1]), (B, [0.5]), (B, [0.9]),
])
def test_serialize_raises_instead_of_clipping_or_rounding(fmt, values):
    with pytest.raises(ValueError):
        serialize_answer(values, fmt)


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, 0.004, 0.005, 0.995, 0.9951, 1.5, -0.2, float("inf"),
                                   float("-inf"), float("nan"), np.float32(-0.0)])
def test_continuous_serialize_never_produces_unparseable_text(value):
    """A training target either is refused or is an answer the parser accepts."""
    try:
        text = serialize_answer([0.5, value], C)
    except ValueError:
        return
    parsed = parse_answer(text, C, 2)
    assert 0.0 <= parsed[1] <= 1.0


# --------------------------------------------------------------------------------------- strict parser


@pytest.mark.parametrize("text,fmt,n,position", [
    # wrong length
    ("[1, 0]", B, 3, 2),
    ("[1, 0, 1, 1]", B, 3, 3),
    ("[]", D, 2, 0),
    ("[0.10]", C, 2, 1),
    # out of range: the failing value is named
    ("[0, 1, 6]", D, 3, 2),
    ("[0.00, 0.50, 1.01]", C, 3, 2),
    ("[0, 1, 2]", B, 3, 2),
    ("[9, 0, 0]", D, 3, 0),
    # non-canonical values
    ("[0.00, 0.5]", C, 2, 1),
    ("[0.00, 0.50, .50]", C, 3, 2),
    ("[0.00, 0.50, 0.500]", C, 3, 2),
    ("[0, 1, 03]", D, 3, 2),
    ("[0, 1, 1.0]", D, 3, 2),
    ("[1, 0, -1]", B, 3, 2),
    ("[0, 1, 1]", C, 3, 0),
    # wrong spacing
    ("[ 1, 0]", B, 2, 0),
    ("[1, 0 ]", B, 2, 1),
    ("[1,  0]", B, 2, 1),
    # missing brackets / trailing text
    ("1, 0", B, 2, 0),
    ("[1, 0", B, 2, 0),
    ("1, 0]", B, 2, 0),
    ("(1, 0)", B, 2, 0),
    ("[1, 0] yes", B, 2, 0),
    ("[1, 0].", B, 2, 0),
    ("The answer is [1, 0]", B, 2, 0),
])
def test_parser_rejects_and_names_the_position(text, fmt, n, position):
    with pytest.raises(AnswerParseError, match=rf"\bposition {position}\b"):
        parse_answer(text, fmt, n)


@pytest.mark.parametrize("text,fmt,n", [
    ("[1,0]", B, 2),
    ("[1;0]", B, 2),
    ("[1 0]", B, 2),
    ("[0.50,0.20]", C, 2),
    ("[1, 0,]", B, 2),
    ("[[1, 0]]", B, 2),
    ("[0.5]", C, 1),
    ("[1.0]", C, 1),
    ("[1]", C, 1),
    ("[true]", B, 1),
])
def test_parser_rejects_non_canonical_syntax(text, fmt, n):
    with pytest.raises(AnswerParseError, match=r"position \d+"):
        parse_answer(text, fmt, n)


def test_parse_error_is_a_value_error():
    assert issubclass(AnswerParseError, ValueError)


@pytest.mark.parametrize("text,fmt", [
    ("[\u0663]", D),          # ARABIC-INDIC DIGIT THREE
    ("[\u0661]", B),          # ARABIC-INDIC DIGIT ONE
    ("[0.\u00b25]", C),       # SUPERSCRIPT TWO
    ("[\uff10.50]", C),       # FULLWIDTH DIGIT ZERO
])
def test_parser_accepts_ascii_digits_only(text, fmt):
    """Only ASCII digits are canonical; anything else is an AnswerParseError (not some other exception)."""
    with pytest.raises(AnswerParseError):
        parse_answer(text, fmt, 1)


# -------------------------------------------------------------------------------------- prefix checker


def test_every_prefix_of_every_canonical_answer_is_valid_and_only_the_full_one_complete():
    for fmt, values, text in random_answers(seed=7, count=150):
        n = len(values)
        for i in range(len(text) + 1):
            prefix = text[:i]
            assert is_valid_prefix(prefix, fmt, n), (prefix, fmt, n)
            assert is_complete(prefix, fmt, n) == (i == len(text)), (prefix, fmt, n)
        # the same answer is not a complete answer for another length
        assert not is_complete(text, fmt, n + 1)
        assert not is_valid_prefix(text, fmt, n + 1)
        if n > 1:
            assert not is_complete(text, fmt, n - 1)
            assert not is_valid_prefix(text, fmt, n - 1)


@pytest.mark.parametrize("text,fmt,n", [
    ("[2", B, 3),
    ("[1, 2", B, 3),
    ("[6", D, 3),
    ("[00", D, 3),
    ("[1.5", C, 2),
    ("[2", C, 2),
    ("[.", C, 2),
    ("[0.123", C, 2),
    ("[1.1", C, 2),
    ("[1.01", C, 2),
    ("[0.90, 1.1", C, 2),
    ("[0.9, 1.1", C, 2),
    ("[0.5]", C, 1),
    # too many values
    ("[1, 0, ", B, 2),
    ("[1, 0,", B, 2),
    ("[1, 0, 1", B, 2),
    # wrong syntax
    ("x", B, 1),
    (" [", B, 1),
    ("[ ", B, 1),
    ("[1,0", B, 2),
    ("[1,,", B, 2),
    ("[1, ,", B, 2),
    ("[1, 0]]", B, 2),
    ("[1, 0] ", B, 2),
    ("[1, ]", B, 2),
    ("[0.50, ,", C, 3),
])
def test_prefix_checker_rejects_prefixes_that_cannot_be_completed(text, fmt, n):
    assert not is_valid_prefix(text, fmt, n)
    assert not is_complete(text, fmt, n)


@pytest.mark.parametrize("fmt,n", [(B, 3), (D, 2), (C, 1), (C, 2)])
def test_prefix_language_is_exactly_the_canonical_answers(fmt, n):
    """Walk every string over the answer characters that the prefix checker allows: each one can still be
    completed, and the complete ones are exactly the serialized answers, all accepted by the parser."""
    alphabet = sorted(ANSWER_CHARS)
    steps = {B: 2, D: 6, C: 101}[fmt]
    grid = [i / 100.0 for i in range(steps)] if fmt is C else [float(i) for i in range(steps)]
    expected = {serialize_answer(v, fmt) for v in np.array(np.meshgrid(*[grid] * n)).reshape(n, -1).T}

    frontier, complete = [""], set()
    while frontier:
        new = []
        for text in frontier:
            children = [text + ch for ch in alphabet if is_valid_prefix(text + ch, fmt, n)]
            if is_complete(text, fmt, n):
                complete.add(text)
                assert not children, f"{text!r} is complete but can still be extended"
            else:
                assert children, f"{text!r} is a valid prefix with no valid continuation"
            new.extend(children)
        frontier = new
    assert complete == expected
    for text in complete:
        assert parse_answer(text, fmt, n).shape == (n,)


def test_prefix_checker_allows_the_separator_cut_after_its_comma():
    assert is_valid_prefix("[1,", B, 2)
    assert is_valid_prefix("[0.25,", C, 2)
    assert not is_valid_prefix("[1,", B, 1)
    assert not is_valid_prefix("[0.2,", C, 2)


# ------------------------------------------------------------------------------------ conversion rules


def test_binary_from_discrete_present_from_intensity_one():
    np.testing.assert_array_equal(binary_from_discrete(np.arange(6)), [0, 1, 1, 1, 1, 1])


def test_discrete_from_continuous_known_points_and_monotone():
    assert discrete_from_continuous(np.array([0.09]))[0] == 0
    assert discrete_from_continuous(np.array([0.10]))[0] == 1
    assert discrete_from_continuous(np.array([0.0]))[0] == 0
    assert discrete_from_continuous(np.array([1.0]))[0] == 5
    grid = np.arange(101) / 100.0
    out = discrete_from_continuous(grid)
    assert set(np.unique(out)) == {0, 1, 2, 3, 4, 5}
    assert np.all(np.diff(out) >= 0)
    # out-of-range inputs stay in 0..5
    np.testing.assert_array_equal(discrete_from_continuous(np.array([-0.3, 1.7])), [0, 5])


def _edge_values(dtype):
    base = np.array([0.0, 0.09, 0.0999, 0.09999999, 0.1, 0.10000001, 0.1001, 0.11, 0.2, 0.5, 0.95, 0.99,
                     1.0, -0.1, -0.0, 1.3], dtype=dtype)
    t = dtype(0.1)
    near = [np.nextafter(t, dtype(0)), t, np.nextafter(t, dtype(1))]
    for _ in range(3):
        near += [np.nextafter(near[0], dtype(0)), np.nextafter(near[-1], dtype(1))]
    return np.concatenate([base, np.array(near, dtype=dtype), np.linspace(0, 1, 20001).astype(dtype)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_binary_from_continuous_agrees_with_going_through_discrete(dtype):
    values = _edge_values(dtype)
    direct = binary_from_continuous(values)
    via_discrete = binary_from_discrete(discrete_from_continuous(values))
    bad = values[direct != via_discrete]
    assert bad.size == 0, f"disagree at {[repr(float(v)) for v in bad]}"
