"""End to end on the real default model (Gemma-3-270M + EfficientNet-Lite0 + MediaPipe), as the README runs it."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from aullava.cli import main

EXAMPLE = str(files("aullava").joinpath("resources", "examples", "astronaut.png"))

pytestmark = pytest.mark.e2e


def test_example_face_in_all_three_formats(capsys):
    assert main(["predict", EXAMPLE, "-q"]) == 0
    captured = capsys.readouterr()
    assert "# model: default [trained]" in captured.err and "AU set: default (15 AUs)" in captured.err
    assert "UNTRAINED" not in captured.err
    lines = captured.out.splitlines()
    assert sum(line.startswith(EXAMPLE) and "face 0" in line for line in lines) == 1  # one face, one row
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ")}
    assert rows["AU"] == ["AU1", "AU2", "AU4", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23",
                          "AU24", "AU25", "AU26"]
    assert all(v in {"0", "1"} for v in rows["binary"]) and len(rows["binary"]) == 15
    assert all(v in set("012345") for v in rows["discrete"]) and len(rows["discrete"]) == 15
    assert all(re.fullmatch(r"[01]\.\d\d", v) and float(v) <= 1 for v in rows["continuous"])
    assert len(rows["continuous"]) == 15
