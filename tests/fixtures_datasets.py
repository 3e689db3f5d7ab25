"""Tiny on-disk copies of each dataset layout, quirks included, for the reader tests.

Each builder writes exactly the folder and file names the real release uses (or, for FEAFA, the documented
assumed layouts) and returns what a test needs to know about the quirks it planted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BP4D_HEADER = ["", "1", "2", "3", "4", "6", "7", "10", "12", "14", "15", "17", "23", "24", "99"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_bp4d(root: Path) -> dict:
    """F001_T1 (frames 1-4) and M001_T2 (frames 10-11). AU1 of F001_T1 frame 2 is code 9; image 0003.jpg of
    F001_T1 is missing on disk; AU6 intensity exists for F001_T1 (frame 4 intensity 9 = unknown)."""
    occ = root / "AUCoding" / "AU_OCC"
    rows = {
        "F001_T1": [[1] + [0] * 14, [2, 9, 1] + [0] * 12, [3] + [1] * 14, [4, 1, 0, 9] + [0] * 11],
        "M001_T2": [[10] + [0] * 14, [11] + [1] * 14],
    }
    for seq, data in rows.items():
        lines = [",".join(BP4D_HEADER)] + [",".join(str(v) for v in r) for r in data]
        write(occ / f"{seq}.csv", "\n".join(lines) + "\n")
    write(root / "AUCoding" / "AU_INT" / "AU06" / "F001_T1_AU06.csv", "1,0\n2,3\n3,5\n4,9\n")
    frames = root / "frames"
    for seq, data in rows.items():
        subject, task = seq.split("_")
        for r in data:
            if seq == "F001_T1" and r[0] == 3:
                continue  # the missing frame
            write(frames / subject / task / f"{r[0]:04d}.jpg", "not really a jpeg")
    return {"frames_root": frames}


def write_video(path: Path, n_frames: int, size: int = 32) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (size, size))
    assert writer.isOpened(), "cv2 cannot write MJPG .avi here"
    for i in range(n_frames):
        writer.write(np.full((size, size, 3), (i * 20) % 256, dtype=np.uint8))
    writer.release()
    return path


DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)


def make_disfa(root: Path) -> dict:
    """SN001: labels for 12 frames, left video 10 frames (mismatch), right video 12 frames; AU1's file has
    garbage lines. SN002: 5 labelled frames, 5-frame videos. Folder spellings as in the release:
    Videos_LeftCamera, Video_RightCamera."""
    labels = root / "ActionUnit_Labels"
    intensities = {"SN001": [(f % 6) for f in range(12)], "SN002": [0, 2, 2, 1, 0]}
    for subject, seq in intensities.items():
        for au in DISFA_AUS:
            lines = [f"{i + 1},{v if au == 1 else 0}" for i, v in enumerate(seq)]
            if subject == "SN001" and au == 1:
                lines[3:3] = ["abc", "5,7", "2,4", "1,2,3", "7,2.5"]  # lines 4..8 are garbage
            write(labels / subject / f"{subject}_au{au}.txt", "\n".join(lines) + "\n")
    write_video(root / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi", 10)
    write_video(root / "Video_RightCamera" / "RightVideoSN001_comp.avi", 12)
    write_video(root / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi", 5)
    write_video(root / "Video_RightCamera" / "RightVideoSN002_comp.avi", 5)
    return {"intensities": intensities}


def make_feafa_csv(root: Path) -> Path:
    """One CSV per video, header with image column and AU names (one unknown to the catalogue, 'AU61', and one
    free name 'Eyes Left'); images next to it."""
    for video, subject in (("v01", "S1"), ("v02", "S2")):
        for f in (1, 2):
            write(root / video / f"{f:05d}.png", "png")
    write(root / "v01.csv", "image,subject,AU1,AU2L,AU61,Eyes Left\n"
                            "v01/00001.png,S1,0.00,0.35,1.0,0.05\n"
                            "v01/00002.png,S1,0.50,,0.0,0.10\n")
    write(root / "v02.csv", "image,subject,AU1,AU2L,AU61,Eyes Left\n"
                            "v02/00001.png,S2,0.09,0.11,0.2,0.0\n"
                            "v02/00002.png,S2,1.00,0.99,0.3,0.4\n")
    return root


def make_feafa_text(root: Path, n_values: int = 24) -> Path:
    """Per-frame .auw files (24 floats, whitespace-separated, over two lines) with images beside them."""
    for video in ("clipA", "clipB"):
        for f in (0, 1):
            values = [round(0.04 * ((k + f) % 25), 2) for k in range(n_values)]
            text = " ".join(map(str, values[:12])) + "\n" + "\t".join(map(str, values[12:])) + "\n"
            write(root / video / f"{f:06d}.auw", text)
            write(root / video / f"{f:06d}.jpg", "jpg")
    return root
