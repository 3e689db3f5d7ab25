"""Reading a transformers LLaVA directory (what `LlavaForConditionalGeneration.save_pretrained` writes, e.g. the
llava-hf checkpoints) as aullava parts: its vision tower, its language model with LM head and tokenizer, and its
projector when aullava's projector can hold it exactly.

A recipe names the directory once (`model.from_llava: DIR`); `expand_from_llava` turns that into the `vision` and
`llm` specs ({type: hf, llava: DIR, select_layer: the LLaVA's vision_feature_layer} and {llava: DIR}), so saved
aullava checkpoints reference the LLaVA directory instead of copying its weights. The directory is read once per
process even though two parts come from it.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def read_llava_config(directory: str | Path):
    from transformers import AutoConfig

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: not a LLaVA directory (no config.json)")
    config = AutoConfig.from_pretrained(str(directory))
    if config.model_type != "llava":
        raise ValueError(f"{directory}: model_type {config.model_type!r}, expected 'llava' (a transformers "
                         "LlavaForConditionalGeneration directory)")
    return config


@lru_cache(maxsize=1)
def _load(directory: str):
    from transformers import LlavaForConditionalGeneration
    from transformers.utils import logging as hf_logging

    read_llava_config(directory)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load report / progress noise for the user
    try:
        return LlavaForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()
    finally:
        hf_logging.set_verbosity(verbosity)


def load_llava(directory: str | Path):
    return _load(str(Path(directory).resolve()))


def llava_vision_tower(directory: str | Path) -> nn.Module:
    """The LLaVA's vision tower (a `CLIPVisionModel` / `SiglipVisionModel`), weights included."""
    return load_llava(directory).model.vision_tower


def llava_language_model(directory: str | Path) -> tuple[nn.Module, Any]:
    """The LLaVA's language model as an `AutoModelForCausalLM` (its decoder and LM head, no copy) and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llava = load_llava(directory)
    with torch.device("meta"):  # only the wrapper: its two parts are the LLaVA's own modules
        model = AutoModelForCausalLM.from_config(llava.config.text_config)
    model.model = llava.model.language_model
    model.lm_head = llava.lm_head
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ValueError(f"{directory}: {type(model).__name__} has parts beyond a decoder and an LM head; "
                         "start from the LLaVA's language model saved on its own instead")
    model.generation_config = llava.generation_config
    return model, AutoTokenizer.from_pretrained(str(directory))


def expand_from_llava(model_spec: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """`from_llava: DIR` in a recipe's `model:` section → vision and LLM specs reading DIR; returns (spec, DIR).
    Explicit `vision` / `llm` entries next to it are an error: they would silently lose."""
    spec = dict(model_spec)
    directory = spec.pop("from_llava", None)
    if directory is None:
        return spec, None
    both = [k for k in ("vision", "llm") if k in spec]
    if both:
        raise ValueError(f"model.from_llava sets the vision tower and the LLM; remove model.{' and model.'.join(both)}")
    config = read_llava_config(directory)
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"{directory}: vision_feature_layer {layer} concatenates several layers; aullava reads one")
    spec["vision"] = {"type": "hf", "llava": str(directory), "select_layer": layer}
    spec["llm"] = {"llava": str(directory)}
    return spec, str(directory)


def init_projector_from_llava(projector: nn.Module, directory: str | Path) -> tuple[bool, str]:
    """Copies the LLaVA's projector into aullava's when it can be held exactly, else leaves it as initialised.
    `mlp2x_gelu` takes a GELU projector as it is; `linear` takes a projector whose activation is `linear` as the
    product of its two layers (what `export-llava` writes). Returns (taken, a line saying what happened)."""
    llava = load_llava(directory)
    source = llava.model.multi_modal_projector
    act = llava.config.projector_hidden_act
    first, second = source.linear_1, source.linear_2
    if isinstance(projector, nn.Sequential) and isinstance(projector[1], nn.GELU):
        if act != "gelu" or projector[0].weight.shape != first.weight.shape:
            return False, (f"projector not taken from {directory} (its activation {act!r} or shape differs); "
                           "trained fresh")
        with torch.no_grad():
            for mine, theirs in ((projector[0], first), (projector[2], second)):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias if theirs.bias is not None else torch.zeros_like(mine.bias))
        return True, f"projector (2 layers, GELU) taken from {directory}"
    if isinstance(projector, nn.Linear):
        if act != "linear" or projector.weight.shape != (second.out_features, first.in_features):
            return False, (f"projector not taken from {directory}: its activation is {act!r} (a linear projector "
                           "holds only a 'linear' one exactly); use projector: mlp2x_gelu to start from it; trained "
                           "fresh")
        with torch.no_grad():
            b1 = first.bias if first.bias is not None else torch.zeros(first.out_features)
            b2 = second.bias if second.bias is not None else torch.zeros(second.out_features)
            projector.weight.copy_(second.weight @ first.weight)
            projector.bias.copy_(second.weight @ b1 + b2)
        return True, f"projector (linear, the product of its two layers) taken from {directory}"
    return False, f"projector not taken from {directory}: unknown projector type {type(projector).__name__}"
