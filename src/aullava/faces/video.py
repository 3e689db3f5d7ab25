"""Video frames as H×W×3 uint8 RGB arrays, with a frame count that can be trusted.

AU datasets (DISFA, BP4D, ...) ship long videos and label them per frame, so a frame index has to mean the same frame
on every run and every machine, and one damaged frame must not cost the whole video. OpenCV's FFmpeg backend does the
decoding; this module adds the checks it does not make:

* `CAP_PROP_FRAME_COUNT` is read from the container header (or estimated from duration × fps), which is wrong for
  truncated downloads, variable-frame-rate files and some codecs. `video_frame_count` therefore verifies the header
  value by seeking to the last few frames and decoding them, and counts by decoding the whole file when the header
  has no count or the check fails.
* `read_frames` decodes sequentially (exact: frame *k* is the *k*-th frame the decoder produces) and seeks only across
  big gaps or to resynchronise after a decoding error; a frame that cannot be decoded becomes an `InputError` naming
  ``"file#frame"`` and the next requested frames are still delivered.

Errors use `aullava.imaging.InputError`, so a pipeline handles bad images and bad videos the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from aullava.faces.images import InputError, require_readable_file

SEEK_GAP = 120
"""Forward jumps longer than this many frames are done by seeking; shorter ones by decoding and discarding frames,
which is exact for every codec and, for a few seconds of video, about as fast as a keyframe seek plus re-decode."""

VERIFY_TAIL = 3
"""How many of the last frames `video_frame_count` decodes to confirm the header's frame count."""

MAX_BAD_RUN = 16
"""Consecutive failed decodes after which `read_frames` assumes the end of the stream (EOF keeps failing; a damaged
frame in the middle usually fails once and the decoder carries on with the next packet)."""

MAX_HEADER_FRAMES = 10**9  # a header count above this (hundreds of days at 30 fps) is garbage, not a count


def _backend() -> int:
    """FFmpeg explicitly: with CAP_ANY, OpenCV may treat a name containing '%' as an image-sequence pattern."""
    try:
        if cv2.CAP_FFMPEG in cv2.videoio_registry.getBackends():
            return cv2.CAP_FFMPEG
    except Exception:  # noqa: BLE001 - very old / stripped OpenCV builds
        pass
    return cv2.CAP_ANY


def _open(path: Path) -> cv2.VideoCapture:
    """An opened capture, or an InputError that says why not (checked first: OpenCV only returns False)."""
    require_readable_file(path, "video")
    cap = cv2.VideoCapture(str(path), _backend())
    if not cap.isOpened():
        cap.release()
        raise InputError(path, "cannot open video (unsupported format, or a corrupt or truncated file)")
    return cap


def _header_count(cap: cv2.VideoCapture) -> int | None:
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    if not math.isfinite(n) or n < 1 or n > MAX_HEADER_FRAMES:
        return None
    return int(round(n))


def _grab_to_end(cap: cv2.VideoCapture) -> int:
    """Frames decoded from the current position until the first failure."""
    n = 0
    while cap.grab():
        n += 1
    return n


def _decode_count(cap: cv2.VideoCapture) -> int:
    """Index of the last decodable frame + 1, decoding from the start and stepping over damaged frames.

    A decoder that rejects a damaged frame moves on to the next packet, so decoding goes on until MAX_BAD_RUN
    failures in a row, which only the end of the stream (or a long stretch of garbage) produces.
    """
    index, last_ok, bad = 0, -1, 0
    while bad < MAX_BAD_RUN:
        if cap.grab():
            last_ok, bad = index, 0
        else:
            bad += 1
        index += 1
    return last_ok + 1


def _seek(cap: cv2.VideoCapture, index: int) -> bool:
    """Seek and confirm: OpenCV reaches a frame by decoding forward from a keyframe and, when a damaged frame stops
    it on the way, stays there while `set` still returns True; the reported position exposes that."""
    return bool(cap.set(cv2.CAP_PROP_POS_FRAMES, index)) and int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) == index


