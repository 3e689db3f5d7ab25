"""Every `aullava.…` name the README, the model card and docs/ mention exists: a module, or an attribute of one
(a renamed or removed module otherwise lingers in the prose long after the code moved)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "MODEL_CARD.md", *sorted((ROOT / "docs").glob("*.md"))]
NAME = re.compile(r"`(aullava(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_aullava_name_in_the_docs_exists(doc):
    names = sorted(set(NAME.findall(doc.read_text(encoding="utf-8"))))
    missing = [n for n in names if not _resolves(n)]
    assert not missing, f"{doc.name} names what does not exist: {', '.join(missing)}"
