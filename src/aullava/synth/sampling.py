"""What to synthesize: which photos are neutral enough to warp (MediaPipe blendshapes below thresholds, pose and size
limits) and which AU combinations to sample (patterns, conflicts, intensity levels)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from aullava.aus.catalogue import au_set, normalize_au_id
from aullava.synth.mesh_model import default_model, face_pose

DEFAULT_SYNTH_AUS: tuple[str, ...] = tuple(au_set("default").ids)


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


def subject_face(detector, path: str) -> tuple[np.ndarray | None, object | None, float, str | None]:
    """``(image, face, eye distance, None)`` for a photo whose subject (its largest face) is large enough to warp or
    to lend its mouth, else ``(None, None, 0.0, reason)``: unreadable, no face, face too small
    (`MIN_EYE_DISTANCE`). Shared by the synthetic sources and the mouth donors, so both apply the same limits."""
    from aullava.faces.detector import eye_centres, largest_face
    from aullava.faces.images import load_image

    try:
        image = load_image(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a skip, never fatal
        return None, None, 0.0, f"unreadable: {' '.join(str(exc).split())}"
    faces = detector.detect(image)
    if not faces:
        return None, None, 0.0, "no face"
    face = largest_face(faces)
    right, left = eye_centres(face.landmarks)
    eye_distance = float(np.linalg.norm(right - left))
    if eye_distance < MIN_EYE_DISTANCE:
        return None, None, 0.0, f"face too small: eye distance {eye_distance:.0f} px < {MIN_EYE_DISTANCE:.0f}"
    return image, face, eye_distance, None


def head_pose_problem(landmarks: np.ndarray, model=None) -> str | None:
    """Why a face is turned too far to use (`MAX_YAW`, `MAX_PITCH`), or None."""
    yaw, pitch, _ = face_pose(landmarks, model or default_model())
    if abs(yaw) > MAX_YAW or abs(pitch) > MAX_PITCH:
        return f"head pose: yaw {yaw:.0f}, pitch {pitch:.0f} degrees (limits {MAX_YAW:.0f}, {MAX_PITCH:.0f})"
    return None


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
