"""scripts/probe_tokens.py: the ridge probe that judges a checkpoint's image side from its face tokens."""


import numpy as np
import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_tokens")


def _faces(rng, n, weights, noise):
    """Features of which AU 0's intensity is a linear function, AU 1's is not, AU 2 absent everywhere."""
    x = rng.normal(size=(n, 40))
    signal = 1 / (1 + np.exp(-(x @ weights)))
    y = np.stack([np.where(signal > 0.6, signal, 0.0), rng.uniform(0, 1, n), np.zeros(n)], axis=1)
    return x + noise * rng.normal(size=x.shape), y


def test_probe_separates_what_the_tokens_carry_from_what_they_do_not(probe):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=40) / 3
    train_x, train_y = _faces(rng, 400, weights, 0.1)
    test_x, test_y = _faces(rng, 200, weights, 0.1)
    scores = probe.probe_scores(train_x, train_y, test_x, test_y, alphas=(1.0, 10.0, 100.0))
    assert scores["auc"][0] > 0.95 and scores["pcc"][0] > 0.8  # linearly encoded: found
    assert abs(scores["pcc"][1]) < 0.2  # unrelated noise: nothing to find
    assert np.isnan(scores["auc"][2]) and np.isnan(scores["pcc"][2])  # one class only: no score, not a 0.5


def test_probe_uses_only_labelled_rows(probe):
    rng = np.random.default_rng(1)
    weights = rng.normal(size=40) / 3
    train_x, train_y = _faces(rng, 400, weights, 0.1)
    test_x, test_y = _faces(rng, 200, weights, 0.1)
    masked = train_y.copy()
    masked[::2, 0] = np.nan  # half the training labels of AU 0 missing
    test_y[:, 1] = np.nan  # AU 1 not labelled on the test faces: no score
    scores = probe.probe_scores(train_x, masked, test_x, test_y, alphas=(1.0, 10.0, 100.0))
    alone = probe.probe_scores(train_x[1::2], train_y[1::2], test_x, test_y, alphas=(1.0, 10.0, 100.0))
    assert scores["auc"][0] == pytest.approx(alone["auc"][0]) and scores["pcc"][0] == pytest.approx(alone["pcc"][0])
    assert np.isnan(scores["auc"][1]) and np.isnan(scores["pcc"][1])
