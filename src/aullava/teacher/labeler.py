"""MediaPipe's 52 blendshapes as a fast, weak AU teacher: a documented blendshape → FACS mapping, calibrated on
synthetic faces with exact labels.

Why: the default model must be trained without any AU-labelled dataset. `aullava.synth.run` gives exact labels but only
for geometry warped onto neutral faces; real expressive photos have no labels at all. MediaPipe's Face Landmarker
(already run for alignment, `aullava.faces.detector`) also scores 52 ARKit-style blendshapes in ~10 ms. Several of them are
named after the same muscle movements as FACS Action Units, so a mapping gives *teacher labels* for real photos
and a cheap "MediaPipe-mapping baseline" for evaluation. Blendshape scores are not FACS intensities, though: their
zero points and scales differ per shape (``eyeSquint`` is ~0.45 on a neutral face, ``browDown`` 0.1–0.35), so each
AU gets a monotone calibration map fitted on synthetic warps whose AU intensities are known exactly.

**Mapping** (`MAPPING`; one AU ← the maximum of its source scores). Left/right pairs are combined by the *maximum*:
FACS datasets code a bilateral AU as present when it is visible on either side (a one-sided smile is AU12), and a
mean would halve every unilateral action; the upward bias of a max of two noisy scores is a constant the
calibration removes. Choices beyond the obvious name matches (the reasons are in each entry's ``why``):

- AU23 (lip tightener) ← ``mouthPucker``: of the candidates (mouthPucker, mouthRoll*, mouthPress*, mouthFunnel)
  only pucker and roll respond to synthetic AU23, roll is taken by AU24, and pucker (AU18, the other orbicularis
  oris action narrowing the mouth) is the closest appearance;
- AU24 (lip presser) ← max(``mouthPress*``, ``mouthRoll*``): pressing the lips hard thins their red parts, which
  MediaPipe reports as a roll-in (AU28-like); on synthetic AU24 ``mouthPress`` does not move at all, ``mouthRoll``
  does;
- AU25 (lips part) ← max(``jawOpen``, ``mouthLowerDown*``): lips part either with the jaw or by the lower lip
  alone; AU26 (jaw drop) ← ``jawOpen``;
- AU6 ← ``cheekSquint*`` and AU9 ← ``noseSneer*`` are the name matches, but this MediaPipe model returns 0 for
  them on every face (≤ 0.0004 over 3,861 real photos): the teacher is **blind** to AU6 and AU9 and answers NaN
  ("not labelled"), never a confident 0. ``eyeSquint`` (orbicularis oculi) goes to AU7.

**Calibration** (fitted by `aullava.teacher.calibration`: `fit_monotone`, `build_calibration`, `calibrate`): per AU, a
non-decreasing piecewise-linear map raw score → intensity in [0, 1] (`apply_monotone`), the conditional median of
the exact intensity of synthetic warps given the raw score; it is bundled as ``resources/teacher_calibration.json``
(`load_calibration`) with each AU's held-out agreement and status: ``blind`` (AU6, AU9), ``unverified`` (no
synthetic evidence the teacher sees it) or ``calibrated``. The teacher answers NaN ("not labelled") for blind and,
by default, unverified AUs. The method, the status rules and the reasons are in `aullava.teacher.calibration`.

**Limits** (read the held-out scores before trusting an AU): the warps change geometry only — no wrinkles, no
teeth, no dark mouth interior — and MediaPipe reacts to geometry-only movement weakly (0.1–0.3 score per unit
intensity against a between-face baseline spread of the same size), so on synthetic data the calibrated teacher is
precise but misses most weak AUs (false-positive rates 0–5 %, recall ≤ 0.4 even at intensity E); agreement there
is a lower bound for cues real faces show by appearance. Synthetic AU25 without a jaw drop shows no lip gap at
all, so AU25 is fitted and scored only on images that can show it (`calibration.VISIBLE`); on real photos AU25 is
therefore conservative: lips parted without a dropped jaw (talking, smiles showing teeth) mostly stay 'absent'
(present on 17 % of the real faces, against 50 % with raw score >= 0.10). The calibration also inherits the synthetic
sampling prior (`synth.sample_aus`: ~10–25 % prevalence per AU) and is not validated on real AU labels.

Blendshapes are measured on the 224 px aligned crop (`detect_blendshapes`, ``on_crop=True``): that is the input
the calibration was fitted on (scores on a crop and on the whole photo correlate at r = 0.74–0.97 per shape, but
e.g. mouthLowerDown differs by 0.10 on average) and the input the student model sees.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from aullava.aus.answer_format import PRESENCE_THRESHOLD, binary_from_continuous, discrete_from_continuous
from aullava.aus.catalogue import au_set


CALIBRATION_FILE = "teacher_calibration.json"
_DEFAULT_SET = au_set("default")
DEFAULT_AUS: tuple[str, ...] = tuple(_DEFAULT_SET.ids)  # canonical ids "AU1" … "AU26"
COLUMNS: dict[str, str] = dict(zip(DEFAULT_AUS, _DEFAULT_SET.openface_columns("")))  # "AU1" → "AU01"
TEACHER_CROP = 224  # crop size the calibration was fitted on (synth's default crop_size)


@dataclass(frozen=True)
class BlendshapeMap:
    """One AU's source blendshapes (combined by their maximum) and the reason for the choice."""

    au: str
    blendshapes: tuple[str, ...]
    why: str


