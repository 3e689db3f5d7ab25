"""Rank teacher labels: which photos are labelled present / absent / not at all, and that the reference is what
decides (a held-out photo gets the label its score earns among the training photos)."""

import numpy as np
import pandas as pd
import pytest

from aullava.teacher.ranks import (PRESENT_FLOOR, RankRule, fit_rank_reference, load_reference, rank_labels, ranks,
                                   save_reference)


def shapes(sneer, frown=None):
    frown = sneer if frown is None else frown
    return pd.DataFrame({"noseSneerLeft": sneer, "noseSneerRight": np.asarray(sneer) / 2,
                         "mouthFrownLeft": frown, "mouthFrownRight": np.zeros(len(frown))})


def test_ranks_interpolate_between_knots_and_split_ties():
    q = np.quantile(np.arange(1000.0), np.linspace(0, 1, 201))
    got = ranks(np.array([-5.0, 0.0, 499.5, 250.0, 999.0, 1e6, np.nan]), q)
    np.testing.assert_allclose(got[:6], [0, 0, 0.5, 250 / 999, 1, 1], atol=1e-9)
    assert np.isnan(got[6])
    # a score equal to a run of equal knots sits in the middle of the run
    assert ranks(np.array([0.0]), np.array([0, 0, 0, 1, 2.0]))[0] == pytest.approx(0.25)


def test_top_share_present_rising_bottom_share_absent_middle_unlabelled():
    rng = np.random.default_rng(0)
    train = shapes(rng.random(1000) * 1e-5)  # tiny scores, as noseSneer's on real photos: only the order matters
    ref = fit_rank_reference(train, ["AU9"], RankRule(present_share=0.1, absent_share=0.5, present_top=0.6))
    labels = rank_labels(train, ref)["AU09"].to_numpy()
    assert list(rank_labels(train, ref).columns) == ["AU09"]
    assert np.mean(labels >= PRESENT_FLOOR) == pytest.approx(0.10, abs=0.01)
    assert np.mean(labels == 0) == pytest.approx(0.50, abs=0.01)
    assert np.mean(np.isnan(labels)) == pytest.approx(0.40, abs=0.01)
    order = np.argsort(train["noseSneerLeft"].to_numpy())
    present = labels[order][labels[order] >= PRESENT_FLOOR]
    assert np.all(np.diff(present) >= 0) and present.max() == pytest.approx(0.6, abs=0.01)


def test_held_out_photos_are_ranked_against_the_training_photos(tmp_path):
    train = shapes(np.linspace(0, 1, 101), np.linspace(0, 1, 101))
    ref = load_reference(save_reference(fit_rank_reference(train, ["AU9", "AU15"]), tmp_path))
    held = shapes([0.05, 0.7, 0.99, np.nan], [2.0, 0.2, 0.0, 0.5])
    got = rank_labels(held, ref)
    assert got["AU09"].iloc[0] == 0 and np.isnan(got["AU09"].iloc[1]) and got["AU09"].iloc[2] >= PRESENT_FLOOR
    assert np.isnan(got["AU09"].iloc[3])  # no score, no label
    assert got["AU15"].iloc[0] == pytest.approx(0.6) and got["AU15"].iloc[1] == 0


def test_bad_rules_and_aus_are_refused():
    with pytest.raises(ValueError, match="shares"):
        RankRule(present_share=0.6, absent_share=0.6)
    with pytest.raises(ValueError, match="unknown AU"):
        fit_rank_reference(shapes(np.zeros(30)), ["AU99"])
    with pytest.raises(ValueError, match="at least 20"):
        fit_rank_reference(shapes(np.zeros(5)), ["AU9"])
