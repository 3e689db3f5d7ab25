"""Steadiness: the same face with slightly different pixels should get the same AUs (issue 29).

    .venv/bin/python benchmarks/steadiness.py                          # the shipped default model
    .venv/bin/python benchmarks/steadiness.py --model runs/v2-3k --model default   # before / after in one run

For each model (fp32, binary format, the parallel readout's calibrated p(present)):
1. The bundled example face under: ±1 grey-level noise, JPEG re-saves at q95/q85/q70, sub-pixel shifts of the whole
   picture (0.25, 0.5 px) and shifts of −6/−3/+3/+6 px. Printed: p per AU per variant, and per AU the largest
   |p − p(original)| over the variants the target covers (noise, JPEG q ≥ 85, shifts ≤ 3 px; target ≤ .05).
2. A clip built here: the example face on a wider canvas, moved 3 px per frame for 40 frames, written as mp4v
   (OpenCV) and read back through `predict` like any video. Printed per AU: the range of p over the frames (target
   ≤ .10) and on how many frames the binary answer equals its most common value (target ≥ 38 of 40).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np

TARGET_VARIANTS = ("noise ±1", "JPEG q95", "JPEG q85", "shift 0.25px", "shift 0.5px", "shift -3px", "shift +3px")


def variants(image: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    from aullava.faces.perturb import jpeg, plus_minus_one, shifted

    out = {"original": image, "noise ±1": plus_minus_one(image, np.random.default_rng(seed))}
    out.update({f"JPEG q{q}": jpeg(image, q) for q in (95, 85, 70)})
    out.update({f"shift {dx:g}px": shifted(image, dx) for dx in (0.25, 0.5)})
    out.update({f"shift {dx:+d}px": shifted(image, dx) for dx in (-6, -3, 3, 6)})
    return out


def make_clip(image: np.ndarray, path: Path, frames: int = 40, step: int = 3, fps: int = 25) -> None:
    """The face moved `step` px to the right per frame on a canvas wide enough for the whole path (mp4v)."""
    height, width = image.shape[:2]
    canvas_w = (width + step * frames + 15) // 16 * 16
    canvas_h = (height + 15) // 16 * 16
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (canvas_w, canvas_h))
    edge = image[:, :1].mean(axis=(0, 1)).astype(np.uint8)
    for k in range(frames):
        canvas = np.empty((canvas_h, canvas_w, 3), np.uint8)
        canvas[:] = edge
        canvas[:height, k * step:k * step + width] = image
        writer.write(canvas[:, :, ::-1])
    writer.release()


def measure(predictor, image: np.ndarray, clip: Path) -> dict:
    pictures = variants(image)
    results = predictor.predict(list(pictures.values()), formats=["binary"])
    p = {}
    for name, result in zip(pictures, results):
        if not result.faces:
            print(f"  {name}: no face found", file=sys.stderr)
            continue
        p[name] = result.faces[0].expected["binary"]
    frames = [r for r in predictor.predict([str(clip)], formats=["binary"]) if r.faces]
    clip_p = np.stack([r.faces[0].expected["binary"] for r in frames])
    clip_c = np.stack([r.faces[0].values["binary"] for r in frames])
    return {"p": p, "clip_p": clip_p, "clip_c": clip_c}


def report(name: str, au_ids, m: dict) -> dict:
    p = m["p"]
    print(f"\n== {name}: p(present) of the example face ==")
    print(f"{'variant':<14}" + "".join(f"{au:>6}" for au in au_ids))
    for variant, values in p.items():
        print(f"{variant:<14}" + "".join(f"{v:6.2f}" for v in values))
    worst = np.max([np.abs(p[v] - p["original"]) for v in TARGET_VARIANTS if v in p], axis=0)
    print(f"{'max |Δp| tgt':<14}" + "".join(f"{v:6.2f}" for v in worst))
    span = m["clip_p"].max(0) - m["clip_p"].min(0)
    steady = [int(np.max(np.unique(col, return_counts=True)[1])) for col in m["clip_c"].T]
    print(f"clip ({len(m['clip_p'])} frames with a face, 3 px per frame, mp4v):")
    print(f"{'p range':<14}" + "".join(f"{v:6.2f}" for v in span))
    print(f"{'binary steady':<14}" + "".join(f"{v:6d}" for v in steady))
    summary = {"worst_dp": float(worst.max()), "aus_within_05": int((worst <= 0.05).sum()),
               "clip_worst_range": float(span.max()), "aus_range_le_10": int((span <= 0.10).sum()),
               "clip_min_steady": int(min(steady)), "frames": len(m["clip_p"])}
    print(f"summary: largest |Δp| {summary['worst_dp']:.2f} (AUs within ±.05: {summary['aus_within_05']} of "
          f"{len(au_ids)}); clip: widest p range {summary['clip_worst_range']:.2f} (AUs ≤ .10: "
          f"{summary['aus_range_le_10']}), fewest steady frames {summary['clip_min_steady']} of {summary['frames']}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="checkpoint directory, or 'default' for the shipped model; repeat to compare")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from aullava.faces.images import load_image
    from aullava.inference import Predictor
    from aullava.runtime.quiet import set_verbose

    set_verbose(False)
    image = load_image(files("aullava.resources") / "examples" / "astronaut.png")
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "moving-face.mp4"
        make_clip(image, clip)
        for model in args.model or ["default"]:
            predictor = Predictor(None if model == "default" else model, batch_size=16, precision=args.precision)
            summaries[model] = report(model, predictor.model.au_set.ids, measure(predictor, image, clip))
    if len(summaries) > 1:
        print("\n| model | largest |Δp| (target ≤ .05) | AUs within ±.05 | clip widest p range (≤ .10) | "
              "fewest steady frames (≥ 38) |")
        print("|---|---:|---:|---:|---:|")
        for model, s in summaries.items():
            print(f"| {model} | {s['worst_dp']:.2f} | {s['aus_within_05']} | {s['clip_worst_range']:.2f} | "
                  f"{s['clip_min_steady']} of {s['frames']} |")


if __name__ == "__main__":
    main()