def _lr(name: str) -> tuple[str, str]:
    return (name + "Left", name + "Right")


MAPPING: dict[str, BlendshapeMap] = {m.au: m for m in (
    BlendshapeMap("AU1", ("browInnerUp",), "inner brow raiser (frontalis, medial) = browInnerUp"),
    BlendshapeMap("AU2", _lr("browOuterUp"), "outer brow raiser (frontalis, lateral) = browOuterUp, either side"),
    BlendshapeMap("AU4", _lr("browDown"), "brow lowerer (corrugator, procerus) = browDown, either side"),
    BlendshapeMap("AU6", _lr("cheekSquint"), "cheek raiser = cheekSquint; BLIND: this model returns 0 for it"),
    BlendshapeMap("AU7", _lr("eyeSquint"), "lid tightener (orbicularis oculi, palpebral) = eyeSquint"),
    BlendshapeMap("AU9", _lr("noseSneer"), "nose wrinkler = noseSneer; BLIND: this model returns 0 for it"),
    BlendshapeMap("AU10", _lr("mouthUpperUp"), "upper lip raiser = mouthUpperUp"),
    BlendshapeMap("AU12", _lr("mouthSmile"), "lip corner puller (zygomaticus major) = mouthSmile"),
    BlendshapeMap("AU14", _lr("mouthDimple"), "dimpler (buccinator) = mouthDimple"),
    BlendshapeMap("AU15", _lr("mouthFrown"), "lip corner depressor = mouthFrown"),
    BlendshapeMap("AU17", ("mouthShrugLower",), "chin raiser (mentalis) pushes the lower lip up = mouthShrugLower"),
    BlendshapeMap("AU23", ("mouthPucker",),
                  "lip tightener: no ARKit shape; mouthPucker (AU18, also orbicularis oris, narrows the mouth) "
                  "responds to synthetic AU23, mouthPress and mouthFunnel do not, mouthRoll is used by AU24"),
    BlendshapeMap("AU24", _lr("mouthPress") + ("mouthRollLower", "mouthRollUpper"),
                  "lip presser = mouthPress; a hard press thins the lips' red parts, which MediaPipe scores as "
                  "mouthRoll (synthetic AU24 moves mouthRoll, not mouthPress), so either counts"),
    BlendshapeMap("AU25", ("jawOpen",) + _lr("mouthLowerDown"),
                  "lips part, with the jaw (jawOpen) or by the lower lip alone (mouthLowerDown)"),
    BlendshapeMap("AU26", ("jawOpen",), "jaw drop = jawOpen"),
)}
assert tuple(MAPPING) == DEFAULT_AUS, "the mapping must cover the default AU set, in its order"


