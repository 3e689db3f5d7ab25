"""Teacher-labelled training manifests of real photos, split by identity (in agreement with a synthetic set's split
when one is given)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from aullava.synth.run import read_index, split_identities
from aullava.teacher.labeler import Teacher, detect_blendshapes
from aullava.teacher.ranks import RankRule, fit_rank_reference, rank_labels, save_reference


def _held_out_identities(all_ids: set[str], held_out: float, seed: int,
                         synth_dir: str | os.PathLike | None) -> tuple[set[str], set[str], set[str]]:
    """The identities held out (agreeing with a synthetic set's split when ``synth_dir`` is given), and that set's
    training and held-out identities (empty without one)."""
    held = set(split_identities(all_ids, held_out, seed))
    synth_train: set[str] = set()
    synth_held: set[str] = set()
    if synth_dir is not None:
        tables = {split: pd.read_csv(Path(synth_dir) / f"{split}.csv", usecols=["subject"], dtype=str)
                  for split in ("train", "held_out")}
        synth_train = set(tables["train"]["subject"].dropna())
        synth_held = set(tables["held_out"]["subject"].dropna())
        if synth_train & synth_held:
            raise ValueError(f"{synth_dir}: identities on both sides of the synthetic split: "
                             f"{sorted(synth_train & synth_held)[:5]}")
        held = (held - synth_train) | (synth_held & all_ids)
    return held, synth_train, synth_held


def write_teacher_manifests(index_csv: str | os.PathLike, out_dir: str | os.PathLike, held_out: float = 0.2,
                            seed: int = 17, synth_dir: str | os.PathLike | None = None,
                            teacher: Teacher | None = None, progress: bool = True,
                            rank_aus: Sequence[str] = (), rank_rule: RankRule = RankRule()) -> dict:
    """Teacher-labelled training manifests of real photos: ``real_train.csv`` and ``real_held_out.csv`` in ``out_dir``.

    ``index_csv``: columns ``image`` (relative to the CSV's folder, or absolute) and ``identity`` (or ``subject``),
    as for `aullava.synth.run_synth`. Every photo is labelled by ``teacher`` (default: the calibrated `Teacher`)
    with `Teacher.label_faces`; photos without a face are dropped. The manifests have ``image`` (absolute path),
    ``subject`` (the identity) and ``AU01`` … ``AU26`` continuous in [0, 1], empty (NaN, "not labelled") where the
    teacher is blind; `aullava.datasets.read_manifest` reads them.

    Split by identity: ``split_identities(identities, held_out, seed)`` (the seed of the bundled calibration's
    synthetic set is 17). With ``synth_dir`` (a `run_synth` output folder with ``train.csv`` and ``held_out.csv``)
    the split agrees with the synthetic one: identities held out there are held out here, and identities trained
    on there are never held out here, so one held-out set serves both data sources.

    ``rank_aus`` (e.g. `ranks.RANK_AUS`): these AUs get rank labels (`aullava.teacher.ranks`) instead of the
    calibrated teacher's, ranked against the *training* photos only (``rank_reference.json`` is written beside the
    manifests); the held-out photos are labelled by the same reference. Returns the counts.
    """

    out = Path(out_dir)
    rows = read_index(Path(index_csv).resolve())
    paths = [path for _, path, _ in rows]
    identities = [identity for _, _, identity in rows]
    all_ids = set(identities)
    held, synth_train, synth_held = _held_out_identities(all_ids, held_out, seed, synth_dir)

    teacher = teacher or Teacher()
    shapes = detect_blendshapes(paths, progress=progress)
    labels = teacher.manifest_rows(paths, shapes, identities)
    reference = None
    if rank_aus:  # ranked against the training photos only; every photo labelled by that reference
        has_face = shapes["face"].to_numpy(dtype=bool)
        reference = fit_rank_reference(shapes[has_face & ~labels["subject"].isin(held).to_numpy()], list(rank_aus),
                                       rank_rule)
        ranked = rank_labels(shapes, reference)
        labels[ranked.columns] = ranked
    labels = labels[shapes["face"].to_numpy(dtype=bool)]
    no_face = len(paths) - len(labels)
    labels = labels.sort_values(["subject", "image"], kind="stable").reset_index(drop=True)
    is_held = labels["subject"].isin(held).to_numpy()
    sides = {"train": labels[~is_held], "held_out": labels[is_held]}
    crossing = set(sides["train"]["subject"]) & set(sides["held_out"]["subject"])
    assert not crossing, f"identities on both sides of the split: {sorted(crossing)[:5]}"
    if synth_dir is not None:
        assert not set(sides["held_out"]["subject"]) & synth_train, "a synthetic training identity is held out"
        assert not set(sides["train"]["subject"]) & synth_held, "a synthetic held-out identity is trained on"

    out.mkdir(parents=True, exist_ok=True)
    if reference is not None:
        save_reference(reference, out)
    for split, table in sides.items():
        table.to_csv(out / f"real_{split}.csv", index=False, float_format="%.4f")
    return {
        "photos": len(paths),
        "with_face": len(labels),
        "no_face": no_face,
        "identities": len(all_ids),
        "train_images": len(sides["train"]),
        "train_identities": int(sides["train"]["subject"].nunique()),
        "held_out_images": len(sides["held_out"]),
        "held_out_identities": int(sides["held_out"]["subject"].nunique()),
        "held_out_from_synth": len(synth_held & all_ids),
        "labelled_aus": list(dict.fromkeys([*teacher.seen, *rank_aus])),
        "rank_aus": list(rank_aus),
        "out_dir": str(out),
    }


