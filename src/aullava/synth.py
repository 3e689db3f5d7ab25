"""AU-controlled synthetic faces with exact labels: warp a real photo into the same face showing chosen Action Units.

Why: AU datasets are small, lab-recorded and strongly imbalanced (few subjects, AU combinations tied to the tasks
they were filmed in). Warping many in-the-wild identities into *chosen* AU combinations gives balanced, fully
labelled extra training data whose labels are known by construction — exactly for the face geometry, relative to a
neutral start. Appearance cues that a warp cannot create (wrinkles, furrows, bulges, teeth) are absent, which is
why this data is meant to supplement real AU data, not replace it.

Pipeline (one synthetic image):

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

3. **Warp.** Target landmarks = photo landmarks + mapped displacement. The source landmarks plus a ring of fixed
   points around the face region are Delaunay-triangulated; a displacement that would flip a triangle (e.g. an upper
   lip pressed past the lower one of a closed mouth) is pulled towards its neighbours' common motion
   (`remove_folds`); the same triangles placed at the targets are rasterised and every output pixel takes its
   triangle's affine map back to the photo (a piecewise-affine backward warp); the displacement field is lightly
   Gaussian-smoothed to hide creases at triangle edges, and `cv2.remap` samples the photo. Only the face region is
   touched; outside it, and along the photo's own border, the image is unchanged. ~15 ms per warp of a 350×350
   photo on one CPU core.

Known limits: opening the mouth (AU25/26) stretches the lips' skin over the gap — no teeth, no dark mouth
interior; wrinkles and furrows (AU1/2 forehead lines, AU4 glabella, AU9 nose wrinkles, AU6 crow's feet) and
skin bulges are not created: only the geometry carries the label; glasses and hair over the brows move with the
skin; MediaPipe's landmark placement limits precision (a poorly fitted mesh warps the wrong pixels). Labels are
exact for the *added* movement, so sources are restricted to near-neutral, roughly frontal photos
(`neutral_check`, `MAX_YAW`, `MAX_PITCH`).

`run_synth` builds a dataset from a photo index (see its docstring); `sample_aus` draws plausible AU combinations.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from aullava.au_catalogue import au_set, normalize_au_id

__all__ = [
    "AU_REGIONS",
    "AUMeshModel",
    "CONFLICTS",
    "DEFAULT_SYNTH_AUS",
    "NEUTRAL_THRESHOLDS",
    "PATTERNS",
    "SynthResult",
    "default_model",
    "face_pose",
    "fit_similarity",
    "map_displacement",
    "neutral_check",
    "remove_folds",
    "run_synth",
    "sample_aus",
    "split_identities",
    "warp_face",
    "warp_image",
]

MODEL_FILE = "au_to_mesh_pls_v4.npz"
N_VERTICES = 478
# MediaPipe face-mesh eye corners (same indices as aullava.faces): the model's eye-centre distance is the unit of
# the regional masks
_EYE_CORNERS = ((33, 133), (362, 263))

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

DEFAULT_SYNTH_AUS: tuple[str, ...] = tuple(au_set("default").ids)


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
        (a, b), (c, d) = _EYE_CORNERS
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


# ------------------------------------------------------------------------------------------------------------ warp


def _triangles(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (M, 3) of 2-D points. Only qhull's triangulation is used, never scipy's
    `find_simplex`/`LinearNDInterpolator`: those build per-simplex LAPACK transforms on first use, which next to
    MediaPipe's worker threads on a small machine was measured taking ~8 s instead of ~5 ms (thread contention in
    the BLAS library). Locating pixels by rasterising the triangles (`_warp`) avoids LAPACK entirely."""
    from scipy.spatial import Delaunay

    return Delaunay(points).simplices


