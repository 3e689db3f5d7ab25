"""A per-person neutral baseline: each person's resting face read as "no AU", as OpenFace 2's person-specific
normalisation does for tracked faces.

Why: a person whose resting face looks like an AU (a naturally raised lip corner, a furrowed brow) reads as that AU
in every frame, and intensities of different people are not comparable. Over many frames of one person, the low
end of each AU's score is their neutral; what rises above it is what they do.

How: rows are grouped by person (`person_keys`: a video's `face_id` within its file; a photo's folder, or a column
the caller names); within a person with at least `MIN_FACES` faces, the `percentile`-th percentile of each score
is their baseline b, and the corrected columns are written beside the raw ones (raw kept), suffix `_bc`:

- `AU12_p_bc`: p moved in log-odds by as much as the person's baseline b sits above `RESTING_P`, the score the
  model gives a face without the AU (logit p_bc = logit p − max(0, logit b − logit `RESTING_P`)): a person whose
  rest reads like everyone's is left alone, one whose rest reads as the AU is brought down to everyone's rest, and
  a frame above their rest rises above everyone's by the same odds ratio. (The first version, (p − b) / (1 − b),
  divided by a tiny 1 − b where the rest already read p ≈ 1 and kept such a person's AU present on most frames.)
  `AU12_c_bc` = 1 where it is ≥ 0.5 (the raw `AU12_c` is 1 where p ≥ 0.5, so the rule is the same);
- `AU12_r_mean_bc` = r_mean − b clipped to 0–5, `AU12_r_bc` its rounding;
- `AU12_i_mean_bc` = i_mean − b clipped to 0–1, `AU12_i_bc` to two decimals.

A person with fewer faces gets empty corrected values (a baseline from a handful of frames would be one of them).
"""

from __future__ import annotations

from pathlib import PurePath

import numpy as np
import pandas as pd

SUFFIX = "_bc"
DEFAULT_PERCENTILE = 10.0
MIN_FACES = 10
# The shipped model's typical p(present) on a face without the AU: median over AUs of the median p on held-out
# warped faces labelled absent, 0.035 (0.044 as the mean of the AUs' medians; MODEL_CARD "Per-person baseline").
RESTING_P = 0.04
PERSON_COLUMN = "person"


def is_baseline_column(name: str) -> bool:
    return name.endswith(SUFFIX) or name == PERSON_COLUMN


def person_keys(table: pd.DataFrame, by: str | None = None) -> pd.Series:
    """Each face row's person: `by` names a column of the table (e.g. a subject id merged in), else a video's
    `file` + `face_id` and a photo's folder. Rows without a face get NA."""
    if by is not None:
        if by not in table.columns:
            raise ValueError(f"{by}: no such column in the table to group persons by")
        keys = table[by].astype("string")
    else:
        video = table["frame"].notna()
        folders = table["file"].map(lambda f: str(PurePath(str(f)).parent) if isinstance(f, str) else None)
        keys = pd.Series(np.where(video, table["file"].astype(str) + "#" + table["face_id"].astype("string")
                                  .fillna(""), folders), index=table.index, dtype="string")
    return keys.where(table["success"].eq(1).fillna(False), pd.NA)


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1.0 - p))


def shift_log_odds(p: pd.Series, base: pd.Series, resting: float = RESTING_P) -> pd.Series:
    """p lowered in log-odds by how far the person's baseline sits above everyone's resting score (never raised);
    NaN where p or the baseline is."""
    shift = (_logit(base) - _logit(resting)).clip(lower=0.0)
    return (1.0 / (1.0 + np.exp(-(_logit(p) - shift)))).where(p.notna() & base.notna())


def _pairs(columns) -> list[tuple[str, str, str, float, int]]:
    """(score column, corrected score column, corrected answer column, top of the scale, decimals of the answer)
    for every score the table has."""
    out = []
    for name in columns:
        if name.endswith("_p") and name.startswith(("AU", "AD")):
            out.append((name, name + SUFFIX, name[:-2] + "_c" + SUFFIX, 1.0, 0))
        elif name.endswith("_r_mean"):
            out.append((name, name + SUFFIX, name[:-len("_mean")] + SUFFIX, 5.0, 0))
        elif name.endswith("_i_mean"):
            out.append((name, name + SUFFIX, name[:-len("_mean")] + SUFFIX, 1.0, 2))
    return out


def with_person_baseline(table: pd.DataFrame, percentile: float = DEFAULT_PERCENTILE, by: str | None = None,
                         min_faces: int = MIN_FACES) -> tuple[pd.DataFrame, list[str]]:
    """The table with a `person` column and the corrected columns inserted before `error`; and one note per
    person left without a baseline (too few faces). Needs the probability columns (`AU.._p`, `_r_mean`,
    `_i_mean`): the answers alone are too coarse to have a percentile."""
    if not 0 <= percentile < 100:
        raise ValueError(f"--baseline-percentile {percentile:g}: must lie in [0, 100)")
    pairs = _pairs(table.columns)
    if not pairs:
        raise ValueError("a person baseline needs the probability columns (AU.._p, AU.._r_mean, AU.._i_mean)")
    keys = person_keys(table, by)
    counts = keys.value_counts()
    few = counts[counts < min_faces]
    notes = [f"{key}: {n} face{'s' * (n != 1)}, no baseline (needs {min_faces})" for key, n in few.items()]
    usable = keys.where(~keys.isin(few.index), pd.NA)
    added: dict[str, pd.Series] = {PERSON_COLUMN: keys.astype(object).where(keys.notna(), None)}
    for score, corrected, answer, top, decimals in pairs:
        values = pd.to_numeric(table[score], errors="coerce")
        base = values.groupby(usable).transform(lambda v: np.nanpercentile(v, percentile) if v.notna().any()
                                                else np.nan)
        base = base.where(usable.notna())
        if top == 1.0 and score.endswith("_p"):
            value = shift_log_odds(values, base)
            added[corrected] = value.round(4)
            added[answer] = (value >= 0.5).astype("Int64").where(value.notna(), pd.NA)
        else:
            value = (values - base).clip(0.0, top)
            added[corrected] = value.round(4)
            added[answer] = (value.round().astype("Int64") if decimals == 0 else value.round(decimals))
    at = list(table.columns).index("error") if "error" in table.columns else len(table.columns)
    out = pd.concat([table.iloc[:, :at], pd.DataFrame(added, index=table.index), table.iloc[:, at:]], axis=1)
    return out, notes


def baseline_columns(columns) -> dict[str, str]:
    """The columns `with_person_baseline` adds to a table with `columns`, name → dtype, in their order."""
    out = {PERSON_COLUMN: "object"}
    for _, corrected, answer, _, decimals in _pairs(columns):
        out[corrected] = "float64"
        out[answer] = "Int64" if decimals == 0 else "float64"
    return out
