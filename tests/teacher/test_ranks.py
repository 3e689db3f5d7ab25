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


def test_manifests_rank_against_training_photos_only(tmp_path, monkeypatch):
    """`write_teacher_manifests(rank_aus=...)`: the reference is fitted on the training identities' photos, the
    held-out ones are labelled by it, other AUs keep the calibrated teacher's labels, photos without a face go."""
    import aullava.teacher.manifests as manifests

    n = 60
    index = pd.DataFrame({"image": [f"p{i}.jpg" for i in range(n)], "identity": [f"id{i}" for i in range(n)]})
    index.to_csv(tmp_path / "index.csv", index=False)
    sneer = np.linspace(0, 1e-4, n)
    sneer[-1] = 1.0  # the last photo is held out below, with a score above every training photo's

    def fake_detect(paths, progress=True):
        table = pd.DataFrame({"image": [str(p) for p in paths], "face": [True] * (n - 1) + [False]})
        table["noseSneerLeft"], table["noseSneerRight"] = sneer, 0.0
        table["mouthSmileLeft"] = table["mouthSmileRight"] = 0.0
        table.loc[~table["face"], ["noseSneerLeft", "noseSneerRight"]] = np.nan
        return table

    monkeypatch.setattr(manifests, "detect_blendshapes", fake_detect)
    monkeypatch.setattr(manifests, "split_identities", lambda ids, share, seed: {"id58", "id57"})
    counts = manifests.write_teacher_manifests(tmp_path / "index.csv", tmp_path / "out", rank_aus=["AU9"],
                                               progress=False)
    assert counts["no_face"] == 1 and counts["rank_aus"] == ["AU9"] and "AU9" in counts["labelled_aus"]
    train = pd.read_csv(tmp_path / "out" / "real_train.csv")
    held = pd.read_csv(tmp_path / "out" / "real_held_out.csv")
    assert set(held["subject"]) == {"id57", "id58"} and len(train) == n - 3
    reference = load_reference(tmp_path / "out" / "rank_reference.json")
    assert reference["aus"]["AU9"]["photos"] == n - 3  # training photos with a face only
    assert held["AU09"].tolist() == [pytest.approx(0.6)] * 2  # above every training photo: the top label
    assert np.mean(train["AU09"] >= PRESENT_FLOOR) == pytest.approx(0.1, abs=0.03)
    assert (train["AU12"] == 0).all()  # a calibrated AU keeps the teacher's label


def test_cli_names_an_unknown_rank_au(tmp_path, capsys):
    from aullava.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["teacher", "--index", str(tmp_path / "i.csv"), "--out", str(tmp_path / "o"), "--rank-aus", "AU9,AU99"])
    assert stop.value.code == 2
    assert "unknown AU(s) ['AU99']" in capsys.readouterr().err
