"""Writing the `predict` table while it is produced, and resuming it.

A CSV grows by appending each chunk of rows; JSON and Parquet cannot be appended to, so
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

import pandas as pd

from aullava.tables.baseline import is_baseline_column
from aullava.tables.columns import read_table, typed

PARTIAL_SUFFIX = ".partial.csv"
CHUNK_ROWS = 4096  # rows per Parquet row group when a journal is converted


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


def rewrite(path: str | Path, fmt: str, table: pd.DataFrame) -> None:
    """Replaces a finished table with `table` (e.g. with the baseline columns added), whole or not at all."""
    def write(target: Path) -> None:
        if fmt == "json":
            target.write_text(table.to_json(orient="records", indent=2, double_precision=15))
        elif fmt == "parquet":
            table.to_parquet(target, index=False)
        else:
            table.to_csv(target, index=False)

    _replace(Path(path), write)


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
    table = table[[c for c in table.columns if not is_baseline_column(c)]]  # `--baseline` adds them at the end
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