def raw_scores(blendshapes: Mapping[str, float], aus: Iterable[str] = DEFAULT_AUS) -> dict[str, float]:
    """Per AU, the uncalibrated teacher score: the maximum of its source blendshapes (NaN when none is given)."""
    out = {}
    for au in aus:
        values = [float(blendshapes[n]) for n in MAPPING[au].blendshapes if n in blendshapes]
        values = [v for v in values if math.isfinite(v)]
        out[au] = max(values) if values else float("nan")
    return out


def raw_matrix(table: pd.DataFrame, aus: Sequence[str] = DEFAULT_AUS) -> np.ndarray:
    """(rows, AUs) raw scores from a table with one column per blendshape (NaN rows stay NaN)."""
    cols = []
    for au in aus:
        names = [n for n in MAPPING[au].blendshapes if n in table.columns]
        if not names:
            cols.append(np.full(len(table), np.nan))
            continue
        values = table[names].to_numpy(dtype=np.float64)
        all_nan = np.isnan(values).all(axis=1)
        cols.append(np.where(all_nan, np.nan, np.nanmax(np.where(np.isnan(values), -np.inf, values), axis=1)))
    return np.column_stack(cols) if cols else np.zeros((len(table), 0))


# ---------------------------------------------------------------------------------------------- calibration map


