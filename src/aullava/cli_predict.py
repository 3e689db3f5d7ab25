"""`aullava predict` and `aullava merge-shards`: images → faces → AU answers → printed vectors and a table, in
one process or split over several (torchrun / accelerate launch, see `aullava.distributed`)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from aullava.cli_checks import (EXIT_OK, EXIT_SOME_FAILED, check_device, check_model_dir, check_output_folder,
                                check_output_table, positive_int, write_table)


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    """Adds `predict` and `merge-shards` to the `aullava` sub-command parsers."""
    predict = commands.add_parser("predict", parents=[common],
        help="AU vectors for faces in images", description=(
        "Detects every face in the given images (files or folders), and prints the AU vector of each face in each "
        "format. Exit code 1 if any input failed (the others still get results)."))
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--model", help="checkpoint directory (default: the shipped default model)")
    predict.add_argument("--formats", nargs="+", choices=["binary", "discrete", "continuous"],
                         help="answer formats (default: all three)")
    predict.add_argument("--out", help="write the table; format from the extension: .csv, .json or .parquet; a "
                         "folder (an existing one, or a name ending in /) gets predictions.csv, and under several "
                         "processes one shard per process, joined by rank 0")
    predict.add_argument("--batch-size", type=positive_int, default=8, help="faces×formats per LLM batch")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar; no table when --out is given")
    predict.set_defaults(func=predict_command)

    merge = commands.add_parser("merge-shards", parents=[common],
        help="join the per-process shards of a multi-process predict", description=(
        "Joins part-RRRRR-of-WWWWW.csv files (what `predict --out FOLDER/` writes under several processes) in rank "
        "order, which is the input order. Needed only when the processes did not share a file system."))
    merge.add_argument("folder", help="folder holding every shard of one run")
    merge.add_argument("--out", help="table to write (default: FOLDER/predictions.csv)")
    merge.set_defaults(func=merge_shards_command)


def predict_command(args: argparse.Namespace) -> int:
    """Under `torchrun` / `accelerate launch` every process takes one contiguous block of the inputs (see
    `aullava.distributed`); rank 0 reports, writes the table and returns the exit code. `--out` naming a folder
    (an existing one, or a name ending in /) gets predictions.csv, or one shard per process."""
    folder_out = bool(args.out) and (Path(args.out).is_dir() or args.out.endswith(("/", os.sep)))
    if folder_out:
        check_output_folder(args.out)
        out_format = "csv"
    else:
        out_format = check_output_table(args.out)
    check_model_dir(args.model)
    check_device(args.device)
    from aullava.answer_format import ALL_FORMATS
    from aullava.distributed import MERGED_NAME, ProcessGroup, process_info, shard_bounds
    from aullava.faces.images import iter_image_paths
    from aullava.inference import Predictor

    info = process_info()
    formats = args.formats or [f.value for f in ALL_FORMATS]
    sources, empty = [], []
    for item in args.inputs:  # folders expanded now: an empty one is told before the model loads
        found = iter_image_paths([item])
        (sources.extend(found) if found else empty.append(item))
    if info.is_main:
        for folder in empty:
            print(f"error: {folder}: no image files in this folder (looked for .jpg, .png, .webp, ... files)",
                  file=sys.stderr)
    if not sources:
        if info.is_main:
            print("error: nothing to do: no image files given", file=sys.stderr)
        return EXIT_SOME_FAILED
    device = args.device
    if device is None and info.distributed:
        import torch

        device = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"  # one GPU per process
    with ProcessGroup(info) as group:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor = Predictor(args.model, batch_size=args.batch_size, device=device)
        if info.is_main:
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)
            status = "trained" if predictor.trained else "UNTRAINED (values are meaningless)"
            ranks = f", {info.world_size} processes" if info.distributed else ""
            print(f"# model: {args.model or 'default'} [{status}], AU set: {predictor.model.au_set.name} "
                  f"({len(predictor.model.au_set)} AUs){ranks}", file=sys.stderr)
        start, stop = shard_bounds(len(sources), info)
        results = predictor.predict(sources[start:stop], formats, progress=not args.quiet and info.is_main)
        for result in results:
            if result.error:
                print(f"error: {result.error}", file=sys.stderr)
        counts = group.gather((sum(1 for r in results if r.error), len(results)))
        out = Path(args.out) if args.out else None
        if folder_out and not info.distributed:
            out = out / MERGED_NAME
        if folder_out and info.distributed:
            _write_shard(results, predictor.model.au_set, formats, out, info, group)
            results = None  # the shards hold them; nothing to print
        else:
            gathered = group.gather(results)
            if info.is_main:
                results = [r for part in gathered for r in part]
                if out is not None:
                    _write_table(results, predictor.model.au_set, formats, out, out_format)
    if not info.is_main:
        return EXIT_OK
    if (not args.quiet or not args.out) and results is not None and any(r.faces for r in results):
        print(_readable(results, predictor.model.au_set, formats))
    failed, total = (sum(c[i] for c in counts) for i in (0, 1))
    if failed:
        print(f"{failed} of {total} inputs failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed or empty or not total else EXIT_OK


def _write_table(results, au_set, formats, out: Path, out_format: str) -> None:
    from aullava.inference import to_dataframe

    table = to_dataframe(results, au_set, formats, probabilities=True)  # predict reads out in parallel
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, str(out), out_format)
    print(f"wrote {len(table)} rows to {out}", file=sys.stderr)


def _write_shard(results, au_set, formats, out: Path, info, group) -> None:
    """`--out DIR/` under several processes: each writes DIR/part-RRRRR-of-WWWWW.csv, and rank 0 joins them into
    DIR/predictions.csv when it can see them all (a shared file system), else says how."""
    from aullava.distributed import MERGED_NAME, merge_shards, shard_name
    from aullava.inference import to_dataframe

    out.mkdir(parents=True, exist_ok=True)
    to_dataframe(results, au_set, formats, probabilities=True).to_csv(out / shard_name(info), index=False)
    group.barrier()
    if not info.is_main:
        return
    try:
        table = merge_shards(out)
    except (FileNotFoundError, ValueError) as err:
        print(f"note: shards not merged here ({err}); collect every part-*.csv in one folder and run "
              f"`aullava merge-shards FOLDER`", file=sys.stderr)
        return
    table.to_csv(out / MERGED_NAME, index=False)
    print(f"wrote {len(table)} rows to {out / MERGED_NAME} (from {info.world_size} shards)", file=sys.stderr)


def merge_shards_command(args: argparse.Namespace) -> int:
    from aullava.distributed import MERGED_NAME, merge_shards

    out = Path(args.out) if args.out else Path(args.folder) / MERGED_NAME
    out_format = check_output_table(str(out))
    table = merge_shards(args.folder)
    write_table(table, str(out), out_format)
    print(f"wrote {len(table)} rows to {out}", file=sys.stderr)
    return EXIT_OK


def _readable(results, au_set, formats) -> str:
    """One block per face: the AU vector in each requested format, from the results themselves."""
    from aullava.answer_format import AnswerFormat

    lines = []
    for result in results:
        for face in result.faces:
            box = ", ".join(f"{v:.0f}" for v in face.box)
            lines.append(f"{result.file}  face {face.face}  box [{box}]")
            lines.append("  " + "AU".ljust(12) + " ".join(a.rjust(5) for a in au_set.ids))
            for fmt in map(AnswerFormat.parse, formats):
                cells = face.values[fmt.value]
                text = " ".join((f"{v:.2f}" if fmt is AnswerFormat.CONTINUOUS else str(int(v))).rjust(5) for v in cells)
                lines.append("  " + fmt.value.ljust(12) + text)
                if fmt is AnswerFormat.BINARY and fmt.value in face.expected:  # the parallel readout's p(present)
                    probs = " ".join(f"{p:.2f}".rjust(5) for p in face.expected[fmt.value])
                    lines.append("  " + "p(present)".ljust(12) + probs)
    return "\n".join(lines)
