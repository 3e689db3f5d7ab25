"""The per-person neutral baseline (`aullava.tables.baseline`, `predict --baseline person`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aullava.tables import read_table
from aullava.tables.baseline import MIN_FACES, RESTING_P, baseline_columns, person_keys, with_person_baseline


def video_rows(file: str, face_id: int, p: list[float], r: list[float]) -> list[dict]:
    return [{"file": file, "frame": i, "timestamp": i / 30, "face": 0, "face_id": face_id, "success": 1,
             "AU12_c": int(v >= 0.5), "AU12_r": round(m), "AU12_p": v, "AU12_r_mean": m, "error": None}
            for i, (v, m) in enumerate(zip(p, r))]


def test_a_resting_smile_reads_absent_and_what_rises_above_it_present():
    rest, smile = [0.8] * 16, [0.99] * 4  # a person whose resting face reads as AU12 (p .8) smiles on 4 frames
    other = [0.05] * 16 + [0.9] * 4  # a neutral-faced person who smiles too
    table = pd.DataFrame(video_rows("a.mp4", 0, rest + smile, [2.0] * 16 + [4.5] * 4)
                         + video_rows("a.mp4", 1, other, [0.1] * 16 + [3.0] * 4))
    out, notes = with_person_baseline(table)
    assert notes == []
    assert list(out.columns) == [*table.columns[:-1], *baseline_columns(table.columns), "error"]
    first, second = out[out["face_id"] == 0], out[out["face_id"] == 1]
    assert first["AU12_c"].tolist() == [1] * 20  # raw: present throughout
    assert first["AU12_c_bc"].tolist() == [0] * 16 + [1] * 4  # corrected: the smiles only
    logit = lambda x: np.log(x / (1 - x))  # noqa: E731
    expected = 1 / (1 + np.exp(-(logit(0.99) - (logit(0.8) - logit(RESTING_P)))))
    assert first["AU12_p_bc"].iloc[-1] == pytest.approx(expected, abs=1e-4)
    assert first["AU12_r_mean_bc"].tolist() == pytest.approx([0.0] * 16 + [2.5] * 4)
    assert first["AU12_r_bc"].tolist() == [0] * 16 + [2] * 4  # 2.5 rounds to even
    assert second["AU12_c_bc"].tolist() == second["AU12_c"].tolist()  # a neutral resting face changes nothing
    assert set(out["person"]) == {"a.mp4#0", "a.mp4#1"}


def test_a_resting_face_at_the_top_of_the_scale_still_reads_absent():
    # a person whose resting face reads p .985-.995 (jitter): the baseline must not let the jitter read as the AU,
    # as dividing by 1 - b did (p .995 over b .986 was .64 of the way to certainty)
    rest = list(np.linspace(0.985, 0.995, 20))
    table = pd.DataFrame(video_rows("b.mp4", 0, rest, [3.0] * 20))
    out, _ = with_person_baseline(table)
    assert out["AU12_c"].tolist() == [1] * 20
    assert out["AU12_c_bc"].tolist() == [0] * 20
    assert out["AU12_p_bc"].max() < 0.2


def test_photos_are_grouped_by_folder_and_small_groups_get_no_baseline():
    rows = [{"file": f"alice/{i}.jpg", "frame": None, "face": 0, "face_id": 0, "success": 1, "AU04_p": 0.6 + i / 100,
             "error": None} for i in range(MIN_FACES)]
    rows += [{"file": f"bob/{i}.jpg", "frame": None, "face": 0, "face_id": 0, "success": 1, "AU04_p": 0.7,
              "error": None} for i in range(3)]
    rows += [{"file": "bad.jpg", "frame": None, "face": -1, "face_id": None, "success": 0, "AU04_p": np.nan,
              "error": "bad.jpg: not an image"}]
    table = pd.DataFrame(rows)
    keys = person_keys(table)
    assert keys.iloc[0] == "alice" and keys.iloc[MIN_FACES] == "bob" and pd.isna(keys.iloc[-1])
    out, notes = with_person_baseline(table)
    assert notes == [f"bob: 3 faces, no baseline (needs {MIN_FACES})"]
    assert out["AU04_p_bc"].iloc[:MIN_FACES].notna().all() and out["AU04_p_bc"].iloc[MIN_FACES:].isna().all()
    assert out["AU04_c_bc"].iloc[MIN_FACES:].isna().all()
    # the lowest photos are the person's neutral: they read like everyone's rest
    assert out["AU04_p_bc"].iloc[:MIN_FACES].min() == pytest.approx(RESTING_P, abs=0.002)
    assert (out["AU04_c_bc"].iloc[:MIN_FACES] == 0).all()


def test_a_named_column_groups_persons_and_bad_settings_are_refused():
    table = pd.DataFrame(video_rows("a.mp4", 0, [0.5] * 12, [1.0] * 12) + video_rows("b.mp4", 0, [0.5] * 12,
                                                                                     [1.0] * 12))
    table["subject"] = "s1"
    out, _ = with_person_baseline(table, by="subject")
    assert set(out["person"]) == {"s1"}
    with pytest.raises(ValueError, match="nope"):
        with_person_baseline(table, by="nope")
    with pytest.raises(ValueError, match="percentile"):
        with_person_baseline(table, percentile=100)
    with pytest.raises(ValueError, match="probability columns"):
        with_person_baseline(table[["file", "frame", "face_id", "success", "AU12_c", "error"]])


def test_predict_baseline_writes_corrected_columns_that_read_back_typed(tiny_checkpoint, astronaut_path, tmp_path,
                                                                        capsys):
    import shutil

    from aullava.cli import main

    folder = tmp_path / "person"
    folder.mkdir()
    for i in range(MIN_FACES):
        shutil.copy(astronaut_path, folder / f"{i}.png")
    out = tmp_path / "aus.csv"
    assert main(["predict", str(folder), "--model", str(tiny_checkpoint), "--formats", "binary", "--out", str(out),
                 "--baseline", "person", "-q"]) == 0
    table = read_table(out, "csv")
    assert {"person", "AU12_p_bc", "AU12_c_bc"} <= set(table.columns) and table.columns[-1] == "error"
    assert str(table["AU12_c_bc"].dtype) == "Int64" and (table["person"] == str(folder)).all()
    # ten copies of one face: all of them are the neutral, read at most like everyone's rest
    assert (table["AU12_p_bc"] <= RESTING_P + 1e-4).all() and (table["AU12_c_bc"] == 0).all()
    # a finished baselined table resumes (nothing to do) and keeps its columns
    assert main(["predict", str(folder), "--model", str(tiny_checkpoint), "--formats", "binary", "--out", str(out),
                 "--baseline", "person", "--resume", "-q"]) == 0
    assert "person" in read_table(out, "csv").columns
    capsys.readouterr()
    assert main(["predict", str(folder), "--baseline", "person"]) == 2
    assert "--baseline: adds corrected columns to the table; give --out" in capsys.readouterr().err
