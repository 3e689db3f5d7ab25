"""Recipes and model configs are strict: a misspelt key anywhere is one clear error naming the key and the closest
valid name, raised before any model is built; bad YAML and bad overrides get one line too."""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from pathlib import Path

import pytest

from aullava.cli import main
from aullava.model.config import AuLlavaConfig
from aullava.training.recipe import check_recipe, load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key, closest", [
    ("dta: {train: {type: patterns}}\n", "dta", "data"),
    ("model: {projecter: mlp}\n", "projecter", "projector"),
    ("model: {prompt_styel: full}\n", "prompt_styel", "prompt_style"),
    ("model: {lora: {rank: 8}}\n", "rank", None),
    ("model: {lora: {llm_layer: [1]}}\n", "llm_layer", "llm_layers"),
    ("model: {vision: {token_gird: 4}}\n", "token_gird", "token_grid"),
    ("model: {tuning: {vison: lora}}\n", "vison", "vision"),
    ("vision_stage: {step: 5}\n", "step", "steps"),
    ("warmup: {stpes: 5}\n", "stpes", "steps"),
    ("data: {formts: [binary]}\n", "formts", "formats"),
    ("training: {max_stpes: 5}\n", "max_stpes", "max_steps"),
])
def test_unknown_key_names_the_key_and_the_closest_name(tmp_path, text, key, closest):
    with pytest.raises(ValueError, match=repr(key)) as caught:
        load_recipe(_write(tmp_path, text))
    if closest:
        assert f"did you mean {closest!r}" in str(caught.value)


def test_cli_reports_a_misspelt_training_key_in_one_line_before_building_anything(tmp_path, capsys):
    path = _write(tmp_path, "data: {train: {type: patterns, num_samples: 4}}\ntraining: {max_stpes: 5, "
                            f"output_dir: {tmp_path / 'out'}}}\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: training: unknown key 'max_stpes'; did you mean 'max_steps'?"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("", "the recipe is empty"),
    ("model: [unclosed\n", "not valid YAML (line"),
    ("- a\n- b\n", "a recipe is a mapping"),
])
def test_empty_or_malformed_yaml_is_one_clear_error(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_recipe(path)
    assert main(["train", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_override_below_a_value_is_an_error(tmp_path):
    path = _write(tmp_path, "training: {x: 5}\n")
    with pytest.raises(ValueError, match=r"--set training.x.y=1: training.x is 5, not a section"):
        load_recipe(path, ["training.x.y=1"])


def test_old_warmup_section_is_read_as_the_vision_stage_with_a_note(caplog):
    with caplog.at_level(logging.WARNING):
        recipe = check_recipe({"warmup": {"steps": 3, "freeze": ["vision"]}})
    assert recipe["vision_stage"] == {"steps": 3, "freeze": ["vision"]} and "warmup" not in recipe
    assert "now called 'vision_stage'" in caplog.text
    with pytest.raises(ValueError, match="both 'warmup' and 'vision_stage'"):
        check_recipe({"warmup": {"steps": 3}, "vision_stage": {"steps": 3}})


def test_shipped_recipes_and_default_model_config_load():
    names = ["default-model.yaml", "patterns-smoke.yaml", "paper-clip-l336-vicuna7b.yaml"] + \
        [f"experiments/{p.name}" for p in sorted((CONFIGS / "experiments").glob("*.yaml"))]
    assert len(names) >= 12
    for name in names:
        load_recipe(CONFIGS / name)
    saved = json.loads(files("aullava").joinpath("resources", "default_model", "config.json").read_text())
    config = AuLlavaConfig.from_dict(saved)
    assert config.vision.token_grid == 4 and config.lora.llm_layers == list(range(12, 18))
    assert AuLlavaConfig.from_dict(config.to_dict()) == config


def test_unknown_key_in_a_saved_config_is_an_error():
    with pytest.raises(ValueError, match="model.lora: unknown key 'alpah'; did you mean 'alpha'"):
        AuLlavaConfig.from_dict({"lora": {"alpah": 8}})
