"""The three answer formats, their one canonical text syntax, a strict parser and a prefix checker.

Canonical answers (documented in the README, fixed per template version):

    binary       [1, 0, 1]            occurrence, each value 0 or 1
    discrete     [0, 3, 1]            FACS intensity, each value an integer 0..5 (0 = absent, 1..5 = A..E)
    continuous   [0.12, 0.00, 0.87]   intensity in [0, 1], exactly two decimals

One syntax per format keeps training targets unambiguous, and the prefix checker (`is_valid_prefix`) is what
constrained decoding uses, so the model can only ever emit text that `parse_answer` accepts.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import numpy as np


class AnswerFormat(str, enum.Enum):
    BINARY = "binary"
    DISCRETE = "discrete"
    CONTINUOUS = "continuous"

    @classmethod
    def parse(cls, value: "str | AnswerFormat") -> "AnswerFormat":
        try:
            return cls(value.value if isinstance(value, AnswerFormat) else str(value).lower())
        except ValueError:
            names = ", ".join(f.value for f in cls)
            raise ValueError(f"unknown answer format {value!r}; expected one of: {names}") from None

    @property
    def max_value(self) -> float:
        return {"binary": 1.0, "discrete": 5.0, "continuous": 1.0}[self.value]

    @property
    def column_suffix(self) -> str:
        """Label tables (dataset readers, manifests): `AU01_c` occurrence, `AU01_r` 0–5 intensity, bare `AU01`
        0–1 intensity, as FEAFA and the synthetic manifests label it."""
        return {"binary": "c", "discrete": "r", "continuous": ""}[self.value]

    @property
    def table_suffix(self) -> str:
        """Prediction tables (`predict`): `AU01_c` and `AU01_r` as OpenFace names them, and `AU01_i` for the 0–1
        intensity, because py-feat users read a bare `AU01` as a probability."""
        return {"binary": "c", "discrete": "r", "continuous": "i"}[self.value]

    @property
    def expectation_suffix(self) -> str:
        """Prediction-table columns of the model's expectation over the value: `AU01_p` p(present) for binary,
        `AU01_r_mean` expected 0–5 intensity, `AU01_i_mean` expected 0–1 intensity. No peer tool uses them."""
        return {"binary": "p", "discrete": "r_mean", "continuous": "i_mean"}[self.value]


ALL_FORMATS = (AnswerFormat.BINARY, AnswerFormat.DISCRETE, AnswerFormat.CONTINUOUS)
ANSWER_CHARS = frozenset("[]0123456789., ")
DIGITS = frozenset("0123456789")  # str.isdigit() would also accept other scripts' digits and superscripts
PRESENCE_THRESHOLD = 0.10  # the project's rule: a 0–1 intensity x is present when x ≥ 0.10 (5·0.10 rounds to 1)


def _digits(text: str) -> bool:
    return bool(text) and set(text) <= DIGITS


class AnswerParseError(ValueError):
    """An answer that is not canonical; the message names the position (0-based AU index) that failed."""


def format_value(value: float, fmt: AnswerFormat) -> str:
    if math.isnan(float(value)):
        raise ValueError(f"{fmt.value} value is NaN")
    if fmt is AnswerFormat.CONTINUOUS:
        clipped = min(max(float(value), 0.0), 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0
        return f"{clipped:.2f}"
    top = int(fmt.max_value)
    number = int(round(float(value)))
    if not 0 <= number <= top or not math.isclose(number, float(value), abs_tol=1e-6):
        raise ValueError(f"{fmt.value} value must be an integer in 0..{top}, got {value!r}")
    return str(number)


def serialize_answer(values: Sequence[float], fmt: AnswerFormat | str) -> str:
    """Target text for training; raises on values outside the format's range (never silently clips 0..5)."""
    fmt = AnswerFormat.parse(fmt)
    return "[" + ", ".join(format_value(v, fmt) for v in values) + "]"


