"""Eye gaze from MediaPipe's iris landmarks and the head pose, as OpenFace reports it.

Why beside the AUs: every tool practitioners compare with (OpenFace's `gaze_angle_x/y`, py-feat's gaze) gives it,
and gaze changes what a face means (AU61-64 are eye movements; a look away often explains an "absent" frame).

How: the iris centre moves on a sphere around the eyeball's centre, so its offset from the two eye corners (which do
not move with gaze; the alignment uses them for the same reason) measured in the head's own frame gives the eye's
rotation in the head: sin(angle) = offset / iris radius. The head frame is the head pose's rotation
(`aullava.faces.detector.head_pose`), so a turned head with eyes fixed in it looks where the head points. The
eye-in-head direction is then rotated by the head pose into the camera's frame, both eyes are averaged (OpenFace
does the same), and the result is given as OpenFace's two angles, in radians:

- `gaze_angle_x` > 0: the eyes look towards the image's right (the subject's left in an unmirrored picture);
- `gaze_angle_y` > 0: the eyes look down;
- 0, 0: looking straight into the camera. Mirroring the picture flips the sign of x and keeps y (tested).

The iris radius is a ratio of the eye's corner-to-corner width (an adult's eyeball radius, ~12 mm, less the iris
plane's depth, over the ~29 mm eye width): the angles need no calibration to a person, and like OpenFace's they are
accurate to several degrees, not to the pixel a screen-gaze tracker needs.
"""

from __future__ import annotations

import math

import numpy as np

RIGHT_EYE_CORNERS = (33, 133)  # the subject's right eye: outer, inner corner
LEFT_EYE_CORNERS = (362, 263)
RIGHT_IRIS_CENTRE = 468  # MediaPipe's refined iris points: 468-472 the subject's right iris, 473-477 the left
LEFT_IRIS_CENTRE = 473
IRIS_RADIUS = 0.38  # the iris centre's distance from the eyeball's centre, in eye widths (11 mm / 29 mm)
# Where the iris centre sits, in eye widths of the head frame, for a face looking into the camera: level with the
# corners' midpoint horizontally, slightly above their line (the outer corner sits higher than the inner one).
# Measured: the median over 181 shared in-the-wild photos of people posing for a camera, |pitch|, |yaw| < 20°
# (`scripts/gaze_rest.py ../shared/faces/index.csv --faces 200`: x -0.004, y 0.068; quartiles of y .046 … .085).
REST_OFFSET = (0.0, 0.068)


def rotation_from_pose(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The head's rotation (canonical face → camera, OpenGL axes: x right, y up, z towards the viewer) from
    `head_pose`'s degrees; R = Rx(pitch)·Ry(yaw)·Rz(roll), the split `head_pose` reads back."""
    a, b, c = (math.radians(v) for v in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _in_head_frame(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Image-pixel displacement vectors (x right, y down, z MediaPipe's depth: smaller is nearer) in the head's frame
    (x towards the subject's left, y up, z out of the face)."""
    opengl = np.asarray(vectors, dtype=np.float64) * (1.0, -1.0, -1.0)
    return opengl @ rotation  # rows: R^T v


def iris_offsets(landmarks: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(2, 2): each iris centre's offset (x, y) from its eye corners' midpoint in the head's frame, in eye widths;
    right eye first. Before `REST_OFFSET` is taken off (scripts/gaze_rest.py measures it from these)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    out = []
    for (outer, inner), iris in ((RIGHT_EYE_CORNERS, RIGHT_IRIS_CENTRE), (LEFT_EYE_CORNERS, LEFT_IRIS_CENTRE)):
        corners = _in_head_frame(lm[[outer, inner]], rotation)
        width = float(np.linalg.norm(corners[1, :2] - corners[0, :2]))
        centre = _in_head_frame(lm[[iris]], rotation)[0]
        out.append((centre[:2] - corners.mean(axis=0)[:2]) / max(width, 1e-6))
    return np.asarray(out)


def eye_in_head(landmarks: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(2, 3) unit gaze directions of the right and left eye in the head's frame."""
    out = []
    for offset in iris_offsets(landmarks, rotation) - REST_OFFSET:
        sx, sy = np.clip(offset / IRIS_RADIUS, -0.95, 0.95)
        out.append((sx, sy, math.sqrt(max(1.0 - sx * sx - sy * sy, 0.05))))
    directions = np.asarray(out)
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def gaze_angles(landmarks: np.ndarray, pose: tuple[float, float, float]) -> tuple[float, float]:
    """(gaze_angle_x, gaze_angle_y) in radians (see the module docstring for the signs); NaN, NaN without the iris
    landmarks (fewer than 478 points) or a head pose."""
    lm = np.asarray(landmarks)
    if lm.ndim != 2 or lm.shape[0] <= LEFT_IRIS_CENTRE or lm.shape[1] < 3 or not np.all(np.isfinite(pose)):
        return math.nan, math.nan
    rotation = rotation_from_pose(*pose)
    direction = eye_in_head(lm, rotation).mean(axis=0) @ rotation.T  # head frame → camera (OpenGL axes)
    x, y, z = direction
    return math.atan2(x, z), math.atan2(-y, z)
