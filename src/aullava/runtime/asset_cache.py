"""Build-once entries of the asset cache that survive killed and concurrent runs.

An entry (a converted model folder or file in `$AULLAVA_HOME`) is built under a per-entry file lock
(`.locks/<name>.lock`, the maintained `filelock` package: an OS lock, released when its process dies) in a
temporary folder unique to the run, and appears under its final name by one `rename`. So a run killed mid-way
leaves only a temporary folder, which the next builder removes; two first runs at once build it once, the second
waits and then uses the first one's result; a half-written entry (from older versions) is detected and rebuilt.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from filelock import FileLock

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def build_once(target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]) -> Path:
    """`target` once `complete(target)`; else `build(tmp)` writes the entry at `tmp` (a path in the same folder,
    file or folder as `build` chooses) and it is renamed to `target`. Leftovers of killed runs are removed."""
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    locks = target.parent / ".locks"
    locks.mkdir(exist_ok=True)
    lock = FileLock(str(locks / f"{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except TimeoutError:  # filelock.Timeout subclasses TimeoutError
        log.warning("waiting for another aullava process that is preparing %s", target)
        lock.acquire()
    try:
        if complete(target):  # built by the process we waited for
            return target
        for stale in target.parent.glob(f".{target.name}{TMP_MARK}*"):  # killed runs; nobody else holds the lock
            log.info("removing %s, left by an interrupted run", stale)
            _remove(stale)
        if target.exists() or target.is_symlink():
            log.warning("%s is incomplete (an interrupted run of an older version?): rebuilding it", target)
            _remove(target)
        tmp = target.parent / f".{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            build(tmp)
            if not complete(tmp):
                raise RuntimeError(f"building {target.name} produced an incomplete result")
            os.replace(tmp, target) if not tmp.is_dir() else tmp.rename(target)
        finally:
            if tmp.exists():
                _remove(tmp)
        return target
    finally:
        lock.release()
