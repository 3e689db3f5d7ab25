"""Issue 31's cases of wrong pixels and lost tables, each reproduced on main before the fix: a phone-sized photo's
boxes and landmarks in the picture's own pixels, and a file name that is not UTF-8 never costing the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def tiny_predictor(char_tokenizer_dir, tmp_path_factory):
    import torch

    from aullava.inference import Predictor
    from aullava.model.modeling import AuLlavaModel
    from conftest import tiny_model_config

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("ckpt")
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(directory)
    return Predictor(directory, device="cpu", precision="fp32")


def test_a_face_on_a_4032_by_3024_photo_is_reported_in_the_photos_pixels(tiny_predictor, astronaut_path, tmp_path):
    """The photo is decoded reduced to 2048 px for detection; every coordinate is mapped back (it was not: the box
    came out at 0.508 × the truth)."""
    from aullava.faces.detector import FaceDetector, largest_face

    face_img = Image.open(astronaut_path).convert("RGB")
    zoom, (left, top) = 2.5, (2100, 700)
    big = face_img.resize((round(face_img.width * zoom), round(face_img.height * zoom)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (4032, 3024), (90, 100, 110))
    canvas.paste(big, (left, top))
    path = tmp_path / "phone.jpg"
    canvas.save(path, quality=95)
    with FaceDetector() as detector:  # the truth: the same face found in the small original, moved and zoomed
        truth = largest_face(detector.detect(np.asarray(face_img)))
    expected_box = np.array(truth.box) * zoom + [left, top, left, top]
    expected_landmarks = truth.landmarks[:, :2] * zoom + [left, top]
    result = tiny_predictor.predict([path], ["binary"])[0]
    face = result.faces[0]
    size = expected_box[2] - expected_box[0]  # about 1,100 px wide
    assert np.abs(np.array(face.box) - expected_box).max() < 0.02 * size, (face.box, expected_box)
    error = np.linalg.norm(face.landmarks[:, :2] - expected_landmarks, axis=1)
    assert np.median(error) < 0.01 * size
    assert result.scale[0] == pytest.approx(4032 / 2048)


def test_a_file_name_that_is_not_utf8_is_escaped_and_the_table_keeps_every_row(char_tokenizer_dir, astronaut_path,
                                                                               tmp_path, capsys):
    """`printf 'd/x\\xff.jpg'` beside a good photo: the table holds both rows, the odd name as `x\\xff.jpg` (it used
    to exit 2 leaving only the header)."""
    import os
    import shutil

    import pandas as pd
    import torch

    from aullava.cli import main
    from aullava.model.modeling import AuLlavaModel
    from conftest import tiny_model_config

    torch.manual_seed(0)
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(tmp_path / "ckpt")
    folder = tmp_path / "d"
    folder.mkdir()
    shutil.copy(astronaut_path, folder / "good.png")
    shutil.copy(astronaut_path, os.fsdecode(os.fsencode(folder) + b"/x\xff.png"))
    out = tmp_path / "o.csv"
    code = main(["predict", str(folder), "--model", str(tmp_path / "ckpt"), "--formats", "binary", "--out", str(out),
                 "-q"])
    assert code == 0
    table = pd.read_csv(out)
    assert len(table) == 2 and table["success"].tolist() == [1, 1]
    names = sorted(os.path.basename(f) for f in table["file"])
    assert names == ["good.png", "x\\xff.png"]


def test_table_values_are_rounded_as_documented(tiny_predictor, astronaut_path):
    from aullava.inference import to_dataframe

    results = tiny_predictor.predict([astronaut_path], ["binary", "continuous"])
    table = to_dataframe(results, tiny_predictor.model.au_set, ["binary", "continuous"])
    continuous = table.filter(regex=r"^AU\d+_i$").to_numpy(dtype=float)
    assert np.allclose(continuous, np.round(continuous, 2), atol=0, rtol=0)
    boxes = table[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    assert np.array_equal(boxes, np.round(boxes, 2))


def test_resume_refuses_another_run_naming_the_difference(char_tokenizer_dir, astronaut_path, tmp_path, capsys):
    """`--resume` with another --model or --every used to append silently (a table of two runs)."""
    import torch

    from aullava.cli import main
    from aullava.model.modeling import AuLlavaModel
    from conftest import tiny_model_config

    torch.manual_seed(0)
    for name in ("a", "b"):
        AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(tmp_path / name)
    out = tmp_path / "o.csv"
    base = ["predict", str(astronaut_path), "--formats", "binary", "--out", str(out), "-q"]
    assert main(base + ["--model", str(tmp_path / "a")]) == 0
    assert (tmp_path / "o.csv.run.json").is_file()
    capsys.readouterr()
    assert main(base + ["--model", str(tmp_path / "b"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "another run" in err and "model" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--model", str(tmp_path / "a"), "--resume", "--every", "3"]) == 2
    assert "every: 1 then, 3 now" in capsys.readouterr().err
    assert main(base + ["--model", str(tmp_path / "a"), "--resume"]) == 0  # the same run continues


def test_smaller_cases_are_one_clear_line_with_the_right_exit_code(tmp_path, capsys):
    """A header-only manifest, `--set training.max_steps=abc` and an eval spec with a picture labelled twice: each
    one `error:` line naming the file or key, exit 2, before any model is loaded (they were KeyError/TypeError
    'unexpected', exit 1, or failed only after the model had run on every row)."""
    from aullava.cli import main

    empty = tmp_path / "empty.csv"
    empty.write_text("image,subject,AU01_c\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"type: manifest\npath: {empty}\n")
    assert main(["eval", "--data", str(spec), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no rows (only a header)" in err and "unexpected" not in err

    recipe = Path(__file__).resolve().parents[2] / "configs" / "patterns-smoke.yaml"
    assert main(["train", "--config", str(recipe), "--set", "training.max_steps=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: training.max_steps must be a whole number, got 'abc'"

    twice = tmp_path / "twice.csv"
    twice.write_text("image,subject,AU01_c\na.jpg,s1,1\nb.jpg,s2,0\na.jpg,s1,0\n")
    spec.write_text(f"type: manifest\npath: {twice}\n")
    assert main(["eval", "--data", str(spec), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "1 rows repeat an image" in err and "a.jpg" in err and "evaluation" not in err


def test_a_spec_file_reads_relative_paths_beside_itself(tmp_path, monkeypatch):
    from aullava.datasets.spec import load_eval_spec

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "labels.csv").write_text("image,subject,AU01_c\na.jpg,s1,1\n")
    (folder / "spec.yaml").write_text("type: manifest\npath: labels.csv\n")
    monkeypatch.chdir(tmp_path)  # elsewhere: labels.csv is not in the working folder
    assert load_eval_spec(folder / "spec.yaml")["path"] == str(folder / "labels.csv")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "old.yaml").write_text("type: manifest\npath: data/labels.csv\n")  # for the working folder
    assert load_eval_spec(tmp_path / "specs" / "old.yaml")["path"] == "data/labels.csv"


def test_start_past_the_end_of_a_video_is_a_failed_row_with_a_message(tiny_predictor, astronaut_path, tmp_path):
    import cv2

    from aullava.faces.video_frames import FrameSelection

    face = cv2.imread(str(astronaut_path))
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             (face.shape[1], face.shape[0]))
    for _ in range(10):
        writer.write(face)
    writer.release()
    results = tiny_predictor.predict([tmp_path / "clip.mp4"], ["binary"], selection=FrameSelection(start=5.0))
    assert len(results) == 1 and results[0].error is not None
    assert "no frame to analyse from 5 s on (the video is 1.0 s long)" in results[0].error


def test_merge_shards_refuses_shards_with_different_columns(tmp_path):
    from aullava.inference.shards import ProcessInfo, merge_shards, shard_name

    (tmp_path / shard_name(ProcessInfo(0, 2))).write_text("file,face,AU01_c\na.jpg,0,1\n")
    (tmp_path / shard_name(ProcessInfo(1, 2))).write_text("file,face,AU01_c,AU01_p\nb.jpg,0,1,0.9\n")
    with pytest.raises(ValueError, match="AU01_p in one but not the other"):
        merge_shards(tmp_path)


def test_batch_invariance_alone_or_among_others_same_answers_and_probabilities(char_tokenizer_dir):
    """The same crops read alone, together, and at other positions of a larger batch (fp32): identical texts and
    values, probabilities equal to 1e-6 (the outside check found 12 faces alone vs in a batch of 48 identical)."""
    import torch

    from aullava.aus.answer_format import ALL_FORMATS
    from aullava.model.decoding import AnswerDecoder
    from decoding_helpers import random_crops, tiny_model

    model = tiny_model(char_tokenizer_dir, "bp4d", 12)
    decoder = AnswerDecoder(model)
    crops, others = random_crops(6, 12), random_crops(10, 13)
    alone = [decoder.decode(crops[i:i + 1])[0] for i in range(len(crops))]
    together = decoder.decode(crops)
    mixed = decoder.decode(torch.cat([others[:4], crops.flip(0), others[4:]]))[4:10][::-1]
    for reference in (together, mixed):
        for a, b in zip(alone, reference):
            for fmt in ALL_FORMATS:
                assert a[fmt].text == b[fmt].text
                np.testing.assert_array_equal(a[fmt].values, b[fmt].values)
                np.testing.assert_allclose(a[fmt].expected, b[fmt].expected, atol=1e-6, rtol=0)


def test_a_full_disk_names_the_table_and_leaves_no_row_cut_in_half(tmp_path, monkeypatch):
    import errno
    import os

    import pandas as pd

    from aullava.tables import TableWriter

    writer = TableWriter(tmp_path / "aus.csv", "csv", {"file": "object", "face": "Int64"})
    writer.write(pd.DataFrame({"file": ["a.jpg"], "face": [0]}))

    def full(_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        writer.write(pd.DataFrame({"file": ["b.jpg", "c.jpg"], "face": [0, 1]}))
    assert info.value.filename == str(tmp_path / "aus.csv") and "No space left" in info.value.strerror
    assert (tmp_path / "aus.csv").read_text() == "file,face\na.jpg,0\n"


def test_eval_predictions_write_answers_as_predict_does():
    """eval's predictions.csv wrote 0/1 as 0.0/1.0 and intensities with 17 digits."""
    import pandas as pd

    from aullava.eval.predictions import as_prediction_table

    table = pd.DataFrame({"image": ["a.jpg"], "AU01_c": [1.0], "AU01_r": [3.0], "AU01": [0.019999999552965164],
                          "AU01_p": [0.91234]})
    assert as_prediction_table(table).to_csv(index=False) == "image,AU01_c,AU01_r,AU01_i,AU01_p\na.jpg,1,3,0.02,0.91234\n"
