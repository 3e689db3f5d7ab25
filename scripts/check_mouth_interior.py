"""Check the synthetic mouth interior (`aullava.synth.mouth`) by eye and by re-detection.

By eye: a contact sheet PNG. One row per neutral source face: the source; the lips parted by the warp (AU25 0.8), as
`aullava synth` made it before and with the interior; the jaw dropped too (AU25 + AU26 0.8), before and with; the
donor's mouth.

By re-detection: MediaPipe runs again on every warp, with and without the interior, of ``--redetect`` neutral
sources. For each version it prints the mean blendshapes of an open mouth (jawOpen, mouthLowerDown), the teacher's
AU25 / AU26 (the bundled calibrated mapping of those blendshapes) and how far the *re-detected* inner lips are apart
against what the warp intended (`mouth_opening`). A real interior should make MediaPipe see the opening the label
says: the interior must raise these, not lower them.

    .venv/bin/python scripts/check_mouth_interior.py --index ../shared/faces/index.csv \
        --out docs/synth-mouth-interior.png --faces 6 --redetect 60
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

WARPS = {"AU25 0.8": {"AU25": 0.8}, "AU25+AU26 0.8": {"AU25": 0.8, "AU26": 0.8}}
GAIN = 2.5  # the default model's synthetic set (`scripts/train-default-model.sh`)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="photo index (image, identity), as for `aullava synth`")
    parser.add_argument("--out", required=True, help="contact sheet PNG to write")
    parser.add_argument("--faces", type=int, default=6, help="rows of the contact sheet")
    parser.add_argument("--redetect", type=int, default=60, help="sources whose warps are detected again")
    parser.add_argument("--donor-photos", type=int, default=800, help="photos scanned for donors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm import tqdm

    from aullava.faces.detector import FaceDetector, align_face, largest_face
    from aullava.faces.images import load_image
    from aullava.runtime.quiet import set_verbose
    from aullava.synth.mesh_model import default_model
    from aullava.synth.mouth import INNER_LIP, MouthBank, mouth_opening, paint_mouth, scan_donor
    from aullava.synth.run import read_index
    from aullava.synth.sampling import head_pose_problem, neutral_check
    from aullava.synth.warp import warp_face
    from aullava.teacher.labeler import Teacher

    set_verbose(False)
    rows = read_index(Path(args.index))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(rows))
    model, teacher = default_model(), Teacher()
    donors, sources = [], []
    wanted = max(args.faces, args.redetect)
    with FaceDetector() as detector:
        for i in tqdm(order[: args.donor_photos], desc="donors", unit="photo"):
            donor, _ = scan_donor(detector, rows[i][1])
            if donor is not None:
                donors.append(donor)
        for i in tqdm(order[args.donor_photos:], desc="neutral sources", unit="photo"):
            if len(sources) >= wanted:
                break
            image = load_image(rows[i][1])
            face = largest_face(detector.detect(image))
            if face is None or not neutral_check(face.blendshapes)[0]:
                continue
            if head_pose_problem(face.landmarks, model) is None:
                sources.append((image, face))
        bank = MouthBank(donors, [False] * len(donors))
        print(f"{len(donors)} donors among {args.donor_photos} photos; {len(sources)} neutral sources")

        measures = {}  # (warp, version) -> list of (jawOpen, mouthLowerDown, AU25, AU26, opening seen / intended)
        sheet = []
        for n, (image, face) in enumerate(tqdm(sources, desc="warps", unit="face")):
            lm = face.landmarks
            row = [align_face(image, lm, 224)[0]]
            for name, aus in WARPS.items():
                result = warp_face(image, lm, aus, model, gain=GAIN)
                inner = result.target[list(INNER_LIP)]
                intended = mouth_opening(inner)
                donor = bank.pick(np.random.default_rng([args.seed, n]), intended, False)
                painted = paint_mouth(result.image, inner, donor)
                for version, picture in (("warp only", result.image), ("with interior", painted)):
                    row.append(align_face(picture, lm, 224)[0])
                    found = largest_face(detector.detect(picture))
                    if found is None:
                        continue
                    shapes = found.blendshapes
                    au = teacher.label(shapes)
                    seen = mouth_opening(np.asarray(found.landmarks)[list(INNER_LIP)])
                    measures.setdefault((name, version), []).append(
                        (shapes["jawOpen"], (shapes["mouthLowerDownLeft"] + shapes["mouthLowerDownRight"]) / 2,
                         au["AU25"], au["AU26"], seen / max(intended, 1e-6)))
            row.append(donor.image)
            if n < args.faces:
                sheet.append(row)

    print(f"\nre-detection on {len(sources)} neutral sources (gain {GAIN}); means:")
    print(f"{'warp':<15} {'version':<14} {'jawOpen':>8} {'lowerDown':>9} {'AU25':>6} {'AU26':>6} {'seen/intended':>13}")
    for (name, version), values in measures.items():
        v = np.asarray(values)
        print(f"{name:<15} {version:<14} {v[:, 0].mean():8.3f} {v[:, 1].mean():9.3f} {v[:, 2].mean():6.3f} "
              f"{v[:, 3].mean():6.3f} {v[:, 4].mean():13.2f}")

    titles = ["source"] + [f"{w}\n{v}" for w in WARPS for v in ("warp only", "with interior")] + ["donor mouth"]
    fig, axes = plt.subplots(len(sheet), len(titles), figsize=(2.0 * len(titles), 2.1 * len(sheet) + 0.4))
    axes = np.atleast_2d(axes)
    for r, row in enumerate(sheet):
        for c, picture in enumerate(row):
            ax = axes[r, c]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"contact sheet: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
