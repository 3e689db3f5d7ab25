"""Prompt texts: the AU description (cached prefix) and the per-format question."""

from __future__ import annotations

import re

import pytest

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, parse_answer
from aullava.aus.catalogue import AUSet, au_set, builtin_au_sets
from aullava.model.prompts import PROMPT_STYLES, TEMPLATE_V2, TEMPLATE_V3, TEMPLATE_VERSION, Prompt, build_prompt, describe_au_set, format_question

SET_NAMES = sorted(builtin_au_sets())
# FACS order reversed and a one-sided AU: the prompt must keep the set's own order
CUSTOM = ["AU12", "AU1", "AU2L", "AU26"]


def au_lines(prefix: str) -> list[str]:
    """The lines of the prefix between the 'AUs:' header and the image placeholder."""
    lines = prefix.split("\n")
    start = lines.index("AUs:") + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("Image:"))
    return lines[start:end]


def example_of(question: str) -> str:
    m = re.search(r"like (\[[^\]]*\])", question)
    assert m, f"no example answer in {question!r}"
    return m.group(1)


@pytest.mark.parametrize("name", SET_NAMES + ["custom"])
def test_full_prompt_lists_every_au_in_order_with_definition(name):
    s = au_set(CUSTOM) if name == "custom" else au_set(name)
    lines = au_lines(describe_au_set(s, "full"))
    assert len(lines) == len(s)
    for line, au in zip(lines, s.aus):
        assert line.startswith(f"{au.id} {au.name}"), (line, au.id)
        assert au.definition in line


@pytest.mark.parametrize("name", SET_NAMES + ["custom"])
def test_short_prompt_lists_every_au_in_order_by_name_only(name):
    s = au_set(CUSTOM) if name == "custom" else au_set(name)
    lines = au_lines(describe_au_set(s, "short"))
    assert lines == [f"{au.id} {au.name}" for au in s.aus]
    prefix = describe_au_set(s, "short")
    assert not any(au.definition in prefix for au in s.aus)


def test_prompt_order_follows_the_set_not_facs_numbers():
    ids = [line.split(" ")[0] for line in au_lines(describe_au_set(au_set(CUSTOM), "short"))]
    assert ids == CUSTOM


def test_full_and_short_styles_differ_and_full_is_longer():
    s = au_set("bp4d")
    assert len(describe_au_set(s, "full")) > len(describe_au_set(s, "short"))


def test_user_defined_au_appears_with_its_own_definition():
    mine = AUSet.from_dict({"aus": ["AU1", {"id": "EyesLeft", "name": "Eyes Turn Left",
                                            "definition": "both eyes turned to the left"}]}, name="mine")
    lines = au_lines(describe_au_set(mine, "full"))
    assert lines[1].startswith("EyesLeft Eyes Turn Left") and "both eyes turned to the left" in lines[1]


@pytest.mark.parametrize("style", PROMPT_STYLES)
@pytest.mark.parametrize("name", SET_NAMES)
def test_v2_prefix_is_shared_by_the_three_formats_and_question_differs(name, style):
    s = au_set(name)
    prompts = {fmt: build_prompt(s, fmt, style, TEMPLATE_V2) for fmt in ALL_FORMATS}
    assert all(isinstance(p, Prompt) for p in prompts.values())
    assert len({p.prefix for p in prompts.values()}) == 1
    assert len({p.question for p in prompts.values()}) == 3
    # the prefix alone does not depend on the format, and is what describe_au_set gives
    assert prompts[AnswerFormat.BINARY].prefix == describe_au_set(s, style)
    for fmt, p in prompts.items():
        assert p.question == format_question(s, fmt)
        assert fmt.value in p.question


@pytest.mark.parametrize("style", PROMPT_STYLES)
@pytest.mark.parametrize("name", SET_NAMES)
def test_v3_puts_everything_but_answer_before_the_image_with_v2_words(name, style):
    """v3: only "Answer: " follows the face, so the whole question is in the cacheable prefix; the words are v2's."""
    s = au_set(name)
    for fmt in ALL_FORMATS:
        v2, v3 = build_prompt(s, fmt, style, TEMPLATE_V2), build_prompt(s, fmt, style, TEMPLATE_V3)
        assert v3.question == "\nAnswer: "
        assert v3.prefix.startswith(describe_au_set(s, style).removesuffix("Image: "))
        assert fmt.value in v3.prefix and v3.prefix.endswith("\nImage: ")
        assert sorted(v3.prefix + v3.question) == sorted(v2.prefix + v2.question)


def test_unknown_template_version_raises():
    with pytest.raises(ValueError, match="prompt template"):
        build_prompt(au_set("bp4d"), "binary", "short", "aullava-prompt-v1")


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("name", SET_NAMES + ["custom"])
def test_question_states_the_length_and_shows_the_syntax(name, fmt):
    """The example is a short canonical answer (two AUs, to keep the prompt small); the length is stated."""
    s = au_set(CUSTOM) if name == "custom" else au_set(name)
    question = format_question(s, fmt)
    example = example_of(question)
    assert parse_answer(example, fmt, 2).shape == (2,)
    assert f"a list of {len(s)} values" in question


def test_format_may_be_given_as_a_string():
    s = au_set("disfa")
    assert build_prompt(s, "continuous", "short") == build_prompt(s, AnswerFormat.CONTINUOUS, "short")
    with pytest.raises(ValueError):
        build_prompt(s, "percent", "short")


@pytest.mark.parametrize("style", ["", "Full", "long", None])
def test_unknown_style_raises(style):
    s = au_set("bp4d")
    with pytest.raises(ValueError, match="style"):
        describe_au_set(s, style)
    with pytest.raises(ValueError, match="style"):
        build_prompt(s, "binary", style)


def test_default_style_is_full():
    s = au_set("bp4d")
    assert describe_au_set(s) == describe_au_set(s, "full")
    assert build_prompt(s, "binary", version=TEMPLATE_V2).prefix == describe_au_set(s, "full")


def test_template_version_is_a_non_empty_string():
    assert isinstance(TEMPLATE_VERSION, str) and TEMPLATE_VERSION.strip()
