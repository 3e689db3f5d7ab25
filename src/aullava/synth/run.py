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
interior, unless ``mouth_interior`` paints a real one from a donor photo (`aullava.synth.mouth`); wrinkles and
furrows (AU1/2 forehead lines, AU4 glabella, AU9 nose wrinkles, AU6 crow's feet) and skin bulges are not created:
only the geometry carries the label; glasses and hair over the brows move with the skin; MediaPipe's landmark
placement limits precision (a poorly fitted mesh warps the wrong pixels). Labels are exact for the *added* movement,
so sources are restricted to near-neutral, roughly frontal photos (`neutral_check`, `MAX_YAW`, `MAX_PITCH`).

`run_synth` builds a dataset from a photo index (see its docstring); `sample_aus` draws plausible AU combinations.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aullava.aus.catalogue import au_set, normalize_au_id
from aullava.runtime.files import atomic_write, atomic_write_csv
from aullava.synth.baselines import RULE as BASELINE_RULE, SOURCES_FILE, combine, read_sources, write_sources
from aullava.synth.mesh_model import MODEL_FILE, default_model
from aullava.synth.mouth import INNER_LIP, MIN_OPENING, MouthBank, build_mouth_bank, mouth_opening, paint_mouth
from aullava.synth.sampling import (MAX_PITCH, MAX_YAW, MIN_EYE_DISTANCE, NEUTRAL_THRESHOLDS, head_pose_problem,
                                    neutral_check, sample_aus, subject_face)
from aullava.synth.warp import warp_face

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
    held: frozenset[str] = frozenset()
    """the held-out identities: their warps take mouth interiors from held-out donors only"""
    baseline: Callable[[Mapping[str, float]], Mapping[str, float]] | None = None
    """blendshapes → AU intensities (NaN: unseen) of a source that is not neutral; None: such sources are skipped"""


def _write_image(path: Path, image: np.ndarray, ext: str) -> None:
    """Write atomically: a killed run leaves a complete file or none, so 'exists' can mean 'done'."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{ext}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.tobytes())


def _donor_rng(seed: int, source: str, k: int) -> np.random.Generator:
    """Draws sample k's mouth donor; separate from `_sample_rng`, so the labels are those of a set without."""
    return np.random.default_rng([seed & 0xFFFFFFFF, _stable_int("aullava-mouth", source), k])


def _synthesize_source(detector, settings: _Settings, source: str, path: str, identity: str,
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
        aus = sample_aus(_sample_rng(settings.seed, source, k), settings.au_ids)
        rel = Path("images") / _safe_dir(identity) / _output_name(source, k, settings.ext)
        result = warp_face(image, lm, aus, model, gain=settings.gain)
        warped = result.image
        if mouths is not None:
            inner = result.target[list(INNER_LIP)]
            opening = mouth_opening(inner)
            if opening >= MIN_OPENING and opening > source_opening + 0.02:  # the warp parted the lips
                donor = mouths.pick(_donor_rng(settings.seed, source, k), opening, identity in settings.held)
                if donor is not None:
                    warped = paint_mouth(warped, inner, donor)
        out, _ = align_face(warped, lm, settings.crop_size)  # aligned on the *source* landmarks
        _write_image(out_dir / rel, out, settings.ext)
        records.append({"image": rel.as_posix(), "subject": identity, "source": source,
                        "aus": combine(aus, baseline, settings.au_ids)})
    return records, None, baseline


_WORKER: tuple | None = None


def _init_worker(settings: _Settings, mouths: MouthBank | None = None) -> None:
    global _WORKER
    from aullava.faces.detector import FaceDetector

    _WORKER = (settings, FaceDetector(crop_size=settings.crop_size), mouths)


def _worker_task(task: tuple[str, str, str]) -> tuple[str, list[dict], str | None, dict | None]:
    settings, detector, mouths = _WORKER
    source, path, identity = task
    try:
        records, reason, baseline = _synthesize_source(detector, settings, source, path, identity, mouths)
    except Exception as exc:  # noqa: BLE001 - one bad photo must not end a long run
        records, reason, baseline = [], f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", None
    return source, records, reason, baseline


def read_index(index_csv: Path) -> list[tuple[str, str, str]]:
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


def _format_value(x: float) -> str:
    if x != x:  # NaN: unknown, an empty cell (masked in training)
        return ""
    return "0" if x == 0 else f"{x:.3f}".rstrip("0").rstrip(".")


def run_synth(index_csv: str | os.PathLike, out_dir: str | os.PathLike, per_image: int = 4, held_out: float = 0.2,
              seed: int = 0, limit: int | None = None, crop_size: int = 224, workers: int = 1,
              progress: bool = True, *, au_ids: Iterable[str | int] | str = "default", gain: float = 1.0,
              image_format: str = "jpg", neutral_thresholds: Mapping[str, float] | None = NEUTRAL_THRESHOLDS,
              retry_skipped: bool = False, mouth_interior: bool = False,
              baseline: Callable[[Mapping[str, float]], Mapping[str, float]] | None = None,
              baseline_name: str | None = None, log: Callable[[str], None] | None = None) -> dict:
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

    ``mouth_interior``: warps that part the lips get a real mouth interior (teeth, tongue, darkness) from a donor
    photo of the index with an open mouth (`aullava.synth.mouth`); the donors are found by a first pass over the
    index, stored in ``out_dir/mouths`` (listed in ``mouths.csv``, resumable through ``mouth_scan.csv``). Labels
    do not change. A sample's donor depends on (seed, photo, k) and on the donors the index holds.

    ``baseline`` (with a ``baseline_name`` recorded in the config, e.g. the teacher and its calibration): photos
    that fail `neutral_check` are used too, their warps labelled baseline + added (`aullava.synth.baselines`;
    empty cells where the baseline is unknown); ``sources.csv`` lists every used photo and its baseline.

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
    if mouth_interior:  # only then: a set made without it keeps exactly the config it was made with
        from aullava.synth import mouth

        config["mouth_interior"] = {"min_donor_opening": mouth.MIN_DONOR_OPENING,
                                    "min_donor_contrast": mouth.MIN_DONOR_CONTRAST, "min_opening": MIN_OPENING,
                                    "donor_width": mouth.DONOR_WIDTH}
    if (baseline is None) != (baseline_name is None):
        raise ValueError("baseline and baseline_name go together (the name is recorded in the set's config)")
    if baseline is not None:
        if neutral_thresholds is None:
            raise ValueError("a baseline labels the sources that fail the neutral check: it needs the thresholds")
        config["baseline"] = f"{baseline_name}; {BASELINE_RULE}"
        settings.baseline = baseline
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

    rows = read_index(index_csv)
    if limit is not None:
        rows = rows[: max(0, int(limit))]
    identity_of = {source: identity for source, _, identity in rows}
    held = split_identities(identity_of.values(), held_out, seed)
    settings.held = frozenset(held)
    skipped_before = {} if retry_skipped else _read_skipped(out / SKIPPED_FILE)

    records: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    baselines = read_sources(out / SOURCES_FILE, ids)
    todo = []
    reused_images = 0
    for source, path, identity in rows:
        names = [Path("images") / _safe_dir(identity) / _output_name(source, k, ext) for k in range(per_image)]
        if all((out / n).is_file() for n in names) and (baseline is None or source in baselines):
            base = baselines.get(source)
            records[source] = [{"image": n.as_posix(), "subject": identity, "source": source,
                                "aus": combine(sample_aus(_sample_rng(seed, source, k), ids), base, ids)}
                               for k, n in enumerate(names)]
            reused_images += len(names)
        elif source in skipped_before:
            skipped[source] = skipped_before[source]
        else:
            todo.append((source, path, identity))
    say(f"{len(rows)} photos: {len(records)} already done, {len(skipped)} skipped before, {len(todo)} to do")
    mouths = None
    if mouth_interior and todo:
        mouths = build_mouth_bank(rows, out, held, progress=progress, log=say)
        say(f"mouth donors: {len(mouths)} ({int(mouths.held_out.sum())} of held-out identities)")

    bar = tqdm(total=len(todo), desc="synth", unit="photo", disable=not progress or not todo)
    written = 0

    def collect(source: str, recs: list[dict], reason: str | None, base: dict | None) -> None:
        nonlocal written
        if reason is None:
            records[source] = recs
            baselines[source] = base
            written += len(recs)
        else:
            skipped[source] = reason
        bar.update(1)

    try:
        if workers == 1 or len(todo) <= 1:
            from aullava.faces.detector import FaceDetector

            with FaceDetector(crop_size=crop_size) as detector:
                saved, _WORKER = _WORKER, (settings, detector, mouths)
                try:
                    for task in todo:
                        collect(*_worker_task(task))
                finally:
                    _WORKER = saved
        elif todo:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(settings, mouths)) as pool:
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
        atomic_write_csv(out / "train.csv", header, sorted(train_rows))
        atomic_write_csv(out / "held_out.csv", header, sorted(held_rows))
        if baseline is not None:
            write_sources(out / SOURCES_FILE, {s: baselines.get(s) for s in records}, ids)
        atomic_write_csv(out / SKIPPED_FILE, ["source", "identity", "reason"],
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
        "photos_with_baseline": sum(1 for s in records if baselines.get(s) is not None),
        "au_columns": columns, "seconds": round(time.time() - start, 2),
    }
    say(f"synth: {written} images written, {reused_images} reused, {len(skipped)} photos skipped")
    return summary
