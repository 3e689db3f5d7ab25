"""AU-controlled face synthesis: the AU→mesh model, the model→photo mapping, the warp (checked by MediaPipe itself),
AU sampling, and the resumable dataset builder."""

from __future__ import annotations

import csv
import shutil
from importlib import resources

import numpy as np
import pytest

from aullava.synth import mesh_model
from aullava.aus.catalogue import au_set
from aullava.synth.mesh_model import AUMeshModel, map_displacement
from aullava.synth.run import run_synth, split_identities
from aullava.synth.sampling import neutral_check, sample_aus
from aullava.synth.warp import remove_folds, warp_face, warp_image

MOUTH_CORNERS = (61, 291)  # subject's right (image left), subject's left (image right)
CHIN, UPPER_LIP, LOWER_LIP = 152, 13, 14
BROWS = (105, 334)


@pytest.fixture(scope="module")
def model() -> AUMeshModel:
    return AUMeshModel()


@pytest.fixture(scope="module")
def astronaut_face(astronaut_path, detector):
    from aullava.faces.images import load_image

    image = load_image(astronaut_path)
    faces = detector.detect(image)
    assert len(faces) == 1
    return image, faces[0]


# ----------------------------------------------------------------------------------------------------- the model


def test_mesh_layout_is_axis_major_and_neutral_is_zero_input(model):
    raw = np.load(resources.files("aullava").joinpath("resources", mesh_model.MODEL_FILE), allow_pickle=False)
    intercept, mean_mesh, coef = raw["intercept"], raw["mean_aligned_mesh"], raw["coef"].astype(np.float64)
    # axis-major [x | y | z] is the layout that matches the stored mean mesh; interleaved would be far off
    assert np.abs(intercept.reshape(3, 478).T - mean_mesh).max() < 10
    assert np.abs(intercept.reshape(478, 3) - mean_mesh).max() > 100
    # "neutral" = all AUs 0, pose 0 = the intercept
    np.testing.assert_allclose(model.mesh({}), intercept.reshape(3, 478).T, atol=1e-4)
    np.testing.assert_allclose(model.neutral, model.mesh(np.zeros(20)), atol=1e-9)
    # mean_aligned_mesh is the prediction at the mean training input (AUs in 0..1, pose ~0), not at zero
    x, *_ = np.linalg.lstsq(coef.T, mean_mesh.T.reshape(-1) - intercept, rcond=None)
    np.testing.assert_allclose(model.mesh(x[:20], pose=x[20:]), mean_mesh, atol=0.2)
    assert np.all((x[:20] > 0) & (x[:20] < 0.5)) and np.all(np.abs(x[20:]) < 0.05)
    # displacement = mesh(aus) - mesh(neutral), linear in the AU values
    aus = {"AU12": 0.7, "au26": 0.3}
    np.testing.assert_allclose(model.displacement(aus, regional=False), model.mesh(aus) - model.neutral, atol=1e-9)
    np.testing.assert_allclose(model.displacement(aus, regional=True),
                               model.mesh(aus, regional=True) - model.neutral, atol=1e-9)
    np.testing.assert_allclose(model.displacement({"AU12": 1.0}) * 0.5, model.displacement({"AU12": 0.5}))
    assert set(au_set("default").ids) <= set(model.au_ids)
    with pytest.raises(KeyError):
        model.vector({"AU45": 1.0})  # not an input of the model: never silently 0


def test_au_displacements_move_the_right_landmarks(model):
    # model frame: +x towards the image right, +y up
    smile = model.displacement({"AU12": 1.0})
    right, left = smile[MOUTH_CORNERS[0]], smile[MOUTH_CORNERS[1]]
    assert right[0] < -1 and left[0] > 1  # corners pulled outwards
    assert right[1] > 1 and left[1] > 1  # ... and up
    jaw = model.displacement({"AU26": 1.0})
    assert jaw[CHIN, 1] < -5  # chin down
    assert jaw[LOWER_LIP, 1] < jaw[UPPER_LIP, 1] - 5  # lips part
    brows_up = model.displacement({"AU1": 1.0, "AU2": 1.0})
    brows_down = model.displacement({"AU4": 1.0})
    for b in BROWS:
        assert brows_up[b, 1] > 2 and brows_down[b, 1] < -2
    # regional masks: AU6 keeps its cheek movement but no longer moves the mouth corners (co-occurring AU12)
    raw6, masked6 = model.displacement({"AU6": 1.0}, regional=False), model.displacement({"AU6": 1.0})
    assert np.linalg.norm(raw6[list(MOUTH_CORNERS), :2], axis=1).min() > 3
    assert np.linalg.norm(masked6[list(MOUTH_CORNERS), :2], axis=1).max() < 0.1
    assert np.abs(smile[BROWS[0]]).max() < 0.1  # ... and AU12 does not move the brows


