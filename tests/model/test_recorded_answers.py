"""The shipped default model, and the v2-3k model of the old prompt template, still give the answers recorded before
a change meant not to alter them (see recorded_answers.py): raw texts and parsed vectors of every face, all three
formats, compared exactly."""

from __future__ import annotations

import pytest

from recorded_answers import (BATCH_SIZE, EXAMPLE, FACES_DIR, PRECISION, RECORDINGS, answers_of, example_path,
                              load_recording)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=sorted(RECORDINGS))
def recorded_model(request):
    from aullava.inference import Predictor

    return request.param, Predictor(RECORDINGS[request.param][0], batch_size=BATCH_SIZE, device="cpu",
                                    precision=PRECISION)


def test_example_face_answers_match_the_recording(recorded_model):
    name, predictor = recorded_model
    recorded = load_recording(name)["example"]
    assert answers_of(predictor, [example_path()], [EXAMPLE]) == recorded


def test_shared_photos_answers_match_the_recording(recorded_model):
    name, predictor = recorded_model
    recorded = load_recording(name)["photos"]
    if not FACES_DIR.is_dir():
        pytest.skip(f"{FACES_DIR} is absent (the shared face photos are never in the repository)")
    names = list(recorded)  # the recorded order: the same faces share a decoding batch as when recorded
    assert len(names) == 20
    assert answers_of(predictor, [FACES_DIR / n for n in names], names) == {n: recorded[n] for n in names}
