"""Issue-level checks of the data path on fixtures that copy each dataset's layout, with real face pixels:
mixed BP4D + DISFA + FEAFA training, label masks, `aullava eval` on a fold, and evaluating OpenFace output."""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib.resources import files

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from aullava.cli import main
from aullava.datasets import FormatExpanded, build_dataset
from aullava.model.modeling import AuLlavaModel
from aullava.training.recipe import train
from aullava.training.trainer import AuLlavaCollator
from conftest import tiny_model_config
from fixtures_datasets import make_bp4d, make_disfa, make_feafa_csv

FACE = np.asarray(Image.open(str(files("aullava").joinpath("resources", "examples", "astronaut.png"))).convert("RGB"))


def _face(variant: int) -> np.ndarray:
    """The example face, a little different per frame (brightness) so frames are not identical files."""
    return np.clip(FACE.astype(np.int16) + (variant % 7) * 4 - 12, 0, 255).astype(np.uint8)


def _write_face_video(path, n_frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (256, 256))
    for i in range(n_frames):
        writer.write(cv2.cvtColor(cv2.resize(_face(i), (256, 256)), cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    bp4d = make_bp4d(root / "BP4D")
    for i, jpg in enumerate(sorted(bp4d["frames_root"].rglob("*.jpg"))):
        Image.fromarray(_face(i)).save(jpg)
    make_disfa(root / "DISFA")
    for video, n in (("Videos_LeftCamera/LeftVideoSN001_comp.avi", 10), ("Videos_LeftCamera/LeftVideoSN002_comp.avi", 5)):
        _write_face_video(root / "DISFA" / video, n)
    make_feafa_csv(root / "FEAFA")
    for i, png in enumerate(sorted((root / "FEAFA").rglob("*.png"))):
        Image.fromarray(_face(i)).save(png)
    return root


def _specs(root):
    return [{"type": "bp4d", "root": str(root / "BP4D"), "frames_root": str(root / "BP4D" / "frames")},
            {"type": "disfa", "root": str(root / "DISFA"), "camera": "left"},
            {"type": "feafa", "path": str(root / "FEAFA")}]


@pytest.fixture(scope="module")
def mixed(data_root, tmp_path_factory):
    return build_dataset(_specs(data_root), num_aus=0, image_size=64, cache_root=str(tmp_path_factory.mktemp("crops")))


def test_mixed_dataset_asks_each_dataset_its_own_aus(mixed):
    names = {d.frames.name: d for d in mixed.datasets}
    assert set(names) == {"BP4D", "DISFA", "FEAFA"}
    bp4d, disfa = names["BP4D"], names["DISFA"]
    assert len(bp4d.au_sets["binary"]) == 12 and bp4d.au_sets["discrete"].ids == ("AU6",)  # only AU6 has intensity here
    assert disfa.au_sets["discrete"].ids == disfa.frames.au_set.ids  # DISFA intensities give all three formats
    assert len(disfa) == 15  # SN001: 10 video frames of 12 labelled; SN002: 5


def test_masked_labels_never_reach_the_loss(mixed, char_tokenizer_dir):
    model = AuLlavaModel(tiny_model_config(char_tokenizer_dir))
    examples = FormatExpanded(mixed)
    collate = AuLlavaCollator(model)
    masked_seen = 0
    for index in range(len(examples)):
        example = examples[index]
        mask = np.asarray(example["mask"], dtype=bool)
        masked_seen += int((~mask).sum())
        batch = collate([example])
        supervised = batch["labels"][0][batch["labels"][0] != -100].tolist()[:-1]  # without EOS
        text = model.tokenizer.decode(supervised)
        values = example["values"]
        width = 4 if example["format"] == "continuous" else 1
        # supervised characters: brackets + separators + exactly the labelled values, nothing of a masked value
        assert len(text) == 2 + 2 * (len(values) - 1) + width * int(mask.sum()), (example["format"], text)
        prefix, question = model.processor.prompt_ids(example["format"], example["au_set"])
        start = len(prefix) + model.processor.num_image_tokens + len(question)
        answer = model.tokenizer.decode(batch["input_ids"][0][start:-1].tolist())
        written = answer[1:-1].split(", ")
        assert all(w in ("0", "0.00") for w, m in zip(written, mask) if not m)  # a masked value enters as 0
    assert masked_seen > 0  # the fixtures do contain 9-codes and unlabelled formats


def test_repeat_gives_a_small_dataset_its_share_of_the_mix(data_root, tmp_path):
    from aullava.training.present_weights import present_shares

    feafa = {"type": "feafa", "path": str(data_root / "FEAFA")}
    once = build_dataset([feafa], num_aus=0, image_size=64, cache_root=str(tmp_path / "crops"))
    mix = build_dataset([{**feafa, "repeat": 3}, {"type": "patterns", "num_samples": 5}], num_aus=2, image_size=64,
                        cache_root=str(tmp_path / "crops"))
    assert len(mix) == 3 * len(once) + 5
    n = len(once)
    assert all(np.array_equal(mix[i]["image"], mix[i + n]["image"]) and mix.formats_of(i) == mix.formats_of(i + 2 * n)
               for i in range(n))
    # the balanced present weights see the mix as training does: three times the FEAFA labels
    tripled = build_dataset([{**feafa, "repeat": 3}], num_aus=0, image_size=64, cache_root=str(tmp_path / "crops"))
    assert present_shares(tripled) == {au: (3 * p, 3 * t) for au, (p, t) in present_shares(once).items()}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_repeat_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match=r"data.train: repeat must be a whole number ≥ 1 .* got "):
        build_dataset([{"type": "patterns", "num_samples": 4, "repeat": bad}], num_aus=2, image_size=32)


def test_eval_of_a_recipe_reads_each_frame_once(tmp_path):
    from aullava.datasets.spec import load_eval_spec

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"train": [{"type": "manifest", "path": "real.csv", "repeat": 4}]}}))
    assert load_eval_spec(recipe) == {"type": "manifest", "path": "real.csv"}
    recipe.write_text(yaml.safe_dump({"type": "manifest", "path": "real.csv", "repeat": 0}))
    with pytest.raises(ValueError, match="repeat must be a whole number"):
        load_eval_spec(recipe)


