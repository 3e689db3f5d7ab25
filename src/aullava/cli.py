"""`aullava` command line: predict (also under torchrun / accelerate launch), merge-shards, plot, serve, train, eval,
calibrate, synth, teacher, export-llava, info.

Exit codes: 0 all done; 1 some inputs (images) failed, each named on an `error:` line, the others done; 2 a
mistake that stops the command: an option or path (found before any model is loaded), or a config, recipe, spec,
checkpoint or data file that cannot be used. No traceback for a user's mistake;
`--debug` (or AULLAVA_DEBUG=1) shows it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from aullava.cli_checks import (EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, Parser, UsageError, check_input_file,
                                check_model_dir, check_output_folder, positive_int)
from aullava.cli_plot import add_commands as add_plot_commands
from aullava.cli_predict import add_commands as add_predict_commands
from aullava.cli_serve import add_commands as add_serve_commands
from aullava.quiet import set_verbose

DEBUG_ENV = "AULLAVA_DEBUG"


def _train(args: argparse.Namespace) -> int:
    check_input_file(args.config, "--config")
    from aullava.training.recipe import load_recipe, train

    recipe = load_recipe(args.config, args.set or [])
    trainer = train(recipe, resume=not args.no_resume)
    print(f"model saved to {trainer.args.output_dir}")
    return EXIT_OK


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
        table, truth, keys, formats = _model_predictions(args, frames, formats, ask, model)
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
        title += f" — asked {_ask_text(ask, model)}"
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


def _model_predictions(args: argparse.Namespace, frames, formats: list[str], ask: str, model):
    """The model's readout of every labelled frame that has a face: (predictions, truth rows, join keys, the
    formats both labelled and asked). Crops come from the resumable crop cache; faces that fail are counted."""
    from aullava.datasets import LabelledFaces, frame_source
    from aullava.datasets.spec import dropped_summary
    from aullava.eval.predictions import predict_dataset, truth_keys
    from aullava.faces.crop_cache import FaceCropCache

    cache = FaceCropCache(args.crop_cache, crop_size=model.vision_encoder.image_size, landmarks=model.wants_geometry)
    report = cache.build([frame_source(row) for _, row in frames.table.iterrows()], workers=args.workers,
                         progress=not args.quiet)
    if report.failures:
        print(f"note: {dropped_summary(len(frames.table), report.failures, 'not evaluated')}", file=sys.stderr)
    faces = LabelledFaces(frames, cache, formats, ask=model.au_set if ask == "model" else ask,
                          geometry=model.wants_geometry)
    unasked = [au for au in frames.au_set.ids if au not in faces.asked_ids()]
    print(f"note: asked {_ask_text(ask, model)}" + (f"; not scored (not asked): {', '.join(unasked)}"
                                                    if unasked else ""), file=sys.stderr)
    formats = [f for f in formats if f in faces.au_sets]
    table = predict_dataset(model, faces, formats, batch_size=args.batch_size, progress=not args.quiet,
                            intensity=getattr(args, "intensity", "mean"),
                            precision=getattr(args, "precision", "fp32"))
    return table, faces.table, truth_keys(faces.table), formats


def _calibrate(args: argparse.Namespace) -> int:
    check_input_file(args.data, "--data")
    check_model_dir(args.model)
    if args.crop_cache:
        check_output_folder(args.crop_cache, "--crop-cache")
    target = _calibration_target(args)
    from aullava.datasets import read_frames
    from aullava.datasets.spec import load_eval_spec
    from aullava.eval.predictions import sample_frames
    from aullava.eval.probabilities import CalibrationRefused, calibrate_binary
    from aullava.files import atomic_write

    spec = load_eval_spec(args.data)
    ask = spec.pop("ask", "model")
    frames = sample_frames(read_frames(spec, where=str(args.data)), args.limit, seed=args.seed)
    _refuse_duplicate_rows(frames.table, args.data)
    model = _load_for_readout(args.model)
    model.config.probability_temperature, model.config.probability_bias = {}, {}  # fit on the raw probabilities
    table, truth, _, formats = _model_predictions(args, frames, ["binary"], ask, model)
    if "binary" not in formats:
        raise ValueError(f"{args.data}: no binary labels to calibrate p(present) against")
    try:
        fit = calibrate_binary(truth, table, frames.au_set, seed=args.seed)
    except CalibrationRefused as err:
        raise UsageError(f"calibrate: {err}") from None
    print(f"binary p(present) over {fit['pairs']} (face, AU) pairs: temperature {fit['temperature']:.3f}, log-odds "
          f"shift {fit['bias']:+.3f}; ECE {fit['ece_before']:.3f} → {fit['ece_after']:.3f}, log-loss "
          f"{fit['nll_before']:.3f} → {fit['nll_after']:.3f} (a temperature alone, {fit['temperature_only']:.3f}: "
          f"ECE {fit['ece_temperature_only']:.3f}). Held out (fitted on half the faces, measured on the other "
          f"{fit['heldout_pairs']} pairs): ECE {fit['heldout_ece_before']:.3f} → {fit['heldout_ece_after']:.3f}, "
          f"log-loss {fit['heldout_nll_before']:.3f} → {fit['heldout_nll_after']:.3f}")
    source = Path(args.model)
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


def _ask_text(ask: str, model) -> str:
    if ask == "model":
        return f"the model's whole AU set ({len(model.au_set)} AUs), the question predict asks"
    return "only the AUs the dataset labels, per format" if ask == "labelled" else "the dataset's whole AU set"


def _synth(args: argparse.Namespace) -> int:
    check_input_file(args.index, "--index")
    check_output_folder(args.out)
    from aullava.synth.run import run_synth

    baseline = name = None
    if args.baseline_sources:  # the teacher reads what a non-neutral source already shows
        import hashlib
        import json

        from aullava.teacher.labeler import Teacher

        teacher = Teacher()
        digest = hashlib.sha256(json.dumps(teacher.calibration, sort_keys=True).encode()).hexdigest()[:12]
        baseline, name = teacher.label, f"teacher (calibration {digest})"
    summary = run_synth(args.index, args.out, per_image=args.per_image, held_out=args.held_out, seed=args.seed,
                        limit=args.limit, crop_size=args.crop_size, workers=args.workers, progress=not args.quiet,
                        au_ids=args.au_set, gain=args.gain, mouth_interior=args.mouth_interior,
                        baseline=baseline, baseline_name=name, log=lambda line: print(line, file=sys.stderr))
    print(f"{summary['images_written'] + summary['images_reused']} images from {summary['photos_used']} of "
          f"{summary['photos']} photos ({summary['photos_skipped']} skipped, see {Path(args.out) / 'skipped.csv'}); "
          f"train {summary['train_images']} images / {summary['train_identities']} identities, held-out "
          f"{summary['held_out_images']} / {summary['held_out_identities']}; manifests in {args.out}")
    return EXIT_OK


def _teacher(args: argparse.Namespace) -> int:
    check_input_file(args.index, "--index")
    check_output_folder(args.out)
    from aullava.teacher.manifests import write_teacher_manifests

    s = write_teacher_manifests(args.index, args.out, held_out=args.held_out, seed=args.seed, synth_dir=args.synth,
                                progress=not args.quiet)
    print(f"{s['with_face']} of {s['photos']} photos labelled ({s['no_face']} without a face); train "
          f"{s['train_images']} images / {s['train_identities']} identities, held-out {s['held_out_images']} / "
          f"{s['held_out_identities']}; {len(s['labelled_aus'])} AUs labelled; real_train.csv and "
          f"real_held_out.csv in {args.out}")
    return EXIT_OK


def _export_llava(args: argparse.Namespace) -> int:
    from aullava.inference import load_model
    from aullava.llava.export import export_llava

    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise ValueError(f"{args.out}: exists and is not empty; choose a new folder")
    model = load_model(args.model)
    out = export_llava(model, args.out, dtype=args.dtype)
    print(f"wrote a transformers LLaVA model to {out} (prompts: {out / 'aullava_prompts.json'}; usage: "
          f"{out / 'README.md'})")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    from aullava.assets import asset_report
    from aullava.inference import default_model_dir

    for package in ("aullava", "torch", "transformers", "peft", "accelerate", "mediapipe", "safetensors"):
        try:
            print(f"{package:14s} {md.version(package)}")
        except md.PackageNotFoundError:
            print(f"{package:14s} not installed")
    for key, value in asset_report().items():
        print(f"{key:20s} {value}")
    default = default_model_dir()
    print(f"{'default model':20s} {default or 'none shipped: predict uses the untrained default'}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="aullava", description="Facial Action Unit recognition with an LLM "
                                     "(AU-LLaVA): binary occurrence, 0-5 intensity and 0-1 intensity.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more, and show third-party log lines")
    parser.add_argument("--debug", action="store_true",
                        help=f"show Python tracebacks for errors (or set {DEBUG_ENV}=1)")
    common = argparse.ArgumentParser(add_help=False)  # the same two flags after the command name
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    add_predict_commands(commands, common)
    add_plot_commands(commands, common)
    add_serve_commands(commands, common)

    train = commands.add_parser("train", parents=[common],
        help="train or fine-tune a model from a YAML recipe", description=(
        "Trains with Hugging Face Trainer (works under `accelerate launch`). Resumes from the last checkpoint in "
        "training.output_dir unless --no-resume."))
    train.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set training.max_steps=100 (repeatable)")
    train.add_argument("--no-resume", action="store_true", help="start fresh even if checkpoints exist")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", parents=[common],
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
    evaluate.add_argument("--crop-cache", help="face-crop cache folder (default: $AULLAVA_HOME/crops)")
    evaluate.add_argument("--workers", type=positive_int, default=1, help="processes for face cropping")
    evaluate.add_argument("--batch-size", type=positive_int, default=8)
    evaluate.add_argument("--intensity", default="mean", choices=["mean", "greedy"],
                          help="discrete and continuous values: the expected intensity on the format's grid (mean, "
                               "the default) or the digits the LLM wrote greedily")
    evaluate.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                          help="the LLM's arithmetic: fp32, or bfloat16 autocast (as predict --precision)")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=_eval)

    synth = commands.add_parser("synth", parents=[common],
        help="AU-controlled synthetic faces with exact labels, from your photos",
                                description=(
        "Warps real photos (near-neutral faces only) into the same face showing sampled AU combinations at known "
        "intensities, with py-feat's AU-to-mesh model and a piecewise-affine warp over the MediaPipe mesh. Writes "
        "aligned crops and train.csv / held_out.csv manifests split by identity. Resumable."))
    synth.add_argument("--index", required=True, help="CSV with image (path relative to the CSV) and identity columns")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--per-image", type=positive_int, default=4, help="warps per usable photo")
    synth.add_argument("--held-out", type=float, default=0.2, help="share of identities held out")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--limit", type=positive_int, help="use only the first N photos of the index")
    synth.add_argument("--crop-size", type=int, default=224)
    synth.add_argument("--au-set", default="default", help="AU set to sample (a built-in name)")
    synth.add_argument("--gain", type=float, default=1.0,
                       help="displacement scale: an AU at intensity x moves the mesh by gain × the AU→mesh model's "
                            "displacement at x (1 = py-feat's model as fitted)")
    synth.add_argument("--mouth-interior", action="store_true",
                       help="warps that part the lips get a real mouth interior (teeth, darkness) taken from the "
                            "index's open-mouth photos; labels are unchanged (docs/synth-mouth-interior.png)")
    synth.add_argument("--baseline-sources", action="store_true",
                       help="also warp photos that are not neutral: the MediaPipe teacher reads the expression they "
                            "already show, a warp's label is that plus what it adds; AUs the teacher cannot see are "
                            "left empty on their warps (sources.csv lists each photo's baseline)")
    synth.add_argument("--workers", type=positive_int, default=1)
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)

    teacher = commands.add_parser("teacher", parents=[common],
        help="label real photos with the calibrated MediaPipe blendshape teacher",
                                  description=(
        "Labels real photos with the calibrated MediaPipe blendshape teacher (52 blendshapes mapped to AUs, each "
        "calibrated on synthetic faces) and writes real_train.csv / real_held_out.csv manifests split by identity: "
        "continuous AU01..AU26, left empty (not labelled) for AUs the teacher is blind to; photos without a face "
        "are dropped. With --synth, the split agrees with that synthetic set's."))
    teacher.add_argument("--index", required=True,
                         help="CSV with image (path relative to the CSV) and identity columns")
    teacher.add_argument("--out", required=True, help="output folder")
    teacher.add_argument("--held-out", type=float, default=0.2, help="share of identities held out")
    teacher.add_argument("--seed", type=int, default=17)
    teacher.add_argument("--synth", help="an `aullava synth` output folder: its held-out identities are held out "
                         "here too, its training identities are never held out")
    teacher.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    teacher.set_defaults(func=_teacher)

    export = commands.add_parser("export-llava", parents=[common],
                                 help="write a model as a transformers LLaVA directory",
                                 description=(
        "Writes MODEL as a standard transformers LlavaForConditionalGeneration directory (config, safetensors with "
        "LoRA merged, processor and tokenizer, aullava_prompts.json with the chat-free prompt of each format), "
        "servable by LLaVA tooling such as vLLM or SGLang. Needs an HF CLIP or SigLIP vision tower (the paper "
        "setting); the default EfficientNet model has no LLaVA equivalent."))
    export.add_argument("model", help="aullava checkpoint directory")
    export.add_argument("out", help="new folder for the LLaVA model")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weight type written (bfloat16 halves a 7B model to ~14 GB)")
    export.set_defaults(func=_export_llava)

    calibrate = commands.add_parser("calibrate", parents=[common],
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
    calibrate.add_argument("--crop-cache", help="face-crop cache folder (default: $AULLAVA_HOME/crops)")
    calibrate.add_argument("--workers", type=positive_int, default=1, help="processes for face cropping")
    calibrate.add_argument("--batch-size", type=positive_int, default=8)
    calibrate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    calibrate.set_defaults(func=_calibrate)

    info = commands.add_parser("info", parents=[common],
        help="versions, cache and assets found", description=(
        "Prints package versions, $AULLAVA_HOME and where each pretrained asset was found."))
    info.set_defaults(func=_info)
    return parser


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose, debug = getattr(args, "verbose", False), getattr(args, "debug", False) or bool(os.environ.get(DEBUG_ENV))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    set_verbose(verbose)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from aullava.assets import AssetError, aullava_home, downloads_allowed

    try:
        aullava_home()
    except AssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not downloads_allowed():  # the README's promise: nothing is downloaded (read before huggingface_hub loads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (AssetError, ValueError, OSError, ImportError) as err:  # the user's files, data and settings
        if debug:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - anything else is our bug: still one line, the traceback on request
        if debug:
            raise
        print(f"error: {type(err).__name__}: {_one_line(err)} (unexpected; rerun with --debug for the traceback "
              "and please report it)", file=sys.stderr)
        return EXIT_SOME_FAILED


if __name__ == "__main__":
    sys.exit(main())
