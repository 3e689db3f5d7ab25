"""Invariance stage: make the image side give a face the same tokens whatever the camera, compression or a pixel
of framing did to it, without changing what the tokens mean.

Why: measured on the default model of 2026-12-05, a JPEG q85 re-save of a crop moved its 16 face tokens 2.9x the
mean distance between different people's tokens (one grey level of noise 0.6x), and the LLM read those moves as
expressions. Augmenting the LLM stage alone would ask the LLM to learn to ignore directions as large as those
between people. Here the image side (encoder LoRA + projector) is trained as a student of a frozen copy of itself:
the student's tokens of a perturbed crop (`aullava.training.augment`) must match the teacher's tokens of the clean
crop. The target is the teacher's own token space, so an LLM stage (or an LLM adapter) that read the teacher's
tokens still reads the student's; only what the perturbation changed is trained out.

Loss: squared distance between student and teacher tokens, divided by the batch's spread of teacher tokens around
their mean (the "how different are two faces" scale the diagnosis uses), so 1.0 means "as far as another face".
The stage is short (minutes); a killed run starts it again.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from aullava.training.augment import AugmentConfig, perturb
from aullava.training.steps import run_steps

log = logging.getLogger(__name__)


class _Pairs(Dataset):
    """(clean crop, perturbed crop) pairs of a face dataset's images."""

    def __init__(self, base: Dataset, config: AugmentConfig, seed: int):
        self.base, self.config, self.seed = base, config, seed
        self.reads = 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        clean = np.ascontiguousarray(self.base[index]["image"])
        self.reads += 1
        perturbed = perturb(clean, self.config, np.random.default_rng([self.seed, int(index), self.reads]))
        return torch.from_numpy(clean), torch.from_numpy(perturbed)


def image_tokens(model, images: torch.Tensor, encoder=None, projector=None) -> torch.Tensor:
    """Projected image tokens (B, T, D) of uint8 crops, by the model's image side or the given copy of it."""
    encoder = encoder or model.vision_encoder
    projector = projector or model.projector
    return projector(encoder(encoder.preprocess(images)))


def relative_distance(tokens: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per face, ‖tokens − reference‖ (over the whole token matrix) divided by the mean distance of the references
    from their batch mean: 1.0 is how far apart different faces of the batch are."""
    spread = (reference - reference.mean(0, keepdim=True)).flatten(1).norm(dim=1).mean().clamp(min=1e-6)
    return (tokens - reference).flatten(1).norm(dim=1) / spread


def train_invariance(model, dataset: Dataset, config: AugmentConfig, steps: int, batch_size: int = 32,
                     learning_rate: float = 2e-4, seed: int = 0, log_every: int = 20) -> list[float]:
    """Trains the model's trainable image-side weights (encoder LoRA or full, projector) for `steps` batches so
    that perturbed crops give the clean crops' tokens of the weights it started with. Returns per-step losses
    (mean squared relative distance)."""
    teacher_encoder = copy.deepcopy(model.vision_encoder).eval().requires_grad_(False)
    teacher_projector = copy.deepcopy(model.projector).eval().requires_grad_(False)
    params = [p for p in model.vision_encoder.parameters() if p.requires_grad] + \
        [p for p in model.projector.parameters() if p.requires_grad]
    if not params:
        raise ValueError("vision_stage.invariance: the image side has no trainable weights (tuning.vision frozen?)")
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(_Pairs(dataset, config, seed), batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=generator)
    if len(loader) == 0:
        raise ValueError(f"vision_stage.invariance needs at least batch_size={batch_size} samples, "
                         f"the dataset has {len(dataset)}")
    def step(batch) -> float:
        clean, perturbed = batch
        with torch.no_grad():
            target = image_tokens(model, clean, teacher_encoder, teacher_projector)
        loss = (relative_distance(image_tokens(model, perturbed), target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss.item()

    model.vision_encoder.train()
    losses = run_steps(loader, steps, step, [], "invariance", log_every)
    model.vision_encoder.eval()
    return losses
