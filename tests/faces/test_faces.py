"""aullava.faces.detector on the bundled astronaut photo (public domain, NASA): detection, alignment, robustness."""

from __future__ import annotations

import importlib.resources

import cv2
import numpy as np
import pytest

from aullava.faces.detector import (
    EYE_DISTANCE, EYE_Y, Face, FaceDetector, align_face, alignment_matrix, eye_centres, transform_points,
)
from aullava.faces.images import load_image

S = 224
TARGET_RIGHT = np.array([(0.5 - EYE_DISTANCE / 2) * S, EYE_Y * S])  # subject's right eye: crop's left
TARGET_LEFT = np.array([(0.5 + EYE_DISTANCE / 2) * S, EYE_Y * S])


@pytest.fixture(scope="module")
def detector():
    with FaceDetector(crop_size=S) as det:
        yield det


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    ref = importlib.resources.files("aullava") / "resources/examples/astronaut.png"
    with importlib.resources.as_file(ref) as path:
        return load_image(path)


@pytest.fixture(scope="module")
def face(detector, astronaut) -> Face:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    return faces[0]


def _rotate(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise about the centre, canvas enlarged so nothing is cut; returns (image, 2×3 matrix)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, m, (nw, nh)), m


def _assert_eyes_level_at_template(face: Face, tol: float = 2.0):
    right, left = eye_centres(face.crop_landmarks)
    assert abs(right[1] - left[1]) < tol, (right, left)
    assert np.linalg.norm(right - TARGET_RIGHT) < tol, right
    assert np.linalg.norm(left - TARGET_LEFT) < tol, left


# --- the real face -------------------------------------------------------------------------------------------------

def test_astronaut_one_face(face, astronaut):
    h, w = astronaut.shape[:2]
    assert face.crop.shape == (S, S, 3) and face.crop.dtype == np.uint8
    assert face.landmarks.shape == (478, 3)
    assert face.index == 0
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert 60 < x1 - x0 < 150 and 70 < y1 - y0 < 170  # her face is ~90×105 px in the 512×512 photo
    right, left = eye_centres(face.landmarks)
    assert x0 < right[0] < left[0] < x1 and y0 < right[1] < y1  # unmirrored photo: her right eye on image left


def test_blendshapes(face):
    assert len(face.blendshapes) == 52
    assert all(0.0 <= v <= 1.0 for v in face.blendshapes.values())
    # she smiles broadly with open eyes: lip-corner pull high, blinks low
    assert face.blendshapes["mouthSmileLeft"] > 0.3 and face.blendshapes["mouthSmileRight"] > 0.3
    assert face.blendshapes["eyeBlinkLeft"] < 0.5 and face.blendshapes["eyeBlinkRight"] < 0.5


def test_eyes_level_and_at_template(face):
    _assert_eyes_level_at_template(face)


def test_whole_face_inside_crop(face):
    pts = face.crop_landmarks
    assert pts.min() > 0.1 * S and pts.max() < 0.9 * S  # forehead, brows, cheeks and chin all inside with margin
    chin, forehead = pts[152], pts[10]
    assert 0.8 * S < chin[1] < 0.9 * S and forehead[1] < EYE_Y * S - 0.15 * S
    assert abs(pts[:, 0].mean() - S / 2) < 0.05 * S  # horizontally centred
    # the crop really shows the face where the landmarks say: skin at the nose tip, not background or border
    nose = face.crop[int(pts[1, 1]), int(pts[1, 0])].astype(int)
    assert nose[0] > nose[2] + 30  # skin tone: more red than blue


def test_matrix_is_a_similarity(face):
    a = face.matrix[:, :2]
    scale = np.sqrt(np.linalg.det(a))
    np.testing.assert_allclose(a @ a.T, scale**2 * np.eye(2), atol=1e-9)  # rotation × uniform scale, no shear


@pytest.mark.parametrize("degrees", [30, -30])
def test_rotated_face_still_level(detector, astronaut, face, degrees):
    rotated, m = _rotate(astronaut, degrees)
    faces = detector.detect(rotated)
    assert len(faces) == 1
    _assert_eyes_level_at_template(faces[0])
    # same landmarks as the upright detection, once mapped back; and (nearly) the same crop
    back = transform_points(cv2.invertAffineTransform(m), faces[0].landmarks)
    assert np.abs(back - face.landmarks[:, :2]).mean() < 2.0
    assert np.abs(faces[0].crop.astype(int) - face.crop).mean() < 12


