"""A face's geometry as one fixed-length vector: what the optional geometry stream of the model reads.

MediaPipe's Face Landmarker gives every detected face 478 3-D landmarks and 52 blendshape scores; the detector keeps
them next to the crop. Here they become `FEATURE_SIZE` numbers in one documented layout, computed the same way at
training time (from the crop cache's stored landmarks, matrix and blendshapes) and at prediction time (from the
detector's `Face`), so a model never sees geometry measured two ways:

    [0, 1434)      the 478 landmarks, (x, y, z) each, in the aligned crop's frame: the similarity transform that
                   made the crop (eyes levelled, fixed inter-ocular distance) applied to x, y, divided by the crop
                   size and centred on the crop's centre; z scaled by the same factor and centred on its mean. So
                   head position, image size and in-plane roll are gone, and what is left is the face's shape and
                   its movements (brow, lid, lip corner, jaw), in units of the crop side.
    [1434, 1486)   the 52 blendshape scores (0..1) in `BLENDSHAPE_NAMES` order; a missing score is 0.

Only numpy: the face detector, the crop cache, the datasets and the model all read this one module.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

NUM_LANDMARKS = 478
LANDMARK_FEATURES = NUM_LANDMARKS * 3

# MediaPipe Face Landmarker's blendshape categories, in the order the model card lists them (index 0 is "_neutral")
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
NUM_BLENDSHAPES = len(BLENDSHAPE_NAMES)
FEATURE_SIZE = LANDMARK_FEATURES + NUM_BLENDSHAPES


def crop_frame_landmarks(landmarks: np.ndarray, matrix: np.ndarray, crop_size: int) -> np.ndarray:
    """(478, 3) landmarks in image pixels (z in x's pixel scale, as the detector gives them) → the aligned crop's
    frame in crop units: x, y relative to the crop centre, z relative to its mean, all scaled alike."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"expected ({NUM_LANDMARKS}, 3) face-mesh landmarks, got shape {points.shape}")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"expected a 2×3 alignment matrix, got shape {matrix.shape}")
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # the similarity transform's uniform scale
    xy = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    out = np.empty((NUM_LANDMARKS, 3), dtype=np.float64)
    out[:, :2] = xy / crop_size - 0.5
    z = points[:, 2] * scale / crop_size
    out[:, 2] = z - z.mean()
    return out


def blendshape_vector(blendshapes: Mapping[str, float] | None) -> np.ndarray:
    """The 52 scores in `BLENDSHAPE_NAMES` order (0 for a name the mapping lacks)."""
    blendshapes = blendshapes or {}
    return np.array([float(blendshapes.get(name, 0.0)) for name in BLENDSHAPE_NAMES], dtype=np.float64)


def geometry_features(landmarks: np.ndarray, matrix: np.ndarray, blendshapes: Mapping[str, float] | None,
                      crop_size: int) -> np.ndarray:
    """One face's geometry vector, float32 (`FEATURE_SIZE`,), in the layout of the module docstring."""
    return np.concatenate([crop_frame_landmarks(landmarks, matrix, crop_size).reshape(-1),
                           blendshape_vector(blendshapes)]).astype(np.float32)
