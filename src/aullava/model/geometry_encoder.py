"""The geometry stream: a face's landmarks and blendshapes (`aullava.faces.geometry_features`) → a few LLM tokens.

Beyond the AU-LLaVA paper, and off by default (`model.geometry.enabled`), so the paper's model and the shipped
default stay what they were. Why: AUs are geometry first (brow, lid, lip-corner and jaw movements), MediaPipe
measures that geometry for every detected face anyway, and the synthetic warps' labels are exact for exactly it; the
pixels keep what geometry misses (teeth, wrinkles, furrows).

How later face MLLMs inject geometry, and what is taken from them:
- EmoLA (arXiv 2404.05052) adds a *facial prior expert*: face-structure (landmark) features from a landmark model,
  projected by their own projector into extra tokens that enter the LLM beside the visual tokens; LoRA adapts the
  LLM to read them.
- Face-LLaVA (arXiv 2504.07198) instead groups landmarks by face region (FRLP: per-region landmark projector) and
  lets the visual tokens cross-attend to those region tokens inside the encoder (FRGCA), so geometry modulates the
  visual tokens and the LLM sees no extra ones.
- Here, EmoLA's route: a separate stream of `num_tokens` tokens with its own projector, placed right after the image
  tokens. It leaves the vision tower untouched (the paper-size CLIP setting stays the paper's, and the encoder's
  LoRA and vision stage are unchanged), costs a handful of LLM positions, and its ablation is a config switch.
  Cross-attention inside the encoder would need an encoder change per tower type; the token budget on a CPU favours
  4 tokens over re-weighting 16–576 visual ones.

The encoder is an MLP over the whole (selected) feature vector → `num_tokens` × `hidden_size`: every AU involves
several regions at once (AU12 moves lip corners and cheeks), so one shared first layer sees them all; the tokens
then split what it found. It is trained in full, like the projector.
"""

from __future__ import annotations

import torch
from torch import nn

from aullava.faces.geometry_features import FEATURE_SIZE, LANDMARK_FEATURES
from aullava.model.config import GeometryConfig

# the crop-frame landmarks span about ±0.35 crop units and move by ~0.01 for a subtle AU; scaled to ~unit range
LANDMARK_SCALE = 4.0


class GeometryEncoder(nn.Module):
    """(B, FEATURE_SIZE) geometry vectors → (B, num_tokens, hidden_size) geometry tokens."""

    def __init__(self, spec: GeometryConfig):
        super().__init__()
        self.use_landmarks, self.use_blendshapes = spec.use_landmarks, spec.use_blendshapes
        self.num_tokens, self.hidden_size = spec.num_tokens, spec.hidden_size
        inputs = (LANDMARK_FEATURES if spec.use_landmarks else 0) + \
            (FEATURE_SIZE - LANDMARK_FEATURES if spec.use_blendshapes else 0)
        self.mlp = nn.Sequential(
            nn.Linear(inputs, spec.hidden_size), nn.GELU(), nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden_size, spec.num_tokens * spec.hidden_size), nn.LayerNorm(
                spec.num_tokens * spec.hidden_size))

    def select(self, geometry: torch.Tensor) -> torch.Tensor:
        """The parts of the geometry vector this encoder reads, landmarks rescaled."""
        if geometry.dim() != 2 or geometry.shape[1] != FEATURE_SIZE:
            raise ValueError(f"expected face geometry of shape (faces, {FEATURE_SIZE}), got {tuple(geometry.shape)}")
        parts = []
        if self.use_landmarks:
            parts.append(geometry[:, :LANDMARK_FEATURES] * LANDMARK_SCALE)
        if self.use_blendshapes:
            parts.append(geometry[:, LANDMARK_FEATURES:])
        return torch.cat(parts, dim=1)

    def forward(self, geometry: torch.Tensor) -> torch.Tensor:
        x = self.select(geometry.float()).to(self.mlp[0].weight.dtype)
        return self.mlp(x).view(geometry.shape[0], self.num_tokens, self.hidden_size)
