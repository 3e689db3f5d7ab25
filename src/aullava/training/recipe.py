"""Training recipe: YAML config → model + data → Hugging Face `Trainer`.

Because the loop is the stock `Trainer`, `accelerate launch` with DeepSpeed/FSDP, mixed precision, gradient
accumulation, logging and resuming all come by configuration (the `training:` block is `TrainingArguments`).
A recipe is checked whole before anything is built: an unknown key in any section is an error naming the key and the
closest valid name, so a typo never trains the defaults (or fails only after the model was loaded).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from aullava.datasets import FormatExpanded, build_dataset
from aullava.model.llava_checkpoint import expand_from_llava, init_projector_from_llava
from aullava.model.config import AuLlavaConfig, check_keys
from aullava.model.modeling import CONFIG_NAME, AuLlavaModel
from aullava.training.augment import AugmentConfig, AugmentedFaces
from aullava.training.present_weights import apply_balanced_weights, split_present_weight
from aullava.training.trainer import AuLlavaCollator, AuLlavaTrainer

log = logging.getLogger(__name__)

SECTIONS = ("model", "data", "vision_stage", "llm_stage", "training")
DATA_KEYS = ("train", "eval", "formats", "share_prefix", "crop_cache", "preprocess_workers", "augment")
VISION_STAGE_KEYS = ("steps", "batch_size", "learning_rate", "freeze", "from", "invariance")
INVARIANCE_KEYS = ("steps", "batch_size", "learning_rate")
LLM_STAGE_KEYS = ("from",)
# old spelling → new: read with a deprecation note (`warmup:` was easy to confuse with `training.warmup_steps`)
RENAMED_SECTIONS = {"warmup": "vision_stage"}
VISION_STAGE_DIR = "vision-warmup"  # where a run keeps the vision stage's result (name kept: runs resume from it)
FREEZABLE = ("vision", "projector", "geometry")  # geometry: the geometry stream (encoder and its projector)


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """YAML recipe with `a.b.c=value` overrides (values parsed as YAML, so numbers and lists work), checked."""
    recipe: Any = {}
    if path:
        try:
            recipe = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ValueError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
        if recipe is None:
            raise ValueError(f"{path}: the recipe is empty (expected sections {', '.join(SECTIONS)})")
        if not isinstance(recipe, dict):
            raise ValueError(f"{path}: a recipe is a mapping of sections ({', '.join(SECTIONS)}), "
                             f"got {type(recipe).__name__}")
    recipe = copy.deepcopy(recipe)
    for item in overrides:
        _apply_override(recipe, item)
    return check_recipe(_numbers(recipe))


def _apply_override(recipe: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ValueError(f"--set {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    node = recipe
    *parents, leaf = key.split(".")
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {item}: {'.'.join(parents[:depth + 1])} is {node!r}, not a section with keys")
    node[leaf] = yaml.safe_load(raw)


def check_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Every section and key known (renamed sections read with a note); returns the recipe with all sections."""
    recipe = dict(recipe)
    for old, new in RENAMED_SECTIONS.items():
        if old in recipe:
            if new in recipe:
                raise ValueError(f"recipe: both {old!r} and {new!r}; {old!r} is the old name of {new!r}, keep one")
            log.warning("recipe: section %r is now called %r; reading it as such", old, new)
            recipe[new] = recipe.pop(old)
    check_keys(recipe, SECTIONS, "recipe")
    for section in ("model", "data", "training"):
        recipe[section] = recipe.get(section) or {}
    model_spec = split_present_weight(expand_from_llava(recipe["model"])[0])[0]
    AuLlavaConfig.from_dict(model_spec)  # strict, before anything is built
    check_keys(recipe["data"], DATA_KEYS, "data")
    augment = AugmentConfig.from_spec(recipe["data"].get("augment"))
    if recipe.get("llm_stage"):
        check_keys(recipe["llm_stage"], LLM_STAGE_KEYS, "llm_stage")
        source = recipe["llm_stage"].get("from")
        if source is not None and not (Path(source) / CONFIG_NAME).is_file():
            raise ValueError(f"llm_stage.from: {source} is not a model directory (no {CONFIG_NAME})")
    if recipe.get("vision_stage"):
        check_keys(recipe["vision_stage"], VISION_STAGE_KEYS, "vision_stage")
        unknown = set(recipe["vision_stage"].get("freeze") or []) - set(FREEZABLE)
        if unknown:
            raise ValueError(f"vision_stage.freeze: unknown parts {sorted(unknown)}; expected some of {FREEZABLE}")
        invariance = recipe["vision_stage"].get("invariance")
        if invariance is not None:
            check_keys(invariance, INVARIANCE_KEYS, "vision_stage.invariance")
            if augment is None:
                raise ValueError("vision_stage.invariance trains the image side against perturbed crops: "
                                 "set data.augment (true, or its settings)")
        source = recipe["vision_stage"].get("from")
        if source is not None:
            if recipe["vision_stage"].get("steps"):
                raise ValueError("vision_stage: 'from' takes a trained image side instead of warming up; "
                                 "drop 'steps' or 'from'")
            if not (Path(source) / CONFIG_NAME).is_file():
                raise ValueError(f"vision_stage.from: {source} is not a model directory (no {CONFIG_NAME})")
    check_keys(recipe["training"], [f.name for f in dataclasses.fields(TrainingArguments) if f.init], "training")
    _check_training_types(recipe["training"])
    return recipe


