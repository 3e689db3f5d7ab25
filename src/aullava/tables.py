"""The `predict` table: its columns (one layout for photos and videos), and writing it while it is produced.

One layout for everything, so tables of photos, of videos and of both line up (and shards of several processes
concatenate): `file, frame, timestamp, face, face_id, success, confidence, x0, y0, x1, y1, pose_pitch, pose_yaw,
pose_roll`, the AU answers and their probabilities, the optional blendshapes (`bs_<name>`) and landmarks (`x_0` …
`z_477`), then `error`. A photo's row has an empty `frame` and `timestamp` (it is not a frame; `aullava plot` tells
photo tables from video tables by them) and `face_id` = `face`. `success` is 1 on a face's row and 0 on a row
without a face: a failed file (with `error`), or a video frame where no face was found (no error: that is a normal
moment of a video, as in OpenFace). Column types are fixed (whole numbers stay whole where a value is missing), so
a table written in chunks is byte for byte the table written at once.

Streaming (`TableWriter`): a CSV grows by appending each chunk of rows; JSON and Parquet cannot be appended to, so
their rows go to `<out>.partial.csv` while the run lasts and are converted when it ends (Parquet through pyarrow's
`ParquetWriter`, one row group per chunk, never the whole table in memory). A killed run therefore leaves every
finished chunk on disk (in the CSV, or in the `.partial.csv` next to a JSON/Parquet name), and `resume_rows` reads
them back so `predict --resume` can skip what is done.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from aullava.answer_format import AnswerFormat
from aullava.au_catalogue import AUSet
from aullava.face_geometry import BLENDSHAPE_NAMES, NUM_LANDMARKS
from aullava.files import printable_name

ID_COLUMNS = ("file", "frame", "timestamp", "face", "face_id", "success", "confidence", "x0", "y0", "x1", "y1",
              "pose_pitch", "pose_yaw", "pose_roll")
WHOLE = {"frame", "face", "face_id", "success"}  # nullable whole numbers (pandas Int64)
TEXT = {"file", "error"}
PARTIAL_SUFFIX = ".partial.csv"
CHUNK_ROWS = 4096  # rows per Parquet row group when a journal is converted


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
    box = [round(float(v), 2) for v in face.box]  # pixels, to a hundredth: what the detector can say
    row = {"file": printable_name(file), "frame": frame, "timestamp": timestamp, "face": face.face,
           "face_id": face_id, "success": 1, "confidence": round(float(getattr(face, "confidence", np.nan)), 4),
           "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "pose_pitch": round(float(pose[0]), 2),
           "pose_yaw": round(float(pose[1]), 2), "pose_roll": round(float(pose[2]), 2)}
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
        if name in WHOLE or re.fullmatch(r"(?:AU|AD)\w*_[cr]", name):
            return "Int64"
        return "float64"

    return {str(name): kind(str(name)) for name in names}


class TableWriter:
    """Writes a predict table chunk by chunk (see the module docstring); `close()` finishes it. With `resume`, the
    rows already on disk stay and new chunks are appended."""

    def __init__(self, path: str | Path, fmt: str, columns: dict[str, str], resume: bool = False):
        self.path, self.fmt, self.columns = Path(path), fmt, columns
        self.journal = self.path if fmt == "csv" else self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume or not self.journal.exists():
            self.journal.write_text(typed([], columns).to_csv(index=False))
        else:
            self.rows = len(read_table(self.journal, "csv"))

    def write(self, table: pd.DataFrame) -> None:
        """Appends rows in one write and flushes them to disk, so a kill loses at most the chunk being written."""
        if table.empty:
            return
        text = typed(table, self.columns).to_csv(index=False, header=False)
        with open(self.journal, "a", encoding="utf-8", newline="") as handle:
            size = handle.tell()
            try:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as err:  # a full disk, say: no row is left cut in half, and the message names the file
                with contextlib.suppress(OSError):
                    handle.truncate(size)
                raise OSError(err.errno, f"{err.strerror or err}; the table keeps the {self.rows} rows written "
                                         "before", str(self.journal)) from None
        self.rows += len(table)

    def close(self) -> None:
        if self.fmt == "csv":
            return
        if self.fmt == "json":
            table = read_table(self.journal, "csv", self.columns)
            _replace(self.path, lambda tmp: tmp.write_text(table.to_json(orient="records", indent=2,
                                                                         double_precision=15)))
        else:
            _replace(self.path, self._write_parquet)
        self.journal.unlink()

    def _write_parquet(self, target: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(name, pa.string() if kind == "object" else pa.int64() if kind == "Int64"
                             else pa.float64()) for name, kind in self.columns.items()])
        with pq.ParquetWriter(target, schema) as writer:
            for part in pd.read_csv(self.journal, dtype={"file": str, "error": str},
                                    chunksize=CHUNK_ROWS):
                writer.write_table(pa.Table.from_pandas(typed(part, self.columns), schema=schema,
                                                        preserve_index=False))


def _replace(path: Path, write) -> None:
    """Writes through a temporary file and renames it into place: the finished table appears whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def resume_rows(path: str | Path, fmt: str, columns: dict[str, str]) -> pd.DataFrame:
    """The rows an earlier run of the same command left (its `.partial.csv` for JSON/Parquet when it was killed,
    else the finished table), less the last frame's or file's rows, which a kill may have cut short; the journal is
    rewritten to hold exactly these rows, so the resumed run appends to it. An empty table when nothing was left."""
    path = Path(path)
    journal = path if fmt == "csv" else path.with_name(path.name + PARTIAL_SUFFIX)
    if journal.exists():
        text = journal.read_text(encoding="utf-8")
        text = text[:text.rfind("\n") + 1]  # a line the kill cut in half is dropped
        try:
            table = read_table(io.StringIO(text), "csv") if text.strip() else pd.DataFrame()
        except (ValueError, pd.errors.ParserError) as err:
            raise ValueError(f"{journal}: cannot resume from this table ({' '.join(str(err).split())})") from None
    elif path.exists():
        table = read_table(path, fmt)
    else:
        return typed([], columns)
    missing = [c for c in columns if c not in table.columns]
    if missing or len(table.columns) != len(columns):
        raise ValueError(f"{journal if journal.exists() else path}: written with other options (columns differ, "
                         f"e.g. {(missing or list(table.columns))[0]!r}); resume with the same --formats, "
                         "--blendshapes and --landmarks, or start a new table")
    table = typed(table, columns)
    if len(table):
        last = table.iloc[-1]
        same = (table["file"] == last["file"]) & (table["frame"].isna() if pd.isna(last["frame"])
                                                  else table["frame"].eq(last["frame"]).fillna(False))
        keep = len(table)
        while keep and same.iloc[keep - 1]:
            keep -= 1
        table = table.iloc[:keep].reset_index(drop=True)
    _replace(journal, lambda tmp: tmp.write_text(table.to_csv(index=False)))
    return table


def written_pictures(table: pd.DataFrame) -> dict[str, list[tuple[int | None, list[tuple]]]]:
    """file → [(frame, face boxes)] in table order, from a resumed table: what `Predictor.iter_predict(done=…)`
    skips (a frame of None: the whole file is done) and replays into the face tracker."""
    done: dict[str, list[tuple[int | None, list[tuple]]]] = {}
    last = None
    for row in table[["file", "frame", "face", "x0", "y0", "x1", "y1"]].itertuples(index=False):
        frame = None if pd.isna(row.frame) else int(row.frame)
        entries = done.setdefault(str(row.file), [])
        if (row.file, frame) != last:
            entries.append((frame, []))
            last = (row.file, frame)
        if not pd.isna(row.face) and row.face >= 0:
            entries[-1][1].append((row.x0, row.y0, row.x1, row.y1))
    return done
