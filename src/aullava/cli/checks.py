"""Checks of command-line options and paths, run before any model is loaded, so that a typo costs a second and
not a whole inference run. Every failure is a `UsageError`: one `error: …` line and exit code 2."""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

# 0 all done; 1 some inputs failed (each named, the others done); 2 a mistake that stops the command
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
TABLE_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}


class UsageError(Exception):
    """A mistake on the command line (an option value or a path); the message names the option."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`error: …`) instead of the usage block plus a message."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_USAGE)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def closest(name: str, valid) -> str:
    """' (did you mean 'x'?)' for the nearest valid name, or ''."""
    match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_device(name: str | None) -> str | None:
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"--device {name}: {why}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise UsageError(f"--device {name}: {device.type} devices are not supported; use cpu, cuda or mps")
    return name


def _check_writable_place(path: Path, option: str) -> None:
    """The nearest existing folder above `path` must be a writable folder (not a file)."""
    ancestor = next((p for p in path.parents if p.exists()), Path("."))
    if not ancestor.is_dir():
        raise UsageError(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {ancestor} (permission denied or read-only)")


def check_output_table(out: str | None, option: str = "--out") -> str | None:
    """An output table path → its format (from the extension); None when no `out`."""
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"{option} {out}: is a folder; give a file name such as {path / 'aus.csv'}")
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{option} {out}: unknown table format {path.suffix or '(no extension)'!r}; "
                         f"use a name ending in {', '.join(TABLE_FORMATS)}")
    if fmt == "parquet" and not any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
        raise UsageError(f"{option} {out}: writing Parquet needs pyarrow (pip install pyarrow)")
    if path.exists() and not path.is_file():
        raise UsageError(f"{option} {out}: exists and is not a regular file")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {out}: not writable (permission denied)")
    _check_writable_place(path, option)
    return fmt


def check_output_folder(out: str, option: str = "--out") -> None:
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option} {out}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {out}: not writable (permission denied or read-only)")
        return
    _check_writable_place(path, option)


def check_input_file(path: str | None, option: str) -> None:
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{option} {path}: not found")
    if not p.is_file():
        raise UsageError(f"{option} {path}: not a regular file")


def check_model_dir(path: str | None, option: str = "--model") -> None:
    """A checkpoint folder with a readable config.json object (its tensors are checked when loaded)."""
    if path is None:
        return
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{option} {path}: {'not found' if not p.exists() else 'not a folder'}")
    config = p / "config.json"
    if not config.is_file():
        raise UsageError(f"{option} {path}: not an aullava checkpoint (no config.json)")
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{option} {path}: config.json is not readable JSON ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{option} {path}: config.json must be a JSON object of model settings, "
                         f"found {type(data).__name__}")


def write_table(table, path: str, fmt: str) -> None:
    if fmt == "json":
        Path(path).write_text(table.to_json(orient="records", indent=2))
    elif fmt == "parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
