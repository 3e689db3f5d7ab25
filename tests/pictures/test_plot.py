"""`aullava plot`: a predict table back from disk → one PNG per face (bars for images, time series for videos); a
table it cannot use is one `error:` line and exit code 2, before anything is drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aullava.aus.catalogue import au_set
from aullava.cli import main
from aullava.cli.checks import write_table
from aullava.inference import FaceResult, ImageResult, to_dataframe

AUS = au_set("default")


def _face(index: int, level: float) -> FaceResult:
    n = len(AUS)
    ramp = np.linspace(0, level, n)
    return FaceResult(face=index, box=(10.0, 10.0, 90.0, 90.0), au_ids=AUS.ids,
                      values={"binary": (ramp > 0.5).astype(float), "discrete": np.round(ramp * 5),
                              "continuous": ramp}, expected={"binary": ramp})


@pytest.fixture
def image_table() -> pd.DataFrame:
    """What `predict --out` writes for three photos: two faces, one face, one failed file."""
    results = [ImageResult("photos/two.jpg", [_face(0, 1.0), _face(1, 0.3)]),
               ImageResult("other/one.png", [_face(0, 0.8)]),
               ImageResult("photos/bad.jpg", error="photos/bad.jpg: no face found")]
    return to_dataframe(results, AUS)


def _is_chart(path) -> bool:
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    return im.format == "PNG" and min(im.size) > 200 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_image_table_one_bar_chart_per_face(image_table, tmp_path, capsys, suffix):
    table_path = tmp_path / f"aus{suffix}"
    write_table(image_table, str(table_path), suffix[1:])
    assert main(["plot", str(table_path), "--out", str(tmp_path / "charts")]) == 0
    written = sorted(p.name for p in (tmp_path / "charts").iterdir())
    fmt = "continuous"  # the default: the richest format the table has
    assert written == [f"one_face0_{fmt}.png", f"two_face0_{fmt}.png", f"two_face1_{fmt}.png"]
    assert all(_is_chart(tmp_path / "charts" / name) for name in written)
    assert "wrote 3 plots" in capsys.readouterr().err


def test_format_choice_and_default_folder(image_table, tmp_path):
    table_path = tmp_path / "aus.csv"
    image_table.to_csv(table_path, index=False)
    assert main(["plot", str(table_path), "--format", "discrete"]) == 0
    folder = tmp_path / "aus-plots"
    assert sorted(p.name for p in folder.iterdir())[0] == "one_face0_discrete.png"
    charts = {fmt: np.asarray(Image.open(folder / f"two_face0_{fmt}.png").convert("L"), float)
              for fmt in ("discrete",)}
    assert main(["plot", str(table_path), "--format", "binary", "--out", str(folder)]) == 0
    binary = np.asarray(Image.open(folder / "two_face0_binary.png").convert("L"), float)
    assert binary.shape != charts["discrete"].shape or np.abs(binary - charts["discrete"]).mean() > 1  # new chart


def test_one_face_to_one_file_and_old_bare_column_names(tmp_path, capsys):
    """Tables written before the `_i` suffix (and py-feat's) name the 0-1 intensity bare `AU01`."""
    table = pd.DataFrame([{"file": "a.jpg", "face": 0, "AU01": 0.2, "AU12": 0.9, "error": None}])
    table.to_csv(tmp_path / "old.csv", index=False)
    out = tmp_path / "face.png"
    assert main(["plot", str(tmp_path / "old.csv"), "--out", str(out)]) == 0
    assert _is_chart(out)


def test_video_table_time_series_per_tracked_face(tmp_path):
    frames = np.arange(40)
    rows = []
    for frame in frames:
        for face_id in (0, 1):
            if face_id == 1 and frame < 10:
                continue  # the second face enters later
            rows.append({"file": "clip.mp4", "frame": frame, "timestamp": frame / 25, "face": face_id,
                         "face_id": face_id, "AU01_c": int(frame % 10 > 5), "AU01_r": frame % 6,
                         "AU01_i": 0.5 + 0.5 * np.sin(frame / 5), "AU12_i": frame / 40, "AU01_p": 0.3,
                         "error": None})
    rows.append({"file": "clip.mp4", "frame": 40, "timestamp": 1.6, "face": -1, "error": "clip.mp4#40: no face"})
    pd.DataFrame(rows).to_csv(tmp_path / "clip.csv", index=False)
    assert main(["plot", str(tmp_path / "clip.csv"), "--format", "continuous", "--out", str(tmp_path / "p")]) == 0
    written = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert written == ["clip_face0_continuous.png", "clip_face1_continuous.png"]
    assert main(["plot", str(tmp_path / "clip.csv"), "--format", "probability", "--out", str(tmp_path / "q")]) == 0
    assert len(list((tmp_path / "q").iterdir())) == 2
    two_aus, one_au = (Image.open(tmp_path / d / f"clip_face1_{f}.png") for d, f in (("p", "continuous"),
                                                                                  ("q", "probability")))
    assert two_aus.width == one_au.width and two_aus.height > one_au.height  # one panel per AU, stacked
    from aullava.pictures.plots import subjects

    tracks = subjects(pd.read_csv(tmp_path / "clip.csv"), "continuous")
    assert [(t.face, len(t.rows)) for t in tracks] == [("0", 40), ("1", 30)]  # by face_id; the no-face row left out


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("not_a_table", "not a predict table"),
    ("garbage", "cannot read"),
    ("no_au_columns", "no AU columns"),
    ("absent_format", "no probability columns"),
    ("two_faces_one_file", "3 faces"),
    ("bad_picture_name", "must end in"),
])
def test_unusable_input_is_one_error_line_and_exit_2(image_table, tmp_path, capsys, case, message):
    table = tmp_path / "aus.csv"
    pd.DataFrame([{"file": "a.jpg", "face": 0, "AU01_c": 1, "AU01_r": 3}]).to_csv(table, index=False)
    args = {"missing": [str(tmp_path / "nope.csv")],
            "not_a_table": [str(tmp_path / "notes.txt")],
            "garbage": [str(tmp_path / "bad.parquet")],
            "no_au_columns": [str(tmp_path / "plain.csv")],
            "absent_format": [str(table), "--format", "probability"],
            "two_faces_one_file": [str(tmp_path / "two.csv"), "--out", str(tmp_path / "one.png")],
            "bad_picture_name": [str(table), "--out", str(tmp_path / "chart.jpg")]}[case]
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "bad.parquet").write_bytes(b"\x00 not parquet")
    pd.DataFrame([{"file": "a.jpg", "score": 1}]).to_csv(tmp_path / "plain.csv", index=False)
    image_table.to_csv(tmp_path / "two.csv", index=False)
    assert main(["plot", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "one.png").exists() and not (tmp_path / "chart.jpg").exists()
