"""Face detection (MediaPipe Face Landmarker), similarity alignment and cropping.

Action Units are small local movements (brow raise, lid tightening, lip corner pull), so the visual encoder must see
every face in the same canonical frame: upright, same scale, same place. We get 478 3-D landmarks and the 52
blendshape scores from MediaPipe's Face Landmarker, then warp with a similarity transform (rotation + uniform scale
+ translation, no shear, so facial proportions, which carry AU information, are preserved) that puts the eye centres
at fixed positions of the crop.

Each face also gets its head pose (pitch, yaw, roll in degrees, from MediaPipe's facial transformation matrix), its
gaze (`aullava.faces.gaze`, from the iris landmarks and the pose) and
a confidence: the score of MediaPipe's face detector (the same short-range model the landmarker runs first, taken
from its bundle, because the landmarker does not report it) for the detection that matches the face's landmarks.

The landmarker bundle only contains MediaPipe's *short-range* face detector, which finds faces that fill roughly a
fifth of the frame or more. For group photos or faces far from the camera, `FaceDetector` falls back to searching
overlapping tiles when the whole-image pass finds nothing.
"""

from __future__ import annotations

import math
import threading
import weakref
import zipfile
from dataclasses import dataclass

import cv2
import numpy as np

from aullava.runtime.assets import face_landmarker_path
from aullava.faces.gaze import gaze_angles
from aullava.runtime.quiet import native_stderr_silenced

# --- alignment template --------------------------------------------------------------------------------------------
# Eye centres (midpoint of each eye's two corners) land at (0.5 ∓ EYE_DISTANCE/2, EYE_Y) × crop_size.
# For an average adult face, the mesh top (mid forehead) is ~0.75 inter-ocular distances (IOD) above the eye line and
# the chin ~1.8 IOD below, so with IOD = 0.27 and eyes at 0.37: forehead top ≈ 0.17, brows ≈ 0.27, chin ≈ 0.86,
# leaving ~0.14 below the chin for a dropped jaw (AU26/27) and the forehead for brow-raise wrinkles (AU1/AU2).
EYE_Y = 0.37
EYE_DISTANCE = 0.27
DEFAULT_CROP_SIZE = 224

# MediaPipe face-mesh indices of the eye corners. Corners, not iris centres (468/473): corners do not move with
# gaze direction or when the eye closes (AU43/45), so the alignment stays put while those AUs are active.
RIGHT_EYE = (33, 133)  # the subject's right eye: outer, inner corner (image left in an unmirrored photo)
LEFT_EYE = (362, 263)  # the subject's left eye: inner, outer corner

MIN_SIDE = 16  # smaller images cannot contain a face worth analysing; skip MediaPipe entirely
MIN_TILE = 160  # smallest tile side searched by the fallback (faces below ~1/5 of it are not found anyway)
MAX_TILE_LEVELS = 3  # tile sizes long/2, long/4, long/8: bounds the worst case (no face, 2048 px) to < 1 s
TILE_CONFIDENCE = 0.8  # tiles give the detector dozens of extra chances to hallucinate (e.g. a shiny helmet visor
# seen as a face), so the tile search demands more confidence than the whole-image pass


