"""Where the answers' sensitivity to tiny pixel changes comes from (issue 29's diagnosis), for one or more models.

    .venv/bin/python scripts/diagnose_steadiness.py --faces-dir ../shared/faces/images --faces 30 \
        --model runs/v2-3k --model default

Three measurements, each on the bundled example face and on the first `--faces` photos of `--faces-dir` with a face:

1. **Tokens.** How far the projected face tokens (what the LLM reads) move when the same 224 px crop is perturbed
   (±1 grey-level noise, Gaussian blur σ 0.6, JPEG q95 and q85, the crop moved 1 px and 3 px), as a share of the
   mean distance of the faces' clean tokens from their mean (1.0 = as far as another person's face).
2. **Crop or pixels.** The whole picture perturbed (noise, JPEG q85/q95, a 3 px shift) changes both the pixels and,
   through the detector, the crop's alignment. Mean |Δp(present)| over AUs and faces for: the full change (detect
   again), the pixels only (the original alignment applied to the perturbed picture) and the alignment only (the
   perturbed picture's alignment applied to the original picture).
3. **Cascade.** The answer is decoded left to right, so p(AU k) is conditioned on the greedy values before it.
   Mean |Δp| of the exact readout against the same face's p when the earlier values are held at the original
   picture's answer (one pass over that answer): the difference is what earlier flipped values add.
"""

from __future__ import annotations

import argparse
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

PIXEL_CHANGES = ("noise ±1", "JPEG q95", "JPEG q85", "shift 3px")
CROP_CHANGES = ("noise ±1", "blur σ0.6", "JPEG q95", "JPEG q85", "crop moved 1px", "crop moved 3px")


def perturbed(image: np.ndarray, change: str, seed: int = 0) -> np.ndarray:
    """`image` (uint8 RGB) after one named change."""
    from aullava.faces.perturb import blurred, jpeg, plus_minus_one, shifted

    if change == "noise ±1":
        return plus_minus_one(image, np.random.default_rng(seed))
    if change == "blur σ0.6":
        return blurred(image, 0.6)
    if change.startswith("JPEG q"):
        return jpeg(image, int(change[6:]))
    return shifted(image, float(change.split()[-1].removesuffix("px")))


def pictures(faces_dir: Path | None, count: int, detector) -> list[tuple[np.ndarray, object]]:
    """(picture, its largest face) for the example and up to `count` photos with a face."""
    from aullava.faces.detector import largest_face
    from aullava.faces.images import iter_image_paths, load_image

    out = []
    paths = [files("aullava.resources") / "examples" / "astronaut.png"]
    if faces_dir is not None:
        paths += sorted(iter_image_paths([faces_dir]))
    for path in paths:
        if len(out) > count:
            break
        image = load_image(path)
        face = largest_face(detector.detect(image))
        if face is not None:
            out.append((image, face))
    return out


def token_table(model, crops: np.ndarray) -> dict[str, np.ndarray]:
    """Per crop change, the relative distance of each face's tokens from its clean tokens."""
    from aullava.training.invariance_stage import image_tokens

    with torch.no_grad():
        clean = image_tokens(model, torch.from_numpy(crops))
        spread = (clean - clean.mean(0, keepdim=True)).flatten(1).norm(dim=1).mean()
        table = {}
        for change in CROP_CHANGES:
            moved = np.stack([perturbed(c, change, seed=i) for i, c in enumerate(crops)])
            tokens = image_tokens(model, torch.from_numpy(moved))
            table[change] = ((tokens - clean).flatten(1).norm(dim=1) / spread).numpy()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="checkpoint directory or 'default'; repeat to compare")
    parser.add_argument("--faces-dir", type=Path, help="folder of face photos (the spread of tokens across faces)")
    parser.add_argument("--faces", type=int, default=30, help="photos with a face taken from --faces-dir")
    args = parser.parse_args()
    if args.faces_dir is not None and not args.faces_dir.is_dir():
        parser.error(f"--faces-dir {args.faces_dir}: not a folder")
    warnings.filterwarnings("ignore")
    from aullava.faces.detector import FaceDetector, align_face, largest_face
    from aullava.inference import load_model
    from aullava.model.decoding import AnswerDecoder
    from aullava.runtime.quiet import set_verbose

    set_verbose(False)
    detector = FaceDetector()
    shots = pictures(args.faces_dir, args.faces, detector)
    crops = np.stack([face.crop for _, face in shots])
    # the same pictures perturbed whole, detected again; and the crosses of alignment and pixels
    full, pixels, align = {}, {}, {}
    for change in PIXEL_CHANGES:
        full[change], pixels[change], align[change] = [], [], []
        for i, (image, face) in enumerate(shots):
            other = perturbed(image, change, seed=i)
            again = largest_face(detector.detect(other)) or face
            full[change].append(again.crop)
            pixels[change].append(align_face(other, face.landmarks, detector.crop_size)[0])
            align[change].append(align_face(image, again.landmarks, detector.crop_size)[0])
    print(f"{len(shots)} faces (the example first); p = calibrated binary p(present), fp32\n")
    for name in args.model or ["default"]:
        model = load_model(None if name == "default" else name)
        model.merge_lora()
        print(f"== {name} ==")
        tokens = token_table(model, crops)
        print("1. token movement / spread across faces (example, median of the others):")
        for change, values in tokens.items():
            print(f"   {change:<16} {values[0]:5.2f}  {np.median(values[1:]) if len(values) > 1 else np.nan:5.2f}")
        exact = AnswerDecoder(model)
        forced = AnswerDecoder(model, readout="one-pass")

        def p_of(batch, decoder=exact, drafts=None):
            out = []
            for start in range(0, len(batch), 16):
                part = torch.from_numpy(np.stack(batch[start:start + 16]))
                if drafts is None:
                    out += [r["binary"].expected for r in decoder.decode(part, ["binary"])]
                else:
                    from aullava.aus.answer_format import AnswerFormat

                    out += [r[AnswerFormat.BINARY].expected for r in decoder.parallel.decode(
                        part, ["binary"], drafts={AnswerFormat.BINARY: drafts[start:start + 16]})]
            return np.stack(out)

        from aullava.aus.answer_format import AnswerFormat

        original = exact.decode(torch.from_numpy(crops), ["binary"])
        p0 = np.stack([r[AnswerFormat.BINARY].expected for r in original])
        answers = [r[AnswerFormat.BINARY].values for r in original]
        print("2./3. mean |Δp| over AUs (example; all faces): full change | pixels only | alignment only | "
              "earlier values held at the original answer")
        for change in PIXEL_CHANGES:
            row = []
            for batch in (full[change], pixels[change], align[change]):
                d = np.abs(p_of(batch) - p0)
                row.append(f"{d[0].mean():.3f}; {d.mean():.3f}")
            held = np.abs(p_of(full[change], forced, answers) - p0)
            row.append(f"{held[0].mean():.3f}; {held.mean():.3f}")
            print(f"   {change:<10} " + " | ".join(row))
        print()
    detector.close()


if __name__ == "__main__":
    main()
