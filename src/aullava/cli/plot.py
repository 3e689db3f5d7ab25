"""`aullava plot`: a `predict` table → PNG charts (a video's AU time series, an image's AU bars), no model needed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from aullava.cli.checks import EXIT_OK, TABLE_FORMATS, UsageError, check_input_file, check_output_folder


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    plot = commands.add_parser("plot", parents=[common], help="charts of a predict table (PNG)", description=(
        "Draws the AU values of a table written by `aullava predict --out`: for a video (a table with frame or "
        "timestamp columns) one time series per tracked face, one panel per AU; for images one bar chart per face."))
    plot.add_argument("results", help="the table (.csv, .json or .parquet)")
    plot.add_argument("--out", help="a folder for one PNG per face (default: RESULTS' name + '-plots/'), or one "
                      ".png/.svg/.pdf file when the table holds a single face")
    plot.add_argument("--format", choices=["binary", "discrete", "continuous", "probability"],
                      help="which columns: AU01_c (binary), AU01_r (0-5), AU01_i (0-1) or AU01_p (p(present)); "
                           "default: the first the table has of continuous, discrete, binary, probability")
    plot.set_defaults(func=plot_command)


def plot_command(args: argparse.Namespace) -> int:
    from aullava.pictures.plots import PICTURE_SUFFIXES

    results = Path(args.results)
    check_input_file(args.results, "RESULTS")
    if results.suffix.lower() not in TABLE_FORMATS:
        raise UsageError(f"{results}: not a predict table (expected a name ending in {', '.join(TABLE_FORMATS)})")
    out = Path(args.out) if args.out else results.with_name(results.stem + "-plots")
    if out.is_dir() or str(args.out or "").endswith(("/", os.sep)) or not out.suffix:
        check_output_folder(str(out), "--out")
    elif out.suffix.lower() in PICTURE_SUFFIXES:
        check_output_folder(str(out.parent), "--out")
    else:
        raise UsageError(f"--out {out}: a picture file must end in {', '.join(PICTURE_SUFFIXES)}; "
                         "a folder name needs no extension (or end it with /)")
    from aullava.pictures.plots import plot_results, read_results

    try:
        table = read_results(results)
        paths = plot_results(table, out, args.format)
    except ValueError as err:
        message = str(err)
        raise UsageError(message if message.startswith(str(results)) else f"{results}: {message}") from None
    where = paths[0] if len(paths) == 1 else out
    print(f"wrote {len(paths)} plot{'s' if len(paths) != 1 else ''} to {where}", file=sys.stderr)
    return EXIT_OK
