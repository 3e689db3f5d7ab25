"""Subject-exclusive train/test splits: the standard 3-fold protocol for BP4D and DISFA, seeded folds otherwise.

AU results are only comparable (and only honest) when no person appears in both training and test data, and
when everyone uses the same partition. BP4D and DISFA results in the literature (JAA-Net, ME-GraphAU, and
AU-LLaVA's comparisons) use one fixed 3-part partition of the subjects per dataset; it is hard-coded below.

Source of the partitions (checked in this session, not from memory):

- ME-GraphAU (Luo et al., IJCAI 2022), github.com/CVI-SZU/ME-GraphAU: ``tool/BP4D_image_label_process.py``
  (``BP4D_Sequence_split``) and ``tool/DISFA_image_label_process.py`` (``part1``/``part2``/``part3``). The lists
  below are copied in their order. Their fold numbering: fold 1 trains on parts 1+2 and tests on part 3,
  fold 2 trains on 1+3 and tests on 2, fold 3 trains on 2+3 and tests on 1.
- JAA-Net (Shao et al., ECCV 2018 / IJCV 2021), github.com/ZhiwenShao/PyTorch-JAANet ``data/list/*_part{1,2,3}
  _path.txt`` (frame lists, per part): spot-checked only -- DISFA part 1 starts with SN002 and ends with SN016,
  BP4D part 1 starts with F001, BP4D part 3 starts with F007, as in ME-GraphAU's lists. The full JAA-Net part
  files (about 1 MB each) were not read end to end, so equality with JAA-Net is *likely, not proven*; equality
  with ME-GraphAU's scripts is exact. Several later repositories repeat the same lists verbatim.

BP4D: 41 subjects (F001-F023, M001-M018) in parts of 14/14/13. DISFA: 27 subjects (SN001-SN032 without SN014,
SN015, SN019, SN020, SN022) in parts of 9/9/9.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from aullava.datasets.labels import LabelledFrames

__all__ = [
    "BP4D_PARTS",
    "DISFA_PARTS",
    "FOLD_TEST_PART",
    "dataset_subjects",
    "fold_subjects",
    "seeded_subject_folds",
    "split_frames",
]

BP4D_PARTS: tuple[tuple[str, ...], ...] = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016", "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020", "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015", "F014"),
)
"""BP4D's three subject parts, as in ME-GraphAU ``tool/BP4D_image_label_process.py`` (see module docstring)."""

DISFA_PARTS: tuple[tuple[str, ...], ...] = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)
"""DISFA's three subject parts, as in ME-GraphAU ``tool/DISFA_image_label_process.py`` (see module docstring)."""

FOLD_TEST_PART = {1: 2, 2: 1, 3: 0}
"""Fold number (1-based, ME-GraphAU's numbering) -> index of the part it tests on; it trains on the other two."""

_STANDARD = {"bp4d": BP4D_PARTS, "disfa": DISFA_PARTS}


def _parts(dataset: str) -> tuple[tuple[str, ...], ...]:
    try:
        return _STANDARD[dataset.strip().lower()]
    except KeyError:
        raise KeyError(f"no standard folds for dataset {dataset!r}; known: BP4D, DISFA "
                       "(use seeded_subject_folds for others)") from None


def _check_fold(fold: int, k: int = 3) -> None:
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 1 <= fold <= k:
        raise ValueError(f"fold must be an integer 1..{k}, got {fold!r}")


def dataset_subjects(dataset: str) -> tuple[str, ...]:
    """All subjects of a dataset with standard folds, sorted."""
    return tuple(sorted(s for part in _parts(dataset) for s in part))


def fold_subjects(dataset: str, fold: int) -> tuple[str, ...]:
    """The *test* subjects of a standard fold (1..3) of ``"BP4D"`` or ``"DISFA"``; training uses all others."""
    _check_fold(fold)
    return _parts(dataset)[FOLD_TEST_PART[fold]]


def seeded_subject_folds(subjects: Iterable[str], k: int = 3, seed: int = 0) -> list[tuple[str, ...]]:
    """``k`` disjoint subject groups covering ``subjects``, for datasets without a standard partition.

    Deterministic for a given set of subjects, whatever their order or repetition: the sorted unique subjects
    are permuted with ``numpy.random.default_rng(seed)`` and dealt round-robin, so group sizes differ by <= 1.
    Group ``i`` is the test set of fold ``i + 1``.
    """
    unique = sorted({str(s) for s in subjects})
    if k < 2 or len(unique) < k:
        raise ValueError(f"need k >= 2 and at least k subjects for {k} folds, got {len(unique)} subject(s)")
    order = np.random.default_rng(seed).permutation(len(unique))
    return [tuple(sorted(unique[j] for j in order[i::k])) for i in range(k)]


def split_frames(frames: LabelledFrames, fold: int, dataset: str | None = None, *, k: int = 3,
                 seed: int = 0) -> tuple[LabelledFrames, LabelledFrames]:
    """(train, test) frames of one fold; no subject is on both sides.

    Each row is split by its own ``dataset`` column (so a merged table splits each dataset by its own protocol):
    BP4D and DISFA by the standard parts above, any other dataset by `seeded_subject_folds` over its subjects
    (``k``, ``seed``). ``dataset`` overrides the column for all rows (e.g. ``"BP4D"`` for a manifest that holds
    BP4D frames under another name). A BP4D/DISFA subject outside the standard lists is an error: the protocol
    cannot place it. Subjects are only compared within a dataset (DISFA's SN001 is not FEAFA's SN001).
    """
    table = frames.table
    names = np.full(len(table), dataset, dtype=object) if dataset is not None else table["dataset"].to_numpy()
    subjects = table["subject"].astype(str).to_numpy()
    test = np.zeros(len(table), dtype=bool)
    for name in dict.fromkeys(names):
        rows = names == name
        if str(name).strip().lower() in _STANDARD:
            known = set(dataset_subjects(name))
            strangers = sorted(set(subjects[rows]) - known)
            if strangers:
                raise ValueError(f"{name}: subjects {', '.join(strangers)} are not in the standard {name} folds")
            _check_fold(fold)
            test_subjects = set(fold_subjects(name, fold))
        else:
            _check_fold(fold, k)
            test_subjects = set(seeded_subject_folds(subjects[rows], k=k, seed=seed)[fold - 1])
        test |= rows & np.isin(subjects, list(test_subjects))
    return frames.subset(~test), frames.subset(test)
