"""Answers of the shipped default model recorded before a change that must not alter them (the restructure, a
faster decoder): the raw answer texts and parsed vectors of every face, all three formats, on the bundled example
face and on 20 photos of the shared face collection (file names relative to it; never the photos or crops).

Reuse: `load_recording()` gives the recorded dict; `answers_of(predictor, files)` gives the same structure for the
code under test, so a test compares the two with `==` (texts exactly, values exactly: they parse from the texts).

The "v2-3k" recording is the default model of 2026-12-03 to 2026-12-05 (prompt template v2, kept in
models/default-model-v2-3k), recorded while it was shipped: old checkpoints keep loading and answering as they did.
The "default" recording was re-made on 2026-12-06 when v5 (prompt template v3) became the default model.

Regenerate only on purpose (that model or its prompt changed):
    .venv/bin/python tests/recorded_answers.py --write [default]
"""

from __future__ import annotations

import csv
import json
import os
import sys
from importlib.resources import files
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDINGS = {  # name → (model directory, None for the shipped default; its recording)
    "default": (None, Path(__file__).parent / "data" / "default_model_answers.json"),
    # the default model of 2026-12-03 to 2026-12-05 (prompt template v2), recorded while it was shipped
    "v2-3k": (str(REPO / "models" / "default-model-v2-3k"), Path(__file__).parent / "data" / "v2_3k_model_answers.json"),
}
FACES_DIR = Path(os.environ.get("AULLAVA_SHARED_FACES", "/work/shared/faces"))
NUM_PHOTOS = 20
BATCH_SIZE = 8  # rows per decoding batch when recorded; the comparison uses the same
PRECISION = "fp32"  # recorded and compared in fp32: "auto" would depend on the machine's CPU
EXAMPLE = "astronaut.png"


def example_path() -> Path:
    return Path(str(files("aullava").joinpath("resources", "examples", EXAMPLE)))


def load_recording(name: str = "default") -> dict:
    """{'formats': [...], 'example': {file: faces}, 'photos': {relative file: faces}}, faces as `answers_of`."""
    return json.loads(RECORDINGS[name][1].read_text())


def answers_of(predictor, paths: list[Path], names: list[str]) -> dict[str, list[dict]]:
    """name → one entry per face: index, box (rounded to 0.01 px), and per format the raw text and the vector."""
    results = predictor.predict(paths, formats=["binary", "discrete", "continuous"])
    out = {}
    for name, result in zip(names, results):
        out[name] = [{"face": face.face, "box": [round(v, 2) for v in face.box],
                      "texts": dict(face.texts),
                      "values": {fmt: [float(v) for v in vector] for fmt, vector in face.values.items()}}
                     for face in result.faces]
        if result.error is not None:
            out[name] = [{"error": result.error.replace(str(paths[names.index(name)]), name)}]
    return out


def _pick_photos(detector, count: int) -> list[str]:
    """The first `count` photos of index.csv in which the detector finds a face (deterministic)."""
    from aullava.faces.images import load_image

    picked = []
    with open(FACES_DIR / "index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if detector.detect(load_image(FACES_DIR / row["image"])):
                picked.append(row["image"])
            if len(picked) == count:
                break
    return picked


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--write" or len(argv) > 2 or (argv[1:] and argv[1] not in RECORDINGS):
        print(__doc__)
        return 2
    from aullava.inference import Predictor

    model, recording_path = RECORDINGS[argv[1] if len(argv) > 1 else "default"]
    predictor = Predictor(model, batch_size=BATCH_SIZE, device="cpu", precision=PRECISION)
    photos = _pick_photos(predictor.detector, NUM_PHOTOS)
    recording = {
        "formats": ["binary", "discrete", "continuous"],
        "batch_size": BATCH_SIZE,
        "example": answers_of(predictor, [example_path()], [EXAMPLE]),
        "photos": answers_of(predictor, [FACES_DIR / p for p in photos], photos),
    }
    recording_path.parent.mkdir(parents=True, exist_ok=True)
    recording_path.write_text(json.dumps(recording, indent=1) + "\n")
    print(f"wrote {recording_path}: example + {len(photos)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