def _signed_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def remove_folds(source: np.ndarray, target: np.ndarray, tris: np.ndarray | None = None,
                 pinned: np.ndarray | None = None, iterations: int = 30) -> tuple[np.ndarray, int]:
    """Make the map ``source → target`` fold-free on a triangulation of the source; returns (target, #fixes).

    A triangle whose orientation flips (or that collapses below 5 % of its area) means two points passed each
    other, e.g. an upper lip pressed below the lower lip of an already closed mouth (AU24 on a closed mouth), which
    a piecewise-affine warp would render as a mirrored tear. The displacements of such a triangle's corners are
    pulled halfway towards their common mean (the tissue moves together instead of crossing), repeatedly, until no
    triangle folds. ``tris`` defaults to the source's Delaunay triangulation; ``pinned`` (bool mask) marks points
    that must not move (the fixed border ring).
    """
    source = np.asarray(source, dtype=np.float64)[:, :2]
    target = np.asarray(target, dtype=np.float64)[:, :2].copy()
    tris = _triangles(source) if tris is None else np.asarray(tris)
    area0 = _signed_areas(source, tris)
    keep = np.abs(area0) > 1e-9
    tris, area0 = tris[keep], area0[keep]
    free = np.ones(len(source), dtype=bool) if pinned is None else ~np.asarray(pinned, dtype=bool)
    fixes = 0
    for _ in range(iterations):
        bad = (_signed_areas(target, tris) / area0) < 0.05
        if not bad.any():
            break
        fixes += int(bad.sum())
        disp = target - source
        for tri in tris[bad]:
            mean = disp[tri].mean(0)
            disp[tri] = np.where(free[tri, None], 0.5 * disp[tri] + 0.5 * mean, disp[tri])
        target = source + disp
    return target, fixes


def _region(points: np.ndarray, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int, float]:
    lo, hi = points.min(0), points.max(0)
    size = float(max(hi - lo))
    h, w = shape[:2]
    x0, y0 = np.maximum(np.floor(lo - margin * size), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(hi + margin * size) + 1, [w, h]).astype(int)
    return int(x0), int(y0), int(x1), int(y1), size


def _ring(x0: int, y0: int, x1: int, y1: int, per_side: int = 16) -> np.ndarray:
    """Points on the border of the pixel rectangle [x0, x1) × [y0, y1) (pixel edges), corners included."""
    xs = np.linspace(x0 - 0.5, x1 - 0.5, per_side + 1)
    ys = np.linspace(y0 - 0.5, y1 - 0.5, per_side + 1)[1:-1]
    return np.vstack([np.c_[xs, np.full_like(xs, y0 - 0.5)], np.c_[xs, np.full_like(xs, y1 - 0.5)],
                      np.c_[np.full_like(ys, x0 - 0.5), ys], np.c_[np.full_like(ys, x1 - 0.5), ys]])


