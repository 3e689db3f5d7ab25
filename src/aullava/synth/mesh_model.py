"""The AU → mesh model of `aullava.synth.run`: py-feat's AU→mesh PLS model, its regional masks, and the mapping of a
model displacement onto a photo (steps 1 and 2 of the synthesis pipeline; step 3, the warp, is `aullava.synth.warp`).

1. **AU → mesh.** py-feat's AU→mesh PLS model (``resources/au_to_mesh_pls_v4.npz``, MIT) is a linear map from 20
   AU intensities + 3 pose angles to the 478 MediaPipe face-mesh vertices: ``mesh = intercept + x @ coef``.
   Facts checked against the py-feat sources (``feat/plotting.py``: ``PLSAUMeshModel``, ``predict_face_mesh``,
   ``_flat_to_mesh``) and against the file itself:

   - the 1434 outputs are **axis-major** ``[x_0..x_477 | y_0..y_477 | z_0..z_477]`` (not x,y,z interleaved): the
     intercept reshaped this way lies within 5.6 units of ``mean_aligned_mesh`` everywhere, interleaved it is off by
     ~400; ``_flat_to_mesh`` does the same stacking;
   - the frame is "Procrustes-aligned, frontalized": +x towards the image right (subject's left), **+y up**,
     +z out of the face towards the viewer; the eye-centre distance is ~79 units;
   - the **AU inputs are 0–1**: the model was fitted to py-feat Detectorv2 v2.4 AU outputs, which are per-AU
     presence probabilities (``SCHead``: a cosine similarity clamped to [0, 1]); py-feat's own tests and
     ``plot_face_mesh`` feed 0/1 vectors. We therefore use our continuous label x ∈ [0, 1] directly as the input
     (``gain`` scales it if wanted). An AU at 1.0 is thus "what the face does when the detector is sure the AU is
     on", a clearly visible but not extreme movement;
   - ``mean_aligned_mesh`` is the training mean: it equals the model's output at the *mean training input*
     (AUs ≈ 0.03–0.36, pose ≈ 0; least-squares residual 0.05 units), not at zero. We call the output at all AUs 0
     and pose 0 the **neutral mesh** and only ever use *differences* from it, so the offset does not matter;
   - pose inputs (Pitch, Yaw, Roll; head angles as Detectorv2 reports them) are residual terms of the frontalized
     fit; synthesis keeps them at 0 and handles the photo's head pose in step 2 instead.

   The model has every AU of the default set (AU1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26) plus AU5,
   AU11, AU20, AU28 and AU43; it lacks none of the default AUs.

   **Regional masks.** The PLS coefficients are a full-rank regression on detector outputs, so an AU's coefficient
   also carries what merely *co-occurs* with it and pose residuals: AU6 moves the mouth corners (smiles), AU9 moves
   the face outline at the ears by 26 units, AU12 moves the ear-level outline down by 11. Left in, every label would
   leak motion into regions the AU does not act on, and the ear-level outline would drag the background. So each
   AU's displacement is multiplied by a smooth mask over its FACS region (`AU_REGIONS`: vertical bands measured
   below the eye line in eye-distance units, plus a fade of the lateral outline beyond 0.85 eye distances from the
   midline). ``regional=False`` gives the raw model.

2. **Model → photo.** A 3-D similarity (Umeyama: rotation, uniform scale, translation) fitted from the neutral mesh
   to the photo's MediaPipe landmarks (x, y in pixels, z in the same scale) maps each model displacement into the
   photo: rotating the 3-D displacement handles in-plane roll *and* out-of-plane yaw/pitch (a jaw drop on a turned
   head moves the chin along the turned axis; depth components project correctly), and the scale matches the face
   size. The fitted similarity is the only pose model: perspective and the person's own face shape are ignored,
   which is harmless for the few-percent displacements involved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np

from aullava.aus.catalogue import normalize_au_id

__all__ = [
    "AU_REGIONS",
    "AUMeshModel",
    "LATERAL_FADE",
    "MODEL_FILE",
    "N_VERTICES",
    "default_model",
    "face_pose",
    "fit_similarity",
    "map_displacement",
]

MODEL_FILE = "au_to_mesh_pls_v4.npz"
N_VERTICES = 478
# MediaPipe face-mesh eye corners (same indices as aullava.faces.detector): the model's eye-centre distance is the unit of
# the regional masks
EYE_CORNERS = ((33, 133), (362, 263))

_INF = math.inf
_UPPER = (-_INF, -_INF, 0.20, 0.45)  # brows, forehead, upper lids: everything down to just below the eyes
_LOWER = (0.30, 0.55, _INF, _INF)  # from the nose base down: lips, mouth corners, chin, jaw
AU_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "AU1": _UPPER, "AU2": _UPPER, "AU4": _UPPER, "AU5": _UPPER, "AU43": _UPPER,
    "AU7": (-_INF, -_INF, 0.25, 0.50),  # lids + the skin just below the lower lid
    "AU6": (-_INF, -_INF, 0.45, 0.70),  # eyes and cheeks, not the mouth corners (v = 1.0)
    "AU9": (-_INF, -_INF, 0.75, 0.95),  # brows (lowered by procerus), nose, upper lip; not the lower lip
    "AU10": (0.10, 0.30, 0.90, 1.05),  # nose wings and upper lip; not the lower lip (v >= 1.04)
    "AU11": _LOWER, "AU12": _LOWER, "AU14": _LOWER, "AU15": _LOWER, "AU17": _LOWER, "AU20": _LOWER,
    "AU23": _LOWER, "AU24": _LOWER, "AU25": _LOWER, "AU26": _LOWER, "AU28": _LOWER,
}
"""Per AU, the vertical band ``(v0, v1, v2, v3)`` where its movement is kept: weight 0 above v0, rising smoothly to
1 at v1, 1 down to v2, falling to 0 at v3. ``v`` is measured on the model's neutral mesh, downwards from the eye
line in eye-distance units (brows ≈ −0.4, nose tip 0.49, mouth corners 1.0, chin 1.65)."""
LATERAL_FADE = (0.85, 1.05)
"""Every AU's displacement fades out between these lateral distances from the midline (eye-distance units): the
face outline at ear level (|u| ≈ 1.1) carries pose residuals, not AU movement, in the PLS model."""

def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    if e1 <= e0:
        return (x >= e0).astype(np.float64)
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _band(x: np.ndarray, v0: float, v1: float, v2: float, v3: float) -> np.ndarray:
    rise = np.ones_like(x) if math.isinf(v0) else _smoothstep(v0, v1, x)
    fall = np.ones_like(x) if math.isinf(v3) else 1.0 - _smoothstep(v2, v3, x)
    return rise * fall


def _canonical_model_id(column: str) -> str:
    return normalize_au_id(column)  # "AU01" -> "AU1"


# ------------------------------------------------------------------------------------------------ AU → mesh model


class AUMeshModel:
    """py-feat's AU + pose → MediaPipe-mesh PLS model (see the module docstring for layout, scale and frame).

    ``au_ids`` are canonical ids (``"AU1"`` … ``"AU43"``) in the model's input order. AU values are given as a
    mapping (any id spelling `normalize_au_id` accepts; missing AUs are 0) or as a vector in ``au_ids`` order.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            with resources.as_file(resources.files("aullava").joinpath("resources", MODEL_FILE)) as p:
                data = dict(np.load(p, allow_pickle=False))
        else:
            data = dict(np.load(path, allow_pickle=False))
        coef = np.asarray(data["coef"], dtype=np.float64)
        intercept = np.asarray(data["intercept"], dtype=np.float64)
        columns = [str(c) for c in data["input_columns"]]
        au_columns = [str(c) for c in data["au_columns"]]
        pose_columns = [str(c) for c in data["pose_columns"]]
        if coef.shape != (len(columns), 3 * N_VERTICES) or columns != au_columns + pose_columns:
            raise ValueError(f"unexpected AU→mesh model layout: coef {coef.shape}, columns {columns}")
        self.au_columns = au_columns
        self.au_ids: tuple[str, ...] = tuple(_canonical_model_id(c) for c in au_columns)
        self.pose_columns = pose_columns
        n_au = len(au_columns)
        # axis-major [x | y | z] → (inputs, 478, 3)
        self._basis = np.stack(np.split(coef, 3, axis=1), axis=-1)  # (23, 478, 3)
        self._intercept = np.stack(np.split(intercept, 3), axis=-1)  # (478, 3)
        self.mean_aligned_mesh = np.asarray(data["mean_aligned_mesh"], dtype=np.float64)
        self.neutral = self._intercept.copy()
        self.neutral.setflags(write=False)
        # regional masks, computed on the neutral mesh
        (a, b), (c, d) = EYE_CORNERS
        right, left = self.neutral[[a, b]].mean(0), self.neutral[[c, d]].mean(0)
        self.eye_distance = float(np.linalg.norm(left - right))
        centre = (right + left) / 2
        self.u = (self.neutral[:, 0] - centre[0]) / self.eye_distance  # lateral, + towards image right
        self.v = (centre[1] - self.neutral[:, 1]) / self.eye_distance  # vertical, + downwards
        lateral = 1.0 - _smoothstep(*LATERAL_FADE, np.abs(self.u))
        self.masks = np.ones((n_au, N_VERTICES))
        for i, au in enumerate(self.au_ids):
            self.masks[i] = _band(self.v, *AU_REGIONS.get(au, (-_INF, -_INF, _INF, _INF))) * lateral
        self.model_card = str(data.get("model_card", ""))

    # -- inputs ---------------------------------------------------------------------------------------------------
    def vector(self, aus: Mapping[str | int, float] | Sequence[float] | np.ndarray | None) -> np.ndarray:
        """AU values → the model's (20,) input vector. Unknown AU ids raise (a silent 0 would mislabel data)."""
        x = np.zeros(len(self.au_ids))
        if aus is None:
            return x
        if isinstance(aus, Mapping):
            for key, value in aus.items():
                au = normalize_au_id(key)
                if au not in self.au_ids:
                    raise KeyError(f"{au} is not an input of the AU→mesh model (it has {', '.join(self.au_ids)})")
                x[self.au_ids.index(au)] = float(value)
            return x
        arr = np.asarray(aus, dtype=np.float64).reshape(-1)
        if arr.shape != x.shape:
            raise ValueError(f"AU vector must have {len(x)} values in the order {self.au_ids}, got {arr.shape}")
        return arr.copy()

    # -- outputs --------------------------------------------------------------------------------------------------
    def mesh(self, aus=None, pose: Sequence[float] = (0.0, 0.0, 0.0), regional: bool = False) -> np.ndarray:
        """(478, 3) mesh in the model frame (+y up). ``regional=False`` (default) is py-feat's raw prediction,
        ``intercept + [aus, pose] @ coef``; ``regional=True`` applies `AU_REGIONS` to the AU terms."""
        x = self.vector(aus)
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        if pose.shape != (len(self.pose_columns),):
            raise ValueError(f"pose must be ({', '.join(self.pose_columns)}), got {pose}")
        n = len(x)
        weights = self.masks if regional else np.ones_like(self.masks)
        out = self._intercept + np.einsum("a,av,avk->vk", x, weights, self._basis[:n])
        return out + np.einsum("p,pvk->vk", pose, self._basis[n:])

    def displacement(self, aus, regional: bool = True, gain: float = 1.0) -> np.ndarray:
        """``mesh(gain·aus) − mesh(neutral)`` at zero pose, (478, 3) in model units (+y up). Linear in ``aus``.
        Regional masks are on by default: this is what synthesis uses."""
        x = self.vector(aus) * float(gain)
        weights = self.masks if regional else np.ones_like(self.masks)
        return np.einsum("a,av,avk->vk", x, weights, self._basis[: len(x)])