def video_frame_count(path: str | os.PathLike) -> int:
    """The number of frames of a video file (index of its last decodable frame + 1).

    When the container header gives a count N, a seek to frame N-VERIFY_TAIL must land there and exactly
    VERIFY_TAIL frames must then decode before the stream ends; N is then returned after decoding only a few frames,
    whatever the video length. Otherwise (no count, a truncated file whose header promises more, a header that
    undercounts, a seek stopped by a damaged frame) the whole file is decoded and counted: slow for long videos but
    right. Damaged frames in the middle count as frames (they keep their place in the numbering); this relies on the
    decoder skipping exactly the damaged frame, which holds for intra-only codecs (MJPEG) but not necessarily when a
    damaged inter-coded stream makes FFmpeg discard several packets at once.

    Raises `InputError` naming the file when it is missing, not a video, or has no decodable frame.
    """
    path = Path(path)
    cap = _open(path)
    try:
        n = _header_count(cap)
        if n is not None and n > VERIFY_TAIL and _seek(cap, n - VERIFY_TAIL) and _grab_to_end(cap) == VERIFY_TAIL:
            return n
    finally:
        cap.release()
    cap = _open(path)  # fresh capture: after a failed seek the decoder state is unknown
    try:
        count = _decode_count(cap)
    finally:
        cap.release()
    if count == 0:
        raise InputError(path, "no decodable video frame (corrupt or truncated file?)")
    return count


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def frame_name(path: str | os.PathLike, index: int) -> str:
    """How a video frame is named in errors and logs: ``"path#index"`` (0-based)."""
    return f"{path}#{index}"


def read_frames(
    path: str | os.PathLike, indices: Iterable[int], seek_gap: int | None = SEEK_GAP
) -> Iterator[tuple[int, np.ndarray | InputError]]:
    """Yield ``(index, frame)`` for each requested 0-based frame, in increasing order (duplicates once).

    `frame` is an H×W×3 uint8 RGB array, or an `InputError` named ``"file#index"`` when that frame cannot be decoded
    (damaged data, or past the end of the video); the following frames are still tried. A file that cannot be
    opened at all yields such an error for every requested frame, so callers record per-frame failures uniformly.

    Frames are decoded in order, skipping unwanted ones by decoding without colour conversion; `seek_gap` (frames)
    sets when a forward jump seeks instead (None: never seek, e.g. for a file whose seeking is known to be
    inaccurate). After a failed frame the next one is reached by a seek, because a decoder that has just rejected a
    packet does not reliably report where it stands.
    """
    path = Path(path)
    wanted = sorted({int(i) for i in indices})
    for i in (i for i in wanted if i < 0):
        yield i, InputError(frame_name(path, i), "negative frame index")
    wanted = [i for i in wanted if i >= 0]
    if not wanted:
        return
    try:
        cap = _open(path)
    except InputError as err:
        for i in wanted:
            yield i, InputError(frame_name(path, i), err.reason)
        return
    header = _header_count(cap)
    where = f"the container reports {header} frames" if header else "the container has no frame count"
    can_seek = seek_gap is not None
    nxt = 0  # index of the frame the next grab() returns
    resync = False  # the last decode failed: reach the next wanted frame by a seek, not by counting
    bad_run = 0  # consecutive failed grabs; MAX_BAD_RUN of them means the stream has ended
    try:
        for t in wanted:
            frame = None
            if bad_run < MAX_BAD_RUN:
                past_end = header is not None and t >= header  # seeking there may land anywhere
                if can_seek and t != nxt and not past_end and (resync or t - nxt > seek_gap):
                    if _seek(cap, t):
                        nxt = t
                    else:  # stopped early at an unknown place: start over and count; no more seeks in this file
                        cap.release()
                        cap = _open(path)
                        nxt, bad_run, can_seek = 0, 0, False
                while nxt < t and bad_run < MAX_BAD_RUN:
                    bad_run = 0 if cap.grab() else bad_run + 1  # an unwanted frame, damaged or not
                    nxt += 1
                if nxt == t and cap.grab():
                    frame = cap.retrieve()[1]
                nxt = t + 1
            if frame is not None and frame.size > 0:
                bad_run, resync = 0, False
                yield t, _to_rgb(frame)
                continue
            bad_run, resync = bad_run + 1, True
            if header is not None and t >= header:
                reason = f"frame past the end of the video ({where})"
            else:
                reason = f"cannot decode frame (damaged data, or past the end of the video; {where})"
            yield t, InputError(frame_name(path, t), reason)
    except InputError as err:  # the file vanished or changed while we were reading it
        for i in (i for i in wanted if i >= t):
            yield i, InputError(frame_name(path, i), err.reason)
    finally:
        cap.release()
