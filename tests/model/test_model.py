"""The model contract: LoRA placement, the answer-only loss, save/load, constrained decoding on random weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from aullava.model.processing import common_prefix

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat, parse_answer
from aullava.datasets import PatternFaces
from aullava.model.decoding.sequential import generate_answers
from aullava.model.config import AuLlavaConfig
from aullava.model.modeling import AuLlavaModel
from aullava.training.trainer import AuLlavaCollator
from conftest import tiny_model_config

VARIANTS = [("efficientnet", "gemma3_text"), ("clip", "llama")]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "+".join(v))
def tiny_model(request, char_tokenizer_dir):
    torch.manual_seed(0)
    vision, llm = request.param
    return AuLlavaModel(tiny_model_config(char_tokenizer_dir, vision=vision, llm=llm)).eval()


def _batch(model, formats, masks=None, seed=0):
    data = PatternFaces(len(model.au_set), num_samples=len(formats), image_size=model.vision_encoder.image_size,
                        seed=seed)
    features = []
    for i, fmt in enumerate(formats):
        sample = data[i]
        features.append({"image": sample["image"], "format": fmt, "values": sample["targets"][fmt],
                         "mask": None if masks is None else masks[i]})
    return AuLlavaCollator(model)(features)


def test_lora_in_vision_encoder_and_llm(tiny_model):
    names = tiny_model.lora_module_names()
    assert any(n.startswith("vision_encoder.") for n in names), names
    assert any(n.startswith("language_model.") and n.endswith("q_proj") for n in names), names
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("projector.") for n in trainable)
    assert any(n.startswith("projector.") for n in trainable)
    counts = tiny_model.trainable_parameters()
    assert counts["lora_vision"] > 0 and counts["lora_llm"] > 0 and counts["projector"] > 0


def test_labels_cover_only_the_answer(tiny_model):
    batch = _batch(tiny_model, ["binary", "continuous"])
    tok = tiny_model.tokenizer
    for row, fmt in enumerate(["binary", "continuous"]):
        labels = batch["labels"][row]
        answer_ids = labels[labels != -100].tolist()
        assert answer_ids[-1] == tok.eos_token_id
        text = tok.decode(answer_ids[:-1])
        parse_answer(text, fmt, len(tiny_model.au_set))  # the supervised tokens are exactly one canonical answer
        assert not torch.any((labels != -100) & (batch["image_mask"][row] == 1))
    assert int(batch["image_mask"][0].sum()) == tiny_model.processor.num_image_tokens


def test_masked_aus_never_reach_the_loss(tiny_model):
    n = len(tiny_model.au_set)
    mask = np.ones(n, dtype=bool)
    mask[[1, 4]] = False
    full = _batch(tiny_model, ["continuous"])
    masked = _batch(tiny_model, ["continuous"], masks=[mask])
    dropped = int((full["labels"] != -100).sum() - (masked["labels"] != -100).sum())
    assert dropped == 2 * 4  # two values of four characters each ("0.40")
    # changing the target value of a masked AU does not change the loss
    features = AuLlavaCollator(tiny_model)
    sample = PatternFaces(n, 1, tiny_model.vision_encoder.image_size)[0]
    values_a = sample["targets"]["continuous"].copy()
    values_b = values_a.copy()
    values_b[[1, 4]] = 1.0 - values_b[[1, 4]]
    batches = [features([{"image": sample["image"], "format": "continuous", "values": v, "mask": mask}])
               for v in (values_a, values_b)]
    with torch.no_grad():
        losses = [tiny_model(**b)["loss"].item() for b in batches]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_save_load_reproduces_logits_exactly(tiny_model, tmp_path):
    with torch.no_grad():  # make LoRA non-trivial (B starts at zero) so the adapter really round-trips
        for name, param in tiny_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    batch = _batch(tiny_model, ["binary", "discrete", "continuous"])
    tiny_model.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "projector.safetensors", "adapter_config.json", "adapter_model.safetensors"} <= files
    reloaded = AuLlavaModel.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        before = tiny_model(**batch)
        after = reloaded(**batch)
    assert torch.equal(before["logits"], after["logits"])
    assert before["loss"].item() == after["loss"].item()


def test_peft_adapter_config_is_standard(tiny_model, tmp_path):
    from peft import LoraConfig

    tiny_model.save_pretrained(tmp_path / "ckpt")
    config = LoraConfig.from_pretrained(str(tmp_path / "ckpt"))
    assert config.r == 4 and "vision_encoder" in config.target_modules and "language_model" in config.target_modules


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.value)
def test_constrained_decoding_always_parses_on_random_weights(tiny_model, fmt):
    n_images = 100
    size = tiny_model.vision_encoder.image_size
    crops = torch.randint(0, 256, (n_images, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    texts = []
    for start in range(0, n_images, 25):
        texts += generate_answers(tiny_model, crops[start:start + 25], [fmt] * len(crops[start:start + 25]))
    values = [parse_answer(t, fmt, len(tiny_model.au_set)) for t in texts]  # raises on any unparsable answer
    assert len(values) == n_images
    assert all(v.min() >= 0 and v.max() <= fmt.max_value for v in values)


def test_mixed_formats_in_one_batch(tiny_model):
    size = tiny_model.vision_encoder.image_size
    crops = torch.zeros((3, size, size, 3), dtype=torch.uint8)
    texts = generate_answers(tiny_model, crops, list(ALL_FORMATS))
    for text, fmt in zip(texts, ALL_FORMATS):
        assert len(parse_answer(text, fmt, len(tiny_model.au_set))) == len(tiny_model.au_set)


def test_invalid_tuning_mode_is_rejected(char_tokenizer_dir):
    config = tiny_model_config(char_tokenizer_dir)
    with pytest.raises(ValueError, match="tuning.llm"):
        config.tuning = {"vision": "lora", "llm": "partial"}
        AuLlavaModel(config)


@pytest.mark.parametrize("field,value,message", [
    ("probability_temperature", {"binary": 0}, "probability_temperature.binary must be a number > 0"),
    ("probability_temperature", {"yes/no": 1.0}, "unknown format 'yes/no'"),
    ("probability_bias", {"discrete": 0.3}, "only 'binary' takes a bias"),
    ("probability_bias", {"binary": float("nan")}, "probability_bias.binary must be a finite number"),
])
def test_probability_calibration_settings_are_checked(char_tokenizer_dir, field, value, message):
    data = tiny_model_config(char_tokenizer_dir).to_dict()
    data[field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        AuLlavaConfig.from_dict(data)


def test_full_tuning_saves_the_tuned_part(char_tokenizer_dir, tmp_path):
    config = tiny_model_config(char_tokenizer_dir)
    config.tuning = {"vision": "lora", "llm": "full"}
    model = AuLlavaModel(config)
    assert all(p.requires_grad for p in model.language_model.parameters())
    with torch.no_grad():
        model.language_model.get_input_embeddings().weight.add_(1.0)
    model.save_pretrained(tmp_path / "full")
    reloaded = AuLlavaModel.from_pretrained(tmp_path / "full")
    assert torch.equal(reloaded.language_model.get_input_embeddings().weight,
                       model.language_model.get_input_embeddings().weight)


def _reference_answers(model, crops, formats):
    """The plain way: `generate()` over the whole left-padded prompt, no shared prefix cache."""
    from aullava.model.decoding import AnswerConstraint, max_answer_tokens

    examples = [model.processor.encode_example(f) for f in formats]
    length = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), length), model.tokenizer.pad_token_id)
    attention, image_mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, length - n:], attention[row, length - n:] = torch.tensor(e["input_ids"]), 1
        image_mask[row, length - n:] = torch.tensor(e["image_mask"])
    constraint = AnswerConstraint(model.tokenizer, [AnswerFormat.parse(f) for f in formats], len(model.au_set),
                                  model.tokenizer.eos_token_id)
    with torch.no_grad():
        out = model.language_model.generate(
            inputs_embeds=model.embed(crops, ids, image_mask), attention_mask=attention, do_sample=False,
            max_new_tokens=max_answer_tokens(len(model.au_set)), logits_processor=[constraint],
            eos_token_id=model.tokenizer.eos_token_id, pad_token_id=model.tokenizer.pad_token_id)
    return [constraint.answer_text(row.tolist()) for row in out]


def test_shared_prefix_cache_gives_the_same_answers_as_plain_generate(tiny_model):
    with torch.no_grad():  # a non-trivial LoRA so the comparison covers adapted layers too
        for name, param in tiny_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    size = tiny_model.vision_encoder.image_size
    crops = torch.randint(0, 256, (6, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    formats = ["binary", "discrete", "continuous", "continuous", "binary", "discrete"]
    assert generate_answers(tiny_model, crops, formats) == _reference_answers(tiny_model, crops, formats)


def test_shared_prefix_training_batch_gives_the_same_loss(tiny_model):
    """The prefix-sharing collator + forward compute the same loss and answer logits as full sequences."""
    data = PatternFaces(len(tiny_model.au_set), 4, tiny_model.vision_encoder.image_size, seed=5)
    features = [{"image": data[i]["image"], "format": fmt, "values": data[i]["targets"][fmt], "mask": None}
                for i, fmt in enumerate(["binary", "discrete", "continuous", "continuous"])]
    full = AuLlavaCollator(tiny_model)(features)
    shared = AuLlavaCollator(tiny_model, share_prefix=True)(features)
    befores = [tiny_model.processor.prompt_ids(f)[0] for f in ("binary", "discrete", "continuous")]
    prefix = common_prefix(befores)
    assert shared["prefix_ids"].tolist() == [prefix]
    assert all(b[:len(prefix)] == prefix for b in befores) and len({b[len(prefix)] for b in befores}) > 1
    assert shared["input_ids"].shape[1] == full["input_ids"].shape[1] - len(prefix)
    with torch.no_grad():
        a, b = tiny_model(**full), tiny_model(**shared)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-4)
    assert a["loss"].item() == pytest.approx(b["loss"].item(), abs=1e-5)


def test_rows_asking_different_au_sets_are_not_shared(tiny_model):
    from aullava.aus.catalogue import au_set

    data = PatternFaces(len(tiny_model.au_set), 2, tiny_model.vision_encoder.image_size)
    other = au_set(["AU1", "AU2"])
    features = [{"image": data[0]["image"], "format": "binary", "values": data[0]["targets"]["binary"]},
                {"image": data[1]["image"], "format": "binary", "values": [1, 0], "au_set": other}]
    assert "prefix_ids" not in AuLlavaCollator(tiny_model, share_prefix=True)(features)


def test_answer_vocabulary_loss_is_the_constrained_objective(char_tokenizer_dir):
    """loss_vocabulary 'answer' = cross-entropy of the answer tokens renormalised over what decoding may emit."""
    torch.manual_seed(0)
    config = tiny_model_config(char_tokenizer_dir)
    model = AuLlavaModel(config).eval()
    batch = _batch(model, ["binary", "continuous"])
    with torch.no_grad():
        full = model(**batch)
        model.config.loss_vocabulary = "answer"
        restricted = model(**batch)
    vocabulary, _ = model.processor.answer_vocabulary_ids()
    keep = batch["labels"][:, 1:] != -100
    targets = batch["labels"][:, 1:][keep]
    expected = torch.nn.functional.cross_entropy(full["logits"][:, vocabulary],
                                                 torch.searchsorted(vocabulary, targets))
    assert restricted["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert restricted["logits"].shape[-1] == len(vocabulary) < full["logits"].shape[-1]


def test_present_weight_weights_the_tokens_of_present_values(char_tokenizer_dir):
    """The class-balanced loss: every answer token of a present AU gets `present_weight`, the rest 1, and the weighted
    loss is the weighted mean of per-token cross-entropies (a weight of 1 gives the plain mean)."""
    config = tiny_model_config(char_tokenizer_dir, au_set=["AU1", "AU2", "AU4"])
    config.present_weight = 3.0
    model = AuLlavaModel(config)
    example = model.processor.encode_example("continuous", [0.35, 0.0, 1.0], [True, True, False])
    supervised = [i for i, label in enumerate(example["labels"]) if label != -100]
    chars = [model.tokenizer.decode([example["labels"][i]]) for i in supervised[:-1]] + ["EOS"]
    assert chars == list("[0.35, 0.00, ]") + ["EOS"]  # the unlabelled AU4 is written as 0, not supervised
    weights = [example["label_weights"][i] for i in supervised]
    assert weights == [1.0] + [3.0] * 4 + [1.0] * 10

    size = model.vision_encoder.image_size
    crops = np.zeros((size, size, 3), dtype=np.uint8)
    features = [{"image": crops, "format": "binary", "values": np.array(v, dtype=float), "mask": None}
                for v in ([1, 0, 1], [0, 0, 0])]
    batch = AuLlavaCollator(model)(features)
    model.eval()  # no stochastic depth: the three losses see the same network
    out = model(**batch)
    plain = model(**{k: v for k, v in batch.items() if k != "label_weights"})
    assert not torch.isclose(out["loss"], plain["loss"])
    ones = model(**{**batch, "label_weights": (batch["label_weights"] > 0).float()})
    assert torch.isclose(ones["loss"], plain["loss"], rtol=1e-5)  # equal up to the order of the float sums


def test_llm_layers_limits_lora_to_those_layers(char_tokenizer_dir, tmp_path):
    config = tiny_model_config(char_tokenizer_dir)
    config.lora = {**config.lora.to_dict(), "llm_targets": ["q_proj", "down_proj"], "llm_layers": [1]}
    model = AuLlavaModel(config)
    llm = [n for n in model.lora_module_names() if n.startswith("language_model.")]
    assert sorted(n.split("layers.")[1] for n in llm) == ["1.mlp.down_proj", "1.self_attn.q_proj"]
    assert any(n.startswith("vision_encoder.") for n in model.lora_module_names())
    model.save_pretrained(tmp_path)
    assert AuLlavaModel.from_pretrained(tmp_path).lora_module_names() == model.lora_module_names()