def test_map_displacement_follows_rotation_and_scale(model):
    disp = model.displacement({"AU12": 1.0, "AU26": 0.5})
    flip = np.array([1.0, -1.0, -1.0])  # model (y up, z to viewer) -> image (y down, z away)
    angle = np.radians(30)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    landmarks = 2.5 * (model.neutral * flip) @ rot.T + [300, 200, 0]
    expected = (2.5 * (disp * flip) @ rot.T)[:, :2]
    np.testing.assert_allclose(map_displacement(model.neutral, disp, landmarks), expected, atol=1e-6)
    np.testing.assert_allclose(map_displacement(model.neutral, disp, landmarks[:, :2]), expected, atol=1e-6)


def test_remove_folds_keeps_points_from_crossing():
    source = np.array([[0, 0], [10, 0], [5, 1.0], [5, -1.0], [0, 5], [10, 5], [0, -5], [10, -5]])
    target = source.copy()
    target[2, 1] -= 3  # the upper point pushed below the lower one
    fixed, count = remove_folds(source, target)
    assert count > 0
    assert fixed[2, 1] > fixed[3, 1]  # still above
    untouched, n = remove_folds(source, source + [0.5, 0.2])
    assert n == 0 and np.allclose(untouched, source + [0.5, 0.2])


def test_warp_image_is_local_and_identity_when_nothing_moves():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 240, 3), dtype=np.uint8)
    pts = np.array([[100, 80], [140, 80], [120, 110], [105, 130], [135, 130]], dtype=float)
    same = warp_image(image, pts, pts, margin=0.3, smooth=0.0)
    assert np.abs(same.astype(int) - image).max() <= 1
    moved = warp_image(image, pts, pts + [0, 5], margin=0.3)
    assert not np.array_equal(moved, image)
    np.testing.assert_array_equal(moved[:60], image[:60])  # far above the region: untouched
    np.testing.assert_array_equal(moved[:, :80], image[:, :80])


# -------------------------------------------------------------------------------- the warp, seen by MediaPipe


def _mean(shapes, *names):
    return float(np.mean([shapes[n] for n in names]))


def test_warp_is_visible_to_an_independent_detector(astronaut_face, detector, model):
    image, face = astronaut_face
    smile = warp_face(image, face.landmarks, {"AU12": 1.0}, model)
    jaw = warp_face(image, face.landmarks, {"AU26": 1.0}, model)
    assert smile.image.shape == image.shape and smile.image.dtype == np.uint8
    before = face.blendshapes
    smiled = detector.detect(smile.image)[0]
    opened = detector.detect(jaw.image)[0]
    assert (_mean(smiled.blendshapes, "mouthSmileLeft", "mouthSmileRight")
            > _mean(before, "mouthSmileLeft", "mouthSmileRight") + 0.01)
    assert opened.blendshapes["jawOpen"] > before["jawOpen"] + 0.05
    # the re-detected landmarks moved the way the warp intended (most of the way)
    for result, found in ((smile, smiled), (jaw, opened)):
        want = result.target - face.landmarks[:, :2]
        got = found.landmarks[:, :2] - face.landmarks[:, :2]
        top = np.argsort(-np.linalg.norm(want, axis=1))[:40]
        assert (got[top] * want[top]).sum() / (want[top] ** 2).sum() > 0.4


# ------------------------------------------------------------------------------------------------------ sampling


