"""An optional linear draft head: a guess of a face's binary answer from its tokens, for the exact parallel readout
to start from.

Why: the exact readout (`aullava.model.decoding.parallel`) verifies a whole guessed answer in one pass and corrects
it at the first wrong value, so its cost is the number of passes, and a pass is most of the time on a CPU. From
the all-absent guess the shipped model needed ~3 passes per binary answer; a guess that is usually right takes
one. The guess never changes an answer: every value is still the LLM's constrained greedy choice (the parallel
decoder's tests hold with any draft), only how many passes it takes to find them.

The head is logistic regression on the mean of the face's projected tokens (what the LLM reads), fitted to the
model's own binary answers (`scripts/fit_draft_head.py`), stored as `draft_head.safetensors` beside the checkpoint
and loaded with it when present. A model without it drafts all-absent, as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

DRAFT_HEAD_NAME = "draft_head.safetensors"


class DraftHead(torch.nn.Module):
    """(faces, tokens, hidden) LLM input embeddings → (faces, AUs) logits of p(present)."""

    def __init__(self, hidden_size: int, num_aus: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, num_aus)

    @staticmethod
    def features(embeds: torch.Tensor) -> torch.Tensor:
        """The face's tokens pooled: their mean, in float32."""
        return embeds.float().mean(dim=1)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(embeds).to(self.linear.weight.dtype))

    @torch.no_grad()
    def draft(self, embeds: torch.Tensor) -> list[np.ndarray]:
        """One 0/1 vector per face: the guessed binary answer."""
        return list((self(embeds) > 0).float().cpu().numpy())

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / DRAFT_HEAD_NAME
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path))
        return path


def load_draft_head(directory: str | Path, hidden_size: int, num_aus: int) -> DraftHead | None:
    """The checkpoint's draft head, or None when it has none. One whose shape does not fit the model (another AU
    set or LLM) is refused naming the file."""
    path = Path(directory) / DRAFT_HEAD_NAME
    if not path.is_file():
        return None
    state = load_file(str(path))
    head = DraftHead(hidden_size, num_aus)
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise ValueError(f"{path}: a draft head for another model (tensors {found}, this model needs {expected})")
    head.load_state_dict(state)
    return head.eval()
