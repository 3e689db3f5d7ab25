"""AU-controlled synthetic faces with exact labels: warp a real photo into the same face showing chosen Action Units.

Why: AU datasets are small, lab-recorded and strongly imbalanced (few subjects, AU combinations tied to the tasks
they were filmed in). Warping many in-the-wild identities into *chosen* AU combinations gives balanced, fully
labelled extra training data whose labels are known by construction — exactly for the face geometry, relative to a
neutral start. Appearance cues that a warp cannot create (wrinkles, furrows, bulges, teeth) are absent, which is
why this data is meant to supplement real AU data, not replace it.

Pipeline (one synthetic image):

1. **AU → mesh** and 2. **model → photo**: `aullava.synth.mesh_model` (py-feat's PLS model, regional masks, a 3-D
   similarity to the photo's landmarks);
3. **warp**: `aullava.synth.warp` (piecewise-affine warp of the face region).

Known limits: opening the mouth (AU25/26) stretches the lips' skin over the gap — no teeth, no dark mouth
interior; wrinkles and furrows (AU1/2 forehead lines, AU4 glabella, AU9 nose wrinkles, AU6 crow's feet) and
skin bulges are not created: only the geometry carries the label; glasses and hair over the brows move with the
skin; MediaPipe's landmark placement limits precision (a poorly fitted mesh warps the wrong pixels). Labels are
exact for the *added* movement, so sources are restricted to near-neutral, roughly frontal photos
(`neutral_check`, `MAX_YAW`, `MAX_PITCH`).

`run_synth` builds a dataset from a photo index (see its docstring); `sample_aus` draws plausible AU combinations.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aullava.au_catalogue import au_set, normalize_au_id
from aullava.synth.mesh_model import (_EYE_CORNERS, AU_REGIONS, MODEL_FILE, AUMeshModel, default_model, face_pose,
                                fit_similarity, map_displacement)
from aullava.synth.warp import SynthResult, remove_folds, warp_face, warp_image

__all__ = [
    "AU_REGIONS",
    "AUMeshModel",
    "CONFLICTS",
    "DEFAULT_SYNTH_AUS",
    "NEUTRAL_THRESHOLDS",
    "PATTERNS",
    "SynthResult",
    "default_model",
    "face_pose",
    "fit_similarity",
    "map_displacement",
    "neutral_check",
    "remove_folds",
    "run_synth",
    "sample_aus",
    "split_identities",
    "warp_face",
    "warp_image",
]

DEFAULT_SYNTH_AUS: tuple[str, ...] = tuple(au_set("default").ids)


# ------------------------------------------------------------------------------------------------ neutral sources

NEUTRAL_THRESHOLDS: dict[str, float] = {
    "mouthSmile": 0.30,  # AU12 (max of the Left/Right scores)
    "jawOpen": 0.20,  # AU26/27
    "mouthLowerDown": 0.40,  # AU25 (lower lip pulled down, lips parted)
    "browInnerUp": 0.30,  # AU1
    "browOuterUp": 0.30,  # AU2
    "browDown": 0.50,  # AU4 (MediaPipe gives neutral faces 0.1–0.35 here)
    "mouthFrown": 0.20,  # AU15
    "mouthPress": 0.30,  # AU24
    "mouthShrugLower": 0.30,  # AU17
    "mouthUpperUp": 0.30,  # AU10
    "mouthPucker": 0.30,  # AU18/AU23-like
    "mouthStretch": 0.35,  # AU20
    "mouthRoll": 0.35,  # AU28 (max of Lower/Upper)
    "mouthDimple": 0.25,  # AU14
    "eyeSquint": 0.75,  # AU6/AU7 (high baseline: median 0.45 on neutral-looking faces)
    "eyeBlink": 0.50,  # AU43/45: a warp cannot open closed eyes
    "eyeWide": 0.30,  # AU5
}
"""Largest MediaPipe blendshape score a source photo may show, per blendshape family (``Left``/``Right`` and
``Lower``/``Upper`` variants count by their maximum). A photo passes when every family stays below its threshold:
at most a trace of any expression, so the labels — the AUs the warp *adds* — describe the output's expression.
Chosen on 300 random photos of the shared 4,000-photo LFW/IMFDB set: 14 had no detectable face, 6 too small a face,
221 failed this check (most often mouthSmile 80, mouthLowerDown 49, browOuterUp 49, jawOpen 47, browDown 45), 1 the
pose limits; 58 (19 %) passed everything, so ~770 of the 4,000 photos are usable sources.
``noseSneer`` and ``cheekSquint`` are not used: this MediaPipe model returns ~0 for them on every face."""
MAX_YAW = 30.0
MAX_PITCH = 25.0
"""Head-pose limits (degrees, `face_pose`) for sources: beyond them the far half of the face is foreshortened or
hidden, and the warp (a similarity-mapped frontal displacement) stretches what is left."""
MIN_EYE_DISTANCE = 40.0
"""Smallest eye-centre distance (pixels) of a usable source: smaller faces would be upsampled >1.5× into a 224
crop (eye distance 60 px there), and the movements would be a few blurry pixels."""


def _family_score(blendshapes: Mapping[str, float], family: str) -> float:
    names = [family] + [family + side for side in ("Left", "Right", "Lower", "Upper")]
    values = [float(blendshapes[n]) for n in names if n in blendshapes]
    return max(values) if values else 0.0


def neutral_check(blendshapes: Mapping[str, float], thresholds: Mapping[str, float] | None = None
                  ) -> tuple[bool, str]:
    """``(True, "")`` when a face's MediaPipe blendshapes are all below `NEUTRAL_THRESHOLDS` (or ``thresholds``),
    else ``(False, reason)`` naming every family over its limit, e.g. ``"mouthSmile 0.62 >= 0.30"``."""
    thresholds = NEUTRAL_THRESHOLDS if thresholds is None else thresholds
    over = []
    for family, limit in thresholds.items():
        score = _family_score(blendshapes, family)
        if score >= limit:
            over.append(f"{family} {score:.2f} >= {limit:.2f}")
    return (not over), "; ".join(over)


# ------------------------------------------------------------------------------------------------------ sampling

NEUTRAL_SHARE = 0.15
"""Share of samples with no AU at all: the model must also learn to answer 'all absent' (and to ignore the warp's
own smoothing), and real data is dominated by near-neutral frames."""
TWO_PATTERN_SHARE = 0.3
"""Share of expressive samples combining two patterns (e.g. a smile with raised brows) instead of one."""

# name, weight, core AUs (all present, intensities within ±1 level of a common level), optional AUs → probability
PATTERNS: tuple[tuple[str, float, tuple[str, ...], dict[str, float]], ...] = (
    ("smile", 3.0, ("AU6", "AU12"), {"AU25": 0.4, "AU26": 0.15, "AU10": 0.1}),  # Duchenne smile
    ("social smile", 1.0, ("AU12",), {"AU25": 0.3, "AU14": 0.15}),
    ("brow raise", 2.0, ("AU1", "AU2"), {"AU25": 0.25, "AU26": 0.2}),  # surprise when the mouth opens too
    ("inner brow raise", 1.0, ("AU1",), {"AU4": 0.35}),  # the oblique 'sad' brow with AU4
    ("frown", 2.0, ("AU4", "AU7"), {"AU23": 0.25, "AU24": 0.25, "AU17": 0.2}),  # anger
    ("disgust", 2.0, ("AU9", "AU10"), {"AU4": 0.3, "AU17": 0.2, "AU25": 0.3}),
    ("sadness", 2.0, ("AU15", "AU17"), {"AU1": 0.4, "AU4": 0.3}),
    ("lip press", 1.5, ("AU23", "AU24"), {"AU17": 0.3}),
    ("mouth open", 1.5, ("AU25",), {"AU26": 0.6}),
    ("dimpler", 1.0, ("AU14",), {"AU17": 0.2}),
    ("single AU", 3.0, (), {}),  # one AU of the set, uniformly: every AU also appears alone
)
"""Co-occurrence patterns `sample_aus` draws from (prototypical FACS combinations of the basic emotions and common
conversational movements)."""

CONFLICTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AU24", ("AU25", "AU26")),  # lips pressed together vs. lips parted / jaw dropped
    ("AU12", ("AU15",)),  # lip corners pulled up vs. pulled down (antagonists)
    ("AU17", ("AU26",)),  # chin raiser pushes the lower lip up vs. jaw drop
)
"""Anatomically conflicting AUs: when both sides are drawn, the weaker side is removed (ties: the first)."""


def _level_value(rng: np.random.Generator, level: int) -> float:
    """A continuous intensity whose discrete label (round-half-up of 5x) is ``level`` (1..5); level 1 starts at
    0.10, the presence threshold. Rounded to 3 decimals so the stored label is exactly what was warped."""
    lo = max(0.10, (level - 0.5) / 5.0)
    hi = min(1.0, (level + 0.5) / 5.0)
    value = round(float(rng.uniform(lo, hi)), 3)
    return min(max(value, lo), 1.0) if level < 5 else min(max(value, 0.9), 1.0)


def sample_aus(rng: np.random.Generator, au_ids: Iterable[str | int] = DEFAULT_SYNTH_AUS) -> dict[str, float]:
    """One plausible AU combination: ``{AU id: intensity in [0, 1]}`` for every id of ``au_ids`` (canonical ids).

    Rules: with probability `NEUTRAL_SHARE` all AUs are 0; otherwise one pattern of `PATTERNS` is drawn (two with
    probability `TWO_PATTERN_SHARE`), by weight, among those with a core AU in the set. A pattern picks a common
    discrete level L uniformly from 1..5; each core AU gets L±1 (clipped to 1..5), each optional AU (with its
    probability) a level from 1..L; the intensity is uniform within the level's bin, so present values are ≥ 0.10
    and all five discrete levels are equally common, while AUs not drawn are exactly 0. AU26 implies AU25 (a
    dropped jaw parts the lips), and `CONFLICTS` are resolved by dropping the weaker side. Labels follow the
    project's rules: discrete = round-half-up(5x), present = x ≥ 0.10.
    """
    ids = [normalize_au_id(a) for a in au_ids]
    allowed = set(default_model().au_ids)
    missing = [a for a in ids if a not in allowed]
    if missing:
        raise ValueError(f"the AU→mesh model cannot synthesise {', '.join(missing)} (it has {sorted(allowed)})")
    values = {a: 0.0 for a in ids}
    if not ids or rng.random() < NEUTRAL_SHARE:
        return values
    usable = [p for p in PATTERNS if not p[2] or any(a in values for a in p[2])]
    weights = np.array([p[1] for p in usable])
    count = 2 if (rng.random() < TWO_PATTERN_SHARE and len(usable) > 1) else 1
    chosen = rng.choice(len(usable), size=count, replace=False, p=weights / weights.sum())
    for i in sorted(chosen):
        _, _, core, optional = usable[i]
        level = int(rng.integers(1, 6))
        if not core:  # "single AU"
            core = (ids[int(rng.integers(len(ids)))],)
        for au in core:
            if au in values:
                lv = int(np.clip(level + rng.integers(-1, 2), 1, 5))
                values[au] = max(values[au], _level_value(rng, lv))
        for au, prob in optional.items():
            if rng.random() < prob and au in values:
                values[au] = max(values[au], _level_value(rng, int(rng.integers(1, level + 1))))
    if values.get("AU26", 0.0) >= 0.10 and "AU25" in values and values["AU25"] < 0.10:
        values["AU25"] = _level_value(rng, int(rng.integers(1, 6)))
    for au, others in CONFLICTS:
        if values.get(au, 0.0) <= 0.0:
            continue
        rivals = [o for o in others if values.get(o, 0.0) > 0.0]
        if not rivals:
            continue
        if values[au] >= max(values[o] for o in rivals):
            for o in rivals:
                values[o] = 0.0
        else:
            values[au] = 0.0
    return values


# ------------------------------------------------------------------------------------------------------- dataset

CONFIG_FILE = "synth_config.json"
SKIPPED_FILE = "skipped.csv"
WORK_SCALE = 2
"""Photos whose face is larger than WORK_SCALE × its size in the output crop are reduced to that before warping
(area averaging): the warp's cost grows with the face's pixel count, and the crop is reduced afterwards anyway.
Smaller faces are warped at their own resolution, so warp and alignment resample them once each."""


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def _sample_rng(seed: int, source: str, k: int) -> np.random.Generator:
    """The generator for sample ``k`` of ``source``: depends on nothing else, so outputs and labels are the same
    whatever the order, ``limit``, ``workers`` or ``per_image`` of a run (sample k exists or not, it never changes)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, _stable_int("aullava-synth", source), k])