def _warp(image: np.ndarray, source: np.ndarray, target: np.ndarray, margin: float = 0.35, smooth: float = 0.01
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """`warp_image`, also returning the fold-free target actually used and the number of fold fixes."""
    source = np.asarray(source, dtype=np.float64)[:, :2]
    target = np.asarray(target, dtype=np.float64)[:, :2]
    x0, y0, x1, y1, size = _region(np.vstack([source, target]), image.shape, margin)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return image.copy(), source.copy(), 0
    # points whose source or target leaves the region (a face cut by the image border) are held in place
    box_lo, box_hi = np.array([x0, y0], float), np.array([x1 - 1, y1 - 1], float)
    inside = np.all((source >= box_lo) & (source <= box_hi) & (target >= box_lo) & (target <= box_hi), axis=1)
    ring = _ring(x0, y0, x1, y1)
    src_all = np.vstack([source[inside], ring])
    dst_all = np.vstack([target[inside], ring])
    pinned = np.r_[np.zeros(int(inside.sum()), bool), np.ones(len(ring), bool)]
    tris = _triangles(src_all)
    dst_all, fixes = remove_folds(src_all, dst_all, tris=tris, pinned=pinned)
    used = source.copy()
    used[inside] = dst_all[: int(inside.sum())]
    # per triangle, the affine map target → source: s = M (d - d0) + s0
    d0, d1, d2 = (dst_all[tris[:, k]] for k in range(3))
    s0, s1, s2 = (src_all[tris[:, k]] for k in range(3))
    dmat = np.stack([d1 - d0, d2 - d0], axis=-1)  # (M, 2, 2), columns = edges
    smat = np.stack([s1 - s0, s2 - s0], axis=-1)
    det = dmat[:, 0, 0] * dmat[:, 1, 1] - dmat[:, 0, 1] * dmat[:, 1, 0]
    ok = np.abs(det) > 1e-9
    inv = np.zeros_like(dmat)
    inv[ok, 0, 0], inv[ok, 1, 1] = dmat[ok, 1, 1] / det[ok], dmat[ok, 0, 0] / det[ok]
    inv[ok, 0, 1], inv[ok, 1, 0] = -dmat[ok, 0, 1] / det[ok], -dmat[ok, 1, 0] / det[ok]
    lin = smat @ inv  # (M, 2, 2)
    # rasterise the target triangles into a triangle-index image of the region (sub-pixel vertices, 1/16 px)
    index = np.full((y1 - y0, x1 - x0), -1, dtype=np.int32)
    corners = np.round((np.stack([d0, d1, d2], axis=1) - [x0, y0]) * 16).astype(np.int32)
    for t in np.flatnonzero(ok):
        cv2.fillConvexPoly(index, corners[t], int(t), lineType=cv2.LINE_8, shift=4)
    px, py = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    t = np.maximum(index, 0)
    rel_x, rel_y = px - d0[t, 0], py - d0[t, 1]
    mx = lin[t, 0, 0] * rel_x + lin[t, 0, 1] * rel_y + s0[t, 0]
    my = lin[t, 1, 0] * rel_x + lin[t, 1, 1] * rel_y + s0[t, 1]
    covered = index >= 0
    dx = np.where(covered, mx - px, 0.0).astype(np.float32)
    dy = np.where(covered, my - py, 0.0).astype(np.float32)
    sigma = smooth * size
    if sigma > 0.3:  # zero displacement outside the region, which is exactly the warp's boundary condition
        dx = cv2.GaussianBlur(dx, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        dy = cv2.GaussianBlur(dy, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    region = cv2.remap(image, (px + dx).astype(np.float32), (py + dy).astype(np.float32),
                       interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = image.copy()
    out[y0:y1, x0:x1] = region
    return out, used, fixes


def warp_image(image: np.ndarray, source: np.ndarray, target: np.ndarray, margin: float = 0.35,
               smooth: float = 0.01) -> np.ndarray:
    """Piecewise-affine warp of ``image`` that moves the points ``source`` (N, 2) to ``target`` (N, 2).

    Only the region around the points (their bounding box grown by ``margin`` × its size on each side) changes; a
    ring of fixed points on that region's border keeps the surroundings in place and makes the warp continuous
    there. The source points plus the ring are Delaunay-triangulated, folds are removed (`remove_folds`), and the
    same triangles, placed at the target points, are rasterised: each output pixel takes the affine map of its
    triangle back to the source. The resulting displacement field is smoothed with a Gaussian of ``smooth`` × face
    size to hide the creases a piecewise-linear field shows at triangle edges; `cv2.remap` samples the image.
    """
    return _warp(image, source, target, margin=margin, smooth=smooth)[0]


@dataclass
class SynthResult:
    """One warped face: the image, the landmarks it should now have (N, 2, image pixels), the intended pixel
    displacement before fold removal, and how many triangles needed fold fixing."""

    image: np.ndarray
    target: np.ndarray
    displacement: np.ndarray
    folds_fixed: int = 0


_DEFAULT_MODEL: AUMeshModel | None = None


def default_model() -> AUMeshModel:
    """The bundled model, loaded once per process."""
    global _DEFAULT_MODEL
    if _DEFAULT_MODEL is None:
        _DEFAULT_MODEL = AUMeshModel()
    return _DEFAULT_MODEL


def warp_face(image: np.ndarray, landmarks: np.ndarray, aus, model: AUMeshModel | None = None, *,
              regional: bool = True, gain: float = 1.0, **warp_options) -> SynthResult:
    """Warp the face with MediaPipe ``landmarks`` (478, 3) in ``image`` so it shows ``aus`` *added* to its own
    expression. ``aus``: mapping AU id → intensity in [0, 1] (or a model-order vector). ``warp_options`` go to
    `warp_image` (``margin``, ``smooth``)."""
    model = model or default_model()
    lm = np.asarray(landmarks, dtype=np.float64)
    disp = map_displacement(model.neutral, model.displacement(aus, regional=regional, gain=gain), lm)
    warped, target, fixes = _warp(image, lm[:, :2], lm[:, :2] + disp, **warp_options)
    return SynthResult(image=warped, target=target, displacement=disp, folds_fixed=fixes)


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


# ------------------------------------------------------------------------------------------------ neutral sources

NEUTRAL_THRESHOLDS: dict[str, float] = {
    "mouthSmile": 0.30,  # AU12 (max of the Left/Right scores)
    "jawOpen": 0.20,  # AU26/27
    "mouthLowerDown": 0.40,  # AU25 (lower lip pulled down, lips parted)
    "browInnerUp": 0.30,  # AU1
    "browOuterUp": 0.30,  # AU2
    "browDown": 0.50,  # AU4 (MediaPipe gives neutral faces 0.1–0.35 here)
    "mouthFrown": 0.20,  # AU15
    "mouthPress": 0.30,  # AU24
    "mouthShrugLower": 0.30,  # AU17
    "mouthUpperUp": 0.30,  # AU10
    "mouthPucker": 0.30,  # AU18/AU23-like
    "mouthStretch": 0.35,  # AU20
    "mouthRoll": 0.35,  # AU28 (max of Lower/Upper)
    "mouthDimple": 0.25,  # AU14
    "eyeSquint": 0.75,  # AU6/AU7 (high baseline: median 0.45 on neutral-looking faces)
    "eyeBlink": 0.50,  # AU43/45: a warp cannot open closed eyes
    "eyeWide": 0.30,  # AU5
}
"""Largest MediaPipe blendshape score a source photo may show, per blendshape family (``Left``/``Right`` and
``Lower``/``Upper`` variants count by their maximum). A photo passes when every family stays below its threshold:
at most a trace of any expression, so the labels — the AUs the warp *adds* — describe the output's expression.
Chosen on 300 random photos of the shared 4,000-photo LFW/IMFDB set: 14 had no detectable face, 6 too small a face,
221 failed this check (most often mouthSmile 80, mouthLowerDown 49, browOuterUp 49, jawOpen 47, browDown 45), 1 the
pose limits; 58 (19 %) passed everything, so ~770 of the 4,000 photos are usable sources.
``noseSneer`` and ``cheekSquint`` are not used: this MediaPipe model returns ~0 for them on every face."""
MAX_YAW = 30.0
MAX_PITCH = 25.0
"""Head-pose limits (degrees, `face_pose`) for sources: beyond them the far half of the face is foreshortened or
hidden, and the warp (a similarity-mapped frontal displacement) stretches what is left."""
MIN_EYE_DISTANCE = 40.0
"""Smallest eye-centre distance (pixels) of a usable source: smaller faces would be upsampled >1.5× into a 224
crop (eye distance 60 px there), and the movements would be a few blurry pixels."""


def _family_score(blendshapes: Mapping[str, float], family: str) -> float:
    names = [family] + [family + side for side in ("Left", "Right", "Lower", "Upper")]
    values = [float(blendshapes[n]) for n in names if n in blendshapes]
    return max(values) if values else 0.0


def neutral_check(blendshapes: Mapping[str, float], thresholds: Mapping[str, float] | None = None
                  ) -> tuple[bool, str]:
    """``(True, "")`` when a face's MediaPipe blendshapes are all below `NEUTRAL_THRESHOLDS` (or ``thresholds``),
    else ``(False, reason)`` naming every family over its limit, e.g. ``"mouthSmile 0.62 >= 0.30"``."""
    thresholds = NEUTRAL_THRESHOLDS if thresholds is None else thresholds
    over = []
    for family, limit in thresholds.items():
        score = _family_score(blendshapes, family)
        if score >= limit:
            over.append(f"{family} {score:.2f} >= {limit:.2f}")
    return (not over), "; ".join(over)


# ------------------------------------------------------------------------------------------------------ sampling

NEUTRAL_SHARE = 0.15
"""Share of samples with no AU at all: the model must also learn to answer 'all absent' (and to ignore the warp's
own smoothing), and real data is dominated by near-neutral frames."""
TWO_PATTERN_SHARE = 0.3
"""Share of expressive samples combining two patterns (e.g. a smile with raised brows) instead of one."""

# name, weight, core AUs (all present, intensities within ±1 level of a common level), optional AUs → probability
PATTERNS: tuple[tuple[str, float, tuple[str, ...], dict[str, float]], ...] = (
    ("smile", 3.0, ("AU6", "AU12"), {"AU25": 0.4, "AU26": 0.15, "AU10": 0.1}),  # Duchenne smile
    ("social smile", 1.0, ("AU12",), {"AU25": 0.3, "AU14": 0.15}),
    ("brow raise", 2.0, ("AU1", "AU2"), {"AU25": 0.25, "AU26": 0.2}),  # surprise when the mouth opens too
    ("inner brow raise", 1.0, ("AU1",), {"AU4": 0.35}),  # the oblique 'sad' brow with AU4
    ("frown", 2.0, ("AU4", "AU7"), {"AU23": 0.25, "AU24": 0.25, "AU17": 0.2}),  # anger
    ("disgust", 2.0, ("AU9", "AU10"), {"AU4": 0.3, "AU17": 0.2, "AU25": 0.3}),
    ("sadness", 2.0, ("AU15", "AU17"), {"AU1": 0.4, "AU4": 0.3}),
    ("lip press", 1.5, ("AU23", "AU24"), {"AU17": 0.3}),
    ("mouth open", 1.5, ("AU25",), {"AU26": 0.6}),
    ("dimpler", 1.0, ("AU14",), {"AU17": 0.2}),
    ("single AU", 3.0, (), {}),  # one AU of the set, uniformly: every AU also appears alone
)
"""Co-occurrence patterns `sample_aus` draws from (prototypical FACS combinations of the basic emotions and common
conversational movements)."""

CONFLICTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AU24", ("AU25", "AU26")),  # lips pressed together vs. lips parted / jaw dropped
    ("AU12", ("AU15",)),  # lip corners pulled up vs. pulled down (antagonists)
    ("AU17", ("AU26",)),  # chin raiser pushes the lower lip up vs. jaw drop
)
"""Anatomically conflicting AUs: when both sides are drawn, the weaker side is removed (ties: the first)."""


def _level_value(rng: np.random.Generator, level: int) -> float:
    """A continuous intensity whose discrete label (round-half-up of 5x) is ``level`` (1..5); level 1 starts at
    0.10, the presence threshold. Rounded to 3 decimals so the stored label is exactly what was warped."""
    lo = max(0.10, (level - 0.5) / 5.0)
    hi = min(1.0, (level + 0.5) / 5.0)
    value = round(float(rng.uniform(lo, hi)), 3)
    return min(max(value, lo), 1.0) if level < 5 else min(max(value, 0.9), 1.0)


def sample_aus(rng: np.random.Generator, au_ids: Iterable[str | int] = DEFAULT_SYNTH_AUS) -> dict[str, float]:
    """One plausible AU combination: ``{AU id: intensity in [0, 1]}`` for every id of ``au_ids`` (canonical ids).

    Rules: with probability `NEUTRAL_SHARE` all AUs are 0; otherwise one pattern of `PATTERNS` is drawn (two with
    probability `TWO_PATTERN_SHARE`), by weight, among those with a core AU in the set. A pattern picks a common
    discrete level L uniformly from 1..5; each core AU gets L±1 (clipped to 1..5), each optional AU (with its
    probability) a level from 1..L; the intensity is uniform within the level's bin, so present values are ≥ 0.10
    and all five discrete levels are equally common, while AUs not drawn are exactly 0. AU26 implies AU25 (a
    dropped jaw parts the lips), and `CONFLICTS` are resolved by dropping the weaker side. Labels follow the
    project's rules: discrete = round-half-up(5x), present = x ≥ 0.10.
    """
    ids = [normalize_au_id(a) for a in au_ids]
    allowed = set(default_model().au_ids)
    missing = [a for a in ids if a not in allowed]
    if missing:
        raise ValueError(f"the AU→mesh model cannot synthesise {', '.join(missing)} (it has {sorted(allowed)})")
    values = {a: 0.0 for a in ids}
    if not ids or rng.random() < NEUTRAL_SHARE:
        return values
    usable = [p for p in PATTERNS if not p[2] or any(a in values for a in p[2])]
    weights = np.array([p[1] for p in usable])
    count = 2 if (rng.random() < TWO_PATTERN_SHARE and len(usable) > 1) else 1
    chosen = rng.choice(len(usable), size=count, replace=False, p=weights / weights.sum())
    for i in sorted(chosen):
        _, _, core, optional = usable[i]
        level = int(rng.integers(1, 6))
        if not core:  # "single AU"
            core = (ids[int(rng.integers(len(ids)))],)
        for au in core:
            if au in values:
                lv = int(np.clip(level + rng.integers(-1, 2), 1, 5))
                values[au] = max(values[au], _level_value(rng, lv))
        for au, prob in optional.items():
            if rng.random() < prob and au in values:
                values[au] = max(values[au], _level_value(rng, int(rng.integers(1, level + 1))))
    if values.get("AU26", 0.0) >= 0.10 and "AU25" in values and values["AU25"] < 0.10:
        values["AU25"] = _level_value(rng, int(rng.integers(1, 6)))
    for au, others in CONFLICTS:
        if values.get(au, 0.0) <= 0.0:
            continue
        rivals = [o for o in others if values.get(o, 0.0) > 0.0]
        if not rivals:
            continue
        if values[au] >= max(values[o] for o in rivals):
            for o in rivals:
                values[o] = 0.0
        else:
            values[au] = 0.0
    return values


# ------------------------------------------------------------------------------------------------------- dataset

CONFIG_FILE = "synth_config.json"
SKIPPED_FILE = "skipped.csv"
WORK_SCALE = 2
"""Photos whose face is larger than WORK_SCALE × its size in the output crop are reduced to that before warping
(area averaging): the warp's cost grows with the face's pixel count, and the crop is reduced afterwards anyway.
Smaller faces are warped at their own resolution, so warp and alignment resample them once each."""


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def _sample_rng(seed: int, source: str, k: int) -> np.random.Generator:
    """The generator for sample ``k`` of ``source``: depends on nothing else, so outputs and labels are the same
    whatever the order, ``limit``, ``workers`` or ``per_image`` of a run (sample k exists or not, it never changes)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, _stable_int("aullava-synth", source), k])


def _output_name(source: str, k: int, ext: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem)[:80] or "image"
    return f"{stem}-{_stable_int(source) % 16 ** 6:06x}_{k:02d}.{ext}"


def _safe_dir(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))[:80] or "_"


def split_identities(identities: Iterable[str], held_out: float, seed: int = 0) -> set[str]:
    """The held-out identities: the ``round(held_out × n)`` identities (at least 1 and at most n−1 when n ≥ 2 and
    0 < held_out < 1) ranked first by a seeded hash of their name. Hash ranks, not a shuffle, so an identity's side
    does not depend on the order of the index, only (through the count) on how many identities there are."""
    ids = sorted(set(map(str, identities)))
    n = len(ids)
    if not 0.0 <= held_out <= 1.0:
        raise ValueError(f"held_out must be in [0, 1], got {held_out}")
    count = int(round(held_out * n))
    if n >= 2 and 0.0 < held_out < 1.0:
        count = min(max(count, 1), n - 1)
    ranked = sorted(ids, key=lambda i: (_stable_int("aullava-split", seed, i), i))
    return set(ranked[:count])


@dataclass
class _Settings:
    out_dir: str
    per_image: int
    seed: int
    crop_size: int
    au_ids: tuple[str, ...]
    gain: float
    ext: str
    thresholds: dict[str, float] | None


def _write_image(path: Path, image: np.ndarray, ext: str) -> None:
    """Write atomically: a killed run leaves a complete file or none, so 'exists' can mean 'done'."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{ext}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _synthesize_source(detector, settings: _Settings, source: str, path: str, identity: str
                       ) -> tuple[list[dict], str | None]:
    """Detect, check and warp one photo; returns (records of the images written, skip reason or None)."""
    from aullava.faces import EYE_DISTANCE, align_face
    from aullava.imaging import load_image

    try:
        image = load_image(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a skip, never fatal
        return [], f"unreadable: {' '.join(str(exc).split())}"
    faces = detector.detect(image)
    if not faces:
        return [], "no face"
    face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))  # the photo's subject
    lm = np.asarray(face.landmarks, dtype=np.float64)
    eye_distance = float(np.linalg.norm(lm[list(_EYE_CORNERS[0])].mean(0) - lm[list(_EYE_CORNERS[1])].mean(0)))
    if eye_distance < MIN_EYE_DISTANCE:
        return [], f"face too small: eye distance {eye_distance:.0f} px < {MIN_EYE_DISTANCE:.0f}"
    if settings.thresholds is not None:
        ok, why = neutral_check(face.blendshapes, settings.thresholds)
        if not ok:
            return [], f"not neutral: {why}"
    model = default_model()
    yaw, pitch, _ = face_pose(lm, model)
    if abs(yaw) > MAX_YAW or abs(pitch) > MAX_PITCH:
        return [], f"head pose: yaw {yaw:.0f}, pitch {pitch:.0f} degrees (limits {MAX_YAW:.0f}, {MAX_PITCH:.0f})"
    # Warp in photo coordinates, not in the aligned crop: the photo's own border then stays fixed (the warp's ring
    # lies on it), whereas in a crop the black area outside the photo would be warped along and e.g. a dropped jaw
    # would bend the photo's bottom edge — a label-correlated artefact a model could learn instead of the face.
    # Large faces are first reduced to WORK_SCALE × the output resolution, which bounds the cost per warp.
    factor = min(1.0, WORK_SCALE * EYE_DISTANCE * settings.crop_size / eye_distance)
    if factor < 1.0:
        h, w = image.shape[:2]
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        factor_x, factor_y = size[0] / w, size[1] / h
        lm = lm * [factor_x, factor_y, factor_x]
    records = []
    out_dir = Path(settings.out_dir)
    for k in range(settings.per_image):
        aus = sample_aus(_sample_rng(settings.seed, source, k), settings.au_ids)
        rel = Path("images") / _safe_dir(identity) / _output_name(source, k, settings.ext)
        result = warp_face(image, lm, aus, model, gain=settings.gain)
        out, _ = align_face(result.image, lm, settings.crop_size)  # aligned on the *source* landmarks
        _write_image(out_dir / rel, out, settings.ext)
        records.append({"image": rel.as_posix(), "subject": identity, "aus": aus, "source": source})
    return records, None


_WORKER: tuple | None = None


def _init_worker(settings: _Settings) -> None:
    global _WORKER
    from aullava.faces import FaceDetector

    _WORKER = (settings, FaceDetector(crop_size=settings.crop_size))


def _worker_task(task: tuple[str, str, str]) -> tuple[str, list[dict], str | None]:
    settings, detector = _WORKER
    source, path, identity = task
    try:
        records, reason = _synthesize_source(detector, settings, source, path, identity)
    except Exception as exc:  # noqa: BLE001 - one bad photo must not end a long run
        records, reason = [], f"error: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return source, records, reason


def _read_index(index_csv: Path) -> list[tuple[str, str, str]]:
    """(source as written in the index, resolved path, identity) per row."""
    with open(index_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
        if "image" not in fields or not ({"identity", "subject"} & fields.keys()):
            raise ValueError(f"{index_csv}: needs columns 'image' and 'identity' (or 'subject'), "
                             f"got {reader.fieldnames}")
        id_col = fields.get("identity", fields.get("subject"))
        rows = []
        for n, row in enumerate(reader, start=2):
            image, identity = (row.get(fields["image"]) or "").strip(), (row.get(id_col) or "").strip()
            if not image or not identity:
                raise ValueError(f"{index_csv} line {n}: empty image or identity")
            p = Path(image)
            rows.append((image, str(p if p.is_absolute() else index_csv.parent / p), identity))
    seen = set()
    unique = []
    for row in rows:  # a photo listed twice is synthesised once
        if row[0] not in seen:
            seen.add(row[0])
            unique.append(row)
    return unique


def _read_skipped(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["source"]: row["reason"] for row in csv.DictReader(fh)}


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence[object]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _format_value(x: float) -> str:
    return "0" if x == 0 else f"{x:.3f}".rstrip("0").rstrip(".")


def run_synth(index_csv: str | os.PathLike, out_dir: str | os.PathLike, per_image: int = 4, held_out: float = 0.2,
              seed: int = 0, limit: int | None = None, crop_size: int = 224, workers: int = 1,
              progress: bool = True, *, au_ids: Iterable[str | int] | str = "default", gain: float = 1.0,
              image_format: str = "jpg", neutral_thresholds: Mapping[str, float] | None = NEUTRAL_THRESHOLDS,
              retry_skipped: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Build a synthetic AU dataset from the photos of ``index_csv`` into ``out_dir``; returns a summary dict.

    ``index_csv``: columns ``image`` (path relative to the CSV's folder, or absolute) and ``identity`` (or
    ``subject``). The first ``limit`` rows (index order) are used. Each usable photo — a face is found, its eye
    distance is ≥ `MIN_EYE_DISTANCE`, it passes `neutral_check` (``neutral_thresholds=None`` disables the check)
    and the head pose is within `MAX_YAW`/`MAX_PITCH` — yields ``per_image`` aligned ``crop_size`` crops, each
    warped to a `sample_aus` combination of ``au_ids`` (an AU set name, or ids) at ``gain``.

    Writes, under ``out_dir``:

    - ``images/<identity>/<stem>-<hash>_<k>.jpg`` (JPEG quality 95; ``image_format="png"`` for lossless);
    - ``train.csv`` and ``held_out.csv``: the project's manifest format — ``image`` (relative to ``out_dir``),
      ``subject`` (the identity), one continuous column per AU (``AU01``, ``AU02``, … in [0, 1]; read them with
      `aullava.datasets.read_manifest`, which derives the 0–5 and 0/1 labels), and ``source`` (the photo, as
      written in the index; the reader notes and ignores it). The split is by identity (`split_identities`,
      seeded); no identity is on both sides;
    - ``skipped.csv``: ``source, identity, reason`` for every photo that gave nothing (unreadable, no face, too
      small, not neutral, head pose, error), never fatal;
    - ``synth_config.json``: the settings that determine images and labels. A second run into the same folder must
      use the same ones (else ValueError: mixing them would mislabel images).

    Resumable and deterministic: sample k of a photo depends only on (seed, photo, k); a photo whose images all
    exist is not opened again (its labels are re-drawn, identically), one listed in ``skipped.csv`` is not retried
    unless ``retry_skipped``. Images are written atomically, manifests rewritten at the end of every run.
    ``workers`` > 1 runs photos in that many processes (each with its own MediaPipe detector).
    """
    import time

    from tqdm import tqdm

    global _WORKER
    start = time.time()
    index_csv, out = Path(index_csv), Path(out_dir)
    if per_image < 1 or crop_size < 32 or workers < 1:
        raise ValueError("per_image and workers must be >= 1 and crop_size >= 32")
    ext = {"jpg": "jpg", "jpeg": "jpg", "png": "png"}.get(image_format.lower().lstrip("."))
    if ext is None:
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    aus = au_set(au_ids)
    ids = tuple(normalize_au_id(a) for a in aus.ids)
    sample_aus(np.random.default_rng(0), ids)  # fails early if the model lacks one of the AUs
    columns = aus.openface_columns("")
    thresholds = None if neutral_thresholds is None else {k: float(v) for k, v in neutral_thresholds.items()}
    settings = _Settings(str(out), int(per_image), int(seed), int(crop_size), ids, float(gain), ext, thresholds)
    config = {"version": 1, "seed": settings.seed, "crop_size": settings.crop_size, "au_ids": list(ids),
              "gain": settings.gain, "image_format": ext, "neutral_thresholds": thresholds,
              "max_yaw": MAX_YAW, "max_pitch": MAX_PITCH, "min_eye_distance": MIN_EYE_DISTANCE,
              "work_scale": WORK_SCALE, "model": MODEL_FILE}
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_FILE
    if config_path.is_file():
        old = json.loads(config_path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            raise ValueError(f"{out} holds a synthetic set made with other settings ({', '.join(changed)}); "
                             "use a new output folder")
    else:
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    say = log or (lambda msg: None)

    rows = _read_index(index_csv)
    if limit is not None:
        rows = rows[: max(0, int(limit))]
    identity_of = {source: identity for source, _, identity in rows}
    held = split_identities(identity_of.values(), held_out, seed)
    skipped_before = {} if retry_skipped else _read_skipped(out / SKIPPED_FILE)

    records: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    todo = []
    reused_images = 0
    for source, path, identity in rows:
        names = [Path("images") / _safe_dir(identity) / _output_name(source, k, ext) for k in range(per_image)]
        if all((out / n).is_file() for n in names):
            records[source] = [{"image": n.as_posix(), "subject": identity, "source": source,
                                "aus": sample_aus(_sample_rng(seed, source, k), ids)} for k, n in enumerate(names)]
            reused_images += len(names)
        elif source in skipped_before:
            skipped[source] = skipped_before[source]
        else:
            todo.append((source, path, identity))
    say(f"{len(rows)} photos: {len(records)} already done, {len(skipped)} skipped before, {len(todo)} to do")

    bar = tqdm(total=len(todo), desc="synth", unit="photo", disable=not progress or not todo)
    written = 0

    def collect(source: str, recs: list[dict], reason: str | None) -> None:
        nonlocal written
        if reason is None:
            records[source] = recs
            written += len(recs)
        else:
            skipped[source] = reason
        bar.update(1)

    try:
        if workers == 1 or len(todo) <= 1:
            from aullava.faces import FaceDetector

            with FaceDetector(crop_size=crop_size) as detector:
                saved, _WORKER = _WORKER, (settings, detector)
                try:
                    for task in todo:
                        collect(*_worker_task(task))
                finally:
                    _WORKER = saved
        elif todo:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(settings,)) as pool:
                for result in pool.map(_worker_task, todo, chunksize=4):
                    collect(*result)
    finally:
        bar.close()
        # manifests and skip list reflect everything finished so far, even after an interruption
        train_rows, held_rows = [], []
        for source in sorted(records):
            for rec in records[source]:
                row = [rec["image"], rec["subject"]] + [_format_value(rec["aus"][a]) for a in ids] + [source]
                (held_rows if rec["subject"] in held else train_rows).append(row)
        header = ["image", "subject"] + columns + ["source"]
        train_ids = {r[1] for r in train_rows}
        held_ids = {r[1] for r in held_rows}
        assert not train_ids & held_ids, "an identity is on both sides of the split"
        _write_csv(out / "train.csv", header, sorted(train_rows))
        _write_csv(out / "held_out.csv", header, sorted(held_rows))
        _write_csv(out / SKIPPED_FILE, ["source", "identity", "reason"],
                   sorted((s, identity_of.get(s, ""), r) for s, r in skipped.items()))

    reasons: dict[str, int] = {}
    for reason in skipped.values():
        key = reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    summary = {
        "out_dir": str(out), "photos": len(rows), "photos_used": len(records), "photos_skipped": len(skipped),
        "skip_reasons": dict(sorted(reasons.items())), "images_written": written, "images_reused": reused_images,
        "train_images": len(train_rows), "held_out_images": len(held_rows),
        "train_identities": len(train_ids), "held_out_identities": len(held_ids),
        "au_columns": columns, "seconds": round(time.time() - start, 2),
    }
    say(f"synth: {written} images written, {reused_images} reused, {len(skipped)} photos skipped")
    return summary