def apply_monotone(x, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """Evaluate a `fit_monotone` map (flat outside its knots, output clipped to [0, 1]); NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    out = np.interp(np.clip(x, 0.0, 1.0), np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    return np.where(np.isnan(x), np.nan, np.clip(out, 0.0, 1.0))


def load_calibration(calibration: str | os.PathLike | Mapping | None = None) -> dict:
    """The bundled calibration (``None``), a JSON file, or an already loaded dict; checks that maps are monotone."""
    if calibration is None:
        text = resources.files("aullava").joinpath("resources", CALIBRATION_FILE).read_text(encoding="utf-8")
        data = json.loads(text)
    elif isinstance(calibration, Mapping):
        data = dict(calibration)
    else:
        data = json.loads(Path(calibration).read_text(encoding="utf-8"))
    for au, entry in data.get("aus", {}).items():
        knots = entry.get("knots")
        if knots is None:
            continue
        xs, ys = np.asarray(knots["x"], float), np.asarray(knots["y"], float)
        if xs.size == 0 or xs.size != ys.size or np.any(np.diff(xs) <= 0) or np.any(np.diff(ys) < 0) \
                or ys.min() < 0 or ys.max() > 1:
            raise ValueError(f"calibration for {au}: knots must be increasing in x, non-decreasing in y, y in [0, 1]")
    return data


# ------------------------------------------------------------------------------------------------- detection


def detect_blendshapes(paths: Sequence[str | os.PathLike], detector=None, *, on_crop: bool = True,
                       root: str | os.PathLike | None = None, progress: bool = True) -> pd.DataFrame:
    """Blendshapes of the largest face of each image: DataFrame with ``image`` (as given), ``face`` (bool) and
    the 52 blendshape columns (NaN when no face).

    ``on_crop=True``: after detection on the photo, the face is aligned into a 224 px crop (`faces.align_face`)
    and detected again there, and the crop's scores are used: the calibration was fitted on such crops (if the
    crop yields no face, the photo's scores are kept). Use ``on_crop=False`` for images that already are aligned
    crops (synthetic warps). ``root``: folder that relative paths are resolved against (``image`` keeps the
    path as given). ~25 ms per photo on one CPU core (two MediaPipe passes).
    """
    from tqdm.auto import tqdm

    from aullava.faces.detector import FaceDetector, align_face, largest_face
    from aullava.faces.images import load_image

    own = detector is None
    detector = detector or FaceDetector(crop_size=TEACHER_CROP)
    rows = []
    try:
        for p in tqdm(list(paths), desc="blendshapes", unit="img", disable=not progress):
            path = Path(p)
            if root is not None and not path.is_absolute():
                path = Path(root) / path
            rec: dict = {"image": str(p), "face": False}
            try:
                image = load_image(path)
            except Exception:  # noqa: BLE001 - an unreadable image is a row without a face, never fatal
                rows.append(rec)
                continue
            face = largest_face(detector.detect(image))
            if face is not None:
                shapes = face.blendshapes
                if on_crop:
                    crop, _ = align_face(image, face.landmarks, TEACHER_CROP)
                    again = largest_face(detector.detect(crop))
                    if again is not None:
                        shapes = again.blendshapes
                rec["face"] = True
                rec.update(shapes)
            rows.append(rec)
    finally:
        if own:
            detector.close()
    return pd.DataFrame(rows) if rows else pd.DataFrame({"image": pd.Series(dtype=str), "face": pd.Series(dtype=bool)})


# --------------------------------------------------------------------------------------------------- teacher


class Teacher:
    """Blendshapes → continuous AU intensities of the default AU set (NaN for AUs the teacher cannot see).

    ``calibration``: None (the bundled ``resources/teacher_calibration.json``), a JSON path or a loaded dict.
    AUs whose status there is ``blind`` are always NaN, ``unverified`` ones unless ``include_unverified=True``
    (see `calibration.MIN_AUC`). ``calibrated=False`` gives the raw mapping (max of the source scores used as the
    intensity, same NaN rules): only for comparison, its zero points are wrong (AU7 is 'present' on 96 % of real
    photos).

    Consistency rule (``calibrated`` mode): where AU26 is present, AU25 is raised to at least AU26's value — the
    synthetic labels follow the same convention (a dropped jaw parts the lips, `synth.sample_aus`), and the two
    maps, fitted on different raw scores, can otherwise disagree.
    """

    def __init__(self, calibration: str | os.PathLike | Mapping | None = None, *, calibrated: bool = True,
                 include_unverified: bool = False):
        self.calibration = load_calibration(calibration)
        self.calibrated = calibrated
        self.aus: tuple[str, ...] = DEFAULT_AUS
        self._maps: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        entries = self.calibration.get("aus", {})
        allowed = {"calibrated", "unverified"} if include_unverified else {"calibrated"}
        for au in self.aus:
            entry = entries.get(au)
            usable = (entry is not None and entry.get("status", "calibrated") in allowed
                      and entry.get("knots") is not None)
            self._maps[au] = (np.asarray(entry["knots"]["x"], float), np.asarray(entry["knots"]["y"], float)) \
                if usable else None

    @property
    def seen(self) -> tuple[str, ...]:
        """The AUs this teacher answers (the others are always NaN)."""
        return tuple(au for au in self.aus if self._maps[au] is not None)

    def intensities(self, raw: np.ndarray) -> np.ndarray:
        """(rows, AUs) raw scores → (rows, AUs) intensities, NaN for unseen AUs."""
        out = np.full(raw.shape, np.nan)
        for j, au in enumerate(self.aus):
            knots = self._maps[au]
            if knots is None:
                continue
            out[:, j] = apply_monotone(raw[:, j], *knots) if self.calibrated else np.clip(raw[:, j], 0.0, 1.0)
        if self.calibrated and self._maps.get("AU25") is not None and self._maps.get("AU26") is not None:
            i25, i26 = self.aus.index("AU25"), self.aus.index("AU26")
            jaw = out[:, i26]
            lift = np.isfinite(jaw) & (jaw >= PRESENCE_THRESHOLD)
            out[lift, i25] = np.fmax(out[lift, i25], jaw[lift])
        return out

    def label(self, blendshapes: Mapping[str, float]) -> dict[str, float]:
        """``{AU id: intensity in [0, 1] or NaN}`` for one face's blendshape scores (ids as in `DEFAULT_AUS`)."""
        raw = raw_scores(blendshapes, self.aus)
        values = self.intensities(np.array([[raw[au] for au in self.aus]]))[0]
        return {au: float(v) for au, v in zip(self.aus, values)}

    def label_table(self, blendshapes: pd.DataFrame) -> pd.DataFrame:
        """Manifest AU columns (``AU01`` … continuous) for a `detect_blendshapes` table, same row order."""
        values = self.intensities(raw_matrix(blendshapes, self.aus))
        return pd.DataFrame(values, columns=[COLUMNS[au] for au in self.aus], index=blendshapes.index)

    def label_faces(self, paths: Sequence[str | os.PathLike], detector=None, progress: bool = True, *,
                    subjects: Sequence[str] | None = None, root: str | os.PathLike | None = None,
                    keep_missing: bool = True) -> pd.DataFrame:
        """Teacher labels for photos, in the project's manifest convention: ``image`` (as given), ``subject`` (when
        ``subjects`` is given), ``AU01`` … ``AU26`` continuous in [0, 1], NaN where the teacher cannot see the AU
        or no face was found. ``df.attrs["no_face"]`` lists the images without a face; ``keep_missing=False``
        drops their rows (a training manifest gains nothing from an all-NaN row). Write it with
        ``df.to_csv(path, index=False)``; `aullava.datasets.read_manifest` reads it (empty cells = not labelled).
        """
        paths = list(paths)
        if subjects is not None and len(subjects) != len(paths):
            raise ValueError(f"{len(subjects)} subjects for {len(paths)} paths")
        shapes = detect_blendshapes(paths, detector, root=root, progress=progress)
        df = self.manifest_rows(paths, shapes, subjects)
        if not keep_missing:
            df = df[shapes["face"].to_numpy(dtype=bool)].reset_index(drop=True)
        return df

    def manifest_rows(self, paths: Sequence[str | os.PathLike], shapes: pd.DataFrame,
                      subjects: Sequence[str] | None = None) -> pd.DataFrame:
        """`label_faces`'s table for blendshapes already detected (``shapes``, one row per path, same order): rows
        without a face are kept (all NaN) and listed in ``df.attrs["no_face"]``."""
        df = pd.DataFrame({"image": [str(p) for p in paths]})
        if subjects is not None:
            df["subject"] = [str(s) for s in subjects]
        df = pd.concat([df, self.label_table(shapes)], axis=1)
        df.attrs["no_face"] = df.loc[~shapes["face"].to_numpy(dtype=bool), "image"].tolist()
        return df

    def baseline_predictions(self, paths: Sequence[str | os.PathLike], detector=None, progress: bool = True, *,
                             root: str | os.PathLike | None = None) -> pd.DataFrame:
        """The "MediaPipe-mapping baseline" as a prediction table for `metrics.evaluate_tables`: ``image`` and per AU
        ``AU01_c`` (0/1), ``AU01_r`` (0–5), ``AU01`` (0–1), derived from the continuous value by the project's
        format rules (present = x >= 0.10, discrete = round-half-up(5x)); NaN = no prediction (unseen AU, no
        face)."""
        labels = self.label_faces(paths, detector, progress, root=root)
        return self.predictions_from_labels(labels)

    @staticmethod
    def predictions_from_labels(labels: pd.DataFrame) -> pd.DataFrame:
        """Continuous ``AU01`` … columns → ``image`` + ``AU01_c``, ``AU01_r``, ``AU01`` per AU (NaN kept)."""
        out = {"image": labels["image"].to_numpy()}
        for au in DEFAULT_AUS:
            col = COLUMNS[au]
            x = labels[col].to_numpy(dtype=np.float64)
            finite = np.isfinite(x)
            out[col + "_c"] = np.where(finite, binary_from_continuous(np.nan_to_num(x)), np.nan)
            out[col + "_r"] = np.where(finite, discrete_from_continuous(np.nan_to_num(x)), np.nan)
            out[col] = x
        return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------- manifests


BASELINES = {"mediapipe": "MediaPipe blendshapes, calibrated mapping",
             "mediapipe-raw": "MediaPipe blendshapes, raw mapping"}


def baseline_predictions(kind: str, images: Sequence[str], progress: bool = True) -> pd.DataFrame:
    """The MediaPipe-mapping baseline on the same images, as a prediction table (keys: `image`)."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {sorted(BASELINES)}")
    return Teacher(calibrated=kind == "mediapipe").baseline_predictions(list(images), progress=progress)
