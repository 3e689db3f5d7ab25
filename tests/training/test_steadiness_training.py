"""Training for steady answers: perturbed crops (`training.augment`), the invariance stage that pulls a perturbed
crop's tokens onto the clean crop's, and an LLM stage that starts from another model's LLM adapter."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aullava.datasets import PatternFaces
from aullava.model.modeling import AuLlavaModel
from aullava.training.augment import AugmentConfig, AugmentedFaces, perturb
from aullava.training.invariance_stage import image_tokens, relative_distance, train_invariance
from aullava.training.recipe import VISION_STAGE_DIR, check_recipe, train
from conftest import tiny_model_config

AUS = ["AU1", "AU2", "AU4", "AU6"]


def _face(seed: int = 0, size: int = 64) -> np.ndarray:
    return PatternFaces(len(AUS), 1, size, seed=seed)[0]["image"]


def test_perturbations_keep_shape_and_type_and_stay_close():
    crop = _face(size=96)
    rng = np.random.default_rng(0)
    outs = [perturb(crop, AugmentConfig(), rng) for _ in range(20)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    changed = [float(np.abs(o.astype(float) - crop).mean()) for o in outs]
    assert sum(c > 0 for c in changed) >= 18  # nearly every draw changes something
    assert max(changed) < 40  # a perturbation, not another picture


def test_each_perturbation_does_what_its_setting_says():
    crop = _face(size=96)
    off = dict(p_affine=0.0, p_blur=0.0, p_noise=0.0, p_jpeg=0.0)
    assert np.array_equal(perturb(crop, AugmentConfig(**off), np.random.default_rng(1)), crop)
    noise = perturb(crop, AugmentConfig(**{**off, "p_noise": 1.0, "noise_grey": (2.0, 2.0)}),
                    np.random.default_rng(1)).astype(float) - crop
    assert 1.0 < noise.std() < 3.0
    shift = AugmentConfig(**{**off, "p_affine": 1.0, "shift_px": 0.0, "scale": 0.0, "rotate_deg": 0.0})
    assert np.array_equal(perturb(crop, shift, np.random.default_rng(1)), crop)  # identity map: same pixels


def test_augmented_faces_draw_anew_each_read_and_keep_labels():
    base = PatternFaces(len(AUS), 4, 64, seed=3)
    data = AugmentedFaces(base, AugmentConfig(p_affine=1.0, p_noise=1.0), seed=0)
    first, second = data[1], data[1]
    assert not np.array_equal(first["image"], second["image"])
    assert all(np.array_equal(first["targets"][f], base[1]["targets"][f]) for f in base[1]["targets"])
    assert len(data) == len(base)


@pytest.mark.parametrize("spec, message", [
    ({"p_jpeg": 1.5}, "probability"), ({"jpeg_quality": [90, 50]}, "range"), ({"shift": 2}, "unknown key 'shift'"),
    ({"noise_grey": 3}, "range")])
def test_augment_settings_are_strict(spec, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_spec(spec)


def test_relative_distance_is_one_for_another_face_of_a_two_face_batch():
    reference = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]]])
    swapped = reference.flip(0)
    assert torch.allclose(relative_distance(reference, reference), torch.zeros(2))
    assert torch.allclose(relative_distance(swapped, reference), torch.full((2,), 2.0))  # spread 1, distance 2


def test_invariance_stage_brings_perturbed_tokens_closer_to_the_clean_ones(char_tokenizer_dir):
    torch.manual_seed(0)  # the tiny CLIP tower: a random EfficientNet's BatchNorm (never fitted) is ill-conditioned
    model = AuLlavaModel(tiny_model_config(char_tokenizer_dir, vision="clip", au_set=AUS))
    llm_before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    data = PatternFaces(len(AUS), num_samples=64, image_size=model.vision_encoder.image_size, seed=0)
    config = AugmentConfig(p_affine=1.0, shift_px=3.0, p_noise=1.0, noise_grey=(4.0, 8.0), p_jpeg=1.0,
                           jpeg_quality=(30, 60))
    probe = PatternFaces(len(AUS), num_samples=16, image_size=model.vision_encoder.image_size, seed=7)
    clean = torch.from_numpy(np.stack([probe[i]["image"] for i in range(len(probe))]))
    rng = np.random.default_rng(5)
    noisy = torch.from_numpy(np.stack([perturb(c, config, rng) for c in clean.numpy()]))
    model.eval()
    with torch.no_grad():
        reference = image_tokens(model, clean)
        before = relative_distance(image_tokens(model, noisy), reference).mean()
    losses = train_invariance(model, data, config, steps=80, batch_size=16, learning_rate=1e-2)
    model.eval()
    with torch.no_grad():
        after = relative_distance(image_tokens(model, noisy), reference).mean()
        clean_after = relative_distance(image_tokens(model, clean), reference).mean()
    assert after < 0.75 * before, (before, after, losses[:3], losses[-3:])  # a quarter closer at least
    assert clean_after < before  # the clean faces stay nearer their old tokens than perturbed ones were
    assert all(torch.equal(v, llm_before[k]) for k, v in model.language_model.state_dict().items())


def _recipe(char_tokenizer_dir, out) -> dict:
    config = tiny_model_config(char_tokenizer_dir, au_set=AUS)
    return {"model": asdict(config), "vision_stage": {"steps": 3, "batch_size": 8, "freeze": ["vision", "projector"]},
            "data": {"train": {"type": "patterns", "num_samples": 32, "seed": 0}, "formats": ["binary"]},
            "training": {"output_dir": str(out), "per_device_train_batch_size": 4, "max_steps": 2,
                         "learning_rate": 1e-2, "use_cpu": True, "disable_tqdm": True, "report_to": []}}


def test_an_arm_with_invariance_and_an_llm_start_takes_both_and_saves_its_image_side_once(char_tokenizer_dir,
                                                                                          tmp_path):
    first = tmp_path / "first"
    recipe = _recipe(char_tokenizer_dir, first)
    train(recipe, resume=False)
    second = tmp_path / "second"
    arm = {**recipe, "vision_stage": {"from": str(first), "invariance": {"steps": 2, "batch_size": 8},
                                      "freeze": ["vision", "projector"]},
           "llm_stage": {"from": str(first)}, "data": {**recipe["data"], "augment": True},
           "training": {**recipe["training"], "output_dir": str(second), "max_steps": 1, "learning_rate": 0.0}}
    train(arm, resume=False)
    warm = second / VISION_STAGE_DIR
    source, image_side = load_file(str(first / "projector.safetensors")), load_file(str(warm / "projector.safetensors"))
    assert any(not torch.equal(source[k], image_side[k]) for k in source)  # the invariance stage moved it
    adapter_first = load_file(str(first / "adapter_model.safetensors"))
    adapter_second = load_file(str(second / "adapter_model.safetensors"))
    for key, tensor in adapter_first.items():
        if key.startswith("language_model."):  # learning rate 0: the LLM adapter is the one it started from
            assert torch.equal(tensor, adapter_second[key]), key
    stamp = (warm / "projector.safetensors").stat().st_mtime_ns
    train({**arm, "training": {**arm["training"], "output_dir": str(second)}}, resume=False)
    assert (warm / "projector.safetensors").stat().st_mtime_ns == stamp  # loaded, not trained again


def test_invariance_without_augment_and_a_bad_llm_start_are_refused(char_tokenizer_dir, tmp_path):
    recipe = _recipe(char_tokenizer_dir, tmp_path / "x")
    with pytest.raises(ValueError, match="set data.augment"):
        check_recipe({**recipe, "vision_stage": {"steps": 3, "invariance": {"steps": 2}}})
    with pytest.raises(ValueError, match="unknown key 'step'"):
        check_recipe({**recipe, "vision_stage": {"steps": 3, "invariance": {"step": 2}},
                      "data": {**recipe["data"], "augment": True}})
    with pytest.raises(ValueError, match="llm_stage.from"):
        check_recipe({**recipe, "llm_stage": {"from": str(tmp_path / "nowhere")}})
