"""`aullava synth` and `aullava teacher`: labelled training data made from plain photos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aullava.cli.checks import EXIT_OK, check_input_file, check_output_folder, positive_int


def add_commands(commands, common) -> None:
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