def test_sample_aus_ranges_and_co_occurrence():
    ids = au_set("default").ids
    rng = np.random.default_rng(123)
    samples = [sample_aus(rng, ids) for _ in range(3000)]
    table = np.array([[s[a] for a in ids] for s in samples])
    assert all(list(s) == list(ids) for s in samples[:5])
    assert table.min() >= 0.0 and table.max() <= 1.0
    present = table > 0
    assert np.all(table[present] >= 0.10)  # a drawn AU is always 'present' by the project's rule
    col = {a: i for i, a in enumerate(ids)}
    assert 0.11 < (~present.any(axis=1)).mean() < 0.19  # neutral share
    assert present.mean(axis=0).min() > 0.04  # every AU is drawn
    levels = np.clip(np.floor(table[present] * 5 + 0.5), 1, 5)
    counts = np.bincount(levels.astype(int), minlength=6)[1:]
    assert counts.min() > 0.12 * counts.sum()  # all five intensity levels common
    p = lambda a: present[:, col[a]]  # noqa: E731
    assert not np.any(p("AU26") & ~p("AU25"))  # AU26 implies AU25
    assert not np.any(p("AU24") & (p("AU25") | p("AU26")))
    assert not np.any(p("AU12") & p("AU15"))
    assert not np.any(p("AU17") & p("AU26"))
    assert (p("AU6") & p("AU12")).sum() > 0.6 * p("AU6").sum()  # smiles
    assert (p("AU1") & p("AU2")).sum() > 0.6 * p("AU2").sum()  # brow raise
    assert (p("AU9") & p("AU10")).sum() > 0.5 * p("AU9").sum()  # disgust
    again = [sample_aus(np.random.default_rng(123), ids) for _ in range(2)]
    assert again[0] == samples[0] and again[1] == samples[0]  # deterministic given the generator
    with pytest.raises(ValueError):
        sample_aus(rng, ["AU45"])


def test_neutral_check_and_identity_split():
    assert neutral_check({"mouthSmileLeft": 0.1, "jawOpen": 0.05}) == (True, "")
    ok, why = neutral_check({"mouthSmileLeft": 0.1, "mouthSmileRight": 0.8})
    assert not ok and why.startswith("mouthSmile 0.80")
    ids = [f"person{i}" for i in range(50)]
    held = split_identities(ids, 0.2, seed=3)
    assert len(held) == 10 and held == split_identities(list(reversed(ids)), 0.2, seed=3)
    assert held != split_identities(ids, 0.2, seed=4)
    assert len(split_identities(["A", "B", "C"], 0.2)) == 1  # both sides non-empty


