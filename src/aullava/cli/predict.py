"""`aullava predict` and `aullava merge-shards`: photos and videos → faces → AU answers → printed vectors and a table,
in one process or split over several (torchrun / accelerate launch, see `aullava.inference.shards`). In one process the
table is written as it is produced (`aullava.tables.TableWriter`), so `--resume` can finish a killed run."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from aullava.cli.checks import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    UsageError,
    answer_options,
    check_device,
    check_model_dir,
    check_output_folder,
    check_output_table,
    positive_int,
    positive_number,
    seconds,
    write_table,
)
from aullava.cli.run_record import run_identity, run_record_path, write_run_record


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    """Adds `predict` and `merge-shards` to the `aullava` sub-command parsers."""
    predict = commands.add_parser("predict", parents=[common, answer_options()],
        help="AU vectors for faces in images and videos", description=(
        "Detects every face in the given images and videos (files or folders), and gives the AU vector of each "
        "face in each format: one row per face per photo, and per face per analysed frame of a video (with its "
        "frame number, timestamp and a face_id that follows the person). Exit code 1 if any input failed (the "
        "others still get results)."))
    predict.add_argument("inputs", nargs="+", help="image or video files, or folders holding them")
    predict.add_argument("--model", help="checkpoint directory (default: the shipped default model)")
    predict.add_argument("--formats", nargs="+", choices=["binary", "discrete", "continuous"],
                         help="answer formats (default: all three)")
    predict.add_argument("--out", help="write the table; format from the extension: .csv, .json or .parquet; a "
                         "folder (an existing one, or a name ending in /) gets predictions.csv, and under several "
                         "processes one shard per process, joined by rank 0")
    predict.add_argument("--batch-size", type=positive_int, default=8, help="faces×formats per LLM batch")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    predict.add_argument("--readout", default="exact", choices=["exact", "one-pass"],
                         help="exact: the LLM's greedy answer and each value's probability given the greedy values "
                              "before it (default); one-pass: one pass, each value given 'all earlier AUs absent' "
                              "(binary) or the previous format's answer — faster, not the greedy text")
    video = predict.add_argument_group("videos")
    video.add_argument("--every", type=positive_int, default=1, metavar="N",
                       help="analyse every N-th frame (counted from the first analysed one; default 1: all)")
    video.add_argument("--fps", type=positive_number, metavar="F",
                       help="analyse about F frames per second instead (by the frames' timestamps)")
    video.add_argument("--start", type=seconds, default=0.0, metavar="S", help="begin at S seconds (default 0)")
    video.add_argument("--end", type=seconds, metavar="S", help="stop before S seconds (default: the end)")
    video.add_argument("--chunk", type=positive_int, default=64, metavar="N",
                       help="pictures (photos or frames) per written chunk of the table (default 64): what a killed "
                            "run can lose at most")
    video.add_argument("--resume", action="store_true", help="continue a killed run: keep the rows --out already "
                       "holds, skip those frames and files, append the rest (same inputs and options)")
    extra = predict.add_argument_group("extra columns and pictures")
    extra.add_argument("--blendshapes", action="store_true", help="add MediaPipe's 52 blendshape scores (bs_*)")
    extra.add_argument("--landmarks", action="store_true",
                       help="add the 478 face-mesh landmarks (x_0…x_477, y_…, z_… in pixels)")
    extra.add_argument("--baseline", choices=["person"], help="person: add each person's neutral-corrected "
                       "columns (AU.._p_bc, AU.._c_bc, ...) beside the raw ones; a person is a face_id of a video, "
                       "or the photos of one folder (see README, Per-person baseline)")
    extra.add_argument("--baseline-percentile", type=float, default=10.0, metavar="P",
                       help="the percentile of a person's scores taken as their neutral (default 10)")
    extra.add_argument("--overlay", metavar="DIR", help="draw face boxes, ids and AU bars: a PNG per photo and an "
                       "MP4 per video in DIR")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar; no table when --out is given")
    predict.set_defaults(func=predict_command)

    merge = commands.add_parser("merge-shards", parents=[common],
        help="join the per-process shards of a multi-process predict", description=(
        "Joins part-RRRRR-of-WWWWW.csv files (what `predict --out FOLDER/` writes under several processes) in rank "
        "order, which is the input order. Needed only when the processes did not share a file system."))
    merge.add_argument("folder", help="folder holding every shard of one run")
    merge.add_argument("--out", help="table to write (default: FOLDER/predictions.csv)")
    merge.set_defaults(func=merge_shards_command)


def _check_options(args: argparse.Namespace, distributed: bool):
    """The video options and what goes with --resume / --overlay; returns the FrameSelection."""
    from aullava.faces.video_frames import FrameSelection

    if args.fps is not None and args.every != 1:
        raise UsageError("--every and --fps: give one of them (every N-th frame, or F frames per second)")
    if args.end is not None and args.end <= args.start:
        raise UsageError(f"--end {args.end:g}: must be later than --start ({args.start:g} s)")
    if args.resume and not args.out:
        raise UsageError("--resume: continues the table named by --out; give --out")
    if distributed and (args.resume or args.overlay):
        raise UsageError(f"{'--resume' if args.resume else '--overlay'}: works in one process, not under "
                         "torchrun / accelerate launch")
    if distributed and args.baseline and args.out and (Path(args.out).is_dir() or args.out.endswith(("/", os.sep))):
        raise UsageError("--baseline with a folder --out under several processes: the shards are joined later; "
                         "give a table name as --out instead")
    if args.resume and args.overlay:
        raise UsageError("--overlay with --resume: an overlay video cannot be continued; draw overlays in a "
                         "separate run")
    if args.overlay:
        check_output_folder(args.overlay, "--overlay")
    if args.baseline and not args.out:
        raise UsageError("--baseline: adds corrected columns to the table; give --out")
    if not 0 <= args.baseline_percentile < 100:
        raise UsageError(f"--baseline-percentile {args.baseline_percentile:g}: must lie in [0, 100)")
    return FrameSelection(every=args.every, fps=args.fps, start=args.start, end=args.end)


def predict_command(args: argparse.Namespace) -> int:
    """Under `torchrun` / `accelerate launch` every process takes one contiguous block of the inputs (see
    `aullava.inference.shards`); rank 0 reports, writes the table and returns the exit code. `--out` naming a folder
    (an existing one, or a name ending in /) gets predictions.csv, or one shard per process."""
    from aullava.inference.shards import MERGED_NAME, ProcessGroup, process_info, shard_bounds

    info = process_info()
    folder_out = bool(args.out) and (Path(args.out).is_dir() or args.out.endswith(("/", os.sep)))
    if folder_out:
        check_output_folder(args.out)
        out_format = "csv"
    else:
        out_format = check_output_table(args.out)
    check_model_dir(args.model)
    check_device(args.device)
    selection = _check_options(args, info.distributed)
    from aullava.aus.answer_format import ALL_FORMATS
    from aullava.faces.images import iter_image_paths

    formats = args.formats or [f.value for f in ALL_FORMATS]
    sources, empty = [], []
    for item in args.inputs:  # folders expanded now: an empty one is told before the model loads
        found = iter_image_paths([item], videos=True)
        (sources.extend(found) if found else empty.append(item))
    if info.is_main:
        for folder in empty:
            print(f"error: {folder}: no image or video files in this folder (looked for .jpg, .png, .mp4, .mov, "
                  "... files)", file=sys.stderr)
    if not sources:
        if info.is_main:
            print("error: nothing to do: no image or video files given", file=sys.stderr)
        return EXIT_SOME_FAILED
    out = Path(args.out) if args.out else None
    if folder_out and not info.distributed:
        out = out / MERGED_NAME
    done = _resumed(args, out, out_format, formats) if args.resume else None
    device = args.device
    if device is None and info.distributed:
        import torch

        device = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"  # one GPU per process
    with ProcessGroup(info) as group:
        predictor = _load_predictor(args, device, info)
        if not info.distributed:
            return _predict_streamed(args, predictor, sources, formats, selection, out, out_format, done, empty)
        start, stop = shard_bounds(len(sources), info)
        results = predictor.predict(sources[start:stop], formats, progress=not args.quiet and info.is_main,
                                    selection=selection)
        for result in results:
            if result.error:
                print(f"error: {result.error}", file=sys.stderr)
        counts = group.gather((sum(1 for r in results if r.error), len(results)))
        if folder_out:
            _write_shard(results, predictor.model.au_set, formats, out, info, group, args)
            results = None  # the shards hold them; nothing to print
        else:
            gathered = group.gather(results)
            if info.is_main:
                results = [r for part in gathered for r in part]
                if out is not None:
                    _write_table(results, predictor.model.au_set, formats, out, out_format, args)
    if not info.is_main:
        return EXIT_OK
    if (not args.quiet or not args.out) and results is not None and any(r.faces for r in results):
        print(_readable(results, predictor.model.au_set, formats))
    failed, total = (sum(c[i] for c in counts) for i in (0, 1))
    if failed:
        print(f"{failed} of {total} inputs failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed or empty or not total else EXIT_OK


def _load_predictor(args, device, info):
    from aullava.inference import Predictor

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = Predictor(args.model, batch_size=args.batch_size, device=device, intensity=args.intensity,
                              precision=args.precision, readout=args.readout)
    if info.is_main:
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        status = "trained" if predictor.trained else "UNTRAINED (values are meaningless)"
        ranks = f", {info.world_size} processes" if info.distributed else ""
        print(f"# model: {args.model or 'default'} [{status}], AU set: {predictor.model.au_set.name} "
              f"({len(predictor.model.au_set)} AUs){ranks}", file=sys.stderr)
    return predictor


def _columns(args, au_set, formats):
    from aullava.tables import table_columns

    return table_columns(au_set, formats, probabilities=True, blendshapes=args.blendshapes,
                         landmarks=args.landmarks)


def _table(results, au_set, formats, args):
    """The predict table of `results` with the columns `_columns` names (predict reads out in parallel, so the
    probabilities are there)."""
    from aullava.inference import to_dataframe

    return to_dataframe(results, au_set, formats, probabilities=True, blendshapes=args.blendshapes,
                        landmarks=args.landmarks)


def _resumed(args, out: Path, out_format: str, formats) -> dict:
    """What the table already holds (see `aullava.tables.resume_rows`); checked before the model loads. The AU
    set comes from the model's config.json without loading the model."""
    import json

    from aullava.inference import default_model_dir
    from aullava.model.config import AuLlavaConfig
    from aullava.tables import resume_rows, written_pictures

    model_dir = Path(args.model) if args.model else default_model_dir()
    config = AuLlavaConfig.from_dict(json.loads((model_dir / "config.json").read_text())) if model_dir else None
    au_set = (config or AuLlavaConfig()).resolved_au_set()
    try:
        table = resume_rows(out, out_format, _columns(args, au_set, formats))
    except (ValueError, OSError) as err:
        raise UsageError(f"--resume: {err}") from None
    record = run_record_path(out)
    if record.is_file():
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"--resume: {record}: not readable ({err}); remove it to resume unchecked") from None
        now = run_identity(args, formats, model_dir, config)
        differ = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if differ:
            said = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now" for k in differ)
            raise UsageError(f"--resume: {out} was written by another run ({said}); resume with the same "
                             "options, or write a new table")
    else:
        print(f"note: {out} has no run record ({record.name}): resuming without checking that the options match",
              file=sys.stderr)
    done = written_pictures(table)
    frames = sum(len(v) for v in done.values())
    print(f"resuming {out}: {len(table)} rows ({frames} pictures of {len(done)} files) kept", file=sys.stderr)
    return done


