"""Gaze angles (`aullava.faces.gaze`): the geometry on constructed eyes, then MediaPipe on a real face whose irises
are moved by the synth's mesh warp, and mirroring."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from aullava.faces import gaze

EYE_WIDTH = 30.0


def constructed_face(eye_yaw: float = 0.0, eye_pitch: float = 0.0, pose=(0.0, 0.0, 0.0)) -> np.ndarray:
    """478 landmarks in image pixels of a head with the given pose whose eyes are turned by eye_yaw (towards the
    subject's left) and eye_pitch (up) radians in the head: built in the head frame, rotated, projected."""
    head = np.zeros((478, 3))
    rest = np.array(gaze.REST_OFFSET) * EYE_WIDTH
    for (outer, inner), iris, side in ((gaze.RIGHT_EYE_CORNERS, gaze.RIGHT_IRIS_CENTRE, -1),
                                       (gaze.LEFT_EYE_CORNERS, gaze.LEFT_IRIS_CENTRE, 1)):
        centre = np.array([side * 32.0, 0.0, 0.0])
        head[outer] = centre + (side * EYE_WIDTH / 2, 0, 0)
        head[inner] = centre - (side * EYE_WIDTH / 2, 0, 0)
        radius = gaze.IRIS_RADIUS * EYE_WIDTH
        head[iris] = centre + (radius * math.sin(eye_yaw) * math.cos(eye_pitch) + rest[0],
                               radius * math.sin(eye_pitch) + rest[1], 0)
    rotation = gaze.rotation_from_pose(*pose)
    opengl = head @ rotation.T
    return opengl * (1.0, -1.0, -1.0) + (320.0, 240.0, 0.0)  # image pixels: y down, MediaPipe depth


def test_eyes_looking_into_the_camera_read_zero_and_turned_eyes_read_their_angle():
    assert gaze.gaze_angles(constructed_face(), (0.0, 0.0, 0.0)) == pytest.approx((0.0, 0.0), abs=1e-9)
    x, y = gaze.gaze_angles(constructed_face(eye_yaw=0.3), (0.0, 0.0, 0.0))
    assert x == pytest.approx(0.3, abs=1e-6) and y == pytest.approx(0.0, abs=1e-9)  # towards the picture's right
    x, y = gaze.gaze_angles(constructed_face(eye_pitch=0.2), (0.0, 0.0, 0.0))
    assert x == pytest.approx(0.0, abs=1e-9) and y == pytest.approx(-0.2, abs=1e-6)  # up is negative, as OpenFace


@pytest.mark.parametrize("pose", [(0.0, 25.0, 0.0), (-15.0, 0.0, 0.0), (10.0, -20.0, 12.0)])
def test_eyes_fixed_in_a_turned_head_look_where_the_head_points(pose):
    x, y = gaze.gaze_angles(constructed_face(pose=pose), pose)
    forward = gaze.rotation_from_pose(*pose)[:, 2]  # the head's +z (out of the face) in camera axes
    assert (x, y) == pytest.approx((math.atan2(forward[0], forward[2]), math.atan2(-forward[1], forward[2])),
                                   abs=1e-9)
    assert np.sign(x) == np.sign(pose[1]) or pose[1] == 0  # turned towards the picture's right: positive
    if pose == (-15.0, 0.0, 0.0):
        assert y == pytest.approx(math.radians(-15.0), abs=1e-9)  # head tilted back: looking up


def test_eye_and_head_turns_add_up():
    x, _ = gaze.gaze_angles(constructed_face(eye_yaw=-0.2, pose=(0.0, 20.0, 0.0)), (0.0, 20.0, 0.0))
    assert x == pytest.approx(math.radians(20.0) - 0.2, abs=1e-6)


def test_missing_iris_points_or_pose_give_nan():
    assert all(math.isnan(v) for v in gaze.gaze_angles(np.zeros((468, 3)), (0.0, 0.0, 0.0)))
    assert all(math.isnan(v) for v in gaze.gaze_angles(constructed_face(), (math.nan,) * 3))


@pytest.fixture(scope="module")
def large_face(astronaut_path):
    """The example face at 3x, so its eyes are ~55 px wide and a warp can move the irises by a few pixels."""
    from aullava.faces.images import load_image

    return cv2.resize(load_image(astronaut_path), None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)


def test_irises_moved_by_the_mesh_warp_move_the_gaze_that_way(large_face, detector):
    from aullava.synth.warp import warp_image

    face = detector.detect(large_face)[0]
    width = float(np.linalg.norm(face.landmarks[33, :2] - face.landmarks[133, :2]))
    source = face.landmarks[:, :2].astype(np.float64)
    read = {}
    for dx, dy in [(-10, 0), (-5, 0), (0, 0), (5, 0), (10, 0), (0, -5), (0, 5)]:
        target = source.copy()
        target[468:478] += (dx, dy)  # both irises; lids and corners stay
        read[dx, dy] = detector.detect(warp_image(large_face, source, target))[0].gaze
    xs = [read[dx, 0][0] for dx in (-10, -5, 0, 5, 10)]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 0.15  # radians; 20 px of ~55 px eyes is a large look aside
    assert max(abs(read[dx, 0][1] - read[0, 0][1]) for dx in (-10, 10)) < 0.06  # a look aside is not up/down
    assert read[0, 5][1] > read[0, 0][1] > read[0, -5][1]  # irises lower: looking down (positive)
    assert width > 40


def test_a_mirrored_picture_mirrors_the_gaze(large_face, detector):
    x, y = detector.detect(large_face)[0].gaze
    mx, my = detector.detect(large_face[:, ::-1].copy())[0].gaze
    assert abs(x + mx) < 0.05 and abs(y - my) < 0.08  # MediaPipe's own mesh differs a little between the two
    assert abs(y) < 0.4 and abs(x) < 0.2  # she looks about into the camera, a little down
