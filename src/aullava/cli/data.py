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
    teacher.add_argument("--rank-aus", type=_au_list, default=(), metavar="AU9,AU10,...",
                         help="AUs labelled by their rank among the training photos (top 10%% present, bottom 50%% "
                              "absent, the rest unlabelled) instead of the calibrated map, for AUs whose blendshapes "
                              "are ordered but too small to calibrate; suggested: AU9,AU10,AU14,AU15")
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


def _au_list(text: str) -> tuple[str, ...]:
    """``"AU9,AU10"`` → ids of the default AU set (the teacher's), or an argparse error naming the unknown one."""
    from aullava.aus.catalogue import au_set

    def canonical(name: str) -> str:  # "au09" → "AU9" as the catalogue spells it; a name it lacks stays as given
        try:
            return au_set([name]).ids[0]
        except KeyError:
            return name

    known = au_set("default").ids
    aus = tuple(canonical(a.strip()) for a in text.split(",") if a.strip())
    unknown = [a for a in aus if a not in known]
    if unknown or not aus:
        raise argparse.ArgumentTypeError(f"unknown AU(s) {unknown or text!r}; the teacher labels {', '.join(known)}")
    return aus


def _teacher(args: argparse.Namespace) -> int:
    check_input_file(args.index, "--index")
    check_output_folder(args.out)
    from aullava.teacher.manifests import write_teacher_manifests

    s = write_teacher_manifests(args.index, args.out, held_out=args.held_out, seed=args.seed, synth_dir=args.synth,
                                progress=not args.quiet, rank_aus=args.rank_aus)
    print(f"{s['with_face']} of {s['photos']} photos labelled ({s['no_face']} without a face); train "
          f"{s['train_images']} images / {s['train_identities']} identities, held-out {s['held_out_images']} / "
          f"{s['held_out_identities']}; {len(s['labelled_aus'])} AUs labelled"
          f"{' (' + ', '.join(s['rank_aus']) + ' by rank)' if s['rank_aus'] else ''}; real_train.csv and "
          f"real_held_out.csv in {args.out}")
    return EXIT_OK
