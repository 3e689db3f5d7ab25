"""One rank of the multi-process training test (tests/training/test_distributed.py), started by `torchrun`.

Trains the tiny CLIP + LLaMA recipe with `aullava.training.train` (the code path `aullava train` uses) and records,
per rank, what the test asserts on: the dataset items this rank loaded, in order; which checkpoints this rank wrote;
its trainable weights at the end; and (rank 0) the loss history. Recording wraps the real methods, it changes
nothing they do."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from aullava.datasets import FormatExpanded
from aullava.model.modeling import AuLlavaModel
from aullava.training.recipe import train
from conftest import tiny_model_config

AUS = ["AU1", "AU2", "AU4", "AU6"]


def recipe(tokenizer_dir: str, output_dir: str, max_steps: int, batch_size: int, save_steps: int) -> dict:
    config = tiny_model_config(Path(tokenizer_dir), vision="clip", llm="llama", au_set=AUS)
    config.tuning = {"vision": "lora", "llm": "full"}
    config.present_weight = 2.0  # weighted answer tokens: the loss normaliser must be the global batch's too
    return {
        "model": asdict(config),
        # 12 images × 2 formats = 24 items: 3 steps of 8 per epoch
        "data": {"train": {"type": "patterns", "num_samples": 12, "seed": 0}, "formats": ["binary", "continuous"],
                 "share_prefix": True},
        "training": {"output_dir": output_dir, "per_device_train_batch_size": batch_size, "learning_rate": 1e-3,
                     "lr_scheduler_type": "constant", "max_steps": max_steps, "save_steps": save_steps,
                     "logging_steps": 1, "use_cpu": True, "disable_tqdm": True, "seed": 0,
                     "dataloader_num_workers": 0},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--save-steps", type=int, default=3)
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", 0))
    record = Path(args.record)
    record.mkdir(parents=True, exist_ok=True)

    seen: list[int] = []
    get_item = FormatExpanded.__getitem__

    def recording_get_item(self, index):
        seen.append(int(index))
        return get_item(self, index)

    saves: list[str] = []
    save = AuLlavaModel.save_pretrained

    def recording_save(self, directory, *a, **k):
        saves.append(Path(directory).name)
        return save(self, directory, *a, **k)

    FormatExpanded.__getitem__ = recording_get_item
    AuLlavaModel.save_pretrained = recording_save
    trainer = train(recipe(args.tokenizer, args.out, args.max_steps, args.batch_size, args.save_steps))
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(record / f"weights-rank{rank}.safetensors"))
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    (record / f"rank{rank}.json").write_text(json.dumps({
        "seen": seen, "saves": saves, "losses": losses, "global_step": trainer.state.global_step,
        "world_size": trainer.args.world_size, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
