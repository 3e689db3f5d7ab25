"""The piecewise-affine face warp of `aullava.synth.run` (step 3 of its pipeline; steps 1 and 2, the AU → mesh model and
the model → photo mapping, are `aullava.synth.mesh_model`).

3. **Warp.** Target landmarks = photo landmarks + mapped displacement. The source landmarks plus a ring of fixed
   points around the face region are Delaunay-triangulated; a displacement that would flip a triangle (e.g. an upper
   lip pressed past the lower one of a closed mouth) is pulled towards its neighbours' common motion
   (`remove_folds`); the same triangles placed at the targets are rasterised and every output pixel takes its
   triangle's affine map back to the photo (a piecewise-affine backward warp); the displacement field is lightly
   Gaussian-smoothed to hide creases at triangle edges, and `cv2.remap` samples the photo. Only the face region is
   touched; outside it, and along the photo's own border, the image is unchanged. ~15 ms per warp of a 350×350
   photo on one CPU core.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from aullava.synth.mesh_model import AUMeshModel, default_model, map_displacement

__all__ = [
    "SynthResult",
    "remove_folds",
    "warp_face",
    "warp_image",
]

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
