"""Training end to end on a tiny model: the loss falls, predictions beat chance, and training resumes."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from aullava.aus.answer_format import parse_answer
from aullava.datasets import PatternFaces
from aullava.model.decoding.sequential import generate_answers
from aullava.model.config import AuLlavaConfig
from aullava.model.modeling import AuLlavaModel
from aullava.training.recipe import load_recipe, train
from conftest import tiny_model_config

AUS = ["AU1", "AU2", "AU4", "AU6"]


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def _recipe(char_tokenizer_dir, output_dir, max_steps):
    config = tiny_model_config(char_tokenizer_dir, vision="clip", au_set=AUS)
    # The tiny LLM is random, so LoRA on it would adapt noise: it is tuned in full, the vision tower with LoRA.
    config.tuning = {"vision": "lora", "llm": "full"}
    return {
        "model": asdict(config),
        "data": {"train": {"type": "patterns", "num_samples": 96, "seed": 0},
                 "formats": ["binary", "discrete", "continuous"]},
        "training": {"output_dir": str(output_dir), "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                     "lr_scheduler_type": "constant", "max_steps": max_steps, "save_steps": 150,
                     "logging_steps": 10, "use_cpu": True, "disable_tqdm": True, "seed": 0},
    }


def test_tiny_model_learns_patterns_and_resumes(char_tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    train(_recipe(char_tokenizer_dir, out, 150))
    assert (out / "checkpoint-150" / "adapter_model.safetensors").is_file()
    counter = StepCounter()
    second = train(_recipe(char_tokenizer_dir, out, 400), callbacks=[counter])  # resumes at checkpoint-150
    assert counter.steps == 250 and second.state.global_step == 400

    losses = [e["loss"] for e in second.state.log_history if "loss" in e]  # the restored history continues
    assert len(losses) == 40
    assert np.mean(losses[-3:]) < 0.25 * np.mean(losses[:3]), losses

    model = AuLlavaModel.from_pretrained(out)
    assert model.config.trained and json.loads((out / "config.json").read_text())["trained"]
    held_out = PatternFaces(len(AUS), num_samples=64, image_size=model.vision_encoder.image_size, seed=123)
    crops = torch.from_numpy(np.stack([held_out[i]["image"] for i in range(len(held_out))]))
    truth = np.stack([held_out[i]["targets"]["binary"] for i in range(len(held_out))])
    texts = generate_answers(model, crops, ["binary"] * len(held_out))
    predicted = np.stack([parse_answer(t, "binary", len(AUS)) for t in texts])
    accuracy = float((predicted == truth).mean())
    chance = float(max(truth.mean(), 1 - truth.mean()))  # always answering the majority value
    # 256 decisions: chance-level accuracy varies by about ±0.03, so +0.10 is far outside luck
    assert accuracy >= chance + 0.10, (accuracy, chance)


def test_recipe_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("training:\n  learning_rate: 0.001\nmodel:\n  projector: linear\n")
    recipe = load_recipe(path, ["training.learning_rate=2e-4", "model.lora.r=8", "data.formats=[binary]"])
    assert recipe["training"]["learning_rate"] == 2e-4
    assert recipe["model"] == {"projector": "linear", "lora": {"r": 8}}
    assert recipe["data"]["formats"] == ["binary"]


RECIPES = sorted([*(Path(__file__).parents[2] / "configs").glob("*.yaml"),
                  *(Path(__file__).parents[2] / "configs" / "experiments").glob("*.yaml")])


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    """Every recipe in configs/ builds its TrainingArguments and model config (without loading any weights)."""
    recipe = load_recipe(path)
    on_this_machine = {} if torch.cuda.is_available() else {"use_cpu": True}  # GPU recipes, checked on a CPU
    args = TrainingArguments(**{"remove_unused_columns": False, "report_to": [], **recipe["training"],
                                **on_this_machine})
    assert args.output_dir
    config = AuLlavaConfig.from_dict(recipe["model"])
    assert len(config.resolved_au_set()) > 0 and config.projector in ("linear", "mlp2x_gelu")
    assert recipe["data"]["train"]


def test_balanced_present_weight_needs_label_tables(char_tokenizer_dir, tmp_path):
    """`present_weight: balanced` passes the recipe check and is computed from the training labels when training is
    built; data without label tables (the pattern images) is refused with a message naming the option."""
    from aullava.training.recipe import build_training, check_recipe

    recipe = _recipe(char_tokenizer_dir, tmp_path / "out", max_steps=1)
    recipe["model"]["present_weight"] = "balanced"
    check_recipe(recipe)
    with pytest.raises(ValueError, match="present_weight: balanced needs datasets with label tables"):
        build_training(recipe)


def test_activation_checkpointing_trains(char_tokenizer_dir, tmp_path):
    """The paper recipe's `activation_checkpointing: true` (the memory saver of a 7B run): Trainer turns it on
    through the model and the step still trains."""
    recipe = _recipe(char_tokenizer_dir, tmp_path / "run", 2)
    recipe["training"].update(activation_checkpointing=True, save_steps=10)
    trainer = train(recipe)
    model = trainer.model
    assert model.language_model.is_activation_checkpointing
    assert model.vision_encoder.tower.is_activation_checkpointing
    assert trainer.state.global_step == 2 and np.isfinite(trainer.state.log_history[-1]["train_loss"])
