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


def number_option(kind: type, expected: str, ok, rule: str):
    """An argparse `type=`: the text parsed as `kind` (int or float), finite and `ok`, else one line saying what
    was expected (`expected` when it does not parse, `rule` when it is out of range)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    convert.__name__ = expected  # argparse names the type in some messages
    return convert


positive_int = number_option(int, "a whole number >= 1", lambda v: v >= 1, ">= 1")
seconds = number_option(float, "a number of seconds", lambda v: v >= 0, "a number of seconds >= 0")
positive_number = number_option(float, "a number > 0", lambda v: v > 0, "> 0")
port = number_option(int, "a port number 1-65535", lambda v: 1 <= v <= 65535, "a port number 1-65535")
megabytes = number_option(float, "a size in MB such as 20", lambda v: v > 0, "> 0")


def answer_options() -> argparse.ArgumentParser:
    """The options of how answers are read out, shared by `predict` and `eval` (a parent parser)."""
    from aullava.model.precision import DEFAULT_PRECISION, PRECISION_CHOICES

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--intensity", default="mean", choices=["mean", "greedy"],
                        help="AU01_r and AU01_i: the expected intensity on the format's grid (mean, the default) or "
                             "the digits the LLM wrote greedily")
    parent.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISION_CHOICES,
                        help="the LLM's arithmetic: fp32 (default), bf16 (autocast) or auto (bf16 where the CPU or "
                             "GPU computes it natively, else fp32)")
    return parent


def dataset_readout_options() -> argparse.ArgumentParser:
    """How a labelled dataset is read out by the model, shared by `eval` and `calibrate` (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--crop-cache", help="face-crop cache folder (default: $AULLAVA_HOME/crops)")
    parent.add_argument("--workers", type=positive_int, default=1, help="processes for face cropping")
    parent.add_argument("--batch-size", type=positive_int, default=8, help="faces per LLM batch")
    parent.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parent


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
