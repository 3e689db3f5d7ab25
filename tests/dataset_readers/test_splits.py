"""Subject-exclusive splits: the standard BP4D/DISFA partitions as published, and splits that never leak."""

from __future__ import annotations

import numpy as np
import pytest

from aullava.aus.catalogue import au_set
from aullava.datasets.labels import make_frames, merge
from aullava.datasets.splits import (BP4D_PARTS, DISFA_PARTS, dataset_subjects, fold_subjects,
                                     seeded_subject_folds, split_frames)

# Copied independently from ME-GraphAU tool/BP4D_image_label_process.py and tool/DISFA_image_label_process.py;
# fold k tests on these subjects (fold 1 -> part 3, fold 2 -> part 2, fold 3 -> part 1).
EXPECTED_TEST = {
    ("BP4D", 1): ["F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015",
                  "F014"],
    ("BP4D", 2): ["M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020", "F011",
                  "M013", "M005"],
    ("BP4D", 3): ["F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016", "M014",
                  "F023", "M008"],
    ("DISFA", 1): ["SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"],
    ("DISFA", 2): ["SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"],
    ("DISFA", 3): ["SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"],
}
ALL_SUBJECTS = {
    "BP4D": {f"F{i:03d}" for i in range(1, 24)} | {f"M{i:03d}" for i in range(1, 19)},
    "DISFA": {f"SN{i:03d}" for i in range(1, 33)} - {"SN014", "SN015", "SN019", "SN020", "SN022"},
}


@pytest.mark.parametrize("dataset, fold", sorted(EXPECTED_TEST))
def test_fold_lists_equal_published_constants(dataset, fold):
    assert list(fold_subjects(dataset, fold)) == EXPECTED_TEST[(dataset, fold)]
    assert fold_subjects(dataset.lower(), fold) == fold_subjects(dataset, fold)


@pytest.mark.parametrize("dataset, parts, n", [("BP4D", BP4D_PARTS, 41), ("DISFA", DISFA_PARTS, 27)])
def test_folds_partition_the_subjects(dataset, parts, n):
    folds = [set(fold_subjects(dataset, k)) for k in (1, 2, 3)]
    assert sum(len(f) for f in folds) == n == len(set().union(*folds))  # disjoint
    assert set().union(*folds) == ALL_SUBJECTS[dataset] == set(dataset_subjects(dataset))
    assert {frozenset(p) for p in parts} == {frozenset(f) for f in folds}


def test_bad_fold_or_dataset():
    with pytest.raises(ValueError):
        fold_subjects("BP4D", 4)
    with pytest.raises(KeyError, match="seeded_subject_folds"):
        fold_subjects("FEAFA", 1)


def test_seeded_folds_partition_and_are_deterministic():
    subjects = [f"s{i}" for i in range(10)]
    folds = seeded_subject_folds(subjects, k=3, seed=0)
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert set().union(*map(set, folds)) == set(subjects) and sum(map(len, folds)) == 10
    assert seeded_subject_folds(reversed(subjects + subjects), k=3, seed=0) == folds
    assert seeded_subject_folds(subjects, k=3, seed=1) != folds
    with pytest.raises(ValueError):
        seeded_subject_folds(["a", "b"], k=3)


def _frames(dataset, subjects, per_subject=3):
    n = len(subjects) * per_subject
    subj = [s for s in subjects for _ in range(per_subject)]
    return make_frames(dataset, au_set(["AU1"]), {"dataset": [dataset] * n, "subject": subj, "sequence": subj,
                                                "frame": list(range(n))},
                       {"AU01_c": np.zeros(n)})


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_split_has_no_subject_on_both_sides(fold):
    bp4d = _frames("BP4D", sorted(ALL_SUBJECTS["BP4D"]))
    disfa = _frames("DISFA", sorted(ALL_SUBJECTS["DISFA"]))
    other = _frames("FEAFA", ["SN001", "x2", "x3", "x4", "x5"])  # SN001 here is not DISFA's SN001
    merged = merge([bp4d, disfa, other])
    train, test = split_frames(merged, fold)
    assert len(train) + len(test) == len(merged)
    for name in ("BP4D", "DISFA", "FEAFA"):
        tr = set(train.table.loc[train.table["dataset"] == name, "subject"])
        te = set(test.table.loc[test.table["dataset"] == name, "subject"])
        assert not tr & te and tr and te
    assert set(test.table.loc[test.table["dataset"] == "BP4D", "subject"]) == set(EXPECTED_TEST[("BP4D", fold)])
    assert set(test.table.loc[test.table["dataset"] == "DISFA", "subject"]) == set(EXPECTED_TEST[("DISFA", fold)])
    feafa_test = set(test.table.loc[test.table["dataset"] == "FEAFA", "subject"])
    assert feafa_test == set(seeded_subject_folds(["SN001", "x2", "x3", "x4", "x5"])[fold - 1])


def test_split_dataset_override_and_unknown_subject():
    frames = _frames("my_bp4d_manifest", ["F001", "F007", "M011"])
    train, test = split_frames(frames, 1, dataset="BP4D")
    assert set(test.table["subject"]) == {"F007"} and set(train.table["subject"]) == {"F001", "M011"}
    with pytest.raises(ValueError, match="F099"):
        split_frames(_frames("BP4D", ["F001", "F099"]), 1)
