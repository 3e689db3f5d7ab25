"""Face ids that stay with a person across the frames of a video (the `face_id` column).

The detector numbers faces left to right in each frame (`face`), which changes whenever someone moves past someone
else; a time series per person needs an identity. The tracker here is deliberately simple and deterministic, so a
resumed run (which replays the boxes already written) gives the same ids as an uninterrupted one:

* Each analysed frame, every face box is compared with the last box of every live track by intersection over union
  (IoU). Pairs are matched greedily, highest IoU first, and only when IoU >= `min_iou` (0.2): one face per track and
  one track per face.
* A face that matches no track starts a new one with the next unused id (0, 1, 2 … in order of appearance; within
  one frame, left to right). Ids are never reused within a video.
* A track that finds no face keeps its last box for up to `max_gap` analysed frames (10), so a face hidden for a
  moment (a hand, a blink of the detector, a turned head) gets its id back when it reappears near where it was;
  after that the track is retired and a face there gets a new id.

What it does not do: recognise a person by appearance. Two people who swap places while both hidden, or a face that
leaves and comes back after more than `max_gap` analysed frames, get new or swapped ids. The gap counts analysed
frames, so with `--every 5` at 30 fps, 10 frames are 1.7 s. With `--every` large enough that a face moves more than
its own width between analysed frames, boxes stop overlapping and ids are not kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_IOU = 0.2
MAX_GAP = 10


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 when either is empty."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    face_id: int
    box: tuple[float, float, float, float]
    missed: int = 0  # analysed frames since the track last matched a face


class FaceTracker:
    """Greedy IoU tracker; one per video. `update(boxes)` once per analysed frame returns one id per box."""

    def __init__(self, min_iou: float = MIN_IOU, max_gap: int = MAX_GAP):
        if not 0.0 < min_iou <= 1.0 or max_gap < 0:
            raise ValueError("min_iou must be in (0, 1] and max_gap >= 0")
        self.min_iou, self.max_gap = min_iou, max_gap
        self.tracks: list[_Track] = []
        self.next_id = 0

    def update(self, boxes: Sequence[Sequence[float]]) -> list[int]:
        boxes = [tuple(float(v) for v in box) for box in boxes]
        pairs = sorted(((box_iou(box, track.box), -t, -b) for b, box in enumerate(boxes)
                        for t, track in enumerate(self.tracks)), reverse=True)  # ties: older track, left box
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for iou, neg_t, neg_b in pairs:
            if iou < self.min_iou:
                break
            t, b = -neg_t, -neg_b
            if ids[b] is None and t not in taken:
                ids[b] = self.tracks[t].face_id
                taken.add(t)
                self.tracks[t].box, self.tracks[t].missed = boxes[b], 0
        for t, track in enumerate(self.tracks):
            if t not in taken:
                track.missed += 1
        self.tracks = [track for track in self.tracks if track.missed <= self.max_gap]
        for b in np.argsort([box[0] for box in boxes], kind="stable"):  # new faces numbered left to right
            if ids[b] is None:
                ids[b] = self.next_id
                self.tracks.append(_Track(self.next_id, boxes[b]))
                self.next_id += 1
        return [int(i) for i in ids]