def _output_name(source: str, k: int, ext: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem)[:80] or "image"
    return f"{stem}-{_stable_int(source) % 16 ** 6:06x}_{k:02d}.{ext}"


def _safe_dir(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))[:80] or "_"


def split_identities(identities: Iterable[str], held_out: float, seed: int = 0) -> set[str]:
    """The held-out identities: the ``round(held_out × n)`` identities (at least 1 and at most n−1 when n ≥ 2 and
    0 < held_out < 1) ranked first by a seeded hash of their name. Hash ranks, not a shuffle, so an identity's side
    does not depend on the order of the index, only (through the count) on how many identities there are."""
    ids = sorted(set(map(str, identities)))
    n = len(ids)
    if not 0.0 <= held_out <= 1.0:
        raise ValueError(f"held_out must be in [0, 1], got {held_out}")
    count = int(round(held_out * n))
    if n >= 2 and 0.0 < held_out < 1.0:
        count = min(max(count, 1), n - 1)
    ranked = sorted(ids, key=lambda i: (_stable_int("aullava-split", seed, i), i))
    return set(ranked[:count])


@dataclass
class _Settings:
    out_dir: str
    per_image: int
    seed: int
    crop_size: int
    au_ids: tuple[str, ...]
    gain: float
    ext: str
    thresholds: dict[str, float] | None


