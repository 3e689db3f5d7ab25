"""Small changes to a picture that should not change what a face shows: a JPEG re-save, sensor noise, blur, and the
picture moved by a fraction of a pixel or a few pixels. Training perturbs crops with them
(`aullava.training.augment`), and the steadiness benchmark and diagnosis ask how much the answers move under them.
Every function takes and returns a uint8 H×W×3 RGB array of the same size.
"""

from __future__ import annotations

import cv2
import numpy as np


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The picture saved as a JPEG at `quality` (0–100) and decoded again."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed at quality {quality}")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of `sigma` grey levels, rounded back to whole grey levels."""
    return np.clip(np.rint(image.astype(np.float32) + rng.normal(0.0, sigma, image.shape)), 0, 255).astype(np.uint8)


def plus_minus_one(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every pixel value moved by −1, 0 or +1 grey level at random: the smallest change a picture can have."""
    return np.clip(image.astype(np.int16) + rng.integers(-1, 2, image.shape), 0, 255).astype(np.uint8)


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def shifted(image: np.ndarray, dx: float, dy: float = 0.0, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """The picture moved by (dx, dy) pixels (bilinear for fractions; edges repeated)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR, borderMode=border)


def affine(image: np.ndarray, dx: float, dy: float, zoom: float, degrees: float) -> np.ndarray:
    """The picture rotated by `degrees` and zoomed by `zoom` about its centre, then moved by (dx, dy); edges
    mirrored (a black border would be a cue of its own)."""
    size = image.shape[0]
    matrix = cv2.getRotationMatrix2D(((image.shape[1] - 1) / 2, (size - 1) / 2), degrees, zoom)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(image, matrix, (image.shape[1], size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
