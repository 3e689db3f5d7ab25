"""Faces/second and peak memory of `predict` with the default model on this machine, per answer format.

    .venv/bin/python benchmarks/predict_speed.py [--model DIR] [--faces 4] [--batch-size 8]

Model loading and face detection are timed separately from the LLM; peak memory is the process's maximum RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings
from importlib.resources import files

import torch


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: the shipped default)")
    parser.add_argument("--faces", type=int, default=4, help="faces per format (copies of the example face)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from aullava.answer_format import ALL_FORMATS
    from aullava.imaging import load_image
    from aullava.inference import Predictor

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor(args.model, batch_size=args.batch_size, device="cpu")
    load_s = time.perf_counter() - start
    example = load_image(str(files("aullava").joinpath("resources", "examples", "astronaut.png")))
    predictor.predict([example], ["binary"])  # warm-up: detector, answer vocabulary, kernels
    start = time.perf_counter()
    predictor.detector.detect(example)
    detect_ms = (time.perf_counter() - start) * 1000

    print(f"device: cpu, {args.threads} threads; torch {torch.__version__}; model: {args.model or 'default'} "
          f"({'trained' if predictor.trained else 'UNTRAINED'}), {len(predictor.model.au_set)} AUs")
    print(f"model load: {load_s:.1f} s; face detection: {detect_ms:.1f} ms/image")
    print(f"{'format':12s} {'faces':>5s} {'seconds':>8s} {'faces/s':>8s} {'peak RSS MiB':>13s}")
    images = [example] * args.faces
    for fmt in ALL_FORMATS:
        start = time.perf_counter()
        results = predictor.predict(images, [fmt])
        elapsed = time.perf_counter() - start
        faces = sum(len(r.faces) for r in results)
        print(f"{fmt.value:12s} {faces:5d} {elapsed:8.2f} {faces / elapsed:8.3f} {peak_rss_mib():13.0f}")
    start = time.perf_counter()
    results = predictor.predict(images, ALL_FORMATS)
    elapsed = time.perf_counter() - start
    faces = sum(len(r.faces) for r in results)
    print(f"{'all three':12s} {faces:5d} {elapsed:8.2f} {faces / elapsed:8.3f} {peak_rss_mib():13.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