def _parse_value(token: str, fmt: AnswerFormat, position: int, text: str) -> float:
    def fail(why: str) -> AnswerParseError:
        return AnswerParseError(f"position {position}: {why} (value {token!r} in answer {text!r})")

    if fmt is AnswerFormat.CONTINUOUS:
        if len(token) != 4 or token[1] != "." or not _digits(token[0] + token[2:]):
            raise fail("expected a number with two decimals like 0.37")
        number = float(token)
        if number > 1.0:
            raise fail("continuous intensity must be within [0, 1]")
        return number
    if len(token) != 1 or not _digits(token):
        raise fail(f"expected a single digit 0..{int(fmt.max_value)}")
    number = int(token)
    if number > fmt.max_value:
        raise fail(f"{fmt.value} value must be within 0..{int(fmt.max_value)}")
    return float(number)


def parse_answer(text: str, fmt: AnswerFormat | str, num_aus: int) -> np.ndarray:
    """Strict parser: the canonical syntax only, the exact length, values in range."""
    fmt = AnswerFormat.parse(fmt)
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise AnswerParseError(f"position 0: answer must be a bracketed list, got {text!r}")
    inner = body[1:-1]
    tokens = inner.split(", ") if inner else []
    if len(tokens) != num_aus:
        bad = min(len(tokens), num_aus)
        raise AnswerParseError(f"position {bad}: expected {num_aus} values, got {len(tokens)} in {text!r}")
    return np.array([_parse_value(tok, fmt, i, text) for i, tok in enumerate(tokens)], dtype=np.float32)


def _value_prefix_ok(chunk: str, fmt: AnswerFormat, complete: bool) -> bool:
    """Whether `chunk` is a (complete, if asked) canonical value of `fmt`."""
    if fmt is AnswerFormat.CONTINUOUS:
        pattern_ok = all((c == "." if i == 1 else c in DIGITS) for i, c in enumerate(chunk)) and len(chunk) <= 4
        if not pattern_ok or (chunk and chunk[0] not in "01"):
            return False
        if chunk.startswith("1") and any(c not in ".0" for c in chunk[1:]):
            return False  # 1.xx must be 1.00
        return len(chunk) == 4 if complete else True
    if len(chunk) > 1 or (chunk and (not _digits(chunk) or int(chunk) > fmt.max_value)):
        return False
    return len(chunk) == 1 if complete else True


def is_valid_prefix(text: str, fmt: AnswerFormat, num_aus: int) -> bool:
    """True if `text` can still be extended into a canonical answer with `num_aus` values."""
    fmt = AnswerFormat.parse(fmt)
    if not text:
        return True
    if text[0] != "[":
        return False
    closed = text.endswith("]")
    inner = text[1:-1] if closed else text[1:]
    if "]" in inner:
        return False
    parts = inner.split(", ")
    if len(parts) > num_aus:
        return False
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if not last or closed:
            if not _value_prefix_ok(part, fmt, complete=True):
                return False
        elif part.endswith(","):  # the ", " separator may be cut after its comma
            if len(parts) >= num_aus or not _value_prefix_ok(part[:-1], fmt, complete=True):
                return False
        elif not _value_prefix_ok(part, fmt, complete=False):
            return False
    return len(parts) == num_aus if closed else True


def is_complete(text: str, fmt: AnswerFormat, num_aus: int) -> bool:
    return text.endswith("]") and is_valid_prefix(text, fmt, num_aus)


def binary_from_discrete(values: np.ndarray) -> np.ndarray:
    """Occurrence from FACS intensity: present when intensity ≥ 1 (A or stronger)."""
    return (np.asarray(values) >= 1).astype(np.float32)


def discrete_from_continuous(values: np.ndarray, threshold: float = PRESENCE_THRESHOLD) -> np.ndarray:
    """0..1 → 0..5 by rounding 5·x half up, so 0.10 (=0.5 on the FACS scale) is the first value counted as present.
    The presence test is the same comparison as `binary_from_continuous`, so float rounding near 0.1 cannot make
    the two formats disagree."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.clip(np.floor(values * 5.0 + 0.5), 1, 5)
    return np.where(values >= threshold, rounded, 0).astype(np.float32)


def binary_from_continuous(values: np.ndarray, threshold: float = PRESENCE_THRESHOLD) -> np.ndarray:
    """Occurrence from 0..1 intensity; the default threshold matches `discrete_from_continuous` (5·0.1 rounds to 1)."""
    return (np.asarray(values) >= threshold).astype(np.float32)
