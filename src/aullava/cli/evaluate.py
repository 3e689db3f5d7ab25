"""`aullava eval` and `aullava calibrate`: a dataset spec read, the model (or another tool's table) scored or its
p(present) calibrated, the report printed."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from aullava.cli.checks import (EXIT_OK, UsageError, answer_options, check_input_file, check_model_dir,
                               check_output_folder, dataset_readout_options, positive_int)


def add_commands(commands, common) -> None:
    evaluate = commands.add_parser("eval", parents=[common, answer_options(), dataset_readout_options()],
        help="per-AU F1/MAE/ICC/PCC of a model or a predictions CSV on a dataset",
                                   description=(
        "Evaluates a model (or another tool's predictions: OpenFace AU01_c/AU01_r, py-feat AU01) on one dataset "
        "spec (YAML: {type: bp4d|disfa|feafa|manifest, ...reader options, fold: N}) and writes metrics.json, "
        "report.md (the paper's layout: AUs as columns, average last) and a bar chart per format."))
    evaluate.add_argument("--data", required=True, help="YAML dataset spec, or a training recipe (its data.eval)")
    evaluate.add_argument("--fold", type=positive_int, help="subject-exclusive fold (1-3); overrides the spec")
    evaluate.add_argument("--split", default="test", choices=["train", "test"], help="side of the fold (test)")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--model", help="checkpoint directory (default: the shipped default model)")
    source.add_argument("--predictions", help="a predictions CSV from aullava, OpenFace or py-feat")
    evaluate.add_argument("--tool", default="auto", choices=["auto", "aullava", "openface", "pyfeat"],
                          help="who wrote --predictions (auto-detected from its columns)")
    evaluate.add_argument("--video", help="the video a per-video predictions CSV (OpenFace) belongs to")
    evaluate.add_argument("--limit", type=positive_int, help="evaluate a seeded random subset of at most N frames")
    evaluate.add_argument("--ask", choices=["model", "labelled", "all"],
                          help="the question: the model's whole AU set (default, as predict asks), only the AUs "
                               "the dataset labels (per format, as `ask: labelled` training), or the dataset's set")
    evaluate.add_argument("--baseline", choices=["mediapipe", "mediapipe-raw"],
                          help="also score the MediaPipe-blendshape mapping on the same images "
                               "(extra rows of the same tables)")
    evaluate.add_argument("--formats", nargs="+", choices=["binary", "discrete", "continuous"])
    evaluate.add_argument("--out", required=True, help="folder for metrics.json, report.md and PNG charts")
    evaluate.set_defaults(func=_eval)
    calibrate = commands.add_parser("calibrate", parents=[common, dataset_readout_options()],
        help="calibrate a model's p(present) on held-out labelled faces (Platt scaling)", description=(
        "Reads the model's binary p(present) on a held-out dataset spec and fits a temperature T and a log-odds "
        "shift b (p = sigmoid(logit / T + b), minimising log-loss), written as probability_temperature.binary and "
        "probability_bias.binary into the config.json of a calibrated copy of the model (--out; or the model itself "
        "with --in-place). It changes the probabilities `predict` and `eval` report, never an answer. It refuses "
        "fewer than 40 faces or 20 present (face, AU) pairs, and a fit that makes held-out faces' log-loss worse "
        "(fitted on half, checked on the other half). Fit on data you do not evaluate on."))
    calibrate.add_argument("--data", required=True, help="YAML dataset spec with binary labels (held-out faces)")
    calibrate.add_argument("--model", required=True, help="checkpoint directory to calibrate")
    calibrate.add_argument("--out", help="the calibrated copy's folder (default: MODEL-calibrated beside it)")
    calibrate.add_argument("--in-place", action="store_true",
                           help="update MODEL/config.json itself (the previous one kept as config.json.bak)")
    calibrate.add_argument("--limit", type=positive_int, help="use a seeded random subset of at most N frames")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the --limit subset")
    calibrate.set_defaults(func=_calibrate)


def _eval(args: argparse.Namespace) -> int:
    check_input_file(args.data, "--data")
    check_input_file(args.predictions, "--predictions")
    check_model_dir(args.model)
    check_output_folder(args.out)
    if args.crop_cache:
        check_output_folder(args.crop_cache, "--crop-cache")
    from aullava.datasets import read_frames
    from aullava.datasets.spec import load_eval_spec
    from aullava.teacher.labeler import BASELINES, baseline_predictions
    from aullava.eval.predictions import as_prediction_table, format_agreement, read_predictions, sample_frames, write_report
    from aullava.eval.metrics import evaluate_tables
    from aullava.eval.run import ask_text, read_model

    spec = load_eval_spec(args.data)
    spec = {**spec, **({"fold": args.fold} if args.fold is not None else {}), "split": args.split}
    if spec.get("fold") is None:
        spec.pop("split")
    ask = args.ask or spec.pop("ask", "model")
    spec.pop("ask", None)
    frames = sample_frames(read_frames(spec, where=str(args.data)), args.limit)
    for problem in frames.problems:
        print(f"note: {problem}", file=sys.stderr)
    _refuse_duplicate_rows(frames.table, args.data)  # before any model runs
    formats = args.formats or ["binary", "discrete", "continuous"]
    if args.predictions:
        predictions = read_predictions(args.predictions, args.tool, video=args.video)
        formats = [f for f in formats if f in predictions.formats]
        table, keys, source = predictions.table, list(predictions.keys), f"{predictions.tool}: {args.predictions}"
        truth = frames.table
        if args.video:  # a per-video CSV (OpenFace) is compared with that video's frames only
            truth = truth[truth["video"].map(lambda v: isinstance(v, str) and Path(v).name == Path(args.video).name)]
    else:
        model = _load_for_readout(args.model)
        readout = read_model(model, frames, formats, ask=ask, **_readout_options(args))
        for note in readout.notes:
            print(f"note: {note}", file=sys.stderr)
        table, truth, keys, formats = readout.predictions, readout.truth, readout.keys, readout.formats
        source = f"aullava: {args.model or 'default model'}, {args.intensity} intensities"
    if not formats:
        raise ValueError("no answer format is both labelled by the dataset and present in the predictions")
    results = evaluate_tables(truth, table, frames.au_set, formats, keys=keys)
    title = f"{frames.name}" + (f" fold {spec['fold']} ({spec['split']})" if spec.get("fold") else "") + f" — {source}"
    baseline = None
    if args.baseline:  # the same images through the MediaPipe-mapping baseline, in the same tables
        if "image" not in truth.columns or truth["image"].isna().any():
            raise ValueError("--baseline needs image files (not video frames)")
        base = baseline_predictions(args.baseline, list(truth["image"]), progress=not args.quiet)
        baseline = (BASELINES[args.baseline], evaluate_tables(truth, base, frames.au_set, formats, keys=["image"]))
    agreement = format_agreement(table, frames.au_set) if len(formats) > 1 else None
    if not args.predictions:
        title += f" — asked {ask_text(ask, model)}"
    print(write_report(results, args.out, title, frames.au_set, baseline, agreement))
    as_prediction_table(table).to_csv(Path(args.out) / "predictions.csv", index=False)
    print(f"wrote metrics.json, report.md and per-AU charts to {args.out}", file=sys.stderr)
    return EXIT_OK


def _refuse_duplicate_rows(table, data) -> None:
    """Labels of one image (or video frame) twice would be scored twice, or not at all."""
    from aullava.eval.predictions import truth_keys

    keys = truth_keys(table)
    duplicated = table.duplicated(keys, keep=False)
    if duplicated.any():
        first = table.loc[duplicated, keys].iloc[0].tolist()
        raise UsageError(f"--data {data}: {int(table.duplicated(keys).sum())} rows repeat an {'/'.join(keys)} "
                         f"already labelled (first: {', '.join(map(str, first))}); keep one row per picture")


def _load_for_readout(model_dir: str | None):
    from aullava.inference import load_model

    model = load_model(model_dir)
    model.merge_lora()  # evaluation never trains: the merged weights give the same answers, faster
    return model


def _readout_options(args: argparse.Namespace) -> dict:
    return {"crop_cache": args.crop_cache, "workers": args.workers, "batch_size": args.batch_size,
            "progress": not args.quiet, "intensity": getattr(args, "intensity", None),
            "precision": getattr(args, "precision", "fp32")}


def _calibrate(args: argparse.Namespace) -> int:
    check_input_file(args.data, "--data")
    check_model_dir(args.model)
    if args.crop_cache:
        check_output_folder(args.crop_cache, "--crop-cache")
    target = _calibration_target(args)
    from aullava.datasets import read_frames
    from aullava.datasets.spec import load_eval_spec
    from aullava.eval.predictions import sample_frames
    from aullava.eval.probabilities import CalibrationRefused
    from aullava.eval.run import calibrate_model
    from aullava.runtime.files import atomic_write

    spec = load_eval_spec(args.data)
    ask = spec.pop("ask", "model")
    frames = sample_frames(read_frames(spec, where=str(args.data)), args.limit, seed=args.seed)
    _refuse_duplicate_rows(frames.table, args.data)
    model = _load_for_readout(args.model)
    try:
        fit = calibrate_model(model, frames, seed=args.seed, ask=ask, **_readout_options(args))
    except CalibrationRefused as err:
        raise UsageError(f"calibrate: {err}") from None
    for note in fit["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"binary p(present) over {fit['pairs']} (face, AU) pairs: temperature {fit['temperature']:.3f}, log-odds "
          f"shift {fit['bias']:+.3f}; ECE {fit['ece_before']:.3f} → {fit['ece_after']:.3f}, log-loss "
          f"{fit['nll_before']:.3f} → {fit['nll_after']:.3f} (a temperature alone, {fit['temperature_only']:.3f}: "
          f"ECE {fit['ece_temperature_only']:.3f}). Held out (fitted on half the faces, measured on the other "
          f"{fit['heldout_pairs']} pairs): ECE {fit['heldout_ece_before']:.3f} → {fit['heldout_ece_after']:.3f}, "
          f"log-loss {fit['heldout_nll_before']:.3f} → {fit['heldout_nll_after']:.3f}")
    source = Path(args.model).resolve()
    if target != source:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint-*", "vision-warmup*"))
    config_path = target / "config.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    if target == source:  # --in-place: the previous settings are kept beside it
        atomic_write(target / "config.json.bak", config_path.read_bytes())
    data["probability_temperature"] = {**data.get("probability_temperature", {}), "binary": fit["temperature"]}
    data["probability_bias"] = {**data.get("probability_bias", {}), "binary": fit["bias"]}
    atomic_write(config_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    print(f"wrote probability_temperature.binary = {fit['temperature']:.3f} and probability_bias.binary = "
          f"{fit['bias']:+.3f} into {config_path}" + (" (the previous one: config.json.bak)" if target == source
                                                      else f" (a calibrated copy of {source})"), file=sys.stderr)
    return EXIT_OK


def _calibration_target(args: argparse.Namespace) -> Path:
    """Where the calibrated model goes: `--out` (a new folder), the model itself with `--in-place`, or by default
    `<model>-calibrated` beside it. Never into the installed package's default model."""
    from aullava.inference import default_model_dir

    source = Path(args.model).resolve()
    installed = default_model_dir()
    if args.in_place and args.out:
        raise UsageError("calibrate: --out and --in-place exclude each other")
    target = source if args.in_place else Path(args.out or f"{source}-calibrated").resolve()
    if installed is not None and (target == installed.resolve() or installed.resolve() in target.parents):
        raise UsageError(f"calibrate: {target} is the installed default model; write a calibrated copy with --out")
    if target != source and target.exists():
        raise UsageError(f"calibrate: {target} already exists; name a new folder with --out")
    return target
