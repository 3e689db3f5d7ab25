"""The MediaPipe-blendshape teacher: mapping, monotone calibration, the bundled calibration file, and the teacher on
a real face and on AU-controlled warps of it (checked through MediaPipe itself)."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aullava.teacher import labeler as T
from aullava.aus.catalogue import au_set
from aullava.teacher.calibration import fit_monotone, pava
from aullava.teacher.labeler import DEFAULT_AUS, MAPPING, Teacher, apply_monotone, load_calibration, raw_scores

AU_COLUMNS = au_set("default").openface_columns("")


@pytest.fixture(scope="module")
def warps(astronaut_path, detector, tmp_path_factory):
    """The astronaut photo and two warps of it (strong AU12; strong AU26 with AU25), written as PNG files."""
    import cv2

    from aullava.faces.images import load_image
    from aullava.synth.warp import warp_face

    folder = tmp_path_factory.mktemp("teacher")
    image = load_image(astronaut_path)
    face = detector.detect(image)[0]
    paths = {"photo": str(astronaut_path)}
    for name, aus in (("au12", {"AU12": 1.0}), ("au26", {"AU25": 1.0, "AU26": 1.0})):
        out = warp_face(image, face.landmarks, aus).image
        paths[name] = str(folder / f"{name}.png")
        cv2.imwrite(paths[name], cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    return paths


@pytest.fixture(scope="module")
def labelled(warps, detector):
    """Calibrated and raw teacher outputs (manifest tables) for the photo and its warps, one detection pass."""
    paths = [warps["photo"], warps["au12"], warps["au26"]]
    shapes = T.detect_blendshapes(paths, detector, progress=False)
    assert shapes["face"].all()
    return shapes, Teacher().label_table(shapes), Teacher(calibrated=False, include_unverified=True).label_table(shapes)


# ------------------------------------------------------------------------------------------------------ mapping


def test_mapping_covers_the_default_set_with_real_blendshape_names(detector, astronaut_path):
    from aullava.faces.images import load_image

    assert tuple(MAPPING) == tuple(au_set("default").ids) == DEFAULT_AUS
    names = set(detector.detect(load_image(astronaut_path))[0].blendshapes)
    assert len(names) == 52
    for au, m in MAPPING.items():
        assert m.au == au and m.blendshapes and m.why
        assert set(m.blendshapes) <= names, f"{au}: {set(m.blendshapes) - names} are not MediaPipe blendshapes"


def test_raw_scores_take_the_max_of_the_sources_and_nan_when_missing():
    raw = raw_scores({"browDownLeft": 0.2, "browDownRight": 0.6, "jawOpen": 0.3, "mouthLowerDownLeft": 0.5})
    assert raw["AU4"] == 0.6
    assert raw["AU26"] == 0.3 and raw["AU25"] == 0.5
    assert math.isnan(raw["AU12"])


# -------------------------------------------------------------------------------------------------- calibration


def test_pava_is_the_least_squares_isotonic_fit():
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(0.1, 1.0, 60))
    w = rng.uniform(0.5, 2.0, 60)
    fit = pava(y, w)
    assert np.all(np.diff(fit) >= -1e-12)
    assert np.isclose(np.sum(w * fit), np.sum(w * y))  # block means preserve the weighted total
    sklearn = pytest.importorskip("sklearn.isotonic")
    ref = sklearn.IsotonicRegression().fit_transform(np.arange(60), y, sample_weight=w)
    assert np.allclose(fit, ref, atol=1e-9)
    assert np.array_equal(pava([3.0, 1.0, 2.0]), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("quantile", [0.5, None])
def test_fit_monotone_is_monotone_in_range_and_anchored(quantile):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 0.6, 4000)
    present = rng.random(4000) < np.clip(2.0 * x - 0.2, 0.0, 1.0)  # zero-inflated like the synthetic labels
    y = np.where(present, rng.uniform(0.1, 1.0, 4000), 0.0)
    xs, ys = fit_monotone(x, y, quantile=quantile)
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)
    assert min(ys) >= 0.0 and max(ys) <= 1.0
    assert xs[-1] == 1.0 and ys[-1] == 1.0  # top anchor
    grid = np.linspace(-0.5, 1.5, 201)
    out = apply_monotone(grid, xs, ys)
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
    if quantile == 0.5:  # the median is 0 where presence is unlikely, positive where it is likely
        assert apply_monotone([0.05], xs, ys)[0] == 0.0 and apply_monotone([0.55], xs, ys)[0] > 0.1
    assert math.isnan(apply_monotone([np.nan], xs, ys)[0])
    flat = fit_monotone(x, y, quantile=quantile, top_anchor=False)
    assert flat[0][-1] < 1.0


def test_bundled_calibration_loads_and_carries_the_held_out_scores():
    data = load_calibration()
    text = resources.files("aullava").joinpath("resources", T.CALIBRATION_FILE).read_text(encoding="utf-8")
    assert json.loads(text) == data
    assert set(data["aus"]) == set(DEFAULT_AUS)
    assert data["presence_threshold"] == 0.10 and "isotonic" in data["method"]
    fit = data["fit_data"]
    assert fit["train_images"] > 1000 and fit["held_out_images"] > 200 and fit["held_out_identities"] > 20
    for au, entry in data["aus"].items():
        assert entry["blendshapes"] == list(MAPPING[au].blendshapes)
        xs, ys = np.array(entry["knots"]["x"]), np.array(entry["knots"]["y"])
        assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0) and ys.min() >= 0 and ys.max() <= 1
        held = entry["held_out"]
        assert held["images"] > 0 and held["positives"] > 0
        for side in ("raw", "calibrated"):
            assert {"f1", "mae", "auc"} <= set(held[side])
            assert 0 <= held[side]["f1"] <= 1 and 0 <= held[side]["mae"] <= 1
        assert entry["status"] in ("calibrated", "unverified", "blind")
        assert {"q50", "q99", "share_ge_0.10"} <= set(entry["real_raw"])
    # the two dead blendshapes of this MediaPipe model
    assert data["aus"]["AU6"]["status"] == data["aus"]["AU9"]["status"] == "blind"
    assert data["aus"]["AU6"]["real_raw"]["max"] < 0.01
    # the AUs with clear synthetic evidence are calibrated
    for au in ("AU1", "AU2", "AU4", "AU12", "AU17", "AU26"):
        assert data["aus"][au]["status"] == "calibrated"
    # load_calibration rejects a non-monotone map
    bad = json.loads(text)
    bad["aus"]["AU12"]["knots"]["y"] = list(reversed(bad["aus"]["AU12"]["knots"]["y"]))
    with pytest.raises(ValueError, match="AU12"):
        load_calibration(bad)


def test_teacher_label_range_nan_rules_and_modes():
    t = Teacher()
    assert t.seen == tuple(au for au in DEFAULT_AUS if t.calibration["aus"][au]["status"] == "calibrated")
    names = {n for m in MAPPING.values() for n in m.blendshapes}
    low, high = t.label({n: 0.0 for n in names}), t.label({n: 1.0 for n in names})
    assert list(low) == list(DEFAULT_AUS)
    for au in DEFAULT_AUS:
        if au in t.seen:
            assert low[au] < 0.10 and high[au] >= 0.9  # a neutral face is absent, a maximal score near 1
        else:
            assert math.isnan(low[au]) and math.isnan(high[au])
    assert math.isnan(t.label({})["AU12"])  # no blendshapes: no answer
    wide = Teacher(include_unverified=True)
    assert set(wide.seen) > set(t.seen) and "AU6" not in wide.seen and "AU9" not in wide.seen
    raw = Teacher(calibrated=False).label({"mouthSmileLeft": 0.3, "mouthSmileRight": 0.5})
    assert raw["AU12"] == 0.5


# ---------------------------------------------------------------------------------------------- on real faces


def test_teacher_sees_the_smile_and_the_warped_aus(labelled):
    shapes, cal, raw = labelled
    photo, au12, au26 = (cal.iloc[i] for i in range(3))
    assert photo["AU12"] >= 0.5  # she smiles
    assert math.isnan(photo["AU06"]) and math.isnan(photo["AU09"])  # blind AUs stay unlabelled
    # a stronger smile raises AU12, a dropped jaw raises AU26 (and AU25), each more than the other warp does
    assert raw.iloc[1]["AU12"] > raw.iloc[0]["AU12"] and au12["AU12"] >= photo["AU12"]
    assert raw.iloc[2]["AU26"] > raw.iloc[1]["AU26"] + 0.05
    assert au26["AU26"] >= 0.10 > au12["AU26"]
    assert au26["AU25"] >= au26["AU26"]
    assert au12["AU04"] < 0.10 and au26["AU04"] < 0.10


def test_label_faces_manifest_and_baseline_predictions(warps, detector, tmp_path):
    from aullava.datasets.manifest import read_manifest

    missing = str(tmp_path / "nope.png")
    paths = [warps["photo"], warps["au26"], missing]
    t = Teacher()
    df = t.label_faces(paths, detector, progress=False, subjects=["a", "a", "b"])
    assert list(df.columns) == ["image", "subject"] + AU_COLUMNS
    assert df.attrs["no_face"] == [missing] and df.iloc[2][AU_COLUMNS].isna().all()
    values = df[AU_COLUMNS].to_numpy(float)
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1
    kept = t.label_faces(paths, detector, progress=False, subjects=["a", "a", "b"], keep_missing=False)
    assert t.label_faces([], detector, progress=False).empty
    assert len(kept) == 2
    # a training manifest: empty cells are 'not labelled'
    csv_path = tmp_path / "teacher.csv"
    kept.to_csv(csv_path, index=False)
    frames = read_manifest(csv_path)
    assert len(frames.table) == 2

    pred = Teacher.predictions_from_labels(df)
    for col in AU_COLUMNS:
        x = df[col].to_numpy(float)
        ok = np.isfinite(x)
        assert np.array_equal(np.isfinite(pred[col + "_c"]), ok) and np.array_equal(np.isfinite(pred[col + "_r"]), ok)
        assert np.array_equal(pred.loc[ok, col + "_c"], (x[ok] >= 0.10).astype(float))
        level = np.where(x[ok] >= 0.10, np.clip(np.floor(5 * x[ok] + 0.5), 1, 5), 0)
        assert np.array_equal(pred.loc[ok, col + "_r"], level)
    assert pred.loc[0, "AU12_c"] == 1 and 1 <= pred.loc[0, "AU12_r"] <= 5

    from aullava.eval.metrics import evaluate_tables

    base = t.baseline_predictions(paths[:2], detector, progress=False)
    pd.testing.assert_frame_equal(base, Teacher.predictions_from_labels(df.iloc[:2].drop(columns="subject")))
    truth = pd.DataFrame({"image": paths[:2], **{c: [0.0, 0.0] for c in AU_COLUMNS}})
    truth["AU12"] = [0.8, 0.6]
    for c in AU_COLUMNS:
        truth[c + "_c"] = (truth[c] >= 0.1).astype(float)
    res = evaluate_tables(truth, base, au_set("default"), formats=("binary", "continuous"))
    assert res["binary"]["per_au"]["AU12"]["f1"] == 1.0
    assert "AU6" in res["binary"]["excluded"]["f1"]


# ---------------------------------------------------------------------------------------------- manifests


def test_write_teacher_manifests_split_agrees_with_synth(astronaut_path, tmp_path, capsys):
    import shutil

    from aullava.cli import main
    from aullava.datasets import read_manifest
    from aullava.teacher.manifests import write_teacher_manifests

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in "ABC":
        shutil.copy(astronaut_path, photos / f"{name}.png")
    index = tmp_path / "index.csv"
    pd.DataFrame({"image": [f"photos/{n}.png" for n in "ABC"], "identity": list("ABC")}).to_csv(index, index=False)
    synth = tmp_path / "synth"
    synth.mkdir()
    pd.DataFrame({"image": ["images/A/a_0.jpg"], "subject": ["A"], "AU01": [0.2]}).to_csv(synth / "train.csv",
                                                                                          index=False)
    pd.DataFrame({"image": ["images/C/c_0.jpg"], "subject": ["C"], "AU01": [0.0]}).to_csv(synth / "held_out.csv",
                                                                                          index=False)
    out = tmp_path / "out"
    counts = write_teacher_manifests(index, out, held_out=0.34, synth_dir=synth, progress=False)
    assert counts["photos"] == counts["with_face"] == 3 and counts["no_face"] == 0
    assert counts["train_images"] + counts["held_out_images"] == 3
    train, held = pd.read_csv(out / "real_train.csv"), pd.read_csv(out / "real_held_out.csv")
    assert list(train.columns) == ["image", "subject"] + AU_COLUMNS
    assert "C" in set(held["subject"]) and "A" in set(train["subject"])  # synth held out C, trained on A
    assert not set(train["subject"]) & set(held["subject"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in pd.concat([train, held])["image"])
    assert train["AU06"].isna().all() and held["AU09"].isna().all()  # blind AUs stay empty
    assert (held["AU12"] >= 0.10).all()  # she smiles
    for name, n in (("real_train.csv", len(train)), ("real_held_out.csv", len(held))):
        frames = read_manifest(out / name)
        assert len(frames.table) == n

    assert main(["teacher", "--index", str(index), "--out", str(tmp_path / "cli"), "--held-out", "0.34",
                 "--synth", str(synth), "-q"]) == 0
    assert "3 of 3 photos labelled" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "cli" / "real_held_out.csv")["subject"].tolist() == held["subject"].tolist()
