"""LLaVA checkpoints out (`aullava export-llava`) and in (`model.from_llava` in a recipe), on tiny random CLIP or
SigLIP towers with a tiny LLaMA."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from aullava.cli import main
from aullava.datasets import PatternFaces
from aullava.model.modeling import AuLlavaModel
from conftest import tiny_model_config

AUS = ["AU1", "AU2", "AU4", "AU6"]


def tiny_tower_model(tokenizer_dir, tower: str, projector: str) -> AuLlavaModel:
    config = tiny_model_config(tokenizer_dir, vision="clip", llm="llama", au_set=AUS)
    config.vision.config["model_type"] = tower
    config.projector = projector
    config.lora.llm_targets = ["q_proj", "v_proj", "down_proj"]
    torch.manual_seed(0)
    model = AuLlavaModel(config)
    with torch.no_grad():  # LoRA's B starts at zero: give every LoRA weight a value, so merging has work to do
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.1)
    return model


def crops(model: AuLlavaModel, count: int = 2) -> torch.Tensor:
    faces = PatternFaces(len(AUS), num_samples=count, image_size=model.vision_encoder.image_size, seed=3)
    return torch.from_numpy(np.stack([faces[i]["image"] for i in range(count)]))


def answer_logits(model: AuLlavaModel, images: torch.Tensor, fmt: str, values) -> tuple[torch.Tensor, dict]:
    """aullava's logits at the positions that predict the answer tokens (and EOS), for one image per row."""
    example = model.processor.encode_example(fmt, values)
    rows = images.shape[0]
    batch = {key: torch.tensor([example[key]] * rows) for key in ("input_ids", "image_mask", "labels")}
    with torch.no_grad():
        out = model(images, batch["input_ids"], torch.ones_like(batch["input_ids"]), batch["image_mask"],
                    labels=batch["labels"])
    return out["logits"], batch


@pytest.mark.parametrize("tower,projector", [("clip_vision_model", "linear"), ("siglip_vision_model", "mlp2x_gelu")])
def test_exported_llava_gives_aullavas_answer_logits(char_tokenizer_dir, tmp_path, tower, projector):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    tiny_tower_model(char_tokenizer_dir, tower, projector).save_pretrained(tmp_path / "aullava")
    assert main(["export-llava", str(tmp_path / "aullava"), str(tmp_path / "llava")]) == 0
    reference = AuLlavaModel.from_pretrained(tmp_path / "aullava")
    llava = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "llava")).eval()
    processor = AutoProcessor.from_pretrained(str(tmp_path / "llava"))
    prompts = json.loads((tmp_path / "llava" / "aullava_prompts.json").read_text())
    assert llava.config.projector_hidden_act == ("linear" if projector == "linear" else "gelu")
    assert llava.config.vision_feature_layer == -2
    assert llava.config.vision_feature_select_strategy == ("default" if tower == "clip_vision_model" else "full")

    images = crops(reference)
    pil = [Image.fromarray(image.numpy()) for image in images]
    vocab = reference.language_model.config.vocab_size  # the export added one token, <image>, after these
    image_id = llava.config.image_token_id
    assert image_id == vocab
    values = {"binary": [1, 0, 1, 1], "discrete": [0, 3, 5, 1], "continuous": [0.25, 0.0, 1.0, 0.5]}
    for fmt, answer in values.items():
        prompt = prompts["formats"][fmt]
        # the processor turns the prompt text and a face crop into aullava's token ids and pixel values
        inputs = processor(images=pil, text=[prompt["text"]] * len(pil), return_tensors="pt")
        assert prompt["text_gives_input_ids"] and inputs["input_ids"][0].tolist() == prompt["input_ids"]
        torch.testing.assert_close(inputs["pixel_values"], reference.vision_encoder.preprocess(images),
                                   rtol=0, atol=1e-6)

        expected, batch = answer_logits(reference, images, fmt, answer)
        ids = batch["input_ids"].masked_fill(batch["image_mask"].bool(), image_id)
        assert ids[0, :len(prompt["input_ids"])].tolist() == prompt["input_ids"]
        with torch.no_grad():
            logits = llava(input_ids=ids, pixel_values=inputs["pixel_values"], attention_mask=torch.ones_like(ids),
                           ).logits
        keep = batch["labels"][:, 1:] != -100
        got = logits[:, :-1][keep]
        # Same weights, same inputs: LoRA merged into float32 weights (W + BA rounded once) and a different matmul
        # order leave ~1e-6 differences on logits of size ~1; 1e-4 is far below what a wrong layer, token, class
        # token or projector would change (≥ 1e-2).
        torch.testing.assert_close(got[:, :vocab], expected, rtol=0, atol=1e-4)
        assert bool((got[:, :vocab].argmax(-1) == expected.argmax(-1)).all())


