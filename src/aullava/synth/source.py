"""One source photo → its synthetic images: detect, check, warp `per_image` times, align, write (steps 1-3 of
`aullava.synth.run`'s pipeline for one photo), and the worker that does it in this process or a spawned one.

Every random draw depends only on (seed, photo, k) (`sample_rng`, `donor_rng`), and output names only on (photo, k),
so a run's outputs do not depend on the order, count or parallelism of the photos it reads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aullava.aus.catalogue import normalize_au_id
from aullava.runtime.files import atomic_write
from aullava.synth.baselines import combine
from aullava.synth.mesh_model import default_model
from aullava.synth.mouth import INNER_LIP, MIN_OPENING, MouthBank, mouth_opening, paint_mouth
from aullava.synth.sampling import head_pose_problem, neutral_check, sample_aus, subject_face
from aullava.synth.warp import warp_face

WORK_SCALE = 2
"""Photos whose face is larger than WORK_SCALE × its size in the output crop are reduced to that before warping
(area averaging): the warp's cost grows with the face's pixel count, and the crop is reduced afterwards anyway.
Smaller faces are warped at their own resolution, so warp and alignment resample them once each."""


def stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def sample_rng(seed: int, source: str, k: int) -> np.random.Generator:
    """The generator for sample ``k`` of ``source``: depends on nothing else, so outputs and labels are the same
    whatever the order, ``limit``, ``workers`` or ``per_image`` of a run (sample k exists or not, it never changes)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, stable_int("aullava-synth", source), k])


def output_name(source: str, k: int, ext: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem)[:80] or "image"
    return f"{stem}-{stable_int(source) % 16 ** 6:06x}_{k:02d}.{ext}"


def safe_dir(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))[:80] or "_"


@dataclass
class SourceSettings:
    out_dir: str
    per_image: int
    seed: int
    crop_size: int
    au_ids: tuple[str, ...]
    gain: float
    ext: str
    thresholds: dict[str, float] | None
    held: frozenset[str] = frozenset()
    """the held-out identities: their warps take mouth interiors from held-out donors only"""
    baseline: Callable[[Mapping[str, float]], Mapping[str, float]] | None = None
    """blendshapes → AU intensities (NaN: unseen) of a source that is not neutral; None: such sources are skipped"""


def write_image(path: Path, image: np.ndarray, ext: str) -> None:
    """Write atomically: a killed run leaves a complete file or none, so 'exists' can mean 'done'."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{ext}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.tobytes())


def donor_rng(seed: int, source: str, k: int) -> np.random.Generator:
    """Draws sample k's mouth donor; separate from `sample_rng`, so the labels are those of a set without."""
    return np.random.default_rng([seed & 0xFFFFFFFF, stable_int("aullava-mouth", source), k])


def synthesize_source(detector, settings: SourceSettings, source: str, path: str, identity: str,
                       mouths: MouthBank | None = None) -> tuple[list[dict], str | None, dict | None]:
    """Detect, check and warp one photo; returns (records of the images written, skip reason or None, the
    source's baseline: None when it is neutral, see `aullava.synth.baselines`).
    With ``mouths``, warps that part the lips get a real mouth interior (`aullava.synth.mouth`)."""
    from aullava.faces.detector import EYE_DISTANCE, align_face

    image, face, eye_distance, reason = subject_face(detector, path)
    if reason is not None:
        return [], reason, None
    lm = np.asarray(face.landmarks, dtype=np.float64)
    baseline = None
    if settings.thresholds is not None:
        ok, why = neutral_check(face.blendshapes, settings.thresholds)
        if not ok:
            if settings.baseline is None:
                return [], f"not neutral: {why}", None
            # rounded as sources.csv stores it, so a resumed run rebuilds the very same labels
            labels = settings.baseline(face.blendshapes)
            baseline = {normalize_au_id(k): round(float(v), 3) for k, v in labels.items()}
    model = default_model()
    reason = head_pose_problem(lm, model)
    if reason is not None:
        return [], reason, None
    # Warp in photo coordinates, not in the aligned crop: the photo's own border then stays fixed (the warp's ring
    # lies on it), whereas in a crop the black area outside the photo would be warped along and e.g. a dropped jaw
    # would bend the photo's bottom edge — a label-correlated artefact a model could learn instead of the face.
    # Large faces are first reduced to WORK_SCALE × the output resolution, which bounds the cost per warp.
    factor = min(1.0, WORK_SCALE * EYE_DISTANCE * settings.crop_size / eye_distance)
    if factor < 1.0:
        h, w = image.shape[:2]
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        factor_x, factor_y = size[0] / w, size[1] / h
        lm = lm * [factor_x, factor_y, factor_x]
    records = []
    out_dir = Path(settings.out_dir)
    source_opening = mouth_opening(lm[list(INNER_LIP)])
    for k in range(settings.per_image):
        aus = sample_aus(sample_rng(settings.seed, source, k), settings.au_ids)
        rel = Path("images") / safe_dir(identity) / output_name(source, k, settings.ext)
        result = warp_face(image, lm, aus, model, gain=settings.gain)
        warped = result.image
        if mouths is not None:
            inner = result.target[list(INNER_LIP)]
            opening = mouth_opening(inner)
            if opening >= MIN_OPENING and opening > source_opening + 0.02:  # the warp parted the lips
                donor = mouths.pick(donor_rng(settings.seed, source, k), opening, identity in settings.held)
                if donor is not None:
                    warped = paint_mouth(warped, inner, donor)
        out, _ = align_face(warped, lm, settings.crop_size)  # aligned on the *source* landmarks
        write_image(out_dir / rel, out, settings.ext)
        records.append({"image": rel.as_posix(), "subject": identity, "source": source,
                        "aus": combine(aus, baseline, settings.au_ids)})
    return records, None, baseline


class SourceWorker:
    """Synthesises photos one after another with one MediaPipe detector; a failure of one photo is its skip
    reason, never the end of the run."""

    def __init__(self, settings: SourceSettings, mouths: MouthBank | None = None):
        from aullava.faces.detector import FaceDetector

        self.settings, self.mouths = settings, mouths
        self.detector = FaceDetector(crop_size=settings.crop_size)

    def __call__(self, task: tuple[str, str, str]) -> tuple[str, list[dict], str | None, dict | None]:
        source, path, identity = task
        try:
            records, reason, baseline = synthesize_source(self.detector, self.settings, source, path, identity,
                                                          self.mouths)
        except Exception as exc:  # noqa: BLE001 - one bad photo must not end a long run
            records, reason, baseline = [], f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", None
        return source, records, reason, baseline

    def close(self) -> None:
        self.detector.close()


# A spawned pool process's worker: set by `start_process_worker` in that process only (a pool's `map` can call a
# module function, not a bound method holding a detector that cannot be pickled).
_process_worker: SourceWorker | None = None


def start_process_worker(settings: SourceSettings, mouths: MouthBank | None = None) -> None:
    """A `ProcessPoolExecutor` initializer: this process's `SourceWorker`."""
    global _process_worker
    _process_worker = SourceWorker(settings, mouths)


def process_worker_task(task: tuple[str, str, str]) -> tuple[str, list[dict], str | None, dict | None]:
    """One photo in a pool process started with `start_process_worker`."""
    return _process_worker(task)