@dataclass
class Face:
    """One detected face. Coordinates are pixels of the image passed to `FaceDetector.detect`."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the landmarks, clipped to the image
    landmarks: np.ndarray  # (478, 3) float32: x, y in pixels; z in the same pixel scale as x (relative depth)
    blendshapes: dict[str, float]  # the 52 MediaPipe blendshape scores (incl. "_neutral"), 0..1
    crop: np.ndarray  # (S, S, 3) uint8 RGB, aligned with `align_face`
    matrix: np.ndarray  # (2, 3) similarity transform: image pixels → crop pixels
    index: int = 0  # position in the left-to-right order of `detect`'s result
    pose: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # pitch, yaw, roll in degrees (see head_pose)
    confidence: float = math.nan  # the face detector's score for this face, 0..1 (NaN: no detection matched it)
    gaze: tuple[float, float] = (math.nan, math.nan)  # gaze_angle_x, gaze_angle_y in radians (see faces.gaze)

    @property
    def crop_landmarks(self) -> np.ndarray:
        """Landmark x, y mapped into crop pixels, (478, 2)."""
        return transform_points(self.matrix, self.landmarks)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (N, ≥2) points (extra columns such as z are ignored); returns (N, 2)."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    return pts @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix, dtype=np.float64)[:, 2]


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right_eye, left_eye) centres of the subject, each the mean of the eye's two corner landmarks (x, y[, z])."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
        raise ValueError(f"expected MediaPipe face-mesh landmarks of shape (468 or 478, 2 or 3), got {lm.shape}")
    return lm[list(RIGHT_EYE)].mean(axis=0), lm[list(LEFT_EYE)].mean(axis=0)


def alignment_matrix(landmarks: np.ndarray, crop_size: int = DEFAULT_CROP_SIZE) -> np.ndarray:
    """The 2×3 similarity transform that levels the eyes and puts them at the template positions.

    Rotation comes from the 2-D eye line (in-plane roll only). Scale uses the 3-D inter-ocular distance when z is
    given: a head turned sideways (yaw) shrinks the 2-D eye distance, which would zoom in and cut off the jaw, while
    the 3-D distance stays roughly constant.
    """
    right, left = eye_centres(landmarks)
    d2 = left[:2] - right[:2]
    iod = float(np.linalg.norm(left - right))  # 3-D if z present
    if iod < 1e-6 or float(np.linalg.norm(d2)) < 1e-6:
        raise ValueError("degenerate landmarks: both eye centres coincide")
    angle = np.arctan2(d2[1], d2[0])
    scale = EYE_DISTANCE * crop_size / iod
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    rot = np.array([[c, s], [-s, c]])  # rotates by -angle: the eye line becomes horizontal, right eye on the left
    mid = (right[:2] + left[:2]) / 2
    target = np.array([0.5 * crop_size, EYE_Y * crop_size])
    return np.hstack([rot, (target - rot @ mid)[:, None]])


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    crop_size: int = DEFAULT_CROP_SIZE,
    border: int = cv2.BORDER_CONSTANT,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `image` so the face given by `landmarks` (image pixels) is aligned; returns (crop, 2×3 matrix).

    The matrix maps image pixels to crop pixels (apply it to landmarks with `transform_points`). Areas outside the
    image are black by default: `BORDER_REPLICATE` smears edge pixels into streaks that can look like wrinkles.
    When the face is shrunk by more than 2×, the relevant region is first reduced with area averaging, because
    `warpAffine`'s bilinear sampling would alias (moiré on hair and stubble) at large reduction factors.
    """
    matrix = alignment_matrix(landmarks, crop_size)
    warp = matrix
    src = image
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        inv = cv2.invertAffineTransform(matrix)
        corners = transform_points(inv, np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]]))
        h, w = image.shape[:2]
        x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 2, 0, [w, h])
        x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, 0, [w, h])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            region = image[y0:y1, x0:x1]
            nw, nh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            src = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / (x1 - x0), nh / (y1 - y0)
            # region pixel p → reduced pixel fx*(p - x0) + 0.5*fx - 0.5 (cv2.resize's pixel-centre convention)
            shrink = np.array([[fx, 0, -fx * x0 + 0.5 * fx - 0.5], [0, fy, -fy * y0 + 0.5 * fy - 0.5], [0, 0, 1]])
            warp = matrix @ np.linalg.inv(shrink)
    crop = cv2.warpAffine(
        np.ascontiguousarray(src), warp, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=border,
        borderValue=(0, 0, 0),
    )
    return crop, matrix


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]  # callers should use imaging.load_image, which composites alpha properly
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    return image


