"""Writing files so that a killed run leaves a complete file or none (so 'exists' can mean 'done')."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path


def atomic_write(path: Path, data: bytes, temp_dir: Path | None = None) -> None:
    """Write `data` to a temporary file (in `temp_dir`, default the target's folder: same file system), then rename
    it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=temp_dir or path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_csv(path: Path, header: list[str], rows: Iterable[Sequence[object]]) -> None:
    """`atomic_write` of a CSV file: a header line, then the rows."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(Path(path), text.getvalue().encode("utf-8"))


def printable_name(text: str) -> str:
    """A file name as text that always encodes as UTF-8: bytes of a name that are not UTF-8 (which Python keeps as
    lone surrogates) are written as `\\xNN` escapes, so a table never fails on a name and the bytes can be read back
    (`os.fsencode(name)` is the escaped text decoded with 'unicode_escape' on those sequences)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
