"""A real mouth interior for warps that part the lips: teeth, tongue and the dark oral cavity, taken from real photos.

Why: a piecewise-affine warp opens the mouth (AU25, AU26) by stretching the lips' skin over the gap, so a warped
"open mouth" shows a band of lip-coloured skin where a real one shows teeth and darkness. A model trained on such
warps learns a cue that never occurs in real photos and misses the one that does (the held-out real photos put the
first default model at F1 0.44 for AU25 against the teacher). Here the gap between the warped inner lip contours
is filled with the mouth interior of a *donor*: a real photo of another person with the mouth open.

- **Donors** (`scan_donor`, `build_mouth_bank`): every photo of the index whose subject's lips are clearly apart
  (`MIN_DONOR_OPENING`) over an opening that does not look like lip (`MIN_DONOR_CONTRAST`), face large and frontal
  enough. Its mouth region is stored normalised (mouth width
  `DONOR_WIDTH` px, corners level) with the 20 inner-lip landmarks. Donors of held-out identities serve only
  held-out warps and the others only training warps, so no identity crosses the split through its teeth.
- **Painting** (`paint_mouth`): when the warp opened the lips (`MIN_OPENING`, and more than the source was open),
  the donor whose opening is closest to the target's among a few drawn at random is mapped onto the target's inner
  lip contour by a least-squares affine map, its colours scaled to the target's lips (a per-channel gain measured on
  the ring just outside the contour, where both show lip), and composited inside the contour with a feathered edge.
  The lips themselves and the labels are unchanged: the label is the warp's movement, the interior only makes the
  pixels what a real mouth with that movement looks like.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aullava.runtime.files import atomic_write, atomic_write_csv
from aullava.synth.sampling import head_pose_problem, subject_face

INNER_LIP: tuple[int, ...] = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
                              324, 318, 402, 317, 14, 87, 178, 88, 95)
"""MediaPipe face-mesh inner lip contour as one polygon: the upper lip's inner edge from the subject's right mouth
corner (78) to the left one (308), then the lower lip's inner edge back."""
_CORNERS = (0, 10)  # positions of 78 and 308 in INNER_LIP
_GAP_PAIRS = ((3, 17), (4, 16), (5, 15), (6, 14), (7, 13))  # facing inner-lip points: 81-178, 82-87, 13-14, …
MIN_DONOR_OPENING = 0.18
"""Smallest opening (`mouth_opening`) of a donor: below it the interior is a sliver too thin to show teeth."""
MIN_DONOR_CONTRAST = 20.0
"""Smallest mean grey-level difference between a donor's opening and its lips: an open mouth shows teeth (brighter)
or the cavity (darker); an opening that looks like lip is a tongue, a lip fold or a misplaced contour."""
MIN_OPENING = 0.04
"""Smallest target opening that gets an interior; a thinner gap is a line the warp's own lip edges draw well."""
DONOR_WIDTH = 96
"""Mouth width (corner to corner, px) of the stored donor patches: larger than any mouth in a 224-px crop (~70 px),
so painting always reduces."""
BANK_FILE = "mouths.csv"
SCAN_FILE = "mouth_scan.csv"


def mouth_opening(points: np.ndarray) -> float:
    """How far the lips are apart: the mean gap between facing inner-lip points over the middle of the mouth,
    divided by the corner-to-corner width. ``points``: the `INNER_LIP` landmarks (20, ≥2). ~0 closed, ~0.3 a
    clearly open mouth, ~0.6 a wide-open jaw."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    width = float(np.linalg.norm(p[_CORNERS[1]] - p[_CORNERS[0]]))
    if width < 1e-6:
        return 0.0
    gaps = [np.linalg.norm(p[a] - p[b]) for a, b in _GAP_PAIRS]
    return float(np.mean(gaps) / width)


@dataclass(frozen=True)
class MouthDonor:
    """One donor's mouth region, normalised: ``image`` (h, w, 3) RGB uint8 with the mouth corners level and
    `DONOR_WIDTH` px apart, ``points`` the `INNER_LIP` landmarks (20, 2) in its pixels."""

    image: np.ndarray
    points: np.ndarray
    opening: float
    source: str = ""
    identity: str = ""


def extract_donor(image: np.ndarray, landmarks: np.ndarray) -> MouthDonor:
    """Cut the mouth region of a face (MediaPipe ``landmarks`` (478, ≥2) in ``image`` pixels) into a `MouthDonor`."""
    pts = np.asarray(landmarks, dtype=np.float64)[list(INNER_LIP), :2]
    left, right = pts[_CORNERS[0]], pts[_CORNERS[1]]
    d = right - left
    scale = DONOR_WIDTH / max(float(np.linalg.norm(d)), 1e-6)
    angle = np.arctan2(d[1], d[0])
    c, s = np.cos(-angle) * scale, np.sin(-angle) * scale
    rot = np.array([[c, -s], [s, c]])
    moved = pts @ rot.T
    margin = 0.3 * DONOR_WIDTH
    lo = moved.min(0) - margin
    hi = moved.max(0) + margin
    matrix = np.c_[rot, -lo]
    size = tuple(int(v) for v in np.ceil(hi - lo))
    patch = cv2.warpAffine(np.ascontiguousarray(image), matrix, size, flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REPLICATE)
    return MouthDonor(patch, moved - lo, mouth_opening(pts))


def _masks(shape: tuple[int, int], points: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """The opening inside the contour ``points`` (uint8, 0–255, anti-aliased) and the ring of lip just outside it."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 8).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=3)
    ring = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=max(2, int(round(0.06 * width)))) > 0
    return mask, ring & (mask == 0)


