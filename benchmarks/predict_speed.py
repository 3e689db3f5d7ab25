"""Speed of the AU readout on this machine: parallel (Jacobi) vs sequential decoding, per format and all three.

    .venv/bin/python benchmarks/predict_speed.py --faces-dir ../shared/faces/images --faces 32
    .venv/bin/python benchmarks/predict_speed.py --faces-dir DIR --precision bf16 --skip-sequential

Faces: the bundled example plus the first images of `--faces-dir` in which a face is found (distinct photos, never
copies of one image). Reported, after the model is loaded and warmed up:
- faces/s of the readout (crops in, answers out) per format and for all three, batched (`--batch-size` faces);
- one-face latency, all three formats (median of 5);
- MediaPipe detection alone (faces/s) and end-to-end `predict` on the image files, all three formats;
- the sequential decoder (the reference, which is how predict worked before the parallel readout: one answer per
  (face, format), the image encoded per format) and the speed-up over it;
- the share of (face, format) answers identical between parallel and sequential (same precision, same model);
- peak RSS (the process's maximum resident memory) after the parallel measurements, before the sequential ones.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: the shipped default)")
    parser.add_argument("--faces-dir", type=Path, help="folder of face photos (the first --faces - 1 with a face)")
    parser.add_argument("--faces", type=int, default=32, help="distinct faces, the bundled example included")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per batch")
    parser.add_argument("--sequential-batch-size", type=int, default=8,
                        help="(face, format) rows per batch of the sequential decoder (8: how predict ran before)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-sequential", action="store_true", help="parallel readout only (fast)")
    args = parser.parse_args()
    if args.faces_dir is not None and not args.faces_dir.is_dir():
        parser.error(f"--faces-dir {args.faces_dir}: not a folder")
    torch.set_num_threads(args.threads)

    from aullava.answer_format import ALL_FORMATS
    from aullava.faces.images import iter_image_paths, load_image
    from aullava.inference import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor, load_s = timed(lambda: Predictor(args.model, batch_size=args.batch_size, device="cpu",
                                                    precision=args.precision))
    example = Path(str(files("aullava").joinpath("resources", "examples", "astronaut.png")))
    candidates = [example] + (sorted(iter_image_paths([args.faces_dir])) if args.faces_dir else [])
    images, crops = [], []
    detect_s = 0.0
    for path in candidates:
        image = load_image(path)
        faces, seconds = timed(lambda: predictor.detector.detect(image))
        detect_s += seconds
        if faces:
            images.append(path)
            crops.append(faces[0].crop)
        if len(crops) == args.faces:
            break
    if len(crops) < args.faces:
        print(f"note: only {len(crops)} faces found (asked for {args.faces}); give --faces-dir", file=sys.stderr)
    crops_t = torch.from_numpy(np.stack(crops))
    n = len(crops)
    decoder = predictor.parallel_decoder

    def parallel(formats, rows=crops_t):
        out = []
        for start in range(0, len(rows), args.batch_size):
            out += decoder.decode(rows[start:start + args.batch_size], formats)
        return out

    parallel(ALL_FORMATS, crops_t[:2])  # warm-up: description cache, answer vocabulary, kernels
    print(f"device: cpu, {args.threads} threads; torch {torch.__version__}; precision {args.precision}; model: "
          f"{args.model or 'default'} ({'trained' if predictor.trained else 'UNTRAINED'}), "
          f"{len(predictor.model.au_set)} AUs; {n} distinct faces; batch {args.batch_size} faces")
    print(f"model load: {load_s:.1f} s; MediaPipe detection alone: {len(candidates[:len(images)]) / detect_s:.1f} "
          f"images/s (incl. images without a face: {detect_s / max(len(images), 1) * 1000:.0f} ms per found face)")
    rows = {}
    answers = {}
    for label, formats in [(f.value, [f]) for f in ALL_FORMATS] + [("all three", list(ALL_FORMATS))]:
        readouts, seconds = timed(lambda: parallel(formats))
        passes = np.mean([r[f].passes for r in readouts for f in formats])
        rows[label] = [n / seconds, passes]
        if label == "all three":
            answers = {(i, f): r[f].text for i, r in enumerate(readouts) for f in formats}
    latencies = [timed(lambda: decoder.decode(crops_t[i:i + 1], ALL_FORMATS))[1] for i in range(5)]
    latency_ms = statistics.median(latencies) * 1000
    rss_parallel = peak_rss_mib()
    _, e2e_s = timed(lambda: predictor.predict(images, ALL_FORMATS))

    print(f"\n{'readout (parallel)':20s} {'faces/s':>8s} {'passes':>7s}")
    for label, (rate, passes) in rows.items():
        print(f"{label:20s} {rate:8.2f} {passes:7.2f}")
    print(f"one face, all three formats: {latency_ms:.0f} ms (median of 5)")
    print(f"end-to-end predict (files → detection → all three formats): {n / e2e_s:.2f} faces/s")
    print(f"peak RSS: {rss_parallel:.0f} MiB")
    if args.skip_sequential:
        return
    from aullava.inference import FaceResult

    predictor.batch_size = args.sequential_batch_size
    au_ids = predictor.model.au_set.ids
    identical, total = 0, 0
    print(f"\n{'sequential (before)':20s} {'faces/s':>8s} {'parallel ×':>10s}")
    for label, formats in [(f.value, [f]) for f in ALL_FORMATS] + [("all three", list(ALL_FORMATS))]:
        faces = [(FaceResult(face=0, box=(0, 0, 0, 0), au_ids=au_ids), crop, None) for crop in crops]  # no geometry stream
        _, seconds = timed(lambda: predictor._read_sequential(faces, formats, len(au_ids)))
        print(f"{label:20s} {n / seconds:8.2f} {rows[label][0] / (n / seconds):10.1f}")
        if label == "all three":
            for i, (face, _, _) in enumerate(faces):
                for f in formats:
                    total += 1
                    identical += face.texts[f.value] == answers[(i, f)]
    print(f"answers identical, parallel vs sequential: {identical}/{total} ({100 * identical / total:.1f} %)")
    print(f"peak RSS with the sequential runs: {peak_rss_mib():.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