# --- no face / odd sizes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(512, 512, 3), (8, 8, 3), (1, 1, 3), (16, 1000, 3), (64, 48)])
def test_blank_returns_empty(detector, shape):
    assert detector.detect(np.full(shape, 128, np.uint8)) == []


def test_noise_returns_empty(detector):
    assert detector.detect(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []


def test_rejects_non_uint8(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))


def test_large_image(detector, astronaut, face):
    big = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_CUBIC)  # 8× the photo
    faces = detector.detect(big)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, np.array(face.box) * 8, atol=0.03 * 8 * 100)
    _assert_eyes_level_at_template(faces[0])
    assert np.abs(faces[0].crop.astype(int) - face.crop).mean() < 8  # anti-aliased: same look as the small photo


def test_small_faces_found_left_to_right(detector, astronaut):
    canvas = np.full((1536, 2048, 3), 90, np.uint8)  # each face ~5% of the width: too small for one pass
    canvas[900:1412, 1400:1912] = astronaut
    canvas[100:612, 200:712] = astronaut[:, ::-1]
    faces = detector.detect(canvas)
    assert [f.index for f in faces] == [0, 1]
    assert faces[0].box[2] < 712 and faces[1].box[0] > 1400  # sorted left to right, each in its own place
    assert faces[1].box[1] > 900
    for f in faces:
        _assert_eyes_level_at_template(f)
    with FaceDetector(crop_size=S, search_tiles=False) as single_pass:
        assert single_pass.detect(canvas) == []
    with FaceDetector(crop_size=S, max_faces=1) as one:
        assert len(one.detect(canvas)) == 1


def test_detector_reusable_after_close(astronaut):
    det = FaceDetector(crop_size=112)
    assert len(det.detect(astronaut)) == 1
    det.close()
    faces = det.detect(astronaut)  # lazily re-created
    assert len(faces) == 1 and faces[0].crop.shape == (112, 112, 3)
    det.close()
    det.close()


# --- align_face on given landmarks ---------------------------------------------------------------------------------

def _synthetic_landmarks(right, left, n=478, dims=3) -> np.ndarray:
    lm = np.zeros((n, dims))
    lm[[33, 133], :2] = np.array(right) + [[-5, 0], [5, 0]]
    lm[[362, 263], :2] = np.array(left) + [[-5, 0], [5, 0]]
    return lm


@pytest.mark.parametrize("dims", [2, 3])
def test_align_face_from_given_landmarks(dims):
    image = np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    # eyes 60 px apart on a line tilted by atan(36/48) ≈ 37°, subject's right eye lower-left
    lm = _synthetic_landmarks((100, 200), (148, 164), n=478 if dims == 3 else 468, dims=dims)
    crop, matrix = align_face(image, lm, 160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    right, left = eye_centres(transform_points(matrix, lm))
    np.testing.assert_allclose(right, [(0.5 - EYE_DISTANCE / 2) * 160, EYE_Y * 160], atol=1e-9)
    np.testing.assert_allclose(left, [(0.5 + EYE_DISTANCE / 2) * 160, EYE_Y * 160], atol=1e-9)
    np.testing.assert_allclose(np.sqrt(np.linalg.det(matrix[:, :2])), EYE_DISTANCE * 160 / 60)
    np.testing.assert_allclose(matrix, alignment_matrix(lm, 160))
    # the crop is the image warped by exactly that matrix (no anti-aliasing needed at this scale)
    expected = cv2.warpAffine(image, matrix, (160, 160), flags=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop, expected)


def test_align_face_antialiases_large_faces():
    # noise seen through a 7× reduction: area averaging gives ~uniform grey, plain bilinear sampling keeps the noise
    image = np.random.default_rng(3).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    lm = _synthetic_landmarks((450, 500), (750, 500))
    crop, matrix = align_face(image, lm, 224)
    aliased = cv2.warpAffine(image, matrix, (224, 224), flags=cv2.INTER_LINEAR)
    inside = (slice(20, 200), slice(20, 200))
    assert crop[inside].std() < 0.3 * aliased[inside].std()
    assert abs(crop[inside].mean() - 127.5) < 3


def test_align_face_bad_landmarks():
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="landmarks"):
        align_face(image, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        align_face(image, np.zeros((478, 3)))