def test_export_refuses_a_model_llava_cannot_hold(char_tokenizer_dir, tmp_path, capsys):
    torch.manual_seed(0)
    AuLlavaModel(tiny_model_config(char_tokenizer_dir)).save_pretrained(tmp_path / "effnet")  # EfficientNet
    assert main(["export-llava", str(tmp_path / "effnet"), str(tmp_path / "out")]) == 2
    assert "needs an HF CLIP/SigLIP vision tower" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_llava(char_tokenizer_dir, tmp_path_factory):
    """A tiny random transformers LLaVA (CLIP tower, LLaMA, GELU projector) with its tokenizer, as llava-hf ships."""
    from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

    directory = tmp_path_factory.mktemp("tiny_llava")
    tokenizer = AutoTokenizer.from_pretrained(str(char_tokenizer_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    reference = tiny_model_config(char_tokenizer_dir, vision="clip", llm="llama")
    text = {**reference.llm.config, "vocab_size": len(tokenizer)}
    config = LlavaConfig(vision_config=reference.vision.config, text_config=text, projector_hidden_act="gelu",
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=16,
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(1)
    LlavaForConditionalGeneration(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def llava_recipe(char_tokenizer_dir, llava_dir, output_dir, projector="mlp2x_gelu", max_steps=2):
    model = asdict(tiny_model_config(char_tokenizer_dir, vision="clip", llm="llama", au_set=AUS))
    del model["vision"], model["llm"]
    return {"model": {**model, "from_llava": str(llava_dir), "projector": projector},
            "data": {"train": {"type": "patterns", "num_samples": 8, "seed": 0}, "formats": ["binary"]},
            "training": {"output_dir": str(output_dir), "per_device_train_batch_size": 4, "learning_rate": 1e-3,
                         "max_steps": max_steps, "save_steps": 100, "use_cpu": True, "disable_tqdm": True,
                         "report_to": []}}


def test_recipe_starts_from_a_llava_directory(char_tokenizer_dir, tiny_llava, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from aullava.training.recipe import build_training, train

    llava = LlavaForConditionalGeneration.from_pretrained(str(tiny_llava)).eval()
    model = build_training(llava_recipe(char_tokenizer_dir, tiny_llava, tmp_path / "x")).model.eval()
    # the LLaVA's vision tower, language model and projector, weight for weight (LoRA still zero)
    mine = {k.replace("base_layer.", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    theirs = {"vision_encoder.tower.": llava.model.vision_tower, "language_model.model.": llava.model.language_model,
              "language_model.lm_head.": llava.lm_head}
    for prefix, module in theirs.items():
        for key, value in module.state_dict().items():
            assert torch.equal(mine[prefix + key], value), prefix + key
    # aullava's visual tokens are LLaVA's image features: same layer, class token dropped, same projector
    pixels = model.vision_encoder.preprocess(crops(model))
    with torch.no_grad():
        ours = model.projector(model.vision_encoder(pixels))
        expected = torch.stack(llava.get_image_features(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)

    # it trains, and its checkpoint references the LLaVA directory instead of copying its weights
    trainer = train(llava_recipe(char_tokenizer_dir, tiny_llava, tmp_path / "run"))
    assert trainer.state.global_step == 2
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["vision"]["llava"] == saved["llm"]["llava"] == str(tiny_llava)
    assert not (tmp_path / "run" / "base_model.safetensors").exists()
    reloaded = AuLlavaModel.from_pretrained(tmp_path / "run")
    images = crops(reloaded)
    torch.testing.assert_close(answer_logits(reloaded, images, "binary", [1, 0, 0, 1])[0],
                               answer_logits(trainer.model.eval(), images, "binary", [1, 0, 0, 1])[0])


def test_a_linear_projector_does_not_take_a_gelu_one(char_tokenizer_dir, tiny_llava, tmp_path, caplog):
    from transformers import LlavaForConditionalGeneration

    from aullava.training.recipe import build_training

    llava = LlavaForConditionalGeneration.from_pretrained(str(tiny_llava))
    model = build_training(llava_recipe(char_tokenizer_dir, tiny_llava, tmp_path / "x", projector="linear")).model
    assert "projector not taken" in caplog.text and "mlp2x_gelu" in caplog.text  # says why and what to do
    first, second = llava.model.multi_modal_projector.linear_1, llava.model.multi_modal_projector.linear_2
    for impostor in (first.weight, second.weight @ first.weight):  # neither half, nor the product, of a GELU MLP
        assert not torch.allclose(model.projector.weight, impostor)


def test_export_then_import_round_trip(char_tokenizer_dir, tmp_path):
    """An exported model as a recipe's starting point (linear projector = the product of LLaVA's two layers)
    answers like the model that was exported."""
    from aullava.llava.export import export_llava
    from aullava.training.recipe import build_training

    original = tiny_tower_model(char_tokenizer_dir, "clip_vision_model", "linear")
    original.save_pretrained(tmp_path / "aullava")
    export_llava(AuLlavaModel.from_pretrained(tmp_path / "aullava"), tmp_path / "llava")
    started = build_training(llava_recipe(char_tokenizer_dir, tmp_path / "llava", tmp_path / "x",
                                          projector="linear")).model.eval()
    images = crops(started)
    vocab = original.language_model.config.vocab_size
    before = answer_logits(original.eval(), images, "continuous", [0.5, 0.0, 1.0, 0.25])[0]
    after = answer_logits(started, images, "continuous", [0.5, 0.0, 1.0, 0.25])[0]
    torch.testing.assert_close(after[:, :vocab], before, rtol=0, atol=1e-4)  # merged float32 weights: see above