def test_training_on_a_mixed_fixture_runs(data_root, char_tokenizer_dir, tmp_path):
    config = tiny_model_config(char_tokenizer_dir)
    recipe = {"model": asdict(config),
              "data": {"train": _specs(data_root), "crop_cache": str(tmp_path / "crops")},
              "training": {"output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 4, "max_steps": 3,
                           "logging_steps": 1, "use_cpu": True, "disable_tqdm": True, "save_steps": 100}}
    trainer = train(recipe)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_eval_on_a_fold_writes_table_json_and_png(data_root, char_tokenizer_dir, tmp_path, capsys):
    torch.manual_seed(0)
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(tmp_path / "model")
    spec = tmp_path / "bp4d.yaml"
    spec.write_text(yaml.safe_dump(_specs(data_root)[0]))
    out = tmp_path / "report"
    code = main(["eval", "--data", str(spec), "--fold", "3", "--model", str(tmp_path / "model"), "--out", str(out),
                 "--crop-cache", str(tmp_path / "crops"), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| Metric"))
    assert header.split("|")[2].strip() == "AU1" and "**Avg**" in header.split("|")[-2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["results"]["binary"]["n"] == 5  # F001 frames 1, 2, 4 (3 is missing on disk) + M001 frames 10, 11
    assert Image.open(out / "per_au_binary.png").size[0] > 200


def test_eval_of_an_openface_csv(data_root, tmp_path, capsys):
    """OpenFace output for DISFA SN002's left video, with its leading-space headers and 1-based frame numbers."""
    truth = {0: 0, 1: 2, 2: 2, 3: 1, 4: 0}  # SN002 AU1 intensities in the fixture
    header = "frame, face_id, timestamp, confidence, success, AU01_r, AU02_r, AU01_c, AU02_c"
    rows = [f"{f + 1}, 0, {f / 25:.2f}, 0.98, 1, {v}.0, 0.0, {int(v >= 1)}.0, 0.0" for f, v in truth.items()]
    csv = tmp_path / "LeftVideoSN002_comp.csv"
    csv.write_text("\n".join([header] + rows) + "\n")
    spec = tmp_path / "disfa.yaml"
    spec.write_text(yaml.safe_dump(_specs(data_root)[1]))
    code = main(["eval", "--data", str(spec), "--predictions", str(csv), "--video", "LeftVideoSN002_comp.avi",
                 "--out", str(tmp_path / "report")])
    assert code == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["results"]["discrete"]["per_au"]["AU1"]["mae"] == 0.0 and metrics["results"]["discrete"]["n"] == 5
    # occurrence truth uses DISFA's threshold (intensity >= 2), OpenFace's AU01_c says >= 1: frame 3 disagrees
    assert metrics["results"]["binary"]["per_au"]["AU1"]["accuracy"] == pytest.approx(4 / 5)


def test_eval_subset_with_the_mediapipe_baseline_side_by_side(data_root, char_tokenizer_dir, tmp_path, capsys):
    torch.manual_seed(0)
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(tmp_path / "model")
    spec = tmp_path / "bp4d.yaml"
    spec.write_text(yaml.safe_dump({**_specs(data_root)[0], "ask": "all"}))
    out = tmp_path / "report"
    code = main(["eval", "--data", str(spec), "--model", str(tmp_path / "model"), "--out", str(out), "--limit", "3",
                 "--baseline", "mediapipe", "--formats", "binary", "--crop-cache", str(tmp_path / "crops"), "-q"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ours, baseline = metrics["results"]["binary"], metrics["baseline"]["results"]["binary"]
    assert ours["n"] == 3 and baseline["n_truth"] == 3  # the same seeded subset for both
    assert metrics["baseline"]["name"] == "MediaPipe blendshapes, calibrated mapping"
    report = capsys.readouterr().out
    assert "| F1 (%) — MediaPipe blendshapes, calibrated mapping |" in report  # in the same table as ours
    assert set(pd.read_csv(out / "predictions.csv").columns) >= {"image", "AU01_c"}


def test_calibrate_refuses_too_few_faces_and_writes_nothing(data_root, char_tokenizer_dir, tmp_path, capsys):
    """Issue 31: on 6 faces it used to report 'ECE 0.126 → 0.000' and write T = 0.081, b = +7.06 in place."""
    torch.manual_seed(1)
    model_dir = tmp_path / "model"
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(model_dir)
    before = (model_dir / "config.json").read_bytes()
    spec = tmp_path / "bp4d.yaml"
    spec.write_text(yaml.safe_dump({**_specs(data_root)[0], "ask": "all"}))
    assert main(["calibrate", "--data", str(spec), "--model", str(model_dir), "--crop-cache", str(tmp_path / "c"),
                 "--limit", "6", "-q"]) == 2
    err = capsys.readouterr().err
    assert "5 faces with 14 present" in err and "at least 40 faces" in err  # one of the 6 has no face crop
    assert (model_dir / "config.json").read_bytes() == before and not (tmp_path / "model-calibrated").exists()


def test_calibrate_refuses_the_installed_default_model(tmp_path, capsys):
    from aullava.inference import default_model_dir

    spec = tmp_path / "spec.yaml"
    spec.write_text("type: manifest\npath: x.csv\n")
    assert main(["calibrate", "--data", str(spec), "--model", str(default_model_dir()), "--in-place"]) == 2
    assert "installed default model" in capsys.readouterr().err


def test_calibrate_writes_a_temperature_that_changes_probabilities_not_answers(data_root, char_tokenizer_dir,
                                                                                 tmp_path, capsys, monkeypatch):
    """Into a calibrated copy. The fixture's 5 faces are too few for the minimums and the held-out check (their
    refusals are tested above and in test_probabilities); here the fit is taken as `fit_binary_calibration` gives it,
    to test what calibrate writes and that it moves probabilities, not answers."""
    from aullava.eval import probabilities, run
    from aullava.eval.probabilities import apply_temperature

    monkeypatch.setattr(run, "calibrate_binary",
                        lambda truth, table, au_set, seed=0: {**probabilities.fit_binary_calibration(truth, table, au_set),
                                                              "heldout_pairs": 0, "heldout_ece_before": 0.0,
                                                              "heldout_ece_after": 0.0, "heldout_nll_before": 0.0,
                                                              "heldout_nll_after": 0.0})
    torch.manual_seed(1)
    model_dir = tmp_path / "model"
    AuLlavaModel(tiny_model_config(char_tokenizer_dir, au_set="default")).save_pretrained(model_dir)
    spec = tmp_path / "bp4d.yaml"
    spec.write_text(yaml.safe_dump({**_specs(data_root)[0], "ask": "all"}))
    common = ["--data", str(spec), "--model", str(model_dir), "--crop-cache", str(tmp_path / "crops"), "-q"]

    def evaluate(out, model=model_dir):
        assert main(["eval", *common, "--model", str(model), "--formats", "binary", "--out", str(tmp_path / out)]) == 0
        return pd.read_csv(tmp_path / out / "predictions.csv")

    before = evaluate("before")
    report = capsys.readouterr().out
    assert "| ROC-AUC |" in report and "expected calibration error" in report
    assert (tmp_path / "before" / "reliability_binary.png").is_file()
    source_config = (model_dir / "config.json").read_bytes()
    assert main(["calibrate", *common]) == 0
    printed = capsys.readouterr()
    assert (model_dir / "config.json").read_bytes() == source_config  # the model itself is left alone
    calibrated = tmp_path / "model-calibrated"
    config = json.loads((calibrated / "config.json").read_text())
    temperature, bias = config["probability_temperature"]["binary"], config["probability_bias"]["binary"]
    assert temperature > 0 and f"temperature {temperature:.3f}" in printed.out and f"shift {bias:+.3f}" in printed.out
    assert "ECE" in printed.out and "config.json" in printed.err
    assert "held out" in printed.out.lower()
    after = evaluate("after", calibrated)
    c_cols = [c for c in before.columns if c.endswith("_c")]
    p_cols = [c for c in before.columns if c.endswith("_p")]
    assert c_cols and p_cols
    pd.testing.assert_frame_equal(after[c_cols], before[c_cols])  # the answers stay
    np.testing.assert_allclose(after[p_cols].to_numpy(), apply_temperature(before[p_cols].to_numpy(), temperature, bias),
                               atol=1e-5)
    # --in-place, with the model named by a relative path: its own config.json, the previous one kept beside it
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--data", str(spec), "--model", "model", "--crop-cache", str(tmp_path / "crops"),
                 "--in-place", "-q"]) == 0
    assert (model_dir / "config.json.bak").read_bytes() == source_config
    assert json.loads((model_dir / "config.json").read_text())["probability_bias"]["binary"] == pytest.approx(bias)