# ------------------------------------------------------------------------------------------------------ run_synth


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_synth_split_resume_and_skips(tmp_path, astronaut_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(astronaut_path, photos / f"{name}.png")
    (photos / "broken.jpg").write_text("not an image")
    (photos / "index.csv").write_text("image,identity\na.png,A\nb.png,B\nc.png,C\n")
    out = tmp_path / "synth"
    # the astronaut smiles, so the neutral filter is switched off for this run
    summary = run_synth(photos / "index.csv", out, per_image=2, held_out=0.2, seed=1, neutral_thresholds=None,
                        progress=False)
    assert summary["images_written"] == 6 and summary["photos_skipped"] == 0
    train, held = _read(out / "train.csv"), _read(out / "held_out.csv")
    assert len(train) + len(held) == 6 and train and held
    train_ids, held_ids = {r["subject"] for r in train}, {r["subject"] for r in held}
    assert not train_ids & held_ids and train_ids | held_ids == {"A", "B", "C"}
    columns = au_set("default").openface_columns("")
    assert list(train[0]) == ["image", "subject", *columns, "source"]
    for row in train + held:
        assert (out / row["image"]).is_file() and row["source"] in {"a.png", "b.png", "c.png"}
        assert all(0.0 <= float(row[c]) <= 1.0 for c in columns)
    from PIL import Image

    assert Image.open(out / train[0]["image"]).size == (224, 224)
    from aullava.datasets import read_manifest

    frames = read_manifest(out / "train.csv", check_files=True)
    assert len(frames.table) == len(train) and "AU12_r" in frames.table.columns

    # a second run does no work (no detection at all) and writes the same manifests
    first = (out / "train.csv").read_bytes(), (out / "held_out.csv").read_bytes()
    from aullava.faces.detector import FaceDetector

    def fail(*_args, **_kw):
        raise AssertionError("resumed run must not detect faces")

    monkeypatch.setattr(FaceDetector, "detect", fail)
    again = run_synth(photos / "index.csv", out, per_image=2, held_out=0.2, seed=1, neutral_thresholds=None,
                      progress=False)
    assert again["images_written"] == 0 and again["images_reused"] == 6
    assert ((out / "train.csv").read_bytes(), (out / "held_out.csv").read_bytes()) == first
    with pytest.raises(ValueError, match="other settings"):
        run_synth(photos / "index.csv", out, per_image=2, seed=2, neutral_thresholds=None, progress=False)
    monkeypatch.undo()

    # with the neutral filter on, the smiling astronaut is skipped with its reason, the broken file too
    (photos / "index2.csv").write_text("image,identity\na.png,A\nbroken.jpg,D\n")
    out2 = tmp_path / "synth2"
    summary2 = run_synth(photos / "index2.csv", out2, per_image=1, progress=False)
    assert summary2["images_written"] == 0 and summary2["photos_skipped"] == 2
    reasons = {r["source"]: r["reason"] for r in _read(out2 / "skipped.csv")}
    assert reasons["a.png"].startswith("not neutral: mouthSmile")
    assert reasons["broken.jpg"].startswith("unreadable")
    assert _read(out2 / "train.csv") == [] and _read(out2 / "held_out.csv") == []


# ------------------------------------------------------------------------------------------ the mouth interior


def _inner_lip(cx: float, cy: float, width: float, gap: float) -> np.ndarray:
    """`mouth.INNER_LIP` points of a lens-shaped opening: upper edge corner to corner, then the lower edge back."""
    upper = [(cx - width / 2 + width * t, cy - gap / 2 * np.sin(np.pi * t)) for t in np.arange(11) / 10]
    lower = [(cx - width / 2 + width * t, cy + gap / 2 * np.sin(np.pi * t)) for t in np.arange(9, 0, -1) / 10]
    return np.array(upper + lower)


def test_mouth_opening_is_the_lip_gap_over_the_mouth_width():
    from aullava.synth.mouth import mouth_opening

    assert mouth_opening(_inner_lip(50, 50, 60, 0.0)) == pytest.approx(0.0)
    open_ = mouth_opening(_inner_lip(50, 50, 60, 18.0))
    assert 0.2 < open_ < 0.3  # the gap is 0.3 × the width at the middle, less towards the corners
    assert mouth_opening(_inner_lip(90, 20, 120, 36.0)) == pytest.approx(open_)  # scale- and place-free


def test_paint_mouth_fills_only_the_opening_with_the_donor_matched_to_the_lips():
    from aullava.synth.mouth import MouthDonor, paint_mouth

    # donor: grey lips (100) around a black cavity with a white band of teeth under the upper lip
    donor_image = np.full((80, 140, 3), 100, np.uint8)
    donor_points = _inner_lip(70, 40, 100, 40.0)
    cv2 = pytest.importorskip("cv2")
    cavity = np.zeros((80, 140), np.uint8)
    cv2.fillPoly(cavity, [np.round(donor_points).astype(np.int32)], 1)
    donor_image[cavity > 0] = 10
    donor_image[(cavity > 0) & (np.arange(80)[:, None] < 32)] = 90  # teeth, darker than the lips
    donor = MouthDonor(donor_image, donor_points, 0.35)

    image = np.full((120, 160, 3), 200, np.uint8)  # a bright face: lips at 200, twice the donor's
    target = _inner_lip(80, 60, 60, 18.0)
    out = paint_mouth(image, target, donor)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[60, 80].max() < 60  # the centre of the opening is dark now
    teeth = out[int(60 - 18 / 2 * 0.8) + 1, 80]
    assert 120 < teeth.mean() < 200  # teeth at the donor's 90, scaled by the lips' gain (2) towards 180
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(target).astype(np.int32)], 1)
    grown = cv2.dilate(inside, np.ones((3, 3), np.uint8), iterations=2)
    assert np.array_equal(out[grown == 0], image[grown == 0])  # the lips and the face are untouched
    # a mouth the warp left closed (a line) is not painted
    assert paint_mouth(image, _inner_lip(80, 60, 60, 1.0), donor) is image


