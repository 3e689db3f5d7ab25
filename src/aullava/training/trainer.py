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
        if not self.args.should_save:  # one writer (rank 0 of the main node); FSDP/DeepSpeed gathered before this
            return
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        model.config.trained = True
        model.save_pretrained(output_dir, state_dict=state_dict)
        (Path(output_dir) / "training_args.json").write_text(self.args.to_json_string())  # readable, not a pickle

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """Trainer counts the answer tokens of the global batch (across ranks and accumulation steps); with label
        weights (`present_weight`) the loss normaliser is their sum instead, gathered the same way."""
        count = super()._get_num_items_in_batch(batch_samples, device)
        if count is None or not batch_samples or "label_weights" not in batch_samples[0]:
            return count
        total = sum((b["label_weights"][:, 1:] * (b["labels"][:, 1:] != -100)).sum() for b in batch_samples)
        total = total.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        (model or self.accelerator.unwrap_model(self.model)).load_trainable(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self.accelerator.unwrap_model(self.model).load_trainable(self.state.best_model_checkpoint)