def head_pose(transform: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees from MediaPipe's 4×4 facial transformation matrix (canonical face → camera).

    MediaPipe's camera space is OpenGL's: x to the image's right, y up, z towards the viewer; the canonical face
    looks along +z. The rotation is split as R = Rx(pitch)·Ry(yaw)·Rz(roll), so: pitch > 0 the head is bowed (nose
    down), yaw > 0 the head is turned towards the image's right (the subject's left in an unmirrored picture),
    roll > 0 the head is tilted counter-clockwise as the picture is seen (towards the subject's right shoulder).
    Mirroring the picture flips the signs of yaw and roll and keeps pitch (tested). 0, 0, 0 is a face looking
    straight into the camera, upright.
    """
    rotation = np.asarray(transform, dtype=np.float64)[:3, :3]
    rotation = rotation / np.maximum(np.linalg.norm(rotation, axis=0), 1e-12)  # drop any scale
    pitch = math.degrees(math.atan2(-rotation[1, 2], rotation[2, 2]))
    yaw = math.degrees(math.asin(float(np.clip(rotation[0, 2], -1.0, 1.0))))
    roll = math.degrees(math.atan2(-rotation[0, 1], rotation[0, 0]))
    return pitch, yaw, roll


def _match_scores(boxes: list[np.ndarray], detections: list[tuple[np.ndarray, float]]) -> list[float]:
    """Each landmark box's detection score: greedy on IoU (>= 0.2), best pairs first; NaN where none matched.
    The detector's box is a square over eyes, nose and mouth, the landmarks' box the whole mesh, so they overlap
    well but not exactly."""
    pairs = sorted(((_iou(b, d), i, j) for i, b in enumerate(boxes) for j, (d, _) in enumerate(detections)),
                   reverse=True)
    scores, used = [math.nan] * len(boxes), set()
    for iou, i, j in pairs:
        if iou < 0.2:
            break
        if math.isnan(scores[i]) and j not in used:
            scores[i] = detections[j][1]
            used.add(j)
    return scores


def _box(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _tile_starts(n: int, tile: int) -> list[int]:
    if n <= tile:
        return [0]
    return sorted(set(range(0, n - tile, tile // 2)) | {n - tile})  # 50 % overlap, last tile flush with the edge


def _close_landmarker(landmarker) -> None:
    """Close a MediaPipe landmarker without noise at interpreter exit.

    MediaPipe 1.2 closes through a thread pool that is already shut down when atexit handlers run, and its own
    `__del__` crashes during module teardown; both print tracebacks after a perfectly successful run. At exit the OS
    reclaims the memory anyway, so a failed close is ignored and the handle dropped so `__del__` does nothing.
    """
    try:
        with native_stderr_silenced():  # the face detector's graph logs "DestroyAccelerator" as it closes
            landmarker.close()
    except Exception:  # noqa: BLE001
        if hasattr(landmarker, "_handle"):
            landmarker._handle = None


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box: in AU data and in portraits the subject faces the camera close up; smaller
    faces are bystanders."""
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


class FaceDetector:
    """Finds faces, their landmarks and blendshapes, and returns aligned crops. Reusable on any number of images.

    The MediaPipe landmarker is created on first use (so constructing a detector is free, e.g. in a CLI that may
    fail earlier on its arguments) and released by `close()` or the context manager; `detect` after `close` simply
    creates a new one. Calls are serialised with a lock because a MediaPipe graph is not re-entrant.
    """

    def __init__(
        self,
        crop_size: int = DEFAULT_CROP_SIZE,
        max_faces: int = 8,
        min_confidence: float = 0.5,
        max_side: int = 2048,
        search_tiles: bool = True,
        border: int = cv2.BORDER_CONSTANT,
    ):
        """`max_side`: images are reduced to this long side for detection (landmarks are mapped back and the crop is
        cut from the full-resolution image). `search_tiles`: when the whole image yields no face, look for small
        faces in overlapping tiles (costs ~2 ms per tile; only on images where nothing was found)."""
        if crop_size < 8 or max_faces < 1 or not 0.0 <= min_confidence <= 1.0 or max_side < MIN_SIDE:
            raise ValueError("invalid FaceDetector settings")
        self.crop_size = crop_size
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.max_side = max_side
        self.search_tiles = search_tiles
        self.border = border
        self._landmarkers: dict[bool, tuple] = {}  # strict (tile search) flag → (FaceLandmarker, FaceDetector)
        self._finalizers: list[weakref.finalize] = []
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def _get_landmarker(self, strict: bool = False):
        if strict not in self._landmarkers:
            from mediapipe.tasks.python import BaseOptions, vision  # heavy import (~0.5 s): only when needed

            confidence = max(self.min_confidence, TILE_CONFIDENCE) if strict else self.min_confidence
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(face_landmarker_path())),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=self.max_faces,
                min_face_detection_confidence=confidence,
                min_face_presence_confidence=confidence,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,  # head pose; landmarks and blendshapes are unchanged
            )
            with zipfile.ZipFile(face_landmarker_path()) as bundle:  # the landmarker's own first stage
                detector_model = bundle.read("face_detector.tflite")
            detector_options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=detector_model),
                running_mode=vision.RunningMode.IMAGE, min_detection_confidence=confidence,
            )
            with native_stderr_silenced():  # MediaPipe's glog and TFLite's INFO lines
                landmarker = vision.FaceLandmarker.create_from_options(options)
                detector = vision.FaceDetector.create_from_options(detector_options)
            self._landmarkers[strict] = (landmarker, detector)
            for graph in (landmarker, detector):
                self._finalizers.append(weakref.finalize(self, _close_landmarker, graph))
        return self._landmarkers[strict]

    def close(self) -> None:
        with self._lock:
            for finalizer in self._finalizers:
                finalizer()
            self._landmarkers.clear()
            self._finalizers.clear()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- detection ------------------------------------------------------------------------------------------------
    def _run(self, image: np.ndarray, x0: int = 0, y0: int = 0, strict: bool = False) -> list:
        """One MediaPipe pass: [(landmarks in pixels of the enclosing image, offset by x0, y0; blendshapes; head
        pose; detection score)]."""
        import mediapipe as mp

        h, w = image.shape[:2]
        landmarker, detector = self._get_landmarker(strict)
        picture = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        with native_stderr_silenced():  # the first inference logs from native threads too
            result = landmarker.detect(picture)
            found = detector.detect(picture).detections if result.face_landmarks else []
        out = []
        for i, points in enumerate(result.face_landmarks):
            lm = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64) * (w, h, w) + (x0, y0, 0)
            shapes = result.face_blendshapes[i] if i < len(result.face_blendshapes) else []
            matrices = result.facial_transformation_matrixes or []
            pose = head_pose(matrices[i]) if i < len(matrices) else (math.nan,) * 3
            out.append((lm, {c.category_name: float(c.score) for c in shapes}, pose))
        detections = [(np.array([d.bounding_box.origin_x + x0, d.bounding_box.origin_y + y0,
                                 d.bounding_box.origin_x + d.bounding_box.width + x0,
                                 d.bounding_box.origin_y + d.bounding_box.height + y0], dtype=np.float64),
                       float(d.categories[0].score) if d.categories else math.nan) for d in found]
        scores = _match_scores([_box(lm) for lm, _, _ in out], detections)
        return [(lm, shapes, pose, score) for (lm, shapes, pose), score in zip(out, scores)]

    def _run_tiles(self, image: np.ndarray) -> list[tuple]:
        """Coarse-to-fine tile search; stops at the first tile size that finds any face.

        Tiles overlap by half, so any face smaller than half a tile lies wholly inside one. Duplicates from
        neighbouring tiles are merged, keeping the copy farthest from a tile cut (its landmarks saw the whole face).
        Uses a second landmarker with the stricter TILE_CONFIDENCE, created on the first tile search.
        """
        h, w = image.shape[:2]
        tile = max(h, w) // 2
        for _ in range(MAX_TILE_LEVELS):
            if tile < MIN_TILE:
                break
            candidates = []
            for ty in _tile_starts(h, tile):
                for tx in _tile_starts(w, tile):
                    th, tw = min(tile, h - ty), min(tile, w - tx)
                    for raw in self._run(image[ty:ty + th, tx:tx + tw], tx, ty, strict=True):
                        lm = raw[0]
                        b = _box(lm)
                        gaps = [b[0] - tx if tx > 0 else np.inf, b[1] - ty if ty > 0 else np.inf,
                                tx + tw - b[2] if tx + tw < w else np.inf, ty + th - b[3] if ty + th < h else np.inf]
                        margin = min(gaps) / max(b[2] - b[0], b[3] - b[1], 1e-6)
                        candidates.append((margin, b, raw))
            kept: list = []
            for cand in sorted(candidates, key=lambda c: -c[0]):
                if all(_iou(cand[1], k[1]) < 0.3 for k in kept):
                    kept.append(cand)
            if kept:
                return [raw for _, _, raw in kept]
            tile //= 2
        return []

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image (H×W×3; H×W grey accepted), sorted left to right; [] when none."""
        image = _as_rgb_uint8(image)
        h, w = image.shape[:2]
        if min(h, w) < MIN_SIDE:
            return []
        scale = 1.0
        small = image
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        with self._lock:
            raw = self._run(small)
            if not raw and self.search_tiles:
                raw = self._run_tiles(small)
        if scale != 1.0:
            # MediaPipe coordinates are continuous (0..width), so mapping back is a pure scale; z scales like x
            sx, sy = w / small.shape[1], h / small.shape[0]
            raw = [(lm * (sx, sy, sx), *rest) for lm, *rest in raw]
        raw.sort(key=lambda r: -(np.ptp(r[0][:, 0]) * np.ptp(r[0][:, 1])))  # keep the largest if over max_faces
        raw = raw[: self.max_faces]
        raw.sort(key=lambda r: float(r[0][:, 0].mean()))
        faces = []
        for index, (lm, shapes, pose, score) in enumerate(raw):
            b = _box(lm)
            box = (float(np.clip(b[0], 0, w)), float(np.clip(b[1], 0, h)),
                   float(np.clip(b[2], 0, w)), float(np.clip(b[3], 0, h)))
            crop, matrix = align_face(image, lm, self.crop_size, self.border)
            faces.append(Face(box=box, landmarks=lm.astype(np.float32), blendshapes=shapes, crop=crop,
                              matrix=matrix, index=index, pose=pose, confidence=score,
                              gaze=gaze_angles(lm, pose)))
        return faces