def test_mouth_bank_picks_a_donor_of_the_same_side_and_a_similar_opening():
    from aullava.synth.mouth import MouthBank, MouthDonor

    blank = np.zeros((4, 4, 3), np.uint8)
    donors = [MouthDonor(blank, np.zeros((20, 2)), o, source=str(o)) for o in (0.2, 0.3, 0.5, 0.6)]
    bank = MouthBank(donors, [False, False, True, True])
    rng = np.random.default_rng(0)
    assert bank.pick(rng, 0.55, held_out=True).opening in (0.5, 0.6)
    assert bank.pick(rng, 0.55, held_out=False).opening == 0.3  # the held-out donors never serve training warps
    assert bank.pick(rng, 0.19, held_out=False).opening == 0.2
    assert MouthBank(donors[:2], [False, False]).pick(rng, 0.3, held_out=True) is None


def test_run_synth_mouth_interior_changes_open_mouths_only_and_keeps_the_labels(tmp_path, astronaut_path,
                                                                              monkeypatch):
    from PIL import Image

    from aullava.faces.detector import FaceDetector
    from aullava.synth import mouth

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(astronaut_path, photos / f"{name}.png")
    (photos / "index.csv").write_text("image,identity\na.png,A\nb.png,B\nc.png,C\n")
    options = dict(per_image=4, held_out=0.34, seed=1, gain=2.5, neutral_thresholds=None, progress=False)
    run_synth(photos / "index.csv", tmp_path / "plain", **options)
    monkeypatch.setattr(mouth, "MIN_DONOR_OPENING", 0.1)  # the astronaut's smile shows her teeth at 0.15
    summary = run_synth(photos / "index.csv", tmp_path / "mouth", mouth_interior=True, **options)
    assert summary["images_written"] == 12
    for name in ("train.csv", "held_out.csv"):  # same images listed, same labels
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "mouth" / name).read_bytes()
    bank = _read(tmp_path / "mouth" / "mouths.csv")
    held = {r["subject"] for r in _read(tmp_path / "mouth" / "held_out.csv")}
    assert sorted(r["source"] for r in bank) == ["a.png", "b.png", "c.png"]
    assert {r["source"] for r in bank if r["held_out"] == "1"} == {f"{s.lower()}.png" for s in held}
    only_a = mouth.MouthBank.load(tmp_path / "mouth", sources={"a.png"})  # what a run with --limit 1 reads
    assert [d.source for d in only_a.donors] == ["a.png"] and len(only_a.held_out) == 1

    changed, same = 0, 0
    for row in _read(tmp_path / "mouth" / "train.csv") + _read(tmp_path / "mouth" / "held_out.csv"):
        before = np.asarray(Image.open(tmp_path / "plain" / row["image"]), dtype=np.int16)
        after = np.asarray(Image.open(tmp_path / "mouth" / row["image"]), dtype=np.int16)
        diff = np.abs(after - before).max(axis=2) > 8
        if float(row["AU26"]) >= 0.5:  # a dropped jaw: the opening now shows a mouth interior
            assert diff.sum() > 30
            ys, xs = np.nonzero(diff)
            assert ys.min() > 0.55 * 224 and 0.25 * 224 < xs.mean() < 0.75 * 224  # only around the mouth
            changed += 1
        elif float(row["AU25"]) == 0 and float(row["AU26"]) == 0:  # lips not parted: the very same image
            assert not diff.any()
            same += 1
    assert changed == 3 and same >= 5  # seed 1: a.png samples 1 and 2, c.png sample 3 drop the jaw

    def fail(*_args, **_kw):
        raise AssertionError("a finished set must not detect faces again")

    monkeypatch.setattr(FaceDetector, "detect", fail)
    again = run_synth(photos / "index.csv", tmp_path / "mouth", mouth_interior=True, **options)
    assert again["images_reused"] == 12
    with pytest.raises(ValueError, match="mouth_interior"):
        run_synth(photos / "index.csv", tmp_path / "mouth", **options)


