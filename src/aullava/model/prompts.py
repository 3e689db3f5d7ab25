"""Text descriptions (the paper's crafted prompts): task purpose + AU definitions + the required output format.

Two layouts (`TEMPLATE_VERSIONS`), both with the same words:

- v3 (new models): description + format question, then the image tokens, then "Answer: ". Everything that does not
  depend on the face comes before it, so a predictor computes its key/value cache once per (AU set, format) and runs
  only the face's tokens and a few more per face (issue 28: 16 + 4 instead of 16 + 51 tokens before the answer).
- v2 (models trained before 2026-12-05, the default model of that day among them): description, image, question.

`TEMPLATE_VERSION` (the newest) is what a new model is trained with; the version stored in a checkpoint's config is
the one it is asked in, so old checkpoints keep their own layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from aullava.aus.answer_format import AnswerFormat, serialize_answer
from aullava.aus.catalogue import AUSet

TEMPLATE_V2 = "aullava-prompt-v2"  # a two-value example instead of a full-length one (shorter than v1)
TEMPLATE_V3 = "aullava-prompt-v3"  # v2's words, the format question moved before the image (a cacheable prefix)
TEMPLATE_VERSIONS = (TEMPLATE_V2, TEMPLATE_V3)
TEMPLATE_VERSION = TEMPLATE_V3
PROMPT_STYLES = ("full", "short")

_FORMAT_RULES = {
    AnswerFormat.BINARY: "1 if the AU is present, 0 if absent",
    AnswerFormat.DISCRETE: "its intensity from 0 (absent) to 5 (maximum), an integer",
    AnswerFormat.CONTINUOUS: "its intensity from 0.00 (absent) to 1.00 (maximum), two decimals",
}


@dataclass(frozen=True)
class Prompt:
    """The text around the image: `prefix` + <visual tokens> + `question`; the answer follows the question.
    (In v3 the format question is part of `prefix` and `question` is only "Answer: ".)"""

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


def build_prompt(au_set: AUSet, fmt: AnswerFormat | str, style: str = "full",
                 version: str = TEMPLATE_VERSION) -> Prompt:
    check_template_version(version)
    if version == TEMPLATE_V2:
        return Prompt(prefix=describe_au_set(au_set, style), question=format_question(au_set, fmt))
    description = describe_au_set(au_set, style).removesuffix("\nImage: ")
    question = format_question(au_set, fmt).removesuffix("\nAnswer: ")
    return Prompt(prefix=description + question + "\nImage: ", question="\nAnswer: ")


def check_template_version(version: str) -> None:
    if version not in TEMPLATE_VERSIONS:
        raise ValueError(f"prompt template {version!r} is not one this aullava speaks ({', '.join(TEMPLATE_VERSIONS)})")
