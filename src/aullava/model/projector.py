"""Maps visual tokens into the LLM's embedding space. The paper uses one linear layer; `mlp2x_gelu` (LLaVA-1.5's
two-layer MLP) is offered for comparison. The projector is always fully trained (no LoRA)."""

from __future__ import annotations

from torch import nn

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


def build_projector(kind: str, vision_size: int, text_size: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(vision_size, text_size)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_size, text_size), nn.GELU(), nn.Linear(text_size, text_size))
    raise ValueError(f"unknown projector {kind!r}; expected one of {PROJECTOR_TYPES}")
