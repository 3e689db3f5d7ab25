"""The `predict` table's columns: one layout for photos and videos, their types, and reading a table back.

One layout for everything, so tables of photos, of videos and of both line up (and shards of several processes
concatenate): `file, frame, timestamp, face, face_id, success, confidence, x0, y0, x1, y1, pose_pitch, pose_yaw,
pose_roll, gaze_angle_x, gaze_angle_y`, the AU answers and their probabilities, the optional blendshapes
(`bs_<name>`) and landmarks (`x_0` … `z_477`), then `error`. A photo's row has an empty `frame` and `timestamp`
(it is not a frame; `aullava plot` tells photo tables from video tables by them) and `face_id` = `face`. `success` is 1 on a face's row and 0 on a row
without a face: a failed file (with `error`), or a video frame where no face was found (no error: that is a normal
moment of a video, as in OpenFace). Column types are fixed (whole numbers stay whole where a value is missing), so
a table written in chunks is byte for byte the table written at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from aullava.aus.answer_format import AnswerFormat
from aullava.aus.catalogue import AUSet
from aullava.faces.geometry_features import BLENDSHAPE_NAMES, NUM_LANDMARKS
from aullava.runtime.files import printable_name

ID_COLUMNS = ("file", "frame", "timestamp", "face", "face_id", "success", "confidence", "x0", "y0", "x1", "y1",
              "pose_pitch", "pose_yaw", "pose_roll", "gaze_angle_x", "gaze_angle_y")
WHOLE = {"frame", "face", "face_id", "success"}  # nullable whole numbers (pandas Int64)
TEXT = {"file", "error", "person"}  # person: `aullava.tables.baseline`


def blendshape_columns() -> list[str]:
    return [f"bs_{name}" for name in BLENDSHAPE_NAMES]


def landmark_columns() -> list[str]:
    return [f"{axis}_{i}" for axis in "xyz" for i in range(NUM_LANDMARKS)]


def table_columns(au_set: AUSet, formats: Sequence[str | AnswerFormat], probabilities: bool = True,
                  blendshapes: bool = False, landmarks: bool = False) -> dict[str, str]:
    """Column name → pandas dtype, in table order."""
    fmts = [AnswerFormat.parse(f) for f in formats]
    columns: dict[str, str] = {}
    for name in ID_COLUMNS:
        columns[name] = "object" if name in TEXT else "Int64" if name in WHOLE else "float64"
    for fmt in fmts:
        kind = "float64" if fmt is AnswerFormat.CONTINUOUS else "Int64"
        columns.update({c: kind for c in au_set.openface_columns(fmt.table_suffix)})
    if probabilities:
        for fmt in fmts:
            columns.update({c: "float64" for c in au_set.openface_columns(fmt.expectation_suffix)})
    if blendshapes:
        columns.update({c: "float64" for c in blendshape_columns()})
    if landmarks:
        columns.update({c: "float64" for c in landmark_columns()})
    columns["error"] = "object"
    return columns


def typed(rows: list[dict] | pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Rows as a table with exactly `columns`, in their order and types (missing text is None, not NaN)."""
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=list(columns))
    table = table.reindex(columns=list(columns))
    out = {}
    for name, kind in columns.items():
        values = table[name]
        if kind == "object":
            text = [None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v)
                    for v in values.astype(object)]
            out[name] = pd.Series(text, dtype=object)
        elif kind == "Int64":
            out[name] = pd.to_numeric(values, errors="coerce").round().astype("Int64")
        else:
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=range(len(table)))


