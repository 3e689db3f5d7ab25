"""Sources that are not neutral: their own expression, read by a labeller, is the baseline a warp adds to.

Why: only ~1 in 5 photos passes `neutral_check`, so a synthetic set built from neutral sources alone leaves most
identities, and every face that smiles, frowns or talks in its photo, unused. A warp adds a known movement to
whatever the face already shows; when a labeller (the CLI passes the calibrated MediaPipe teacher,
`aullava.teacher.Teacher.label`) says what that is, the warp's label is the sum, clipped to [0, 1]. AUs the
labeller cannot see (NaN) stay unlabelled on such warps (masked in training), so no AU gets a guessed label.
Neutral sources keep their exact labels: the label is what the warp added.

The per-source baselines are stored in ``sources.csv`` (``source``, ``baseline`` = ``neutral`` or ``labelled``, one
column per AU) so a resumed run rebuilds every label without detecting the photos again.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from aullava.aus.answer_format import PRESENCE_THRESHOLD
from aullava.runtime.files import atomic_write_csv

SOURCES_FILE = "sources.csv"
NEUTRAL, LABELLED = "neutral", "labelled"


# Movements that undo what a baseline shows, so the sum would be wrong: pressing or tightening the lips (AU23,
# AU24) pulls parted lips (AU25, AU26) together, and whether they still part after the warp is not known without
# re-measuring. Seen on the contact sheet `docs/synth-baseline-sources.png` (scripts/check_baseline_sources.py).
UNDOES = {"AU23": ("AU25", "AU26"), "AU24": ("AU25", "AU26")}
RULE = "baseline + warp, clipped; AU23/AU24 added to parted lips masks AU25/AU26"  # recorded in the set's config


def combine(added: Mapping[str, float], baseline: Mapping[str, float] | None, au_ids: Sequence[str]
            ) -> dict[str, float]:
    """The label of a warp that ``added`` these intensities to a source showing ``baseline`` (None: neutral).
    NaN where the baseline is unknown (NaN or missing): the total is unknown then, whatever was added. NaN too
    where the warp adds a movement that undoes the baseline's (`UNDOES`, both present: ≥ 0.1)."""
    if baseline is None:
        return {au: float(added.get(au, 0.0)) for au in au_ids}
    out = {}
    for au in au_ids:
        base = baseline.get(au, math.nan)
        base = math.nan if base is None else float(base)
        out[au] = math.nan if math.isnan(base) else min(1.0, max(0.0, base) + float(added.get(au, 0.0)))
    for mover, undone in UNDOES.items():
        if float(added.get(mover, 0.0)) >= PRESENCE_THRESHOLD:
            for au in undone:
                if au in out and float(baseline.get(au, 0.0) or 0.0) >= PRESENCE_THRESHOLD:
                    out[au] = math.nan
    return out


def _column(au: str) -> str:
    """The manifests' column name of a canonical AU id: AU6 → AU06."""
    return f"AU{int(au[2:]):02d}"


def write_sources(path: Path, baselines: Mapping[str, Mapping[str, float] | None], au_ids: Sequence[str]) -> None:
    """``sources.csv``: every used source, ``neutral`` or ``labelled`` with its baseline per AU (empty = unknown),
    AU columns named as in the manifests (``AU06``)."""
    def cell(v) -> str:
        return "" if v is None or math.isnan(float(v)) else f"{float(v):.3f}".rstrip("0").rstrip(".")

    rows = []
    for source in sorted(baselines):
        base = baselines[source]
        if base is None:
            rows.append([source, NEUTRAL] + [""] * len(au_ids))
        else:
            rows.append([source, LABELLED] + [cell(base.get(au)) for au in au_ids])
    atomic_write_csv(path, ["source", "baseline", *map(_column, au_ids)], rows)


def read_sources(path: Path, au_ids: Sequence[str]) -> dict[str, dict[str, float] | None]:
    """What `write_sources` wrote: source → None (neutral) or its baseline (NaN where unknown)."""
    if not path.is_file():
        return {}
    out: dict[str, dict[str, float] | None] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["baseline"] == NEUTRAL:
                out[row["source"]] = None
            else:
                out[row["source"]] = {au: float(row[_column(au)]) if row.get(_column(au)) else math.nan
                                      for au in au_ids}
    return out