def _write_image(path: Path, image: np.ndarray, ext: str) -> None:
    """Write atomically: a killed run leaves a complete file or none, so 'exists' can mean 'done'."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{ext}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _synthesize_source(detector, settings: _Settings, source: str, path: str, identity: str
                       ) -> tuple[list[dict], str | None]:
    """Detect, check and warp one photo; returns (records of the images written, skip reason or None)."""
    from aullava.faces.detector import EYE_DISTANCE, align_face
    from aullava.faces.images import load_image

    try:
        image = load_image(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a skip, never fatal
        return [], f"unreadable: {' '.join(str(exc).split())}"
    faces = detector.detect(image)
    if not faces:
        return [], "no face"
    face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))  # the photo's subject
    lm = np.asarray(face.landmarks, dtype=np.float64)
    eye_distance = float(np.linalg.norm(lm[list(_EYE_CORNERS[0])].mean(0) - lm[list(_EYE_CORNERS[1])].mean(0)))
    if eye_distance < MIN_EYE_DISTANCE:
        return [], f"face too small: eye distance {eye_distance:.0f} px < {MIN_EYE_DISTANCE:.0f}"
    if settings.thresholds is not None:
        ok, why = neutral_check(face.blendshapes, settings.thresholds)
        if not ok:
            return [], f"not neutral: {why}"
    model = default_model()
    yaw, pitch, _ = face_pose(lm, model)
    if abs(yaw) > MAX_YAW or abs(pitch) > MAX_PITCH:
        return [], f"head pose: yaw {yaw:.0f}, pitch {pitch:.0f} degrees (limits {MAX_YAW:.0f}, {MAX_PITCH:.0f})"
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
    for k in range(settings.per_image):
        aus = sample_aus(_sample_rng(settings.seed, source, k), settings.au_ids)
        rel = Path("images") / _safe_dir(identity) / _output_name(source, k, settings.ext)
        result = warp_face(image, lm, aus, model, gain=settings.gain)
        out, _ = align_face(result.image, lm, settings.crop_size)  # aligned on the *source* landmarks
        _write_image(out_dir / rel, out, settings.ext)
        records.append({"image": rel.as_posix(), "subject": identity, "aus": aus, "source": source})
    return records, None


_WORKER: tuple | None = None


def _init_worker(settings: _Settings) -> None:
    global _WORKER
    from aullava.faces.detector import FaceDetector

    _WORKER = (settings, FaceDetector(crop_size=settings.crop_size))


def _worker_task(task: tuple[str, str, str]) -> tuple[str, list[dict], str | None]:
    settings, detector = _WORKER
    source, path, identity = task
    try:
        records, reason = _synthesize_source(detector, settings, source, path, identity)
    except Exception as exc:  # noqa: BLE001 - one bad photo must not end a long run
        records, reason = [], f"error: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return source, records, reason


def _read_index(index_csv: Path) -> list[tuple[str, str, str]]:
    """(source as written in the index, resolved path, identity) per row."""
    with open(index_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
        if "image" not in fields or not ({"identity", "subject"} & fields.keys()):
            raise ValueError(f"{index_csv}: needs columns 'image' and 'identity' (or 'subject'), "
                             f"got {reader.fieldnames}")
        id_col = fields.get("identity", fields.get("subject"))
        rows = []
        for n, row in enumerate(reader, start=2):
            image, identity = (row.get(fields["image"]) or "").strip(), (row.get(id_col) or "").strip()
            if not image or not identity:
                raise ValueError(f"{index_csv} line {n}: empty image or identity")
            p = Path(image)
            rows.append((image, str(p if p.is_absolute() else index_csv.parent / p), identity))
    seen = set()
    unique = []
    for row in rows:  # a photo listed twice is synthesised once
        if row[0] not in seen:
            seen.add(row[0])
            unique.append(row)
    return unique


def _read_skipped(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["source"]: row["reason"] for row in csv.DictReader(fh)}


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence[object]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _format_value(x: float) -> str:
    return "0" if x == 0 else f"{x:.3f}".rstrip("0").rstrip(".")


def run_synth(index_csv: str | os.PathLike, out_dir: str | os.PathLike, per_image: int = 4, held_out: float = 0.2,
              seed: int = 0, limit: int | None = None, crop_size: int = 224, workers: int = 1,
              progress: bool = True, *, au_ids: Iterable[str | int] | str = "default", gain: float = 1.0,
              image_format: str = "jpg", neutral_thresholds: Mapping[str, float] | None = NEUTRAL_THRESHOLDS,
              retry_skipped: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Build a synthetic AU dataset from the photos of ``index_csv`` into ``out_dir``; returns a summary dict.

    ``index_csv``: columns ``image`` (path relative to the CSV's folder, or absolute) and ``identity`` (or
    ``subject``). The first ``limit`` rows (index order) are used. Each usable photo — a face is found, its eye
    distance is ≥ `MIN_EYE_DISTANCE`, it passes `neutral_check` (``neutral_thresholds=None`` disables the check)
    and the head pose is within `MAX_YAW`/`MAX_PITCH` — yields ``per_image`` aligned ``crop_size`` crops, each
    warped to a `sample_aus` combination of ``au_ids`` (an AU set name, or ids) at ``gain``.

    Writes, under ``out_dir``:

    - ``images/<identity>/<stem>-<hash>_<k>.jpg`` (JPEG quality 95; ``image_format="png"`` for lossless);
    - ``train.csv`` and ``held_out.csv``: the project's manifest format — ``image`` (relative to ``out_dir``),
      ``subject`` (the identity), one continuous column per AU (``AU01``, ``AU02``, … in [0, 1]; read them with
      `aullava.datasets.read_manifest`, which derives the 0–5 and 0/1 labels), and ``source`` (the photo, as
      written in the index; the reader notes and ignores it). The split is by identity (`split_identities`,
      seeded); no identity is on both sides;
    - ``skipped.csv``: ``source, identity, reason`` for every photo that gave nothing (unreadable, no face, too
      small, not neutral, head pose, error), never fatal;
    - ``synth_config.json``: the settings that determine images and labels. A second run into the same folder must
      use the same ones (else ValueError: mixing them would mislabel images).

    Resumable and deterministic: sample k of a photo depends only on (seed, photo, k); a photo whose images all
    exist is not opened again (its labels are re-drawn, identically), one listed in ``skipped.csv`` is not retried
    unless ``retry_skipped``. Images are written atomically, manifests rewritten at the end of every run.
    ``workers`` > 1 runs photos in that many processes (each with its own MediaPipe detector).
    """
    import time

    from tqdm import tqdm

    global _WORKER
    start = time.time()
    index_csv, out = Path(index_csv), Path(out_dir)
    if per_image < 1 or crop_size < 32 or workers < 1:
        raise ValueError("per_image and workers must be >= 1 and crop_size >= 32")
    ext = {"jpg": "jpg", "jpeg": "jpg", "png": "png"}.get(image_format.lower().lstrip("."))
    if ext is None:
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    aus = au_set(au_ids)
    ids = tuple(normalize_au_id(a) for a in aus.ids)
    sample_aus(np.random.default_rng(0), ids)  # fails early if the model lacks one of the AUs
    columns = aus.openface_columns("")
    thresholds = None if neutral_thresholds is None else {k: float(v) for k, v in neutral_thresholds.items()}
    settings = _Settings(str(out), int(per_image), int(seed), int(crop_size), ids, float(gain), ext, thresholds)
    config = {"version": 1, "seed": settings.seed, "crop_size": settings.crop_size, "au_ids": list(ids),
              "gain": settings.gain, "image_format": ext, "neutral_thresholds": thresholds,
              "max_yaw": MAX_YAW, "max_pitch": MAX_PITCH, "min_eye_distance": MIN_EYE_DISTANCE,
              "work_scale": WORK_SCALE, "model": MODEL_FILE}
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_FILE
    if config_path.is_file():
        old = json.loads(config_path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            raise ValueError(f"{out} holds a synthetic set made with other settings ({', '.join(changed)}); "
                             "use a new output folder")
    else:
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    say = log or (lambda msg: None)

    rows = _read_index(index_csv)
    if limit is not None:
        rows = rows[: max(0, int(limit))]
    identity_of = {source: identity for source, _, identity in rows}
    held = split_identities(identity_of.values(), held_out, seed)
    skipped_before = {} if retry_skipped else _read_skipped(out / SKIPPED_FILE)

    records: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    todo = []
    reused_images = 0
    for source, path, identity in rows:
        names = [Path("images") / _safe_dir(identity) / _output_name(source, k, ext) for k in range(per_image)]
        if all((out / n).is_file() for n in names):
            records[source] = [{"image": n.as_posix(), "subject": identity, "source": source,
                                "aus": sample_aus(_sample_rng(seed, source, k), ids)} for k, n in enumerate(names)]
            reused_images += len(names)
        elif source in skipped_before:
            skipped[source] = skipped_before[source]
        else:
            todo.append((source, path, identity))
    say(f"{len(rows)} photos: {len(records)} already done, {len(skipped)} skipped before, {len(todo)} to do")

    bar = tqdm(total=len(todo), desc="synth", unit="photo", disable=not progress or not todo)
    written = 0

    def collect(source: str, recs: list[dict], reason: str | None) -> None:
        nonlocal written
        if reason is None:
            records[source] = recs
            written += len(recs)
        else:
            skipped[source] = reason
        bar.update(1)

    try:
        if workers == 1 or len(todo) <= 1:
            from aullava.faces.detector import FaceDetector

            with FaceDetector(crop_size=crop_size) as detector:
                saved, _WORKER = _WORKER, (settings, detector)
                try:
                    for task in todo:
                        collect(*_worker_task(task))
                finally:
                    _WORKER = saved
        elif todo:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(settings,)) as pool:
                for result in pool.map(_worker_task, todo, chunksize=4):
                    collect(*result)
    finally:
        bar.close()
        # manifests and skip list reflect everything finished so far, even after an interruption
        train_rows, held_rows = [], []
        for source in sorted(records):
            for rec in records[source]:
                row = [rec["image"], rec["subject"]] + [_format_value(rec["aus"][a]) for a in ids] + [source]
                (held_rows if rec["subject"] in held else train_rows).append(row)
        header = ["image", "subject"] + columns + ["source"]
        train_ids = {r[1] for r in train_rows}
        held_ids = {r[1] for r in held_rows}
        assert not train_ids & held_ids, "an identity is on both sides of the split"
        _write_csv(out / "train.csv", header, sorted(train_rows))
        _write_csv(out / "held_out.csv", header, sorted(held_rows))
        _write_csv(out / SKIPPED_FILE, ["source", "identity", "reason"],
                   sorted((s, identity_of.get(s, ""), r) for s, r in skipped.items()))

    reasons: dict[str, int] = {}
    for reason in skipped.values():
        key = reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    summary = {
        "out_dir": str(out), "photos": len(rows), "photos_used": len(records), "photos_skipped": len(skipped),
        "skip_reasons": dict(sorted(reasons.items())), "images_written": written, "images_reused": reused_images,
        "train_images": len(train_rows), "held_out_images": len(held_rows),
        "train_identities": len(train_ids), "held_out_identities": len(held_ids),
        "au_columns": columns, "seconds": round(time.time() - start, 2),
    }
    say(f"synth: {written} images written, {reused_images} reused, {len(skipped)} photos skipped")
    return summary
