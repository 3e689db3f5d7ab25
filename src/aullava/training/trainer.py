"""The stock Hugging Face `Trainer`, saving and resuming aullava's small checkpoint directories, and the collator
that hands its batches to the processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from aullava.model.modeling import AuLlavaModel


class AuLlavaCollator:
    """Batches for `Trainer`: the processor lays them out (`AuLlavaProcessor.collate`); `share_prefix` sends a
    description shared by every row once."""

    def __init__(self, model: AuLlavaModel, share_prefix: bool = False):
        self.processor = model.processor
        self.share_prefix = share_prefix

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.processor.collate(features, share_prefix=self.share_prefix)


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
