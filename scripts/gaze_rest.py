"""Measures where the iris centre rests relative to the eye corners (in eye widths of the head frame) on photos of
people posing for a camera, the constant `aullava.faces.gaze.REST_OFFSET` removes.

    .venv/bin/python scripts/gaze_rest.py ../shared/faces/index.csv --faces 300

Prints the median and quartiles of the offsets of both eyes over the photos' faces, and of the gaze angles with
the offset in place (their median should then be near 0, 0: most people in such photos look at the camera).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from aullava.faces import gaze
from aullava.faces.detector import FaceDetector
from aullava.faces.images import load_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="a CSV with an `image` column (paths relative to it)")
    parser.add_argument("--faces", type=int, default=300, help="photos to read, spread over the index")
    args = parser.parse_args()
    index = pd.read_csv(args.index)
    rows = index.iloc[np.linspace(0, len(index) - 1, min(args.faces, len(index))).astype(int)]
    found, angles = [], []
    with FaceDetector() as detector:
        for name in rows["image"]:
            faces = detector.detect(load_image(args.index.parent / name))
            if faces and abs(faces[0].pose[1]) < 20 and abs(faces[0].pose[0]) < 20:
                found.append(gaze.iris_offsets(faces[0].landmarks, gaze.rotation_from_pose(*faces[0].pose)))
                angles.append(gaze.gaze_angles(faces[0].landmarks, faces[0].pose))
    both = np.concatenate(found)
    q = np.percentile(both, [25, 50, 75], axis=0)
    print(f"{len(found)} faces with |pitch|, |yaw| < 20°; iris offset (x, y) in eye widths, head frame "
          f"(x to the subject's left, y up): median {q[1].round(4).tolist()}, quartiles {q[0].round(4).tolist()} "
          f"… {q[2].round(4).tolist()}")
    a = np.degrees(np.asarray(angles))
    print(f"gaze angles with REST_OFFSET={gaze.REST_OFFSET} (degrees): median {np.median(a, axis=0).round(2).tolist()}")


if __name__ == "__main__":
    main()
