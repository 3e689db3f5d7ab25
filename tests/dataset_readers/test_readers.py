"""Dataset readers: each layout as distributed, each quirk handled (exact values) or rejected (file and line)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from aullava.aus.catalogue import au_set
from aullava.datasets.bp4d import read_bp4d
from aullava.datasets.disfa import read_disfa
from aullava.datasets.feafa import read_feafa
from aullava.datasets.labels import BASE_COLUMNS, derive_formats, make_frames, merge
from aullava.datasets.manifest import read_manifest

from fixtures_datasets import make_bp4d, make_disfa, make_feafa_csv, make_feafa_text, write


def nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


# ------------------------------------------------------------------------------------------------- labels


def test_derive_formats_rules_and_nan_stays_nan():
    aus = au_set("AU1,AU2,AU4")
    frames = make_frames("t", aus, {"dataset": ["t"] * 3, "subject": ["a"] * 3, "sequence": ["s"] * 3,
                                    "frame": [0, 1, 2]},
                         {"AU01_r": [1, 2, np.nan], "AU02": [0.09, 0.5, np.nan], "AU04_c": [1, np.nan, 0]})
    t = derive_formats(frames, occurrence_threshold=2).table
    assert t["AU01"].tolist() == [0.2, 0.4, pytest.approx(np.nan, nan_ok=True)]
    assert t["AU01_c"].iloc[:2].tolist() == [0.0, 1.0] and nan(t["AU01_c"].iloc[2])  # r >= 2 (DISFA protocol)
    assert t["AU02_r"].iloc[:2].tolist() == [0.0, 3.0] and t["AU02_c"].iloc[:2].tolist() == [0.0, 1.0]
    assert all(nan(v) for v in (t["AU02_r"].iloc[2], t["AU02_c"].iloc[2]))
    assert t["AU04_c"].iloc[[0, 2]].tolist() == [1.0, 0.0] and nan(t["AU04_c"].iloc[1])
    assert t[["AU04_r", "AU04"]].isna().all().all()  # occurrence only stays occurrence only
    assert derive_formats(frames, occurrence_threshold=1).table["AU01_c"].iloc[0] == 1.0


def test_derive_formats_never_overwrites_labels():
    aus = au_set(["AU1"])
    frames = make_frames("t", aus, {"dataset": ["t"], "subject": ["a"], "sequence": ["s"], "frame": [0]},
                         {"AU01_c": [0], "AU01_r": [3]})
    t = derive_formats(frames).table
    assert t["AU01_c"].iloc[0] == 0.0 and t["AU01"].iloc[0] == pytest.approx(0.6)


def test_merge_unions_au_sets_with_nan_for_unlabelled():
    a = make_frames("A", au_set("AU1,AU2"), {"dataset": ["A"], "subject": ["s1"], "sequence": ["q"], "frame": [0]},
                    {"AU01_c": [1], "AU02_c": [0]}, ["a note"])
    b = make_frames("B", au_set("AU2,AU12"), {"dataset": ["B"], "subject": ["s2"], "sequence": ["q"],
                                              "frame": [5]}, {"AU02_c": [1], "AU12_c": [1]})
    m = merge([a, b])
    assert m.au_set.ids == ("AU1", "AU2", "AU12")
    assert list(m.table.columns[:len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert m.table["AU01_c"].iloc[0] == 1 and nan(m.table["AU01_c"].iloc[1])
    assert nan(m.table["AU12_c"].iloc[0]) and m.table["AU12_c"].iloc[1] == 1
    assert m.table["dataset"].tolist() == ["A", "B"] and m.problems == ["[A] a note"]


# --------------------------------------------------------------------------------------------------- BP4D


@pytest.fixture
def bp4d(tmp_path):
    info = make_bp4d(tmp_path / "BP4D")
    return tmp_path / "BP4D", info["frames_root"]


def test_bp4d_values_nine_codes_missing_frame_and_intensity(bp4d):
    root, frames_root = bp4d
    fr = read_bp4d(root, frames_root=frames_root)
    t = fr.table
    assert fr.au_set.name == "bp4d" and set(t["dataset"]) == {"BP4D"}
    assert list(zip(t["sequence"], t["frame"])) == [("F001_T1", 1), ("F001_T1", 2), ("F001_T1", 4),
                                                    ("M001_T2", 10), ("M001_T2", 11)]
    assert t["subject"].tolist() == ["F001", "F001", "F001", "M001", "M001"]
    assert t["image"].iloc[0] == str(frames_root / "F001" / "T1" / "0001.jpg") and t["video"].iloc[0] is None
    assert nan(t["AU01_c"].iloc[1])  # code 9 -> NaN, never negative
    assert not (t.filter(regex="_[cr]$") < 0).any().any()
    assert t["AU02_c"].iloc[1] == 1 and t["AU01_c"].iloc[2] == 1 and t["AU02_c"].iloc[2] == 0
    assert t["AU06_r"].iloc[:2].tolist() == [0.0, 3.0] and nan(t["AU06_r"].iloc[2])  # frame 4: 9 = unknown
    assert t["AU06"].iloc[:2].tolist() == [0.0, pytest.approx(0.6)] and nan(t["AU06"].iloc[2])
    assert t["AU06_r"].iloc[3:].isna().all()  # M001_T2 has no intensity file
    assert t[["AU01_r", "AU01"]].isna().all().all()  # occurrence only
    assert any("F001_T1.csv" in p and "missing" in p and ": 3" in p for p in fr.problems)


def test_bp4d_check_frames_false_keeps_missing_frame(bp4d):
    root, frames_root = bp4d
    fr = read_bp4d(root, frames_root=frames_root, check_frames=False)
    assert fr.table["frame"].tolist()[:4] == [1, 2, 3, 4]
    assert read_bp4d(root).table["image"].isna().all()  # no frames_root: no paths


def test_bp4d_frame_header_and_pattern(tmp_path):
    write(tmp_path / "AUCoding" / "AU_OCC" / "F002_T8.csv", "Frame,1,2\n7,0,1\n8,9,0\n")
    for f in (7, 8):
        write(tmp_path / "img" / "F002" / "T8" / f"{f}.png", "x")
    fr = read_bp4d(tmp_path, frames_root=tmp_path / "img", frame_pattern="{frame}.png", au_set="AU1,AU2")
    assert fr.table["frame"].tolist() == [7, 8] and fr.table["AU02_c"].tolist() == [1.0, 0.0]
    assert nan(fr.table["AU01_c"].iloc[1])


@pytest.mark.parametrize("text, line, what", [
    (",1,2\n1,0,1\n2,2,0\n", 3, "not 0, 1 or 9"),
    (",1,2\n1,0,1\n2,-9,0\n", 3, "not 0, 1 or 9"),
    (",1,2\n1,0,1\nx,0,0\n", 3, "not an integer"),
    (",1,2\n1,0,1\n\n1,0,0\n", 4, "already labelled"),
    ("Time,1,2\n1,0,1\n", 1, "first header cell"),
])
def test_bp4d_rejects_uninterpretable_with_file_and_line(tmp_path, text, line, what):
    write(tmp_path / "AUCoding" / "AU_OCC" / "F001_T1.csv", text)
    with pytest.raises(ValueError, match=rf"F001_T1\.csv line {line}: .*{what}"):
        read_bp4d(tmp_path, au_set="AU1,AU2")


def test_bp4d_bad_intensity_rejected(bp4d):
    root, frames_root = bp4d
    write(root / "AUCoding" / "AU_INT" / "AU06" / "F001_T1_AU06.csv", "1,0\n2,6\n")
    with pytest.raises(ValueError, match=r"F001_T1_AU06\.csv line 2: .*0-5"):
        read_bp4d(root, frames_root=frames_root)


def test_bp4d_missing_label_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="AU_OCC"):
        read_bp4d(tmp_path)


# -------------------------------------------------------------------------------------------------- DISFA


@pytest.fixture(scope="module")
def disfa(tmp_path_factory):
    root = tmp_path_factory.mktemp("DISFA")
    info = make_disfa(root)
    return root, info


def test_disfa_both_cameras_mismatch_and_garbage(disfa):
    root, info = disfa
    fr = read_disfa(root, camera="both")
    t = fr.table
    left = t[t["sequence"] == "SN001_left"]
    right = t[t["sequence"] == "SN001_right"]
    assert left["frame"].tolist() == list(range(10))  # video has 10 frames, labels 12: only shared frames
    assert right["frame"].tolist() == list(range(12))
    assert left["video"].iloc[0] == str(root / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi")
    assert right["video"].iloc[0] == str(root / "Video_RightCamera" / "RightVideoSN001_comp.avi")
    assert t["image"].isna().all() and set(t["subject"]) == {"SN001", "SN002"}
    # file line 1 = frame 1 -> index 0; garbage lines skipped, the good lines after them still read
    assert right["AU01_r"].tolist() == [float(v) for v in info["intensities"]["SN001"]]
    assert right["AU01"].tolist() == pytest.approx([v / 5 for v in info["intensities"]["SN001"]])
    assert right["AU01_c"].tolist() == [float(v >= 2) for v in info["intensities"]["SN001"]]
    assert (t["AU02_r"] == 0).all() and t["AU05_r"].notna().all()
    notes = "\n".join(fr.problems)
    for line in (4, 5, 6, 7, 8):
        assert f"SN001_au1.txt line {line}:" in notes
    assert "'abc' is not frame,intensity" in notes and "frame 2 already labelled on line 2" in notes
    assert "LeftVideoSN001_comp.avi: 10 video frames but labels for 12 frames" in notes
    assert "RightVideoSN001" not in notes and "SN002" not in notes


def test_disfa_threshold_and_right_camera_spelling(disfa, tmp_path):
    root, info = disfa
    fr = read_disfa(root, camera="right", occurrence_threshold=1, au_set="disfa", subjects=["SN002"])
    assert fr.au_set.name == "disfa" and fr.table["AU01_c"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    alt = tmp_path / "DISFA2"
    shutil.copytree(root / "ActionUnit_Labels" / "SN002", alt / "ActionUnit_Labels" / "SN002")
    shutil.copytree(root / "Video_RightCamera", alt / "Videos_RightCamera")  # the other spelling
    shutil.copytree(root / "Videos_LeftCamera", alt / "Video_LeftCamera")
    both = read_disfa(alt, camera="both")
    assert both.table["sequence"].value_counts().to_dict() == {"SN002_left": 5, "SN002_right": 5}


def test_disfa_missing_pieces(disfa, tmp_path):
    root, _ = disfa
    with pytest.raises(FileNotFoundError, match="ActionUnit_Labels"):
        read_disfa(tmp_path)
    shutil.copytree(root / "ActionUnit_Labels", tmp_path / "ActionUnit_Labels")
    with pytest.raises(FileNotFoundError, match="Videos_LeftCamera or Video_LeftCamera"):
        read_disfa(tmp_path)
    (tmp_path / "Videos_LeftCamera").mkdir()
    shutil.copy(root / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi", tmp_path / "Videos_LeftCamera")
    fr = read_disfa(tmp_path)
    assert set(fr.table["subject"]) == {"SN002"}
    assert any("LeftVideoSN001_comp.avi: missing" in p for p in fr.problems)
    with pytest.raises(ValueError, match="camera"):
        read_disfa(tmp_path, camera="center")


# -------------------------------------------------------------------------------------------------- FEAFA


def test_feafa_csv_layout_header_names(tmp_path):
    fr = read_feafa(make_feafa_csv(tmp_path / "feafa"))
    assert fr.au_set.ids == ("AU1", "AU2L", "AU61", "Eyes_Left")
    assert fr.au_set[2].name == "AU61" and "not in the AU catalogue" in fr.au_set[2].definition
    t = fr.table
    assert t["subject"].tolist() == ["S1", "S1", "S2", "S2"] and t["sequence"].tolist() == ["v01"] * 2 + ["v02"] * 2
    assert t["frame"].tolist() == [1, 2, 1, 2]
    assert t["image"].iloc[0] == str(tmp_path / "feafa" / "v01" / "00001.png")
    assert t["AU02L"].iloc[0] == 0.35 and nan(t["AU02L"].iloc[1]) and nan(t["AU02L_r"].iloc[1])
    assert t["AU01_r"].tolist() == [0.0, 3.0, 0.0, 5.0] and t["AU01_c"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert t["Eyes_Left"].tolist() == [0.05, 0.10, 0.0, 0.4]


def test_feafa_csv_au_set_restricts_and_notes(tmp_path):
    fr = read_feafa(make_feafa_csv(tmp_path / "feafa"), au_set="AU1,AU2L,AU4")
    assert fr.au_set.ids == ("AU1", "AU2L", "AU4") and fr.table["AU04"].isna().all()
    assert any("'AU61'" in p and "ignored" in p for p in fr.problems)


@pytest.mark.parametrize("cell, what", [("1.2", r"outside \[0, 1\]"), ("-0.1", r"outside \[0, 1\]"),
                                        ("high", "not a number")])
def test_feafa_csv_rejects_bad_values_with_file_and_line(tmp_path, cell, what):
    write(tmp_path / "labels.csv", f"frame,AU1\n0,0.5\n\n1,{cell}\n")
    with pytest.raises(ValueError, match=rf"labels\.csv line 4: AU1 = '{cell}' .*{what}"):
        read_feafa(tmp_path / "labels.csv", check_frames=False)


def test_feafa_text_layout(tmp_path):
    fr = read_feafa(make_feafa_text(tmp_path / "ft"))
    assert fr.au_set.name == "feafa" and len(fr.au_set) == 24
    t = fr.table
    assert t["sequence"].tolist() == ["clipA", "clipA", "clipB", "clipB"] and t["frame"].tolist() == [0, 1, 0, 1]
    cont = fr.values("continuous")
    assert cont[1].tolist() == pytest.approx([round(0.04 * ((k + 1) % 25), 2) for k in range(24)])
    assert t["image"].iloc[1] == str(tmp_path / "ft" / "clipA" / "000001.jpg")


def test_feafa_text_rejects_and_drops(tmp_path):
    root = make_feafa_text(tmp_path / "ft")
    (root / "clipB" / "000001.jpg").unlink()
    fr = read_feafa(root)
    assert len(fr) == 3 and any("clipB#1" in p for p in fr.problems)
    write(root / "clipA" / "000002.auw", " ".join(["0.1"] * 12) + "\n" + " ".join(["0.1"] * 11 + ["1.5"]) + "\n")
    with pytest.raises(ValueError, match=r"000002\.auw line 2: .*outside \[0, 1\]"):
        read_feafa(root)
    write(root / "clipA" / "000002.auw", " ".join(["0.1"] * 23))
    with pytest.raises(ValueError, match=r"000002\.auw: 23 values; expected 24"):
        read_feafa(root)


# ----------------------------------------------------------------------------------------------- manifest


def test_manifest_openface_style(tmp_path):
    write(tmp_path / "imgs" / "a_0007.jpg", "x")
    write(tmp_path / "m.csv", "image,subject,AU01_c,AU01_r,AU12_c,notes,source\n"
                              "imgs/a_0007.jpg,p1,1,3,,hello,orig/a.jpg\n"
                              "/abs/b_0009.jpg,p2,0,,1,,\n")
    fr = read_manifest(tmp_path / "m.csv")
    t = fr.table
    assert fr.name == "m" and fr.au_set.ids == ("AU1", "AU12") and t["dataset"].tolist() == ["m", "m"]
    assert t["image"].tolist() == [str(tmp_path / "imgs" / "a_0007.jpg"), "/abs/b_0009.jpg"]
    assert t["frame"].tolist() == [7, 9] and t["video"].tolist() == [None, None]
    assert t["AU01"].iloc[0] == pytest.approx(0.6) and t["AU01_c"].tolist() == [1.0, 0.0]
    assert nan(t["AU01_r"].iloc[1]) and nan(t["AU12_c"].iloc[0]) and t[["AU12_r", "AU12"]].isna().all().all()
    assert any("notes" in p and "ignored" in p for p in fr.problems)
    assert not any("source" in p for p in fr.problems)  # synth's provenance column is known, not a warning
    assert len(read_manifest(tmp_path / "m.csv", check_files=True)) == 1


def test_manifest_continuous_video_style(tmp_path):
    write(tmp_path / "clip.mp4", "x")
    write(tmp_path / "c.csv", "dataset,video,frame,subject,AU04,AU02L\nmine,clip.mp4,0,s,0.25,0\n"
                              "mine,clip.mp4,3,s,,1.0\n")
    t = read_manifest(tmp_path / "c.csv").table
    assert t["video"].tolist() == [str(tmp_path / "clip.mp4")] * 2 and t["frame"].tolist() == [0, 3]
    assert t["AU04_r"].iloc[0] == 1.0 and t["AU04_c"].iloc[0] == 1.0 and nan(t["AU04"].iloc[1])
    assert t["AU02L_r"].tolist() == [0.0, 5.0] and t["dataset"].tolist() == ["mine", "mine"]


@pytest.mark.parametrize("header, cell, line, what", [
    ("AU01_c", "2", 3, "binary range"), ("AU01_r", "6", 3, "discrete range"),
    ("AU01_r", "2.5", 3, "integers"), ("AU01", "1.01", 3, "continuous range"), ("AU01_c", "yes", 3, "not a number"),
])
def test_manifest_rejects_out_of_range_with_file_and_line(tmp_path, header, cell, line, what):
    write(tmp_path / "m.csv", f"image,subject,{header}\na.jpg,s,0\nb.jpg,s,{cell}\n")
    with pytest.raises(ValueError, match=rf"m\.csv line {line}: {header} = '{cell}' .*{what}"):
        read_manifest(tmp_path / "m.csv")


def test_manifest_requires_schema(tmp_path):
    write(tmp_path / "m.csv", "image,AU01_c\na.jpg,1\n")
    with pytest.raises(ValueError, match="subject"):
        read_manifest(tmp_path / "m.csv")


def test_manifest_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    pd.DataFrame({"image": ["x.jpg"], "subject": ["s"], "AU01_c": [1.0]}).to_parquet(tmp_path / "m.parquet")
    fr = read_manifest(tmp_path / "m.parquet")
    assert fr.table["AU01_c"].tolist() == [1.0] and fr.table["image"].iloc[0] == str(tmp_path / "x.jpg")
    pd.DataFrame({"image": ["x.jpg", "y.jpg"], "subject": ["s", "s"], "AU01_c": [1.0, 3.0]}).to_parquet(
        tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet row 2: AU01_c"):
        read_manifest(tmp_path / "bad.parquet")
