"""Reading a checkpoint's tensor files so that a damaged checkpoint never loads as a trained model.

`safetensors.load_file` happily returns a file's 27 of 110 tensors, and peft and `load_state_dict(strict=False)`
ignore what is missing, so a half-copied or truncated checkpoint would give quietly different AU values. Here every
expected tensor must be present with its shape, and a file that cannot be read is one line naming it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping

import torch


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used; the message is one line naming the directory and the cause."""


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path.parent}: damaged checkpoint: {path.name} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"{path.parent}: damaged checkpoint: {path.name} cannot be read ({reason})") from None


def check_tensors(path: Path, found: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Every `expected` key in `found`, with its shape; else a CheckpointError naming the first bad key."""
    missing = [key for key in expected if key not in found]
    if missing:
        raise CheckpointError(f"{path.parent}: damaged checkpoint: {path.name} lacks {missing[0]} "
                              f"({len(missing)} of {len(expected)} expected tensors missing)")
    for key, shape in expected.items():
        if tuple(found[key].shape) != tuple(shape):
            raise CheckpointError(f"{path.parent}: checkpoint does not fit this model: {path.name} has {key} of shape "
                                  f"{tuple(found[key].shape)}, expected {tuple(shape)}")


def trainer_state_problem(directory: Path) -> str | None:
    """Why a Trainer checkpoint's own files (state, optimizer, scheduler, RNG) cannot be resumed from, or None."""
    state = directory / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError) as err:
        return f"{state.name} unreadable ({type(err).__name__})"
    for path in sorted(directory.glob("*.pt")) + sorted(directory.glob("*.pth")):
        try:  # torch.save writes a zip archive: a truncated one fails its CRC or central directory
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    return f"{path.name} damaged"
        except (OSError, zipfile.BadZipFile):
            return f"{path.name} truncated or damaged"
    return None
