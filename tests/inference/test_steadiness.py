"""Steadiness of the shipped model (v5: the invariance stage and perturbed crops in training): it answers the bundled
example face the same under ±1 grey-level noise, a JPEG q95 re-save and a 3 px shift — every binary answer
unchanged, every p(present) within ±0.10 (issue 29's target is ±.05; on these variants v5 misses it only on AU6, by
.01, on 2026-12-06) — while the v2-3k model, trained without them, moves by far more (p(AU9) .25 → .53 under the
noise alone). `benchmarks/steadiness.py` prints the whole table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e
MODELS = Path(__file__).resolve().parents[2] / "models"
TOLERANCE = 0.10


def _variants(image):
    from aullava.faces.perturb import jpeg, plus_minus_one, shifted

    return [image, plus_minus_one(image, np.random.default_rng(0)), jpeg(image, 95), shifted(image, 3),
            shifted(image, -3)]


def _answers(model_dir, astronaut_path):
    from aullava.faces.images import load_image
    from aullava.inference import Predictor

    predictor = Predictor(model_dir, device="cpu", precision="fp32")
    results = predictor.predict(_variants(load_image(astronaut_path)), formats=["binary"])
    faces = [r.faces[0] for r in results]
    return np.stack([f.values["binary"] for f in faces]), np.stack([f.expected["binary"] for f in faces])


def test_a_model_trained_for_steadiness_keeps_its_answers_under_tiny_changes(astronaut_path):
    values, p = _answers(None, astronaut_path)  # the shipped default model
    assert (values == values[0]).all()
    assert np.abs(p - p[0]).max() <= TOLERANCE, np.round(p - p[0], 2)


def test_the_model_trained_without_it_does_not(astronaut_path):
    _, p = _answers(MODELS / "default-model-v2-3k", astronaut_path)
    assert np.abs(p - p[0]).max() > 3 * TOLERANCE