def donor_contrast(donor: MouthDonor) -> float:
    """Mean absolute grey-level difference between the donor's opening and the mean of its lips around it."""
    grey = cv2.cvtColor(donor.image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    mask, ring = _masks(grey.shape, donor.points, DONOR_WIDTH)
    inside = mask == 255
    if not inside.any() or not ring.any():
        return 0.0
    return float(np.abs(grey[inside] - grey[ring].mean()).mean())


def _lstsq_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 affine map ``dst ≈ A @ [src, 1]`` in the least-squares sense."""
    design = np.c_[src, np.ones(len(src))]
    coef, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return coef.T


def paint_mouth(image: np.ndarray, points: np.ndarray, donor: MouthDonor) -> np.ndarray:
    """``image`` with the region inside the inner lip contour ``points`` (`INNER_LIP`, (20, 2) pixels) replaced by
    ``donor``'s mouth interior (see the module docstring); the image itself when the contour is too thin."""
    target = np.asarray(points, dtype=np.float64)[:, :2]
    width = float(np.linalg.norm(target[_CORNERS[1]] - target[_CORNERS[0]]))
    if mouth_opening(target) < MIN_OPENING or width < 4:
        return image
    h, w = image.shape[:2]
    pad = int(np.ceil(0.25 * width)) + 2
    x0, y0 = np.maximum(np.floor(target.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(target.max(0)).astype(int) + pad + 1, [w, h])
    if x1 - x0 < 4 or y1 - y0 < 4:
        return image
    local = target - [x0, y0]
    affine = _lstsq_affine(donor.points, local)
    region_w, region_h = int(x1 - x0), int(y1 - y0)
    interior = cv2.warpAffine(donor.image, affine, (region_w, region_h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    # the mask: the contour rasterised at 1/8 px, then feathered by about a pixel of the face's scale
    mask, ring = _masks((region_h, region_w), local, width)
    alpha = mask.astype(np.float32) / 255.0
    sigma = max(0.5, 0.012 * width)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma) * (alpha > 0)  # soft inside, never spills over the lips
    region = image[y0:y1, x0:x1].astype(np.float32)
    if ring.any():  # both show lip on the ring: match the donor's exposure and colour to the target's
        gain = (region[ring].mean(0) + 1.0) / (interior[ring].mean(0) + 1.0)
        interior *= np.clip(gain, 0.5, 2.0)
    out = image.copy()
    blended = region * (1.0 - alpha[..., None]) + np.clip(interior, 0, 255) * alpha[..., None]
    out[y0:y1, x0:x1] = np.round(blended).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------------------------ the bank


class MouthBank:
    """The donors of one synthetic set, with the side of the split each may serve (`pick`)."""

    def __init__(self, donors: Sequence[MouthDonor], held_out: Sequence[bool]):
        self.donors = list(donors)
        self.held_out = np.asarray(held_out, dtype=bool)
        self.openings = np.array([d.opening for d in self.donors], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.donors)

    def pick(self, rng: np.random.Generator, opening: float, held_out: bool, candidates: int = 8
             ) -> MouthDonor | None:
        """Among ``candidates`` donors of the ``held_out`` side drawn at random, the one whose opening is closest
        (in ratio) to ``opening``: a donor much more open than the target would be squashed, teeth and all.
        None when that side has no donor."""
        side = np.flatnonzero(self.held_out == bool(held_out))
        if len(side) == 0:
            return None
        drawn = rng.choice(side, size=min(candidates, len(side)), replace=False)
        ratio = np.abs(np.log(self.openings[drawn] / max(opening, 1e-3)))
        return self.donors[int(drawn[int(np.argmin(ratio))])]

    @classmethod
    def load(cls, folder: str | Path, sources: set[str] | None = None) -> MouthBank:
        """The bank `build_mouth_bank` wrote into ``folder``; with ``sources``, only the donors taken from those
        photos (the others' images are not decoded: a run with ``--limit`` reads only what it can use)."""
        from aullava.faces.images import load_image

        folder = Path(folder)
        donors, held = [], []
        with open(folder / BANK_FILE, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if sources is not None and row["source"] not in sources:
                    continue
                points = np.asarray(json.loads(row["points"]), dtype=np.float64)
                donors.append(MouthDonor(load_image(folder / row["file"]), points, float(row["opening"]),
                                         row["source"], row["identity"]))
                held.append(row["held_out"] == "1")
        return cls(donors, held)


def scan_donor(detector, path: str) -> tuple[MouthDonor | None, str]:
    """(donor, "") for a photo whose subject's mouth is clearly open and whose face is usable, else (None, why)."""
    image, face, _, reason = subject_face(detector, path)
    if reason is None:
        lm = np.asarray(face.landmarks, dtype=np.float64)
        reason = head_pose_problem(lm)
    if reason is not None:
        return None, reason
    opening = mouth_opening(lm[list(INNER_LIP)])
    if opening < MIN_DONOR_OPENING:
        return None, f"mouth closed: opening {opening:.2f} < {MIN_DONOR_OPENING}"
    donor = extract_donor(image, lm)
    contrast = donor_contrast(donor)
    if contrast < MIN_DONOR_CONTRAST:
        return None, f"opening looks like lip: contrast {contrast:.0f} < {MIN_DONOR_CONTRAST:.0f}"
    return donor, ""


def _name(source: str) -> str:
    import hashlib
    import re

    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem)[:60] or "mouth"
    return f"{stem}-{hashlib.sha256(source.encode()).hexdigest()[:8]}.png"


def build_mouth_bank(rows: Sequence[tuple[str, str, str]], folder: str | Path, held_identities: set[str],
                     progress: bool = True, log=None) -> MouthBank:
    """Scan the index ``rows`` ((source, path, identity), as `aullava.synth.run.read_index` gives them) for donors
    and store them in ``folder`` (``mouths/*.png`` and `BANK_FILE`); returns the bank.

    Resumable: `SCAN_FILE` lists every photo already scanned (donor or not), so a second run detects only photos it
    has not seen. Both files are rewritten at the end, even after an interruption."""
    from tqdm import tqdm

    from aullava.faces.detector import FaceDetector

    folder = Path(folder)
    (folder / "mouths").mkdir(parents=True, exist_ok=True)
    scanned: dict[str, dict] = {}
    if (folder / SCAN_FILE).is_file():
        with open(folder / SCAN_FILE, newline="", encoding="utf-8") as fh:
            scanned = {row["source"]: row for row in csv.DictReader(fh)}
    bank_rows: dict[str, dict] = {}
    if (folder / BANK_FILE).is_file():
        with open(folder / BANK_FILE, newline="", encoding="utf-8") as fh:
            bank_rows = {row["source"]: row for row in csv.DictReader(fh)
                         if (folder / row["file"]).is_file()}
    todo = [r for r in rows if r[0] not in scanned or (scanned[r[0]]["reason"] == "" and r[0] not in bank_rows)]
    (log or (lambda m: None))(f"mouth donors: {len(rows) - len(todo)} photos scanned before, {len(todo)} to scan")
    bar = tqdm(total=len(todo), desc="mouth donors", unit="photo", disable=not progress or not todo)
    try:
        if todo:
            with FaceDetector() as detector:
                for source, path, identity in todo:
                    try:
                        donor, reason = scan_donor(detector, path)
                    except Exception as exc:  # noqa: BLE001 - one bad photo must not end the scan
                        donor, reason = None, f"error: {type(exc).__name__}"
                    if donor is not None:
                        file = f"mouths/{_name(source)}"
                        ok, buf = cv2.imencode(".png", cv2.cvtColor(donor.image, cv2.COLOR_RGB2BGR))
                        if not ok:
                            raise OSError(f"could not encode the mouth of {source}")
                        atomic_write(folder / file, buf.tobytes())
                        bank_rows[source] = {"file": file, "source": source, "identity": identity,
                                             "opening": f"{donor.opening:.4f}",
                                             "points": json.dumps(np.round(donor.points, 2).tolist())}
                    scanned[source] = {"source": source, "reason": reason}
                    bar.update(1)
    finally:
        bar.close()
        atomic_write_csv(folder / SCAN_FILE, ["source", "reason"],
                  sorted((s, r["reason"]) for s, r in scanned.items()))
        header = ["file", "source", "identity", "held_out", "opening", "points"]
        atomic_write_csv(folder / BANK_FILE, header, sorted(
            (r["file"], r["source"], r["identity"], "1" if r["identity"] in held_identities else "0",
             r["opening"], r["points"]) for r in bank_rows.values()))
    return MouthBank.load(folder, sources={r[0] for r in rows})


__all__ = ["INNER_LIP", "MouthBank", "MouthDonor", "build_mouth_bank", "extract_donor", "mouth_opening",
           "paint_mouth", "scan_donor"]