def _check_training_types(training: dict[str, Any]) -> None:
    """`training.max_steps=abc` is an error naming the key (TrainingArguments would fail later, without it)."""
    kinds = {f.name: f.type for f in dataclasses.fields(TrainingArguments)}
    for key, value in training.items():
        kind = kinds.get(key)
        if value is None or kind not in (int, float, bool, "int", "float", "bool"):
            continue
        kind = {"int": int, "float": float, "bool": bool}.get(kind, kind)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            expected = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
            raise ValueError(f"training.{key} must be {expected}, got {value!r}")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)")


def _numbers(node: Any) -> Any:
    """YAML 1.1 reads `2e-4` as a string; recipes mean the number."""
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    return float(node) if isinstance(node, str) and _FLOAT.fullmatch(node) else node


def build_training(recipe: dict[str, Any], callbacks: list | None = None) -> AuLlavaTrainer:
    recipe = check_recipe(recipe)
    data = recipe["data"]
    if not data.get("train"):
        raise ValueError("data.train: the recipe names no training data")
    args = TrainingArguments(**{"remove_unused_columns": False, "report_to": [], **recipe["training"]})
    torch.manual_seed(args.seed)
    model_spec, llava_dir = expand_from_llava(recipe["model"])
    model_spec, balanced = split_present_weight(model_spec)
    model = AuLlavaModel(AuLlavaConfig.from_dict(model_spec))
    if llava_dir:  # a LLaVA-style fine-tune: its projector too, when aullava's can hold it (else trained fresh)
        taken, note = init_projector_from_llava(model.projector, llava_dir)
        (log.info if taken else log.warning)(note)
    formats = data.get("formats", model.config.formats)
    model.config.formats = list(formats)
    base = build_dataset(data["train"], num_aus=len(model.au_set), image_size=model.vision_encoder.image_size,
                         cache_root=data.get("crop_cache"), workers=data.get("preprocess_workers", 1),
                         geometry=model.wants_geometry)
    augment = AugmentConfig.from_spec(data.get("augment"))
    if augment is not None:  # both stages read perturbed crops; the invariance stage takes the clean ones below
        base = AugmentedFaces(base, augment, seed=args.seed)
    if balanced:
        weights = apply_balanced_weights(model, base)
        log.info("present weights (balanced): %s", ", ".join(f"{au} {w:g}" for au, w in weights.items()))
    log.info("trainable parameters: %s", model.trainable_parameters())
    return AuLlavaTrainer(model=model, args=args, train_dataset=FormatExpanded(base, formats),
                          data_collator=AuLlavaCollator(model, share_prefix=data.get("share_prefix", False)),
                          callbacks=callbacks)


def train(recipe: dict[str, Any], resume: bool | str = True, callbacks: list | None = None) -> AuLlavaTrainer:
    """Trains and writes the final model to `training.output_dir`; resumes from its last checkpoint if any.
    Returns the trainer (its `state.log_history` has the losses).

    A `vision_stage:` section ({steps, batch_size, learning_rate, freeze}) first runs
    `aullava.training.vision_stage.warm_up_vision` and saves its result under `<output_dir>/vision-warmup`, so a
    restarted run does not repeat it. `vision_stage.from: <model dir>` takes that model's image side instead."""
    recipe = check_recipe(recipe)
    trainer = build_training(recipe, callbacks)
    output_dir = Path(trainer.args.output_dir)
    checkpoint = None
    if resume:
        checkpoint = resume if isinstance(resume, str) else (
            last_good_checkpoint(trainer.model, output_dir) if output_dir.is_dir() else None)
    stage = recipe.get("vision_stage") or {}
    if checkpoint:
        log.warning("resuming from %s", checkpoint)
    else:
        _vision_stage(trainer, stage, output_dir / VISION_STAGE_DIR)
        source = (recipe.get("llm_stage") or {}).get("from")
        if source is not None:
            log.info("LLM stage: starting from the LLM adapter of %s", source)
            trainer.model.load_llm_side(source)
    freeze_parts(trainer.model, stage.get("freeze") or [])  # before the optimizer is built, also on resume
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))
    return trainer


