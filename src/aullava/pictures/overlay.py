"""`predict --overlay DIR`: each photo redrawn with its face boxes, face ids and per-AU bars (a PNG), and each video
as an MP4 of its analysed frames with the same drawing (what OpenFace's tracked video and py-feat's
`plot_detections` show), so a user can see at a glance whether a number in the table belongs to the face they mean.

The bars show, per AU, the most informative value the results carry: the binary answer's p(present) when the
parallel readout gave it, else the 0–1 intensity, else the 0–5 intensity / 5, else the 0/1 answer; an AU whose
binary answer is 1 is drawn in orange, the others in blue. Drawing uses OpenCV (already there for the face crops);
the MP4 is encoded by PyAV (H.264 where the FFmpeg build has libx264, else MPEG-4 part 2) with the frames' own
timestamps, so `--every 5` gives a video that plays at the real speed with fewer frames.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

ORANGE, BLUE, WHITE, DARK = (255, 140, 0), (60, 130, 230), (255, 255, 255), (20, 20, 20)  # RGB
TIME_BASE = Fraction(1, 1000)  # overlay video timestamps in milliseconds
FALLBACK_RATE = 30


def bar_values(face) -> tuple[np.ndarray, str, np.ndarray | None]:
    """(values in 0..1 per AU, what they are, binary answers or None) for one `FaceResult`."""
    binary = face.values.get("binary")
    if "binary" in face.expected:
        return np.asarray(face.expected["binary"], float), "p(present)", binary
    if "continuous" in face.values:
        return np.asarray(face.values["continuous"], float), "intensity 0-1", binary
    if "discrete" in face.values:
        return np.asarray(face.values["discrete"], float) / 5.0, "intensity 0-5 / 5", binary
    if binary is not None:
        return np.asarray(binary, float), "occurrence 0/1", binary
    return np.zeros(len(face.au_ids)), "no values", None


def draw_faces(image: np.ndarray, faces, label: str | None = None,
               scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """A copy of the RGB `image` with every face's box, id and AU bars (and `label`, e.g. the time, top left).
    `scale`: picture pixels per pixel of `image` (the boxes are in picture pixels; a large photo's `image` is the
    reduced copy detection ran on)."""
    canvas = np.ascontiguousarray(image.copy())
    h, w = canvas.shape[:2]
    unit = max(0.32, min(h, w) / 1100)  # text scale: legible from 240p to 4K
    thick = max(1, round(unit * 2))
    row = max(9, round(24 * unit))  # one AU per row of the panel
    for face in faces:
        x0, y0, x1, y1 = (int(round(v / s)) for v, s in zip(face.box, scale * 2))
        ident = face.face_id if face.face_id is not None else face.face
        cv2.rectangle(canvas, (x0, y0), (x1, y1), ORANGE, max(2, thick + 1))
        _text(canvas, f"id {ident}", (x0, max(row, y0 - thick * 3)), unit * 1.1, thick)
        values, kind, binary = bar_values(face)
        names = list(face.au_ids)
        label_w = cv2.getTextSize("AU00 ", cv2.FONT_HERSHEY_SIMPLEX, unit, thick)[0][0]
        bar_w = max(30, round(90 * unit))
        panel_w, panel_h = label_w + bar_w + 8, row * (len(names) + 1) + 6
        px = x1 + 6 if x1 + 6 + panel_w <= w else max(0, x0 - 6 - panel_w)
        py = int(np.clip(y0, 0, max(0, h - panel_h)))
        patch = canvas[py:py + panel_h, px:px + panel_w]
        patch[:] = (patch * 0.35).astype(np.uint8)  # darkened backdrop keeps the face visible behind the panel
        _text(canvas, kind, (px + 3, py + row - 4), unit * 0.8, max(1, thick - 1))
        for i, (name, value) in enumerate(zip(names, values)):
            top = py + row * (i + 1) + 3
            _text(canvas, name[:5], (px + 3, top + row - 4), unit * 0.85, max(1, thick - 1))
            on = binary is not None and i < len(binary) and binary[i] >= 0.5
            fill = 0 if not np.isfinite(value) else round(bar_w * float(np.clip(value, 0, 1)))
            bx = px + label_w + 4
            cv2.rectangle(canvas, (bx, top + 2), (bx + bar_w, top + row - 3), (90, 90, 90), 1)
            if fill:
                cv2.rectangle(canvas, (bx, top + 2), (bx + fill, top + row - 3), ORANGE if on else BLUE, -1)
    if label:
        _text(canvas, label, (6, row + 2), unit * 1.1, thick)
    return canvas


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float, thick: int) -> None:
    """White text with a dark outline: readable on any background."""
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, DARK, thick + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, thick, cv2.LINE_AA)


def _video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class OverlayWriter:
    """Takes results with their pictures (`Predictor.iter_predict(keep_images=True)`), in order, and writes
    `DIR/<name>.png` per photo and `DIR/<name>.mp4` per video (names made unique with -2, -3 …). `close()` finishes
    the last video. `written` lists the files."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []
        self._used: set[str] = set()
        self._video = None  # (file name, container, stream, size, last pts)

    def _path(self, file: str, suffix: str) -> Path:
        stem, n = Path(file).stem or "input", 1
        name = stem
        while name + suffix in self._used:
            n += 1
            name = f"{stem}-{n}"
        self._used.add(name + suffix)
        path = self.folder / (name + suffix)
        self.written.append(path)
        return path

    def add(self, results) -> None:
        for result in results:
            if result.image is None:
                continue  # a failed file: nothing to draw
            if result.frame is None:
                self._finish_video()
                picture = draw_faces(result.image, result.faces, scale=getattr(result, "scale", (1.0, 1.0)))
                cv2.imwrite(str(self._path(result.file, ".png")), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            else:
                self._add_frame(result)

    def _add_frame(self, result) -> None:
        import av

        if self._video is None or self._video[0] != result.file:
            self._finish_video()
            h, w = result.image.shape[:2]
            size = (w - w % 2, h - h % 2)  # yuv420p needs even sides
            container = av.open(str(self._path(result.file, ".mp4")), "w")
            stream = container.add_stream(_video_codec(), rate=FALLBACK_RATE)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
            self._video = [result.file, container, stream, size, -1]
        _, container, stream, (w, h), last = self._video
        label = f"{result.timestamp:.2f} s  frame {result.frame}"
        picture = draw_faces(result.image[:h, :w], result.faces, label)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        pts = max(round(result.timestamp / TIME_BASE), last + 1)  # strictly increasing, as the muxer requires
        frame.pts, frame.time_base = pts, TIME_BASE
        self._video[4] = pts
        for packet in stream.encode(frame):
            container.mux(packet)

    def _finish_video(self) -> None:
        if self._video is None:
            return
        _, container, stream, _, _ = self._video
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        self._video = None

    def close(self) -> None:
        self._finish_video()
