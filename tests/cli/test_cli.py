"""`aullava` on the command line: help, info, and a batch with every kind of bad input next to good ones."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aullava.cli import build_parser, main

EXAMPLE = str(files("aullava").joinpath("resources", "examples", "astronaut.png"))


@pytest.mark.parametrize("command", [[], ["predict"], ["merge-shards"], ["train"], ["eval"], ["synth"], ["teacher"],
                                     ["export-llava"], ["info"], ["calibrate"]])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(command + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: aullava" in capsys.readouterr().out


def test_info_lists_assets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "transformers", "face_landmarker", "gemma-3-270m", "efficientnet-lite0", "default model"):
        assert key in out


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory):
    """Good images in odd modes next to every kind of bad input, as a user's folder might hold them."""
    d = tmp_path_factory.mktemp("inputs")
    face = Image.open(EXAMPLE).convert("RGB")
    face.convert("L").save(d / "gray.png")
    face.convert("RGBA").save(d / "rgba.png")
    face.convert("CMYK").save(d / "cmyk.jpg")
    face.resize((8000, 8000), Image.NEAREST).save(d / "huge.jpg", quality=70)
    (d / "notes.jpg").write_text("not an image\n")
    face.save(d / "full.jpg")
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:5000])
    (d / "full.jpg").unlink()
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(d / "blank.png")
    good = ["gray.png", "rgba.png", "cmyk.jpg", "huge.jpg"]
    bad = {"notes.jpg": "not an image", "truncated.jpg": "truncated", "blank.png": "no face",
           "missing.jpg": "not found"}
    return d, good, bad


def test_bad_inputs_named_and_others_still_predicted(tiny_checkpoint, mixed_inputs, tmp_path, capsys):
    d, good, bad = mixed_inputs
    inputs = [str(d / name) for name in good + sorted(bad)]
    out_csv = tmp_path / "aus.csv"
    code = main(["predict", *inputs, "--model", str(tiny_checkpoint), "--out", str(out_csv), "-q"])
    assert code == 1  # some inputs failed
    err = capsys.readouterr().err
    for name, reason in bad.items():
        lines = [line for line in err.splitlines() if line.startswith("error: ") and name in line]
        assert len(lines) == 1 and reason in lines[0].lower(), (name, err)
    table = pd.read_csv(out_csv)
    faces = table[table["face"] >= 0]
    assert sorted(faces["file"].map(lambda p: p.rsplit("/", 1)[-1])) == sorted(good)
    for column in ("AU01_c", "AU12_r", "AU25_i", "x0", "y1"):
        assert faces[column].notna().all()
    assert faces["AU12_r"].between(0, 5).all() and faces["AU25_i"].between(0, 1).all()
    assert set(table.loc[table["face"] < 0, "error"].str.split(":").str[0]) == {str(d / n) for n in bad}


def test_folder_input_and_json_output(tiny_checkpoint, mixed_inputs, tmp_path, capsys):
    d, good, bad = mixed_inputs
    out_json = tmp_path / "aus.json"
    code = main(["predict", str(d), "--model", str(tiny_checkpoint), "--formats", "binary", "--out", str(out_json)])
    assert code == 1
    rows = pd.read_json(out_json)
    assert len(rows[rows["face"] >= 0]) == len(good)
    assert "AU01_c" in rows.columns and "AU01_r" not in rows.columns
    printed = capsys.readouterr().out
    assert "binary" in printed and "continuous" not in printed


def test_all_good_inputs_exit_zero(tiny_checkpoint, capsys):
    assert main(["predict", EXAMPLE, "--model", str(tiny_checkpoint), "-q"]) == 0
    out = capsys.readouterr().out
    assert "face 0" in out and all(f in out for f in ("binary", "discrete", "continuous"))


def test_not_a_checkpoint(tmp_path, capsys):
    assert main(["predict", EXAMPLE, "--model", str(tmp_path)]) == 2
    assert "not an aullava checkpoint" in capsys.readouterr().err


def test_predict_keeps_input_order_across_chunks(tiny_checkpoint, mixed_inputs):
    from aullava.inference import Predictor

    d, good, bad = mixed_inputs
    inputs = [str(d / name) for name in ["gray.png", "notes.jpg", "rgba.png", "blank.png", "cmyk.jpg"]]
    results = Predictor(tiny_checkpoint).predict(inputs, ["binary"], chunk=2)
    assert [r.file for r in results] == inputs
    assert [r.error is None for r in results] == [True, False, True, False, True]
    assert all(len(r.faces[0].values["binary"]) == 15 for r in results if r.error is None)
