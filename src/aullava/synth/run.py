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

`run_synth` builds a dataset from a photo index (see its docstring): a `SynthConfig` (the settings, checked) and a
`SynthRun` (plan what is done and what to do, synthesise the rest photo by photo, `aullava.synth.source`, write the
manifests). `sample_aus` draws plausible AU combinations.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aullava.aus.catalogue import au_set, normalize_au_id
from aullava.runtime.files import atomic_write_csv
from aullava.synth.baselines import RULE as BASELINE_RULE
from aullava.synth.baselines import SOURCES_FILE, combine, read_sources, write_sources
from aullava.synth.mesh_model import MODEL_FILE
from aullava.synth.mouth import MIN_OPENING, build_mouth_bank
from aullava.synth.sampling import MAX_PITCH, MAX_YAW, MIN_EYE_DISTANCE, NEUTRAL_THRESHOLDS, sample_aus
from aullava.synth.source import (
    WORK_SCALE,
    SourceSettings,
    SourceWorker,
    output_name,
    process_worker_task,
    safe_dir,
    sample_rng,
    stable_int,
    start_process_worker,
)

CONFIG_FILE = "synth_config.json"
SKIPPED_FILE = "skipped.csv"


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
    ranked = sorted(ids, key=lambda i: (stable_int("aullava-split", seed, i), i))
    return set(ranked[:count])


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


@dataclass
class SynthConfig:
    """What a synthetic set is made with (see `run_synth` for each setting); checked on creation."""

    per_image: int = 4
    held_out: float = 0.2
    seed: int = 0
    limit: int | None = None
    crop_size: int = 224
    workers: int = 1
    au_ids: Iterable[str | int] | str = "default"
    gain: float = 1.0
    image_format: str = "jpg"
    neutral_thresholds: Mapping[str, float] | None = field(default_factory=lambda: dict(NEUTRAL_THRESHOLDS))
    retry_skipped: bool = False
    mouth_interior: bool = False
    baseline: Callable[[Mapping[str, float]], Mapping[str, float]] | None = None
    baseline_name: str | None = None

    def __post_init__(self):
        if self.per_image < 1 or self.crop_size < 32 or self.workers < 1:
            raise ValueError("per_image and workers must be >= 1 and crop_size >= 32")
        self.ext = {"jpg": "jpg", "jpeg": "jpg", "png": "png"}.get(self.image_format.lower().lstrip("."))
        if self.ext is None:
            raise ValueError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")
        if (self.baseline is None) != (self.baseline_name is None):
            raise ValueError("baseline and baseline_name go together (the name is recorded in the set's config)")
        if self.baseline is not None and self.neutral_thresholds is None:
            raise ValueError("a baseline labels the sources that fail the neutral check: it needs the thresholds")
        self.aus = au_set(self.au_ids)
        self.ids = tuple(normalize_au_id(a) for a in self.aus.ids)
        sample_aus(np.random.default_rng(0), self.ids)  # fails early if the model lacks one of the AUs
        self.thresholds = (None if self.neutral_thresholds is None
                           else {k: float(v) for k, v in self.neutral_thresholds.items()})

    def record(self) -> dict:
        """The settings that determine images and labels: `CONFIG_FILE`, which a later run must match."""
        config = {"version": 1, "seed": int(self.seed), "crop_size": int(self.crop_size), "au_ids": list(self.ids),
                  "gain": float(self.gain), "image_format": self.ext, "neutral_thresholds": self.thresholds,
                  "max_yaw": MAX_YAW, "max_pitch": MAX_PITCH, "min_eye_distance": MIN_EYE_DISTANCE,
                  "work_scale": WORK_SCALE, "model": MODEL_FILE}
        if self.mouth_interior:  # only then: a set made without it keeps exactly the config it was made with
            from aullava.synth import mouth

            config["mouth_interior"] = {"min_donor_opening": mouth.MIN_DONOR_OPENING,
                                        "min_donor_contrast": mouth.MIN_DONOR_CONTRAST, "min_opening": MIN_OPENING,
                                        "donor_width": mouth.DONOR_WIDTH}
        if self.baseline is not None:
            config["baseline"] = f"{self.baseline_name}; {BASELINE_RULE}"
        return config


