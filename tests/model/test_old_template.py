"""A checkpoint of the v2 prompt template (every model trained before 2026-12-05, the default model of 2026-12-03
among them) still loads with its own layout and answers as recorded: a tiny seeded v2 checkpoint, saved and loaded
like any model, against answers and probabilities recorded with the code of 7a836d7 (the last that knew only v2;
`tests/data/v2_template_answers.json`). `--write` re-records with this code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RECORD = Path(__file__).parents[1] / "data" / "v2_template_answers.json"


def _answers(tokenizer_dir, folder: Path) -> dict:
    from aullava.model.decoding import AnswerDecoder
    from aullava.model.modeling import AuLlavaModel
    from aullava.model.prompts import TEMPLATE_V2
    from decoding_helpers import random_crops, tiny_model

    model = tiny_model(tokenizer_dir, "disfa", 11)
    model.config.template_version = TEMPLATE_V2
    model.save_pretrained(folder)
    loaded = AuLlavaModel.from_pretrained(folder)
    assert loaded.config.template_version == TEMPLATE_V2 and loaded.processor.template_version == TEMPLATE_V2
    readouts = AnswerDecoder(loaded).decode(random_crops(8, 11))
    return {"texts": [{f.value: r[f].text for f in r} for r in readouts],
            "expected": [{f.value: np.round(r[f].expected.astype(float), 5).tolist() for f in r} for r in readouts]}


def test_a_v2_checkpoint_loads_and_answers_as_recorded(char_tokenizer_dir, tmp_path):
    got = _answers(char_tokenizer_dir, tmp_path / "v2")
    recorded = json.loads(RECORD.read_text())
    assert got["texts"] == recorded["texts"]
    for a, b in zip(got["expected"], recorded["expected"]):
        for fmt in a:
            np.testing.assert_allclose(a[fmt], b[fmt], atol=1e-4)


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import make_char_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        make_char_tokenizer(Path(folder) / "tok")
        RECORD.write_text(json.dumps(_answers(Path(folder) / "tok", Path(folder) / "v2"), indent=1) + "\n")
    print(f"wrote {RECORD}")
