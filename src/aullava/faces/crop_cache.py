"""The preprocessing cache: detect, align and crop each face once, then reuse the crop for every epoch and run.

Face detection with MediaPipe costs 20-100 ms per image, more than a training step of the small model, and video AU
datasets have hundreds of thousands of frames. `FaceCropCache.build` runs it once per frame, in parallel, resumably,
and stores the aligned crop; training and evaluation then read PNGs with `FaceCropCache.get`.

A *frame source* is an image path, or a ``(video path, 0-based frame index)`` pair (`FrameSource`).

Layout under `root` (default ``$AULLAVA_HOME/crops``)::

    ab/abcdef…0123.png    the aligned crop, RGB, lossless PNG (key = 64 hex digits; `ab` = its first two)
    ab/abcdef…0123.json   {"source", "box", "matrix", "blendshapes" (52 names → scores), "faces", "image_size", …}
    ab/abcdef…0123.npy    (478, 3) float32 landmarks in image pixels, only with ``landmarks=True`` (what the
                          model's geometry stream reads, with the JSON's matrix and blendshapes: `geometry`)
    failures.jsonl        one {"key", "source", "reason"} object per line, appended as frames fail
    .tmp/                 files being written

The key is the SHA-256 of everything the crop depends on: the file's identity (resolved path + size + mtime_ns, or
its content hash with ``identity="content"``, which survives copies and renames and merges duplicates), the frame
index, the crop size, the image loading limit, the detector confidence, the alignment template and `ALIGN_VERSION`.
Editing or replacing a file, or changing a setting, therefore gives new keys and new crops, never a stale one; old
entries are simply no longer looked up. Nothing is pickled: crops are PNG, metadata JSON, landmarks ``.npy`` loaded
with ``allow_pickle=False``.

Every file is written under ``.tmp/`` (same file system) and renamed into place, so a killed run leaves either a
complete entry or none; files it left in ``.tmp/`` are deleted by a later `build` once they are old enough
(`STALE_TEMP_SECONDS`) to be certain no other build is still writing them. The PNG is renamed last: an entry counts
as cached exactly when its PNG exists, so its sidecar files are always there too. A cache built without
landmarks stays readable: a ``landmarks=True`` build detects again the entries that lack their ``.npy`` and adds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from aullava.faces.crop_store import (
    ALIGN_VERSION,
    TEMP_DIR,
    CropSettings,
    entry_path,
    run_task,
    start_worker,
    worker_task,
)
from aullava.faces.detector import DEFAULT_CROP_SIZE, EYE_DISTANCE, EYE_Y, FaceDetector
from aullava.faces.geometry_features import geometry_features
from aullava.faces.images import MAX_SIDE
from aullava.faces.video import frame_name, video_frame_count
from aullava.runtime.assets import aullava_home

VIDEO_CHUNK = 256
"""Frames of one video handled by one task. Each chunk decodes its frames in order, so a video is decoded about once
in total, while a long video is still shared among workers and reports progress as it goes."""

FAILURES_FILE = "failures.jsonl"
STALE_TEMP_SECONDS = 600  # a write takes milliseconds: a temp file this old was left by a killed run


class FrameSource(NamedTuple):
    """One input frame: an image file (`frame` None) or frame `frame` (0-based) of a video file."""

    path: str
    frame: int | None = None

    @property
    def name(self) -> str:
        return self.path if self.frame is None else frame_name(self.path, self.frame)


def as_source(source: str | os.PathLike | tuple | list) -> FrameSource:
    """Normalise an image path or a ``(video path, frame index)`` pair (a list works too, e.g. read from JSON)."""
    if isinstance(source, (tuple, list)):
        path, frame = source
        return FrameSource(os.fspath(path), None if frame is None else int(frame))
    return FrameSource(os.fspath(source))


def video_sources(path: str | os.PathLike, step: int = 1) -> list[FrameSource]:
    """Every `step`-th frame of a video as frame sources (raises `InputError` for an unusable video)."""
    return [FrameSource(os.fspath(path), i) for i in range(0, video_frame_count(path), step)]


@dataclass(frozen=True)
class Failure:
    source: str  # the frame source's name: "path" or "path#frame"
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class CacheReport:
    """What `build` did. `failures` lists every requested source without a crop: new ones and skipped known ones."""

    total: int = 0  # distinct sources requested
    cached: int = 0  # already cached before this build
    built: int = 0  # crops made now
    failed: int = 0  # failed now
    skipped: int = 0  # failed in an earlier build and not retried
    failures: list[Failure] = field(default_factory=list)


class FaceCropCache:
    """Content-addressed store of aligned face crops; see the module docstring for the layout and the key."""

    def __init__(self, root: str | os.PathLike | None = None, crop_size: int = DEFAULT_CROP_SIZE,
                 identity: str = "stat", min_confidence: float = 0.5, max_side: int | None = MAX_SIDE,
                 landmarks: bool = False):
        """`identity`: "stat" (resolved path + size + mtime_ns: free) or "content" (SHA-256 of the file: reads every
        file once per `key`/`build` call, but survives copying or touching the data). `max_side`: long-side limit
        for loading images (see `load_image`). `landmarks`: also store the 478 landmarks as ``.npy``."""
        if identity not in ("stat", "content"):
            raise ValueError(f"identity must be 'stat' or 'content', not {identity!r}")
        self.root = Path(root) if root is not None else aullava_home() / "crops"
        self.crop_size = crop_size
        self.identity = identity
        self.min_confidence = min_confidence
        self.max_side = max_side
        self.landmarks = landmarks
        self._hashes: dict[tuple, str] = {}  # (resolved path, size, mtime_ns) → content hash

    # -- keys -----------------------------------------------------------------------------------------------------
    def _file_identity(self, path: str) -> tuple[str, bool]:
        """(identity string, whether the file exists). A missing file still gets a key, so its failure is recorded
        and skipped next time, while the file appearing later gives a new key and is processed."""
        resolved = os.path.realpath(path)
        try:
            st = os.stat(resolved)
        except OSError as err:
            return f"missing:{resolved}:{err.errno}", False
        if self.identity == "stat":
            return f"stat:{resolved}:{st.st_size}:{st.st_mtime_ns}", True
        memo = (resolved, st.st_size, st.st_mtime_ns)
        if memo not in self._hashes:
            digest = hashlib.sha256()
            try:
                with open(resolved, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            except OSError as err:  # unreadable: let the loader report why, keyed by stat
                return f"unreadable:{resolved}:{st.st_size}:{st.st_mtime_ns}:{err.errno}", True
            self._hashes[memo] = f"sha256:{digest.hexdigest()}"
        return self._hashes[memo], True

    def _key(self, source: FrameSource, identity: str) -> str:
        spec = {"v": ALIGN_VERSION, "id": identity, "frame": source.frame, "crop": self.crop_size,
                "max_side": self.max_side, "conf": self.min_confidence, "eyes": [EYE_Y, EYE_DISTANCE]}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def key(self, source) -> str:
        """The cache key of a source as its file is now."""
        source = as_source(source)
        return self._key(source, self._file_identity(source.path)[0])

    def path(self, source) -> Path:
        """Where the source's crop PNG is (or would be) stored."""
        return entry_path(self.root, self.key(source), ".png")

    # -- reading --------------------------------------------------------------------------------------------------
    def get(self, source) -> np.ndarray | None:
        """The cached crop (S×S×3 uint8 RGB), or None when not built (or it failed)."""
        path = self.path(source)
        if not path.is_file():  # checked first: OpenCV would print a warning for every missing crop
            return None
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def metadata(self, source) -> dict | None:
        """The cached entry's JSON sidecar (box, matrix, blendshapes, ...) plus "landmarks" when stored, or None."""
        png = self.path(source)
        if not png.is_file():
            return None
        meta = json.loads(png.with_suffix(".json").read_text())
        npy = png.with_suffix(".npy")
        meta["landmarks"] = np.load(npy, allow_pickle=False) if npy.is_file() else None
        return meta

    def geometry(self, source) -> np.ndarray | None:
        """The cached face's geometry vector (`aullava.faces.geometry_features.geometry_features`: landmarks in the crop's
        frame + blendshapes), or None when the entry or its landmarks are not stored (build with landmarks)."""
        png = self.path(source)
        npy = png.with_suffix(".npy")
        if not (png.is_file() and npy.is_file()):
            return None
        meta = json.loads(png.with_suffix(".json").read_text())
        return geometry_features(np.load(npy, allow_pickle=False), np.asarray(meta["matrix"]), meta["blendshapes"],
                                 int(meta["crop_size"]))

    def failures(self) -> dict[str, Failure]:
        """Recorded failures by key (latest record wins). A line cut short by a killed run is ignored."""
        found: dict[str, Failure] = {}
        try:
            lines = (self.root / FAILURES_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return found
        for line in lines:
            try:
                rec = json.loads(line)
                found[rec["key"]] = Failure(rec["source"], rec["reason"])
            except (ValueError, KeyError, TypeError):
                continue
        return found

    # -- building -------------------------------------------------------------------------------------------------
    def build(self, sources: Iterable, workers: int = 1, progress: bool = True,
              retry_failures: bool = False) -> CacheReport:
        """Make the crops of all `sources` that are not cached yet.

        Resumable: every finished crop is on disk at once, so after an interruption the next call continues where
        it stopped. Sources that failed before (unreadable, no face) are skipped unless `retry_failures`. Failures
        are recorded, never raised. `workers` > 1 uses that many processes (spawned, each with its own
        `FaceDetector`, since MediaPipe graphs are neither fork-safe nor re-entrant); 1 works in this process.
        """
        (self.root / TEMP_DIR).mkdir(parents=True, exist_ok=True)
        self._sweep_temp()
        settings = CropSettings(str(self.root), self.crop_size, self.min_confidence, self.max_side, self.landmarks)
        known = self.failures()
        report = CacheReport()
        identities: dict[str, tuple[str, bool]] = {}
        images: list[tuple] = []
        videos: dict[str, list[tuple[int, str]]] = defaultdict(list)
        new_failures: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for source in map(as_source, sources):
            if source.path not in identities:
                identities[source.path] = self._file_identity(source.path)
            identity, exists = identities[source.path]
            key = self._key(source, identity)
            if key in seen:
                continue
            seen.add(key)
            report.total += 1
            if entry_path(self.root, key, ".png").is_file() and (
                    not self.landmarks or entry_path(self.root, key, ".npy").is_file()):
                report.cached += 1
            elif key in known and not retry_failures:
                report.skipped += 1
                report.failures.append(known[key])
            elif not exists:
                new_failures.append((key, source.name, "file not found"))
            elif source.frame is None:
                images.append((source.path, [(None, key)]))
            else:
                videos[source.path].append((source.frame, key))
        tasks = images + [(path, sorted(items)[i:i + VIDEO_CHUNK])
                          for path, items in videos.items() for i in range(0, len(items), VIDEO_CHUNK)]
        with open(self.root / FAILURES_FILE, "a", encoding="utf-8") as log:
            self._record(new_failures, report, log)
            todo = sum(len(items) for _, items in tasks)
            if todo:
                with tqdm(total=todo, disable=not progress, unit="frame", desc="face crops") as bar:
                    for results in self._execute(settings, tasks, workers):
                        self._record(results, report, log)
                        bar.update(len(results))
        return report

    def _sweep_temp(self) -> None:
        limit = time.time() - STALE_TEMP_SECONDS
        for entry in os.scandir(self.root / TEMP_DIR):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
                    os.unlink(entry.path)

    @staticmethod
    def _record(results: list[tuple[str, str, str | None]], report: CacheReport, log) -> None:
        for key, name, reason in results:
            if reason is None:
                report.built += 1
                continue
            report.failed += 1
            report.failures.append(Failure(name, reason))
            log.write(json.dumps({"key": key, "source": name, "reason": reason}) + "\n")
        log.flush()

    @staticmethod
    def _execute(settings: CropSettings, tasks: list[tuple], workers: int):
        """Yield each task's results as it finishes; in this process, or in a pool with a bounded queue."""
        if workers <= 1 or len(tasks) <= 1:
            with FaceDetector(crop_size=settings.crop_size, min_confidence=settings.min_confidence) as detector:
                for task in tasks:
                    yield run_task(settings, task, detector)
            return
        workers = min(workers, len(tasks))
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=start_worker,
                                 initargs=(settings, os.getpid())) as pool:
            pending = set()
            queue = iter(tasks)
            try:
                while True:
                    for task in queue:  # keep a few tasks per worker queued, not the whole dataset in memory
                        pending.add(pool.submit(worker_task, task))
                        if len(pending) >= 4 * workers:
                            break
                    if not pending:
                        return
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()