def _face_row(file: str, frame, timestamp, face, fmts, columns, expected, blendshapes: bool,
              landmarks: bool) -> dict:
    face_id = face.face if getattr(face, "face_id", None) is None else face.face_id
    pose = getattr(face, "pose", None) or (np.nan,) * 3
    gaze = getattr(face, "gaze", None) or (np.nan,) * 2
    box = [round(float(v), 2) for v in face.box]  # pixels, to a hundredth: what the detector can say
    row = {"file": printable_name(file), "frame": frame, "timestamp": timestamp, "face": face.face,
           "face_id": face_id, "success": 1, "confidence": round(float(getattr(face, "confidence", np.nan)), 4),
           "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "pose_pitch": round(float(pose[0]), 2),
           "pose_yaw": round(float(pose[1]), 2), "pose_roll": round(float(pose[2]), 2),
           "gaze_angle_x": round(float(gaze[0]), 4), "gaze_angle_y": round(float(gaze[1]), 4)}
    for fmt in fmts:  # answers on their format's grid (two decimals for 0-1), expectations to 4 decimals
        row.update(zip(columns[fmt], np.round(np.asarray(face.values[fmt.value], dtype=np.float64), 2).tolist()))
        if fmt in expected and fmt.value in face.expected:
            row.update(zip(expected[fmt], np.round(face.expected[fmt.value].astype(np.float64), 4).tolist()))
    if blendshapes and getattr(face, "blendshapes", None):
        row.update({f"bs_{k}": v for k, v in face.blendshapes.items()})
    if landmarks and getattr(face, "landmarks", None) is not None:
        points = np.asarray(face.landmarks, dtype=np.float64)
        for a, axis in enumerate("xyz"):
            row.update(zip((f"{axis}_{i}" for i in range(len(points))), np.round(points[:, a], 2).tolist()))
    row["error"] = None
    return row


def to_dataframe(results, au_set: AUSet, formats: Sequence[str | AnswerFormat], probabilities: bool | None = None,
                 blendshapes: bool = False, landmarks: bool = False) -> pd.DataFrame:
    """One row per face (and one per failed file or faceless video frame). Per AU and format, the answer (`AU01_c`
    0/1, `AU01_r` 0–5, `AU01_i` 0–1) and, with `probabilities`, the model's expectation over that value (`AU01_p`
    p(present), `AU01_r_mean`, `AU01_i_mean`). `probabilities=None` includes them when the results carry them (the
    parallel decoder's). `results` are `aullava.inference.ImageResult`s (one per photo or analysed frame)."""
    fmts = [AnswerFormat.parse(f) for f in formats]
    if probabilities is None:
        probabilities = any(fmt.value in face.expected for r in results for face in r.faces for fmt in fmts)
    columns = {fmt: au_set.openface_columns(fmt.table_suffix) for fmt in fmts}
    expected = {fmt: au_set.openface_columns(fmt.expectation_suffix) for fmt in fmts} if probabilities else {}
    rows = []
    for result in results:
        frame, timestamp = getattr(result, "frame", None), getattr(result, "timestamp", None)
        if result.error is not None or not result.faces:
            rows.append({"file": printable_name(result.file), "frame": frame, "timestamp": timestamp, "face": -1,
                         "success": 0, "error": None if result.error is None else printable_name(result.error)})
            continue
        for face in result.faces:
            rows.append(_face_row(result.file, frame, timestamp, face, fmts, columns, expected, blendshapes,
                                  landmarks))
    return typed(rows, table_columns(au_set, fmts, probabilities, blendshapes, landmarks))


def read_table(path, fmt: str, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """A table this module wrote, with its types back (pandas reads CSV floats back exactly as written); without
    `columns`, the types follow the column names."""
    path = Path(path) if isinstance(path, (str, os.PathLike)) else path  # or an open text buffer
    if fmt == "csv":
        table = pd.read_csv(path, dtype={"file": str, "error": str})
    elif fmt == "json":
        table = pd.read_json(path, orient="records", dtype=False)
    else:
        table = pd.read_parquet(path)
    return typed(table, columns if columns is not None else kinds_of(table.columns))


def kinds_of(names) -> dict[str, str]:
    """Column name → dtype by this module's naming rules (for a table read back without its options)."""
    import re

    def kind(name: str) -> str:
        if name in TEXT:
            return "object"
        if name in WHOLE or re.fullmatch(r"(?:AU|AD)\w*_[cr](?:_bc)?", name):
            return "Int64"
        return "float64"

    return {str(name): kind(str(name)) for name in names}
