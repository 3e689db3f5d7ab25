"""DISFA (Mavadati et al., 2013) as distributed, into the unified label table (`labels`).

Layout read (``root`` is the DISFA folder):

``ActionUnit_Labels/SN001/SN001_au1.txt`` -- one file per subject and AU (``_au1`` .. ``_au26``)
    Lines ``frame,intensity``: frame numbers are 1-based in the files and become 0-based video indices here
    (line ``1,3`` labels video frame 0); intensity is a FACS integer 0-5. A line that is not two numbers, an
    intensity outside 0-5 or not an integer, a frame < 1, or a frame already labelled in that file is noted in
    ``problems`` (file and line) and skipped -- the other lines of the file are still good. An AU of ``au_set``
    with no file is left NaN (noted).

``Videos_LeftCamera/LeftVideoSN001_comp.avi`` and ``Video_RightCamera/RightVideoSN001_comp.avi``
    The release spells the two folders differently ("Videos_" vs "Video_"); both spellings are accepted for both
    cameras. ``camera="both"`` gives two rows per labelled frame, one per video, same subject.

Frame counts: a video is counted with `aullava.video.video_frame_count`, which checks OpenCV's
``CAP_PROP_FRAME_COUNT`` (a container-header value that is wrong for some codecs and truncated files) by decoding
the last frames and falls back to counting by decoding. When a video and its labels disagree in length, only the
frames present in both are used and the mismatch (file, both counts) is noted. Videos are not decoded here: the
preprocessing cache does that from ``video`` + ``frame``.

Formats: the labels are 0-5 intensities; continuous = r/5 and occurrence = r >= ``occurrence_threshold`` (2,
DISFA's standard detection protocol) -- see `labels.derive_formats`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from aullava.aus.catalogue import AUSet, au_set as resolve_au_set
from aullava.faces.images import InputError
from aullava.datasets.labels import (DISFA_OCCURRENCE_THRESHOLD, LabelledFrames, comma_lines, derive_formats,
                                     make_frames, relative_name)

__all__ = ["CAMERA_FOLDERS", "read_disfa"]

CAMERA_FOLDERS = {
    "left": (("Videos_LeftCamera", "Video_LeftCamera"), "LeftVideo{subject}_comp.avi"),
    "right": (("Video_RightCamera", "Videos_RightCamera"), "RightVideo{subject}_comp.avi"),
}
"""Per camera: accepted folder spellings (the release's own first) and the video file name."""

_SUBJECT_RE = re.compile(r"^SN\d+$", re.IGNORECASE)
_AU_FILE_RE = re.compile(r"^(?P<subject>SN\d+)_au(?P<number>\d+)\.txt$", re.IGNORECASE)


def _frame_count(path: Path) -> int:
    from aullava.faces.video import video_frame_count  # verified count (see module docstring)

    return video_frame_count(path)


def _read_au_file(path: Path, rel: str, problems: list[str]) -> dict[int, float]:
    """0-based frame -> intensity; bad lines are noted and skipped."""
    out: dict[int, float] = {}
    first_line: dict[int, int] = {}
    for n, text, parts in comma_lines(path, errors="replace"):
        try:
            if len(parts) != 2:
                raise ValueError
            frame, value = int(parts[0]), float(parts[1])
        except ValueError:
            problems.append(f"{rel} line {n}: {text!r} is not frame,intensity; line skipped")
            continue
        if frame < 1:
            problems.append(f"{rel} line {n}: frame {frame} < 1 (frames are numbered from 1); line skipped")
        elif not (0 <= value <= 5 and value == int(value)):
            problems.append(f"{rel} line {n}: intensity {parts[1]!r} is not an integer 0-5; line skipped")
        elif frame - 1 in out:
            problems.append(f"{rel} line {n}: frame {frame} already labelled on line {first_line[frame - 1]}; "
                            "line skipped")
        else:
            out[frame - 1] = value
            first_line[frame - 1] = n
    return out


def _camera_dir(root: Path, camera: str) -> Path | None:
    for name in CAMERA_FOLDERS[camera][0]:
        if (root / name).is_dir():
            return root / name
    return None


def read_disfa(root: str | os.PathLike, camera: str = "left", occurrence_threshold: float = DISFA_OCCURRENCE_THRESHOLD,
               au_set: str | AUSet = "disfa_intensity", *, subjects: list[str] | None = None,
               check_videos: bool = True) -> LabelledFrames:
    """Read DISFA's per-AU intensity files and list the frames of its videos; see the module docstring.

    ``camera``: ``"left"``, ``"right"`` or ``"both"``. ``subjects`` restricts to those ids. ``check_videos=False``
    skips opening the videos (no frame-count check; every labelled frame is listed).
    Raises FileNotFoundError when the label folder or a camera's video folder is missing.
    """
    root = Path(root)
    cameras = {"left": ["left"], "right": ["right"], "both": ["left", "right"]}.get(camera)
    if cameras is None:
        raise ValueError(f"camera must be 'left', 'right' or 'both', got {camera!r}")
    aus = resolve_au_set(au_set)
    label_root = root / "ActionUnit_Labels"
    if not label_root.is_dir():
        raise FileNotFoundError(f"{label_root}: DISFA label folder not found")
    video_dirs = {}
    for cam in cameras:
        d = _camera_dir(root, cam)
        if d is None:
            raise FileNotFoundError(f"{root}: no {' or '.join(CAMERA_FOLDERS[cam][0])} folder for the {cam} camera")
        video_dirs[cam] = d
    problems: list[str] = []
    base = {k: [] for k in ("subject", "sequence", "video", "frame")}
    blocks = []
    subject_dirs = sorted(d for d in label_root.iterdir() if d.is_dir() and _SUBJECT_RE.match(d.name))
    for sdir in subject_dirs:
        subject = sdir.name.upper()
        if subjects is not None and subject not in subjects:
            continue
        files = {}
        for f in sdir.iterdir():
            m = _AU_FILE_RE.match(f.name)
            if m and m.group("subject").upper() == subject:
                files[f"AU{int(m.group('number'))}"] = f
        labels: dict[int, dict[int, float]] = {}
        for k, au in enumerate(aus):
            if au.id in files:
                labels[k] = _read_au_file(files[au.id], relative_name(files[au.id], root), problems)
        missing = [au.id for au in aus if au.id not in files]
        if missing:
            problems.append(f"{relative_name(sdir, root)}: no label file for {', '.join(missing)}; left unlabelled")
        if not labels:
            continue
        labelled = sorted(set().union(*(set(v) for v in labels.values())))
        n_labels = labelled[-1] + 1 if labelled else 0
        for cam in cameras:
            video = video_dirs[cam] / CAMERA_FOLDERS[cam][1].format(subject=subject)
            frames = labelled
            if check_videos:
                if not video.is_file():
                    problems.append(f"{relative_name(video, root)}: missing; {subject} {cam} camera skipped")
                    continue
                try:
                    count = _frame_count(video)
                except InputError as err:
                    problems.append(f"{relative_name(video, root)}: {err.reason}; {subject} {cam} camera skipped")
                    continue
                if count != n_labels:
                    frames = [f for f in labelled if f < count]
                    problems.append(f"{relative_name(video, root)}: {count} video frames but labels for "
                                    f"{len(labelled)} frames (1..{n_labels} in the {subject}_au*.txt files); "
                                    f"using the {len(frames)} frames present in both")
            values = np.full((len(frames), len(aus)), np.nan)
            for k, per_frame in labels.items():
                values[:, k] = [per_frame.get(f, np.nan) for f in frames]
            base["subject"] += [subject] * len(frames)
            base["sequence"] += [f"{subject}_{cam}"] * len(frames)
            base["video"] += [str(video)] * len(frames)
            base["frame"] += list(frames)
            blocks.append(values)
    if not blocks:
        raise FileNotFoundError(f"{label_root}: no SNxxx/SNxxx_au*.txt label files for the requested subjects")
    values = np.concatenate(blocks)
    base["dataset"] = ["DISFA"] * len(base["frame"])
    r_cols = aus.openface_columns("r")
    frames_out = make_frames("DISFA", aus, base, {c: values[:, k] for k, c in enumerate(r_cols)}, problems)
    return derive_formats(frames_out, occurrence_threshold=occurrence_threshold).validate()
