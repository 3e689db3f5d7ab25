"""A model's checkpoint directory: writing it, reading its config, and reading its tensor files so that a damaged
checkpoint never loads as a trained model (the files are listed in `aullava.model.modeling`'s docstring).

`safetensors.load_file` happily returns a file's 27 of 110 tensors, and peft and `load_state_dict(strict=False)`
ignore what is missing, so a half-copied or truncated checkpoint would give quietly different AU values. Here every
expected tensor must be present with its shape, and a file that cannot be read is one line naming it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from safetensors.torch import save_file

from aullava.model.config import AuLlavaConfig
from aullava.model.prompts import TEMPLATE_VERSIONS

CONFIG_NAME = "config.json"
PROJECTOR_NAME = "projector.safetensors"
GEOMETRY_NAME = "geometry.safetensors"
GEOMETRY_PREFIXES = ("geometry_encoder.", "geometry_projector.")
BASE_NAME = "base_model.safetensors"
ADAPTER_NAME = "adapter_model.safetensors"


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


def full_weight_prefixes(model) -> list[str]:
    """Parts whose every weight goes into the checkpoint: built with random init (nothing to reload them from), or
    tuned in full."""
    prefixes = []
    if model.config.llm.config is not None or model.config.tuning.llm == "full":
        prefixes.append("language_model.")
    vision = model.config.vision
    if (vision.config is not None or model.config.tuning.vision == "full"
            or (vision.type == "efficientnet-lite0" and not vision.pretrained)):
        prefixes.append("vision_encoder.")
    return prefixes


def save(model, out: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Writes `model`'s checkpoint directory: projector, geometry stream, LoRA adapter (peft's files), the full
    weights of parts nothing pretrained can rebuild, a config-built tokenizer, and config.json."""
    out.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config = model.config.to_dict()
    save_file({k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")},
              str(out / PROJECTOR_NAME))
    if model.wants_geometry:
        save_file({k: v for k, v in state.items() if k.startswith(GEOMETRY_PREFIXES)}, str(out / GEOMETRY_NAME))
    if model.lora_config is not None:
        from peft import get_peft_model_state_dict

        adapter = get_peft_model_state_dict(model, state_dict=state)
        save_file({k: v.contiguous() for k, v in adapter.items()}, str(out / ADAPTER_NAME))
        model.lora_config.save_pretrained(str(out))
    random_parts = full_weight_prefixes(model)
    if random_parts:
        base = {k: v for k, v in state.items() if k.startswith(tuple(random_parts)) and "lora_" not in k}
        save_file(_untie(base), str(out / BASE_NAME))
    if model.config.llm.config is not None:
        model.tokenizer.save_pretrained(str(out / "tokenizer"))
        config["llm"] = {**config["llm"], "tokenizer": "tokenizer"}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))


def read_config(directory: Path) -> AuLlavaConfig:
    """A checkpoint's config.json as a checked `AuLlavaConfig`; one line naming the file when it cannot be."""
    if not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{directory}: not an aullava checkpoint (no {CONFIG_NAME})")
    try:
        data = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory / CONFIG_NAME}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{directory / CONFIG_NAME}: expected a JSON object of model settings, "
                              f"found {type(data).__name__}")
    config = AuLlavaConfig.from_dict(data, where=str(directory / CONFIG_NAME))
    if config.template_version not in TEMPLATE_VERSIONS:
        raise ValueError(f"{directory}: trained with prompt template {config.template_version!r}, "
                         f"this aullava speaks {', '.join(TEMPLATE_VERSIONS)}")
    return config


def expected_tensors(model) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per checkpoint file, the tensor names and shapes a checkpoint of `model` must hold."""
    expected = {PROJECTOR_NAME: {k: tuple(v.shape) for k, v in model.projector.state_dict().items()}}
    if model.wants_geometry:
        expected[GEOMETRY_NAME] = {k: tuple(v.shape) for k, v in model.state_dict().items()
                                   if k.startswith(GEOMETRY_PREFIXES)}
    if model.lora_config is not None:
        from peft import get_peft_model_state_dict

        expected[ADAPTER_NAME] = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items()}
    prefixes = tuple(full_weight_prefixes(model))
    if prefixes:
        expected[BASE_NAME] = {k: tuple(v.shape) for k, v in model.state_dict().items()
                               if k.startswith(prefixes) and "lora_" not in k}
    return expected


def read_checked(model, directory: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every tensor file of a checkpoint, checked against `expected_tensors` (CheckpointError otherwise)."""
    files = {}
    for name, expected in expected_tensors(model).items():
        files[name] = read_tensors(directory / name)
        check_tensors(directory / name, files[name], expected)
    return files


def load_parts(model, directory: Path, keep: Callable[[str], bool], projector: bool = True) -> None:
    """Loads into `model`, after checking the whole checkpoint: its projector (unless not `projector`) and those of
    its other tensors whose names `keep` accepts."""
    files = read_checked(model, directory)
    if projector:
        model.projector.load_state_dict(files[PROJECTOR_NAME])
    for name in (BASE_NAME, GEOMETRY_NAME):
        if name in files:
            _, unexpected = model.load_state_dict({k: v for k, v in files[name].items() if keep(k)}, strict=False)
            if unexpected:
                raise ValueError(f"{directory / name}: unexpected weights {unexpected[:5]}")
    if model.lora_config is not None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, {k: v for k, v in files[ADAPTER_NAME].items() if keep(k)})
        if result.unexpected_keys:
            raise ValueError(f"{directory / ADAPTER_NAME}: unexpected LoRA weights {result.unexpected_keys[:5]}")


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): store each tensor once, as its own copy."""
    seen: dict[int, str] = {}
    out = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.setdefault(ptr, key)
    return out
