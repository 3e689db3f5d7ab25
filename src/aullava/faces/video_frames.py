"""Video files → frames with their exact index and time, for `predict` on videos (PyAV, FFmpeg's own API).

Why PyAV and not OpenCV here (`aullava.faces.video` stays for the DISFA frame counts): a practitioner lines AU
values up with other recordings by *time*, and only the container's presentation timestamps say when a frame is
shown (variable frame rate phone videos, dropped frames, a stream that starts late). OpenCV hides them behind an
estimated `CAP_PROP_POS_MSEC`; PyAV gives each decoded frame its `pts` and the stream's `time_base`, and FFmpeg's
own error for a damaged file, which becomes one clear line.

Frame numbers count decoded frames from the first one (0-based, presentation order), so frame *k* is the same
picture on every run: skipped frames (`every`, `fps`, `start`) are decoded too, only not converted to RGB. The
timestamp is the frame's pts minus the stream's start time, in seconds, so the first frame is at 0.0 (or later when
the stream really starts later than the container); a frame without a pts (some AVI files) gets index / frame rate.

Every way a video can be unusable ends in one `InputError` naming the file: missing, not a video, no video stream,
a codec this FFmpeg cannot decode, no decodable frame, or a stream that breaks off (frames decoded before the break
are yielded first, then the error says where it stopped).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aullava.faces.images import InputError, require_readable_file

TIME_EPSILON = 1e-6  # seconds: timestamps are exact fractions; this absorbs float rounding at --start/--end/--fps


@dataclass(frozen=True)
class VideoFrame:
    index: int  # 0-based position among the decoded frames
    timestamp: float  # seconds from the stream's start (container pts)
    image: np.ndarray  # H×W×3 uint8 RGB


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float | None  # the stream's average frame rate
    frames: int | None  # frame count announced by the container (None when it has none)
    duration: float | None  # seconds
    codec: str

    @property
    def expected_frames(self) -> int | None:
        """The container's frame count, or duration × fps when it has none (for a progress bar, not a promise)."""
        if self.frames:
            return self.frames
        if self.duration and self.fps:
            return max(1, round(self.duration * self.fps))
        return None


@dataclass(frozen=True)
class FrameSelection:
    """Which decoded frames to analyse: every `every`-th, or `fps` per second, between `start` and `end` seconds
    (end exclusive). The first frame at or after `start` is always taken; `every` counts from it."""

    every: int = 1
    fps: float | None = None
    start: float = 0.0
    end: float | None = None

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.fps is not None and self.every != 1:
            raise ValueError("give either every or fps, not both")
        if not (math.isfinite(self.start) and self.start >= 0):
            raise ValueError(f"start must be a number of seconds >= 0, got {self.start}")
        if self.end is not None and not (math.isfinite(self.end) and self.end > self.start):
            raise ValueError(f"end must be later than start ({self.start} s), got {self.end}")


def _reason(err: BaseException) -> str:
    """FFmpeg's message without PyAV's decoration ("[Errno 1094995529] …: '/the/path'"): the path is named
    already and the number means nothing to a user."""
    text = getattr(err, "strerror", None) or str(err)
    text = " ".join(re.sub(r"^\[Errno -?\d+\]\s*", "", str(text)).split())
    return text or type(err).__name__


def _open(path: Path):
    """An open container and its first video stream, or an InputError saying why not."""
    import av

    require_readable_file(path, "video")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.EOFError:
        raise InputError(path, "empty or truncated video (FFmpeg reached the end of the file before any "
                               "video stream)") from None
    except av.error.FFmpegError as err:
        raise InputError(path, f"cannot open as a video: not a video, or a damaged or truncated one "
                               f"(FFmpeg: {_reason(err)})") from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot open video ({_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(path, "no video stream in this file (audio only, or not a video)")
    stream = container.streams.video[0]
    try:
        codec = stream.codec_context.codec if stream.codec_context is not None else None
    except Exception:  # noqa: BLE001 - PyAV raises various errors for a codec it has no decoder for
        codec = None
    if codec is None or not getattr(codec, "is_decoder", True):
        name = getattr(codec, "name", None)
        container.close()
        raise InputError(path, f"unsupported video codec ({name or 'unknown to this FFmpeg build'}): "
                               "no decoder for this video stream")
    stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the model on any CPU
    return container, stream


def _info(path: Path, container, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    cc = stream.codec_context
    return VideoInfo(str(path), int(cc.width or 0), int(cc.height or 0), fps, int(stream.frames) or None, duration,
                     cc.name)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count and codec of a video; InputError when it cannot be opened or decoded."""
    path = Path(path)
    container, stream = _open(path)
    with container:
        return _info(path, container, stream)


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether FFmpeg opens the file as something with a video stream (for names without a video extension).
    Images are not videos here even though FFmpeg reads some of them (a PNG is one "frame")."""
    try:
        info = probe_video(path)
    except InputError:
        return False
    return info.codec not in {"png", "mjpeg", "bmp", "gif", "webp", "tiff", "ppm", "pgm", "pbm", "jpeg2000"} \
        or bool(info.frames and info.frames > 1)


def iter_video_frames(path: str | os.PathLike, selection: FrameSelection = FrameSelection(),
                      skip: Container[int] = ()) -> Iterator[VideoFrame]:
    """The selected frames of a video, in order. Frame indices in `skip` are counted but not yielded (what a
    resumed run has already written). Raises InputError (see the module docstring) before the first frame when the
    file is unusable, and after the last good frame when the stream breaks off."""
    import av

    path = Path(path)
    container, stream = _open(path)
    with container:
        info = _info(path, container, stream)
        time_base = stream.time_base
        start_pts = stream.start_time
        index, decoded, first_taken, next_time = -1, 0, None, None
        try:
            for frame in container.decode(stream):
                index += 1
                decoded += 1
                if frame.pts is not None and time_base is not None:
                    if start_pts is None:
                        start_pts = frame.pts
                    timestamp = float((frame.pts - start_pts) * time_base)
                else:
                    timestamp = index / info.fps if info.fps else float(index)
                if timestamp < selection.start - TIME_EPSILON:
                    continue
                if selection.end is not None and timestamp >= selection.end - TIME_EPSILON:
                    return
                if first_taken is None:
                    first_taken, next_time = index, timestamp
                if selection.fps is not None:
                    if timestamp < next_time - TIME_EPSILON:
                        continue
                    while next_time <= timestamp + TIME_EPSILON:
                        next_time += 1.0 / selection.fps
                elif (index - first_taken) % selection.every:
                    continue
                if index in skip:
                    continue
                yield VideoFrame(index, timestamp, frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as err:
            where = f"after frame {index}" if decoded else "before the first frame"
            raise InputError(path, f"damaged or truncated video: decoding stopped {where} "
                                   f"(FFmpeg: {_reason(err)})") from None
        if decoded == 0:
            raise InputError(path, "no decodable video frame (empty, truncated or damaged video)")
        announced = stream.frames
        if announced and decoded < announced:
            raise InputError(path, f"truncated video: only {decoded} of the {announced} frames its header announces "
                                   "could be decoded")
