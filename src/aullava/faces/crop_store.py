"""Building one entry of the crop cache (`aullava.faces.crop_cache`): detect, keep the largest face, write its
crop, metadata and landmarks, each file atomically and the PNG last; and the pool process that does it for a
parallel build.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aullava.faces.detector import Face, FaceDetector, largest_face
from aullava.faces.images import InputError, load_image
from aullava.faces.video import frame_name, read_frames
from aullava.runtime.files import atomic_write

ALIGN_VERSION = 1
"""Bump when `aullava.faces.detector` changes how crops are made in a way the template constants in the key do not
capture (landmark model, warping, face choice): every cached crop is then rebuilt."""
TEMP_DIR = ".tmp"


@dataclass(frozen=True)
class CropSettings:
    root: str
    crop_size: int
    min_confidence: float
    max_side: int | None
    landmarks: bool


def write_entry_file(path: Path, data: bytes) -> None:
    """Entries (``root/ab/name``) go through a temp file in ``root/.tmp``."""
    atomic_write(path, data, temp_dir=path.parent.parent / TEMP_DIR)


def entry_path(root: str | Path, key: str, suffix: str) -> Path:
    return Path(root) / key[:2] / f"{key}{suffix}"


def store_crop(settings: CropSettings, key: str, name: str, image: np.ndarray, detector: FaceDetector) -> str | None:
    """Detect, keep the largest face, write the entry. Returns None on success, else the reason for failing.

    The largest face is kept because in AU data the subject faces the camera close up; smaller faces are bystanders,
    reflections or pictures in the background, and `FaceDetector` orders faces by position, not importance.
    """
    try:
        faces = detector.detect(image)
    except Exception as err:  # noqa: BLE001 - one odd frame must not stop the build
        return f"face detection failed ({type(err).__name__}: {' '.join(str(err).split())})"
    if not faces:
        return "no face found"
    face: Face = largest_face(faces)
    png = entry_path(settings.root, key, ".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "source": name, "crop_size": settings.crop_size, "image_size": [int(image.shape[1]), int(image.shape[0])],
        "faces": len(faces), "box": [round(float(v), 3) for v in face.box],
        "matrix": [[float(v) for v in row] for row in face.matrix], "blendshapes": face.blendshapes,
        "align_version": ALIGN_VERSION,
    }
    if settings.landmarks:
        buf = io.BytesIO()
        np.save(buf, face.landmarks.astype(np.float32), allow_pickle=False)
        write_entry_file(png.with_suffix(".npy"), buf.getvalue())
    write_entry_file(png.with_suffix(".json"), json.dumps(meta).encode())
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR))
    if not ok:
        return "could not encode the crop as PNG"
    write_entry_file(png, encoded.tobytes())  # last: the PNG marks the entry complete
    return None


def run_task(settings: CropSettings, task: tuple, detector: FaceDetector) -> list[tuple[str, str, str | None]]:
    """One image, or a chunk of one video's frames; returns ``[(key, source name, failure reason or None)]``."""
    path, items = task  # items: [(frame index or None, key)]
    if items[0][0] is None:
        key = items[0][1]
        try:
            image = load_image(path, max_side=settings.max_side)
        except InputError as err:
            return [(key, path, err.reason)]
        return [(key, path, store_crop(settings, key, path, image, detector))]
    keys = dict(items)
    results = []
    for index, frame in read_frames(path, keys):
        name = frame_name(path, index)
        if isinstance(frame, InputError):
            results.append((keys[index], name, frame.reason))
        else:
            results.append((keys[index], name, store_crop(settings, keys[index], name, frame, detector)))
    return results


# A pool process's settings and detector: set by `start_worker` in that process only, reused for every task
_worker: tuple[CropSettings, FaceDetector] | None = None


def _exit_with_parent(parent: int) -> None:
    """Pool workers block on their task queue forever if the main process is killed (SIGKILL, OOM killer), which
    is exactly the interruption `build` is meant to survive; so each worker leaves when its parent is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def start_worker(settings: CropSettings, parent: int) -> None:
    global _worker
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    cv2.setNumThreads(1)  # the parallelism is across processes; OpenCV's own threads would only oversubscribe
    _worker = (settings, FaceDetector(crop_size=settings.crop_size, min_confidence=settings.min_confidence))


def worker_task(task: tuple) -> list[tuple[str, str, str | None]]:
    settings, detector = _worker
    return run_task(settings, task, detector)
