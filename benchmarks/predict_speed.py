"""Speed of the AU readout on this machine, for one or more arms (model × precision × readout), each measured in its
own process one after the other (so each has its own peak memory), and the issue-28 targets table.

    .venv/bin/python benchmarks/predict_speed.py --faces-dir ../shared/faces/images --faces 32
    .venv/bin/python benchmarks/predict_speed.py --faces-dir DIR --arm runs/v2-3k:fp32:exact --arm default:bf16:exact

An arm is MODEL:PRECISION:READOUT — MODEL a checkpoint directory or `default` (the shipped model), PRECISION fp32 or
bf16, READOUT exact (the greedy answer) or one-pass. Default: the shipped model with its default settings.

Faces: the bundled example plus the first images of `--faces-dir` in which a face is found (distinct photos, never
copies of one image). Reported per arm, after the model is loaded and warmed up:
- faces/s of the readout (crops in, answers out) per format and for all three, batched (`--batch-size` faces), and
  the mean number of passes;
- one-face latency, all three formats (median of 5);
- end-to-end `predict` on the image files (detection included), all three formats;
- for exact arms (unless `--skip-sequential`): the share of (face, format) answers identical to the sequential
  greedy decoder in the same precision (the exactness check), and against the first arm's answers when it ran the
  same model (fp32 vs bf16 agreement);
- peak RSS of the arm's process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from importlib.resources import files
from pathlib import Path

TARGETS = {"binary": 12.0, "discrete": 12.0, "all three": 4.0}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(arm: str, faces_dir: Path | None, count: int, batch_size: int, sequential: bool) -> dict:
    """One arm, in this process."""
    import numpy as np
    import torch

    from aullava.aus.answer_format import ALL_FORMATS
    from aullava.faces.images import iter_image_paths, load_image
    from aullava.inference import Predictor
    from aullava.model.decoding import AnswerDecoder

    model, precision, readout = arm.split(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor, load_s = timed(lambda: Predictor(None if model == "default" else model, batch_size=batch_size,
                                                    device="cpu", precision=precision, readout=readout))
    example = Path(str(files("aullava").joinpath("resources", "examples", "astronaut.png")))
    candidates = [example] + (sorted(iter_image_paths([faces_dir])) if faces_dir else [])
    images, crops = [], []
    for path in candidates:
        faces = predictor.detector.detect(load_image(path))
        if faces:
            images.append(path)
            crops.append(faces[0].crop)
        if len(crops) == count:
            break
    crops_t = torch.from_numpy(np.stack(crops))
    n = len(crops)
    decoder = predictor.answer_decoder

    def run(formats, rows=crops_t):
        out = []
        for start in range(0, len(rows), batch_size):
            out += decoder.decode(rows[start:start + batch_size], formats)
        return out

    run(ALL_FORMATS, crops_t[:2])  # warm-up: prefix caches, answer vocabulary, kernels
    result = {"arm": arm, "faces": n, "load_s": load_s, "template": predictor.model.config.template_version,
              "rates": {}, "passes": {}}
    texts = {}
    for label, formats in [(f.value, [f]) for f in ALL_FORMATS] + [("all three", list(ALL_FORMATS))]:
        readouts, seconds = timed(lambda: run(formats))
        result["rates"][label] = n / seconds
        result["passes"][label] = float(np.mean([r[f].passes for r in readouts for f in formats]))
        if label == "all three":
            texts = {f"{i}:{f.value}": r[f].text for i, r in enumerate(readouts) for f in formats}
    result["latency_ms"] = statistics.median(
        timed(lambda: decoder.decode(crops_t[i:i + 1], ALL_FORMATS))[1] for i in range(5)) * 1000
    _, e2e = timed(lambda: predictor.predict(images, ALL_FORMATS))
    result["e2e"] = n / e2e
    result["rss_mib"] = peak_rss_mib()
    result["texts"] = texts
    if sequential and readout == "exact":
        reference = AnswerDecoder(predictor.model, decoder="sequential", precision=precision)
        seq = []
        for start in range(0, n, 8):
            seq += reference.decode(crops_t[start:start + 8], ALL_FORMATS)
        same = [seq[i][f].text == texts[f"{i}:{f.value}"] for i in range(n) for f in ALL_FORMATS]
        result["sequential_identical"] = [int(sum(same)), len(same)]
    return result


def report(results: list[dict]) -> None:
    print(f"\n{'arm (model:precision:readout)':44s} {'binary':>7s} {'discr.':>7s} {'contin.':>7s} {'all 3':>7s} "
          f"{'1 face':>7s} {'e2e':>6s} {'RSS':>7s} {'passes b/all':>12s}  exact vs sequential")
    for r in results:
        rates = r["rates"]
        exact = r.get("sequential_identical")
        exact_text = f"{exact[0]}/{exact[1]}" if exact else "—"
        print(f"{r['arm']:44s} {rates['binary']:7.2f} {rates['discrete']:7.2f} {rates['continuous']:7.2f} "
              f"{rates['all three']:7.2f} {r['latency_ms']:5.0f}ms {r['e2e']:6.2f} {r['rss_mib']:5.0f}Mi "
              f"{r['passes']['binary']:5.2f}/{r['passes']['all three']:4.2f}  {exact_text}")
    print("(faces/s of the readout per format, batched; one face all three formats; end-to-end predict with "
          "detection, all three, faces/s; peak RSS of the arm's process)")
    by_model: dict[str, dict] = {}
    for r in results:  # fp32 vs bf16 (or exact vs one-pass) of the same model: answers identical
        model = r["arm"].split(":")[0]
        if model in by_model:
            first = by_model[model]
            same = [r["texts"].get(k) == v for k, v in first["texts"].items()]
            print(f"answers of {r['arm']} identical to {first['arm']}: {sum(same)}/{len(same)} "
                  f"({100 * sum(same) / len(same):.1f} %)")
        else:
            by_model[model] = r
    print("\n| target (issue 28) | " + " | ".join(r["arm"] for r in results) + " | target |")
    print("|---|" + "---:|" * (len(results) + 1))
    for label, target in TARGETS.items():
        print(f"| {label}, faces/s | " + " | ".join(f"{r['rates'][label]:.2f}" for r in results) + f" | ≥ {target:g} |")
    print("| one face, all three, ms | " + " | ".join(f"{r['latency_ms']:.0f}" for r in results) + " | ≤ 300 |")
    print("| peak RSS, MiB | " + " | ".join(f"{r['rss_mib']:.0f}" for r in results) + " | ≤ 1536 |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", help="MODEL:PRECISION:READOUT (repeat; default default:fp32:exact)")
    parser.add_argument("--faces-dir", type=Path, help="folder of face photos (the first --faces - 1 with a face)")
    parser.add_argument("--faces", type=int, default=32, help="distinct faces, the bundled example included")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per batch")
    parser.add_argument("--skip-sequential", action="store_true", help="no exactness check (faster)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this arm here, print JSON
    args = parser.parse_args()
    if args.faces_dir is not None and not args.faces_dir.is_dir():
        parser.error(f"--faces-dir {args.faces_dir}: not a folder")
    arms = args.arm or ["default:fp32:exact"]
    for arm in arms:
        parts = arm.split(":")
        if len(parts) != 3 or parts[1] not in ("fp32", "bf16") or parts[2] not in ("exact", "one-pass"):
            parser.error(f"--arm {arm}: expected MODEL:fp32|bf16:exact|one-pass")
    if args.one:
        print(json.dumps(measure(args.one, args.faces_dir, args.faces, args.batch_size, not args.skip_sequential)))
        return
    import torch

    print(f"cpu threads {torch.get_num_threads()}; torch {torch.__version__}; {args.faces} faces; batch "
          f"{args.batch_size}; arms measured one after the other, each in its own process")
    results = []
    for arm in arms:
        command = [sys.executable, __file__, "--one", arm, "--faces", str(args.faces), "--batch-size",
                   str(args.batch_size)] + (["--faces-dir", str(args.faces_dir)] if args.faces_dir else []) + \
            (["--skip-sequential"] if args.skip_sequential else [])
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            print(f"arm {arm} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            sys.exit(1)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {arm}: done ({results[-1]['template']})", flush=True)
    report(results)


if __name__ == "__main__":
    main()