# ------------------------------------------------------------------------------------ sources that are not neutral


def test_combine_adds_the_warp_to_a_known_baseline_and_masks_the_unknown():
    from aullava.synth.baselines import combine

    ids = ("AU6", "AU12", "AU25")
    added = {"AU12": 0.5, "AU25": 0.2}
    assert combine(added, None, ids) == {"AU6": 0.0, "AU12": 0.5, "AU25": 0.2}  # neutral source: exact
    got = combine(added, {"AU6": float("nan"), "AU12": 0.7, "AU25": 0.1}, ids)
    assert np.isnan(got["AU6"]) and got["AU12"] == 1.0 and got["AU25"] == pytest.approx(0.3)
    assert np.isnan(combine(added, {"AU12": 0.1}, ids)["AU25"])  # a baseline that does not name the AU


def test_combine_masks_parted_lips_that_a_lip_press_closes():
    from aullava.synth.baselines import combine

    ids = ("AU12", "AU24", "AU25", "AU26")
    talking = {"AU12": 0.0, "AU24": 0.0, "AU25": 0.5, "AU26": 0.3}
    got = combine({"AU24": 0.4}, talking, ids)
    assert np.isnan(got["AU25"]) and np.isnan(got["AU26"])  # pressed together: no longer known to part
    assert got["AU24"] == pytest.approx(0.4) and got["AU12"] == 0.0
    assert combine({"AU24": 0.05}, talking, ids)["AU25"] == pytest.approx(0.5)  # below presence: kept
    closed = dict(talking, AU25=0.0, AU26=0.0)
    assert combine({"AU24": 0.4}, closed, ids)["AU25"] == 0.0  # closed lips stay closed
    assert combine({"AU24": 0.4}, None, ids)["AU25"] == 0.0  # a neutral source's label is the warp's


def test_run_synth_labels_non_neutral_sources_with_their_baseline(tmp_path, astronaut_path, monkeypatch):
    from aullava.datasets import read_manifest
    from aullava.faces.detector import FaceDetector
    from aullava.teacher.labeler import Teacher

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        shutil.copy(astronaut_path, photos / f"{name}.png")
    (photos / "index.csv").write_text("image,identity\na.png,A\nb.png,B\n")
    teacher = Teacher()
    out = tmp_path / "synth"
    summary = run_synth(photos / "index.csv", out, per_image=3, seed=1, progress=False,
                        baseline=teacher.label, baseline_name="teacher")
    # the astronaut smiles: without a baseline she is skipped (test above); with it she is used, and labelled
    assert summary["photos_used"] == 2 and summary["photos_with_baseline"] == 2 and summary["images_written"] == 6
    sources = _read(out / "sources.csv")
    assert [r["baseline"] for r in sources] == ["labelled", "labelled"]
    smile = float(sources[0]["AU12"])
    assert smile > 0.3 and sources[0]["AU06"] == ""  # the teacher sees her smile, and cannot see AU6
    rows = _read(out / "train.csv") + _read(out / "held_out.csv")
    assert len(rows) == 6
    for row in rows:
        assert float(row["AU12"]) >= smile and row["AU06"] == ""  # baseline + what the warp added; AU6 unknown
    frames = read_manifest(out / "train.csv")
    assert frames.table["AU06_r"].isna().all() and frames.table["AU12_r"].notna().all()

    first = (out / "train.csv").read_bytes()

    def fail(*_args, **_kw):
        raise AssertionError("a finished set must not detect faces again")

    monkeypatch.setattr(FaceDetector, "detect", fail)
    again = run_synth(photos / "index.csv", out, per_image=3, seed=1, progress=False,
                      baseline=teacher.label, baseline_name="teacher")
    assert again["images_reused"] == 6 and (out / "train.csv").read_bytes() == first
    with pytest.raises(ValueError, match="baseline"):
        run_synth(photos / "index.csv", out, per_image=3, seed=1, progress=False)
