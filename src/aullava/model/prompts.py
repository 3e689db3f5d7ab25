"""Text descriptions (the paper's crafted prompts): task purpose + AU definitions + the required output format.

Order: the fixed description of an AU set comes first, then the image tokens, then the format question. Everything
before the image is identical for every image of an AU set, so its key/value cache can be computed once and reused;
only the short question differs between the three formats of the same image.

`TEMPLATE_VERSION` is stored in every checkpoint: a model trained on one wording is only asked in that wording.
"""

from __future__ import annotations

from dataclasses import dataclass

from aullava.answer_format import AnswerFormat, serialize_answer
from aullava.au_catalogue import AUSet

TEMPLATE_VERSION = "aullava-prompt-v2"  # v2: a two-value example instead of a full-length one (shorter)
PROMPT_STYLES = ("full", "short")

_FORMAT_RULES = {
    AnswerFormat.BINARY: "1 if the AU is present, 0 if absent",
    AnswerFormat.DISCRETE: "its intensity from 0 (absent) to 5 (maximum), an integer",
    AnswerFormat.CONTINUOUS: "its intensity from 0.00 (absent) to 1.00 (maximum), two decimals",
}


@dataclass(frozen=True)
class Prompt:
    """The text around the image: `prefix` + <visual tokens> + `question`; the answer follows the question."""

    prefix: str
    question: str


def describe_au_set(au_set: AUSet, style: str = "full") -> str:
    """The fixed part: task purpose and one line per AU (name + appearance for 'full', name only for 'short')."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    lines = [
        "Task: facial action unit (AU) recognition. Each AU is a visible movement of facial muscles. "
        "Look at the face image and rate every AU listed below.",
        "AUs:",
    ]
    for au in au_set.aus:
        lines.append(f"{au.id} {au.name}: {au.definition}" if style == "full" else f"{au.id} {au.name}")
    return "\n".join(lines) + "\nImage: "


def format_question(au_set: AUSet, fmt: AnswerFormat | str) -> str:
    fmt = AnswerFormat.parse(fmt)
    example = serialize_answer([0, 1] if len(au_set) > 1 else [0], fmt)
    return (
        f"\nOutput format ({fmt.value}): a list of {len(au_set)} values in the AU order above, "
        f"each {_FORMAT_RULES[fmt]}; for two AUs it would look like {example}.\nAnswer: "
    )


def build_prompt(au_set: AUSet, fmt: AnswerFormat | str, style: str = "full") -> Prompt:
    return Prompt(prefix=describe_au_set(au_set, style), question=format_question(au_set, fmt))