def last_good_checkpoint(model: AuLlavaModel, output_dir: Path) -> str | None:
    """The newest `checkpoint-N` whose weights and Trainer state are intact: a run killed while writing its last
    checkpoint resumes from the one before, and says so."""
    from aullava.model.checkpoint import CheckpointError, trainer_state_problem

    if get_last_checkpoint(str(output_dir)) is None:
        return None
    steps = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in output_dir.glob("checkpoint-*")
                   if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit())
    for _, path in reversed(steps):
        try:
            model.read_checkpoint(path)
            problem = trainer_state_problem(path)
        except CheckpointError as err:
            problem = str(err)
        if problem is None:
            return str(path)
        log.warning("skipping damaged checkpoint %s (%s)", path, problem)
    log.warning("no intact checkpoint in %s: starting from the beginning", output_dir)
    return None


def freeze_parts(model: AuLlavaModel, parts: list[str]) -> None:
    """Keeps parts the vision stage trained fixed in the LLM stage (`vision_stage.freeze`). Their weights, LoRA
    included, stay in the model and in every checkpoint; only their gradients are off, so the backward pass stops
    at the LLM and the LLM stage spends its steps on reading the tokens rather than on moving them."""
    unknown = set(parts) - set(FREEZABLE)
    if unknown:
        raise ValueError(f"vision_stage.freeze: unknown parts {sorted(unknown)}; expected some of {FREEZABLE}")
    modules = {"vision": [model.vision_encoder], "projector": [model.projector],
               "geometry": [model.geometry_encoder, model.geometry_projector] if model.wants_geometry else []}
    for part in parts:
        for module in modules[part]:
            module.requires_grad_(False)
    if parts:
        log.info("LLM stage: %s fixed; trainable parameters: %s", ", ".join(parts), model.trainable_parameters())


def _vision_stage(trainer: AuLlavaTrainer, spec: dict[str, Any], directory: Path) -> None:
    """The image side for the LLM stage: another model's (`from`) or a warm-up (`steps`), then, with `invariance`,
    trained to give perturbed crops the clean crops' tokens. A finished stage is saved under `directory` and loaded
    from there by a restarted run (a bare `from` is simply loaded again)."""
    model = trainer.model
    invariance = spec.get("invariance") or {}
    progress = directory.with_name(directory.name + "-progress")
    if spec.get("from") is None and int(spec.get("steps", 0)) <= 0 and not invariance:
        return
    if (spec.get("from") is None or invariance) and (directory / CONFIG_NAME).is_file():
        log.info("vision stage: loading %s", directory)
        model.load_trainable(directory)
        return
    if spec.get("from") is not None:
        log.info("vision stage: the image side of %s", spec["from"])
        model.load_image_side(spec["from"])
        if not invariance:
            return
    elif int(spec.get("steps", 0)) > 0:
        from aullava.training.vision_stage import warm_up_vision

        losses, _ = warm_up_vision(model, trainer.train_dataset.base, steps=int(spec["steps"]),
                                   batch_size=int(spec.get("batch_size", 32)),
                                   learning_rate=float(spec.get("learning_rate", 1e-3)),
                                   seed=int(trainer.args.seed), progress_dir=progress,
                                   save=trainer.args.should_save)
        log.info("vision stage: loss %.4f → %.4f", np.mean(losses[:10]), np.mean(losses[-10:]))
    if invariance:
        from aullava.training.invariance_stage import train_invariance

        dataset = trainer.train_dataset.base
        losses = train_invariance(model, getattr(dataset, "base", dataset), dataset.config,
                                  steps=int(invariance.get("steps", 600)),
                                  batch_size=int(invariance.get("batch_size", 32)),
                                  learning_rate=float(invariance.get("learning_rate", 2e-4)),
                                  seed=int(trainer.args.seed))
        log.info("invariance stage: loss %.4f → %.4f", np.mean(losses[:10]), np.mean(losses[-10:]))
    if trainer.args.should_save:  # every rank runs it (same seed; DDP then syncs from rank 0); one writes
        fresh = directory.with_name(directory.name + ".tmp")  # renamed into place whole: 'config exists' = done
        shutil.rmtree(fresh, ignore_errors=True)
        model.save_pretrained(fresh)
        shutil.rmtree(directory, ignore_errors=True)  # an incomplete folder from an older, non-atomic save
        os.replace(fresh, directory)
        shutil.rmtree(progress, ignore_errors=True)
