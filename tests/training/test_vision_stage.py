"""Vision warm-up: visual tokens learn the AUs through a linear head, the LLM is untouched, and a training run
does it once (a restart reloads it)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import numpy as np
import pytest
import torch

from aullava.aus.catalogue import au_set
from aullava.datasets import PatternFaces
from aullava.model.modeling import AuLlavaModel
from aullava.training.recipe import VISION_STAGE_DIR, train
from aullava.training.vision_stage import _intensity_targets, warm_up_vision
from conftest import tiny_model_config

AUS = ["AU1", "AU2", "AU4", "AU6"]


def test_targets_use_the_richest_label_and_respect_masks():
    aus = au_set(AUS)
    sub = au_set(["AU2", "AU6"])
    sample = {"targets": {"binary": np.array([1.0, 0.0, 1.0, 1.0]), "discrete": np.array([4.0, 2.0])},
              "masks": {"binary": np.array([True, True, False, True]), "discrete": np.array([True, False])},
              "au_sets": {"binary": aus, "discrete": sub}}
    values, mask = _intensity_targets(sample, aus)
    # AU1 binary present → 0.5; AU2 discrete 4 → 0.8 (beats binary 0); AU4 unlabelled; AU6: discrete masked, binary 1
    assert mask.tolist() == [True, True, False, True]
    assert np.allclose(values, [0.5, 0.8, 0.0, 0.5])


def test_warm_up_teaches_the_visual_tokens_and_leaves_the_llm(char_tokenizer_dir):
    torch.manual_seed(0)
    model = AuLlavaModel(tiny_model_config(char_tokenizer_dir, vision="clip", au_set=AUS))
    llm_before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    projector_before = model.projector.weight.detach().clone()
    data = PatternFaces(len(AUS), num_samples=128, image_size=model.vision_encoder.image_size, seed=0)
    losses, head = warm_up_vision(model, data, steps=120, batch_size=16, learning_rate=3e-3)

    assert all(torch.equal(v, llm_before[k]) for k, v in model.language_model.state_dict().items())
    assert not torch.equal(model.projector.weight, projector_before)
    assert not any(n.startswith("language_model.") for n, _ in model.named_parameters() if "head" in n)

    held_out = PatternFaces(len(AUS), num_samples=64, image_size=model.vision_encoder.image_size, seed=9)
    images = torch.from_numpy(np.stack([held_out[i]["image"] for i in range(len(held_out))]))
    truth = torch.from_numpy(held_out.intensities)
    model.eval()
    with torch.no_grad():
        predicted = head(model.projector(model.vision_encoder(model.vision_encoder.preprocess(images))))
    error = float(((predicted - truth) ** 2).mean())
    baseline = float(((truth - truth.mean(0)) ** 2).mean())  # predicting each AU's mean intensity
    assert error < 0.5 * baseline, (error, baseline, losses[:3], losses[-3:])


def test_training_runs_the_warm_up_once(char_tokenizer_dir, tmp_path):
    config = tiny_model_config(char_tokenizer_dir, vision="clip", au_set=AUS)
    config.tuning = {"vision": "lora", "llm": "full"}
    out = tmp_path / "run"
    recipe = {"model": asdict(config), "vision_stage": {"steps": 5, "batch_size": 8},
              "data": {"train": {"type": "patterns", "num_samples": 32, "seed": 0}, "formats": ["binary"]},
              "training": {"output_dir": str(out), "per_device_train_batch_size": 4, "max_steps": 2,
                           "use_cpu": True, "disable_tqdm": True, "report_to": []}}
    train(recipe, resume=False)
    warm = out / VISION_STAGE_DIR
    assert (warm / "projector.safetensors").is_file()
    stamp = (warm / "projector.safetensors").stat().st_mtime_ns
    train({**recipe, "training": {**recipe["training"], "output_dir": str(out)}}, resume=False)
    assert (warm / "projector.safetensors").stat().st_mtime_ns == stamp  # loaded, not trained again


def _frozen_image_side_recipe(char_tokenizer_dir, out) -> dict:
    """A tiny two-stage recipe: 3 warm-up steps, then 3 LLM steps with the image side frozen, into `out`."""
    config = tiny_model_config(char_tokenizer_dir, au_set=AUS)
    return {"model": asdict(config), "vision_stage": {"steps": 3, "batch_size": 8, "freeze": ["vision", "projector"]},
            "data": {"train": {"type": "patterns", "num_samples": 32, "seed": 0}, "formats": ["binary"]},
            "training": {"output_dir": str(out), "per_device_train_batch_size": 4, "max_steps": 3,
                         "learning_rate": 1e-2, "use_cpu": True, "disable_tqdm": True, "report_to": []}}


def test_frozen_parts_keep_their_warm_up_weights(char_tokenizer_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    recipe = _frozen_image_side_recipe(char_tokenizer_dir, out)
    train(recipe, resume=False)
    warm, final = out / VISION_STAGE_DIR, out
    for name in ("projector.safetensors", "adapter_model.safetensors"):
        before, after = load_file(str(warm / name)), load_file(str(final / name))
        for key, tensor in before.items():
            moved = not torch.equal(tensor, after[key])
            assert moved == key.startswith("language_model."), key
    with pytest.raises(ValueError, match="unknown parts"):
        train({**recipe, "vision_stage": {**recipe["vision_stage"], "freeze": ["llm"]}}, resume=False)


def test_an_arm_can_take_another_models_image_side_instead_of_warming_up(char_tokenizer_dir, tmp_path):
    from safetensors.torch import load_file

    from aullava.training.recipe import check_recipe

    first = tmp_path / "first"
    recipe = _frozen_image_side_recipe(char_tokenizer_dir, first)
    train(recipe, resume=False)
    second = tmp_path / "second"
    train({**recipe, "vision_stage": {"from": str(first), "freeze": ["vision", "projector"]},
           "training": {**recipe["training"], "output_dir": str(second), "seed": 1}}, resume=False)
    assert not (second / VISION_STAGE_DIR).exists()
    for name in ("projector.safetensors", "adapter_model.safetensors"):
        source, arm = load_file(str(first / name)), load_file(str(second / name))
        for key, tensor in source.items():
            same = torch.equal(tensor, arm[key])
            assert same != key.startswith("language_model."), key  # image side taken, LLM LoRA its own

    with pytest.raises(ValueError, match="drop 'steps' or 'from'"):
        check_recipe({**recipe, "vision_stage": {"from": str(first), "steps": 3}})
    with pytest.raises(ValueError, match="not a model directory"):
        check_recipe({**recipe, "vision_stage": {"from": str(tmp_path / "nowhere")}})


class _KilledAfter(torch.utils.data.Dataset):
    """A dataset that 'kills the run' (raises KeyboardInterrupt) after `limit` samples, and counts what it served."""

    def __init__(self, base, limit: int | None = None):
        self.base, self.limit, self.served = base, limit, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        if self.limit is not None and self.served >= self.limit:
            raise KeyboardInterrupt
        self.served += 1
        return self.base[index]


def test_a_killed_warm_up_resumes_from_its_saved_progress(char_tokenizer_dir, tmp_path, caplog):
    config = tiny_model_config(char_tokenizer_dir, vision="clip", au_set=AUS)
    data = PatternFaces(len(AUS), num_samples=64, image_size=224, seed=0)
    progress = tmp_path / "vision-warmup-progress"

    torch.manual_seed(0)
    model = AuLlavaModel(config)
    with pytest.raises(KeyboardInterrupt):  # killed in step 6, after the progress of step 4 was saved
        warm_up_vision(model, _KilledAfter(data, limit=5 * 8 + 3), steps=8, batch_size=8, progress_dir=progress,
                       save_every=4)
    saved = json.loads((progress / "progress.json").read_text())
    assert saved["step"] == 4 and len(saved["losses"]) == 4

    torch.manual_seed(1)  # a different start: what it resumes from must come from the saved progress
    resumed = AuLlavaModel(config)
    counting = _KilledAfter(data)
    with caplog.at_level(logging.WARNING):
        losses, _ = warm_up_vision(resumed, counting, steps=8, batch_size=8, progress_dir=progress, save_every=4)
    assert "resuming at step 4 of 8" in caplog.text
    assert len(losses) == 8 and losses[:4] == saved["losses"]
    assert counting.served == 4 * 8  # only the remaining 4 steps were trained


def test_damaged_warm_up_progress_is_ignored_with_a_warning(char_tokenizer_dir, tmp_path, caplog):
    config = tiny_model_config(char_tokenizer_dir, vision="clip", au_set=AUS)
    data = PatternFaces(len(AUS), num_samples=32, image_size=224, seed=0)
    progress = tmp_path / "vision-warmup-progress"
    warm_up_vision(AuLlavaModel(config), data, steps=3, batch_size=8, progress_dir=progress, save_every=2)
    (progress / "au_head.safetensors").write_bytes(b"truncated")
    counting = _KilledAfter(data)
    with caplog.at_level(logging.WARNING):
        losses, _ = warm_up_vision(AuLlavaModel(config), counting, steps=3, batch_size=8, progress_dir=progress)
    assert "ignoring damaged progress" in caplog.text
    assert len(losses) == 3 and counting.served == 3 * 8
