"""Training recipe: YAML config → model + data → Hugging Face `Trainer`.

Because the loop is the stock `Trainer`, `accelerate launch` with DeepSpeed/FSDP, mixed precision, gradient
accumulation, logging and resuming all come by configuration (the `training:` block is `TrainingArguments`).
The only overrides are saving/loading checkpoints in aullava's small directory format.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from aullava.datasets import FormatExpanded, build_dataset
from aullava.model.modeling import CONFIG_NAME, AuLlavaConfig, AuLlavaModel

log = logging.getLogger(__name__)


class AuLlavaCollator:
    """Right-pads a batch; labels only on answer tokens (prompt and image positions are -100).

    `share_prefix`: when every row of a batch asks the same AU set, its description is sent once as `prefix_ids`
    and cut from the rows (see `AuLlavaModel.forward`)."""

    def __init__(self, model: AuLlavaModel, share_prefix: bool = False):
        self.model = model
        self.share_prefix = share_prefix

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [self.model.encode_example(f["format"], f["values"], f.get("mask"), f.get("au_set"))
                   for f in features]
        prefixes = {tuple(self.model.prompt_ids(f["format"], f.get("au_set"))[0]) for f in features}
        prefix = list(prefixes.pop()) if self.share_prefix and len(prefixes) == 1 else []
        if prefix:
            encoded = [{key: values[len(prefix):] for key, values in e.items()} for e in encoded]
        length = max(len(e["input_ids"]) for e in encoded)
        pad = self.model.tokenizer.pad_token_id
        weighted = self.model.config.present_weight != 1.0  # weights of 1 give the plain mean: left out
        batch = {
            "input_ids": torch.full((len(encoded), length), pad, dtype=torch.long),
            "attention_mask": torch.zeros((len(encoded), length), dtype=torch.long),
            "image_mask": torch.zeros((len(encoded), length), dtype=torch.long),
            "labels": torch.full((len(encoded), length), -100, dtype=torch.long),
        }
        if weighted:
            batch["label_weights"] = torch.zeros((len(encoded), length))
        for row, example in enumerate(encoded):
            n = len(example["input_ids"])
            batch["input_ids"][row, :n] = torch.tensor(example["input_ids"])
            batch["attention_mask"][row, :n] = 1
            batch["image_mask"][row, :n] = torch.tensor(example["image_mask"])
            batch["labels"][row, :n] = torch.tensor(example["labels"])
            if weighted:
                batch["label_weights"][row, :n] = torch.tensor(example["label_weights"])
        batch["images"] = torch.from_numpy(np.stack([f["image"] for f in features]))
        if prefix:
            batch["prefix_ids"] = torch.tensor([prefix], dtype=torch.long)
        return batch


class AuLlavaTrainer(Trainer):
    """`Trainer` that saves and resumes aullava checkpoints (config + projector + LoRA adapter)."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        model.config.trained = True
        model.save_pretrained(output_dir, state_dict=state_dict)
        (Path(output_dir) / "training_args.json").write_text(self.args.to_json_string())  # readable, not a pickle

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        (model or self.accelerator.unwrap_model(self.model)).load_trainable(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self.accelerator.unwrap_model(self.model).load_trainable(self.state.best_model_checkpoint)


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """YAML recipe with `a.b.c=value` overrides (values parsed as YAML, so numbers and lists work)."""
    recipe = yaml.safe_load(Path(path).read_text()) if path else {}
    recipe = copy.deepcopy(recipe or {})
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = recipe
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    for section in ("model", "data", "training"):
        recipe.setdefault(section, {})
    return _numbers(recipe)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)")


def _numbers(node: Any) -> Any:
    """YAML 1.1 reads `2e-4` as a string; recipes mean the number."""
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    return float(node) if isinstance(node, str) and _FLOAT.fullmatch(node) else node


def build_training(recipe: dict[str, Any], callbacks: list | None = None) -> AuLlavaTrainer:
    seed = recipe["training"].get("seed", 42)
    torch.manual_seed(seed)
    model = AuLlavaModel(AuLlavaConfig.from_dict(recipe["model"]))
    data = recipe["data"]
    formats = data.get("formats", model.config.formats)
    model.config.formats = list(formats)
    base = build_dataset(data["train"], num_aus=len(model.au_set), image_size=model.vision_encoder.image_size,
                         cache_root=data.get("crop_cache"), workers=data.get("preprocess_workers", 1))
    args = TrainingArguments(**{"remove_unused_columns": False, "report_to": [], **recipe["training"]})
    counts = model.trainable_parameters()
    log.info("trainable parameters: %s", counts)
    return AuLlavaTrainer(model=model, args=args, train_dataset=FormatExpanded(base, formats),
                          data_collator=AuLlavaCollator(model, share_prefix=data.get("share_prefix", False)),
                          callbacks=callbacks)


WARMUP_DIR = "vision-warmup"


def train(recipe: dict[str, Any], resume: bool | str = True, callbacks: list | None = None) -> AuLlavaTrainer:
    """Trains and writes the final model to `training.output_dir`; resumes from its last checkpoint if any.
    Returns the trainer (its `state.log_history` has the losses).

    A `warmup:` section ({steps, batch_size, learning_rate}) first runs `aullava.warmup.warm_up_vision` and saves
    its result under `<output_dir>/vision-warmup`, so a restarted run does not repeat it."""
    trainer = build_training(recipe, callbacks)
    output_dir = Path(trainer.args.output_dir)
    checkpoint = None
    if resume:
        checkpoint = resume if isinstance(resume, str) else (
            get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None)
    warmup = recipe.get("warmup") or {}
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    else:
        _vision_warmup(trainer, warmup, output_dir / WARMUP_DIR)
    freeze_parts(trainer.model, warmup.get("freeze") or [])  # before the optimizer is built, also on resume
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))
    return trainer


FREEZABLE = ("vision", "projector")


def freeze_parts(model: AuLlavaModel, parts: list[str]) -> None:
    """Keeps parts the vision warm-up trained fixed in the LLM stage (`warmup.freeze`). Their weights, LoRA
    included, stay in the model and in every checkpoint; only their gradients are off, so the backward pass stops
    at the LLM and the LLM stage spends its steps on reading the tokens rather than on moving them."""
    unknown = set(parts) - set(FREEZABLE)
    if unknown:
        raise ValueError(f"warmup.freeze: unknown parts {sorted(unknown)}; expected some of {FREEZABLE}")
    modules = {"vision": model.vision_encoder, "projector": model.projector}
    for part in parts:
        modules[part].requires_grad_(False)
    if parts:
        log.info("LLM stage: %s fixed; trainable parameters: %s", ", ".join(parts), model.trainable_parameters())


def _vision_warmup(trainer: AuLlavaTrainer, spec: dict[str, Any], directory: Path) -> None:
    if int(spec.get("steps", 0)) <= 0:
        return
    model = trainer.model
    if (directory / CONFIG_NAME).is_file():
        log.info("vision warm-up: loading %s", directory)
        model.load_trainable(directory)
        return
    from aullava.training.vision_stage import warm_up_vision

    losses, _ = warm_up_vision(model, trainer.train_dataset.base, steps=int(spec["steps"]),
                               batch_size=int(spec.get("batch_size", 32)),
                               learning_rate=float(spec.get("learning_rate", 1e-3)),
                               seed=int(trainer.args.seed))
    log.info("vision warm-up: loss %.4f → %.4f", np.mean(losses[:10]), np.mean(losses[-10:]))
    model.save_pretrained(directory)