class SynthRun:
    """One run of `run_synth` into `out`: `plan` (what earlier runs finished, what they skipped, what is left),
    `synthesise` (the rest, in this process or in `workers` processes), `write` (manifests, skip list, sources),
    `summary`."""

    def __init__(self, index_csv: Path, out: Path, config: SynthConfig, progress: bool = True,
                 log: Callable[[str], None] | None = None):
        self.index_csv, self.out, self.config, self.progress = Path(index_csv), Path(out), config, progress
        self.say = log or (lambda msg: None)
        self.records: dict[str, list[dict]] = {}
        self.skipped: dict[str, str] = {}
        self.baselines: dict = {}
        self.todo: list[tuple[str, str, str]] = []
        self.reused_images = self.written = 0
        self.rows: list[tuple[str, str, str]] = []
        self.held: set[str] = set()
        self.sides: tuple[list, list] = ([], [])

    def check_folder(self) -> None:
        """Creates `out`, or checks that the set already there was made with the same settings."""
        config = self.config.record()
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / CONFIG_FILE
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            if changed:
                raise ValueError(f"{self.out} holds a synthetic set made with other settings ({', '.join(changed)}); "
                                 "use a new output folder")
        else:
            path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def plan(self) -> None:
        """Photos whose images all exist are done (their labels re-drawn, identically); photos skipped before stay
        skipped unless `retry_skipped`; the rest is to do."""
        c = self.config
        self.rows = read_index(self.index_csv)
        if c.limit is not None:
            self.rows = self.rows[: max(0, int(c.limit))]
        self.identity_of = {source: identity for source, _, identity in self.rows}
        self.held = split_identities(self.identity_of.values(), c.held_out, c.seed)
        skipped_before = {} if c.retry_skipped else _read_skipped(self.out / SKIPPED_FILE)
        self.baselines = read_sources(self.out / SOURCES_FILE, c.ids)
        for source, path, identity in self.rows:
            names = [Path("images") / safe_dir(identity) / output_name(source, k, c.ext) for k in range(c.per_image)]
            if all((self.out / n).is_file() for n in names) and (c.baseline is None or source in self.baselines):
                base = self.baselines.get(source)
                self.records[source] = [{"image": n.as_posix(), "subject": identity, "source": source,
                                         "aus": combine(sample_aus(sample_rng(c.seed, source, k), c.ids), base, c.ids)}
                                        for k, n in enumerate(names)]
                self.reused_images += len(names)
            elif source in skipped_before:
                self.skipped[source] = skipped_before[source]
            else:
                self.todo.append((source, path, identity))
        self.say(f"{len(self.rows)} photos: {len(self.records)} already done, {len(self.skipped)} skipped before, "
                 f"{len(self.todo)} to do")

    def synthesise(self) -> None:
        """The photos to do, each in turn (`workers` == 1) or over a pool of spawned processes."""
        from tqdm import tqdm

        c = self.config
        settings = SourceSettings(str(self.out), int(c.per_image), int(c.seed), int(c.crop_size), c.ids,
                                  float(c.gain), c.ext, c.thresholds, frozenset(self.held), c.baseline)
        mouths = None
        if c.mouth_interior and self.todo:
            mouths = build_mouth_bank(self.rows, self.out, self.held, progress=self.progress, log=self.say)
            self.say(f"mouth donors: {len(mouths)} ({int(mouths.held_out.sum())} of held-out identities)")
        with tqdm(total=len(self.todo), desc="synth", unit="photo", disable=not self.progress or not self.todo) as bar:
            if c.workers == 1 or len(self.todo) <= 1:
                worker = SourceWorker(settings, mouths)
                try:
                    for task in self.todo:
                        self._collect(*worker(task))
                        bar.update(1)
                finally:
                    worker.close()
            elif self.todo:
                from concurrent.futures import ProcessPoolExecutor
                from multiprocessing import get_context

                with ProcessPoolExecutor(c.workers, mp_context=get_context("spawn"), initializer=start_process_worker,
                                         initargs=(settings, mouths)) as pool:
                    for result in pool.map(process_worker_task, self.todo, chunksize=4):
                        self._collect(*result)
                        bar.update(1)

    def _collect(self, source: str, records: list[dict], reason: str | None, baseline: dict | None) -> None:
        if reason is None:
            self.records[source] = records
            self.baselines[source] = baseline
            self.written += len(records)
        else:
            self.skipped[source] = reason

    def write(self) -> None:
        """Manifests and skip list of everything finished so far (also after an interruption)."""
        ids, columns = self.config.ids, self.config.aus.openface_columns("")
        train_rows, held_rows = [], []
        for source in sorted(self.records):
            for rec in self.records[source]:
                row = [rec["image"], rec["subject"]] + [_format_value(rec["aus"][a]) for a in ids] + [source]
                (held_rows if rec["subject"] in self.held else train_rows).append(row)
        header = ["image", "subject"] + columns + ["source"]
        assert not {r[1] for r in train_rows} & {r[1] for r in held_rows}, "an identity is on both sides"
        atomic_write_csv(self.out / "train.csv", header, sorted(train_rows))
        atomic_write_csv(self.out / "held_out.csv", header, sorted(held_rows))
        if self.config.baseline is not None:
            write_sources(self.out / SOURCES_FILE, {s: self.baselines.get(s) for s in self.records}, ids)
        atomic_write_csv(self.out / SKIPPED_FILE, ["source", "identity", "reason"],
                         sorted((s, self.identity_of.get(s, ""), r) for s, r in self.skipped.items()))
        self.sides = (train_rows, held_rows)

    def summary(self, seconds: float) -> dict:
        reasons: dict[str, int] = {}
        for reason in self.skipped.values():
            key = reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        train_rows, held_rows = self.sides
        return {
            "out_dir": str(self.out), "photos": len(self.rows), "photos_used": len(self.records),
            "photos_skipped": len(self.skipped), "skip_reasons": dict(sorted(reasons.items())),
            "images_written": self.written, "images_reused": self.reused_images,
            "train_images": len(train_rows), "held_out_images": len(held_rows),
            "train_identities": len({r[1] for r in train_rows}), "held_out_identities": len({r[1] for r in held_rows}),
            "photos_with_baseline": sum(1 for s in self.records if self.baselines.get(s) is not None),
            "au_columns": self.config.aus.openface_columns(""), "seconds": round(seconds, 2),
        }


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
    start = time.time()
    config = SynthConfig(per_image=per_image, held_out=held_out, seed=seed, limit=limit, crop_size=crop_size,
                         workers=workers, au_ids=au_ids, gain=gain, image_format=image_format,
                         neutral_thresholds=neutral_thresholds, retry_skipped=retry_skipped,
                         mouth_interior=mouth_interior, baseline=baseline, baseline_name=baseline_name)
    run = SynthRun(Path(index_csv), Path(out_dir), config, progress=progress, log=log)
    run.check_folder()
    run.plan()
    try:
        run.synthesise()
    finally:
        run.write()
    run.say(f"synth: {run.written} images written, {run.reused_images} reused, {len(run.skipped)} photos skipped")
    return run.summary(time.time() - start)