def _predict_streamed(args, predictor, sources, formats, selection, out, out_format, done, empty) -> int:
    """One process: each chunk of results is written (table, overlays) as soon as it is read out."""
    from tqdm.auto import tqdm

    from aullava.tables import TableWriter

    au_set = predictor.model.au_set
    columns = _columns(args, au_set, formats)
    writer = TableWriter(out, out_format, columns, resume=bool(args.resume)) if out is not None else None
    if out is not None:
        write_run_record(args, formats, out, predictor.model)
    overlay = None
    if args.overlay:
        from aullava.pictures.overlay import OverlayWriter

        overlay = OverlayWriter(args.overlay)
    failed, photos, videos = 0, [], {}
    try:
        for part in predictor.iter_predict(sources, formats, selection=selection, progress=not args.quiet,
                                           chunk=args.chunk, done=done, keep_images=overlay is not None):
            if writer is not None:
                writer.write(_table(part, au_set, formats, args))
            if overlay is not None:
                overlay.add(part)
            for result in part:
                result.image = None
                if result.error:
                    failed += 1
                    tqdm.write(f"error: {result.error}", file=sys.stderr)  # above the progress bar, not through it
                elif result.frame is None:
                    photos.append(result)
                else:
                    stats = videos.setdefault(result.file, [0, 0, set()])
                    stats[0] += 1
                    stats[1] += bool(result.faces)
                    stats[2].update(f.face_id for f in result.faces)
    finally:
        if overlay is not None:
            overlay.close()
    if writer is not None:
        writer.close()
        if args.baseline:
            _add_baseline(args, out, out_format)
        print(f"wrote {writer.rows} rows to {out}", file=sys.stderr)
    if overlay is not None:
        print(f"wrote {len(overlay.written)} overlay file(s) to {args.overlay}", file=sys.stderr)
    if (not args.quiet or not args.out) and any(r.faces for r in photos):
        print(_readable(photos, au_set, formats))
    for file, (frames, with_face, ids) in videos.items():
        print(f"{file}: {frames} frames analysed, {with_face} with a face, face ids: "
              f"{', '.join(map(str, sorted(ids))) or 'none'}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(sources)} inputs failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed or empty else EXIT_OK


def _add_baseline(args, out: Path, out_format: str) -> None:
    """`--baseline person`: the finished table gets the person-corrected columns (`aullava.tables.baseline`)."""
    from aullava.tables import read_table, rewrite

    rewrite(out, out_format, _with_baseline(read_table(out, out_format), args))


def _with_baseline(table, args):
    """The table with `--baseline person`'s corrected columns; a note per person left without a baseline."""
    from aullava.tables.baseline import with_person_baseline

    table, notes = with_person_baseline(table, percentile=args.baseline_percentile)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return table


def _write_table(results, au_set, formats, out: Path, out_format: str, args) -> None:
    table = _table(results, au_set, formats, args)
    if args.baseline:
        table = _with_baseline(table, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, str(out), out_format)
    print(f"wrote {len(table)} rows to {out}", file=sys.stderr)


def _write_shard(results, au_set, formats, out: Path, info, group, args) -> None:
    """`--out DIR/` under several processes: each writes DIR/part-RRRRR-of-WWWWW.csv, and rank 0 joins them into
    DIR/predictions.csv when it can see them all (a shared file system), else says how."""
    from aullava.inference.shards import MERGED_NAME, merge_shards, shard_name

    out.mkdir(parents=True, exist_ok=True)
    _table(results, au_set, formats, args).to_csv(out / shard_name(info), index=False)
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
    from aullava.inference.shards import MERGED_NAME, merge_shards

    out = Path(args.out) if args.out else Path(args.folder) / MERGED_NAME
    out_format = check_output_table(str(out))
    table = merge_shards(args.folder)
    write_table(table, str(out), out_format)
    print(f"wrote {len(table)} rows to {out}", file=sys.stderr)
    return EXIT_OK


def _readable(results, au_set, formats) -> str:
    """One block per face: the AU vector in each requested format, from the results themselves."""
    from aullava.aus.answer_format import AnswerFormat

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