# ------------------------------------------------------------------------------------------- model → photo mapping


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ s · R @ src + t`` (Umeyama 1991) in any dimension; R is a proper rotation
    (no reflection). Returns ``(s, R, t)``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(src.shape[1])
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[-1, -1] = -1.0
    rot = u @ fix @ vt
    var = (xs ** 2).sum() / len(src)
    scale = float((sig * np.diag(fix)).sum() / var) if var > 0 else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s


# The model frame is (x right, y up, z towards the viewer); image landmarks are (x right, y down, z away from the
# camera: MediaPipe z is negative towards the camera). Flipping y and z is a 180° rotation about x, so the two
# frames differ by a proper rotation and a similarity can be fitted.
_MODEL_TO_IMAGE_AXES = np.array([1.0, -1.0, -1.0])


def map_displacement(neutral: np.ndarray, displacement: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Model-frame displacement (478, 3) → image-pixel displacement (478, 2) for a face with ``landmarks``.

    Fits `fit_similarity` from the model's neutral mesh to the landmarks — in 3-D when they have z (handles yaw and
    pitch), else in 2-D (in-plane rotation and scale only) — and applies its scaled rotation to the displacement.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    src = np.asarray(neutral, dtype=np.float64) * _MODEL_TO_IMAGE_AXES
    disp = np.asarray(displacement, dtype=np.float64) * _MODEL_TO_IMAGE_AXES
    dims = 3 if lm.shape[1] >= 3 and np.ptp(lm[:, 2]) > 0 else 2
    scale, rot, _ = fit_similarity(src[:, :dims], lm[:, :dims])
    return (scale * disp[:, :dims] @ rot.T)[:, :2]



_DEFAULT_MODEL: AUMeshModel | None = None


def default_model() -> AUMeshModel:
    """The bundled model, loaded once per process."""
    global _DEFAULT_MODEL
    if _DEFAULT_MODEL is None:
        _DEFAULT_MODEL = AUMeshModel()
    return _DEFAULT_MODEL


def face_pose(landmarks: np.ndarray, model: AUMeshModel | None = None) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face, from the 3-D similarity between the model's frontal neutral mesh and
    its MediaPipe landmarks. Yaw > 0: the face turns towards the image right; pitch > 0: it looks down."""
    model = model or default_model()
    lm = np.asarray(landmarks, dtype=np.float64)
    _, rot, _ = fit_similarity(model.neutral * _MODEL_TO_IMAGE_AXES, lm[:, :3])
    normal = rot @ np.array([0.0, 0.0, -1.0])  # out of the face, in image axes (x right, y down, z away)
    up = rot @ np.array([0.0, -1.0, 0.0])  # towards the forehead
    yaw = math.degrees(math.atan2(normal[0], -normal[2]))
    pitch = math.degrees(math.atan2(normal[1], -normal[2]))
    roll = math.degrees(math.atan2(up[0], -up[1]))
    return yaw, pitch, roll
