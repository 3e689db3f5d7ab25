"""AU-LLaVA: vision encoder → projector → causal LLM, with LoRA in both the encoder and the LLM.

Visual tokens are spliced into the LLM's input embeddings at placeholder positions (`image_mask`), as in
transformers' LLaVA. Logits are computed only where a loss or a next token is needed.

Checkpoint directory (what `save_pretrained` writes and `from_pretrained` reads):

    config.json                  AuLlavaConfig: parts, LoRA, AU set, prompt style, template version
    projector.safetensors        the fully trained projector
    adapter_config.json          peft LoRA config (encoder + LLM in one adapter)
    adapter_model.safetensors    peft LoRA weights
    base_model.safetensors       only for parts built from a config with random init (nothing pretrained to reload)
    tokenizer/                   only when the LLM was built from a config

Pretrained bases (Gemma-3-270M, EfficientNet-Lite0, a hub/local CLIP or LLaMA) are referenced, not copied, so a
trained default model is a few MB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from aullava.answer_format import ALL_FORMATS, AnswerFormat, serialize_answer
from aullava.au_catalogue import AUSet, au_set as resolve_au_set
from aullava.model.encoder import build_vision_encoder
from aullava.model.llm import build_llm, final_logits
from aullava.model.projector import build_projector
from aullava.model.prompts import TEMPLATE_VERSION, build_prompt

CONFIG_NAME = "config.json"
PROJECTOR_NAME = "projector.safetensors"
BASE_NAME = "base_model.safetensors"
ADAPTER_NAME = "adapter_model.safetensors"


def _default_lora() -> dict[str, Any]:
    # llm_layers: None puts LoRA in every decoder layer (the paper); a list of indices only there, e.g. the top
    # layers, which also stops the backward pass below the lowest one (a CPU budget)
    return {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05, "llm_targets": ["q_proj", "k_proj", "v_proj",
            "o_proj"], "llm_layers": None, "vision": True}


@dataclass
class AuLlavaConfig:
    vision: dict[str, Any] = field(default_factory=lambda: {"type": "efficientnet-lite0", "token_grid": 7})
    llm: dict[str, Any] = field(default_factory=lambda: {"name_or_path": "gemma-3-270m"})
    projector: str = "linear"
    lora: dict[str, Any] = field(default_factory=_default_lora)
    au_set: Any = "default"  # a built-in name, a YAML path, an id list, or AUSet.to_dict() (what is saved)
    prompt_style: str = "full"
    template_version: str = TEMPLATE_VERSION
    formats: list[str] = field(default_factory=lambda: [f.value for f in ALL_FORMATS])
    # per part: "lora" (the paper), "full" (every weight trained and saved) or "frozen"
    tuning: dict[str, str] = field(default_factory=lambda: {"vision": "lora", "llm": "lora"})
    # "full": the LM loss over the whole vocabulary (the paper); "answer": only over the tokens an answer can use
    # (what constrained decoding allows), which makes the loss the exact objective of decoding and is far cheaper
    # with a large vocabulary (Gemma: 262k entries, ~115 of them answer tokens)
    loss_vocabulary: str = "full"
    # loss weight of the answer tokens of present AUs (value > 0) against 1 for the rest: a class-balanced loss,
    # as AU detectors use against ~85 % absent labels; without it an LLM first learns to answer "absent" everywhere
    present_weight: float = 1.0
    trained: bool = False  # set by training; `predict` warns when a model never was
    model_type: str = "aullava"

    def resolved_au_set(self) -> AUSet:
        return AUSet.from_dict(self.au_set) if isinstance(self.au_set, dict) else resolve_au_set(self.au_set)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["au_set"] = self.resolved_au_set().to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AuLlavaConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        defaults = cls()
        for key in ("lora", "tuning"):  # a recipe may set only some keys, e.g. `lora: {r: 8}`
            if key in known:
                known[key] = {**getattr(defaults, key), **known[key]}
        return cls(**known)


def _lora_target_regex(config: AuLlavaConfig, vision_pattern: str) -> str:
    lora = config.lora
    parts = []
    if lora.get("llm_targets") and config.tuning.get("llm", "lora") == "lora":
        layers = lora.get("llm_layers")  # None: every decoder layer; else the indices that get LoRA
        within = r"layers\.(?:" + "|".join(str(int(i)) for i in layers) + r")\..*" if layers else ""
        parts.append(r"language_model\..*\." + within + "(?:" + "|".join(lora["llm_targets"]) + ")")
    if lora.get("vision", True) and config.tuning.get("vision", "lora") == "lora":
        parts.append(r"vision_encoder\.(?:.*\.)?(?:" + lora.get("vision_pattern", vision_pattern) + ")")
    return "|".join(parts)


class AuLlavaModel(nn.Module):
    base_model_prefix = ""  # peft/transformers weight-conversion helpers read this attribute of the root module

    def __init__(self, config: AuLlavaConfig, checkpoint_dir: Path | None = None):
        super().__init__()
        self.config = config
        self.au_set = config.resolved_au_set()
        llm_spec = dict(config.llm)
        if checkpoint_dir is not None and llm_spec.get("tokenizer") and not Path(llm_spec["tokenizer"]).is_absolute():
            llm_spec["tokenizer"] = str(checkpoint_dir / llm_spec["tokenizer"])
        self.vision_encoder = build_vision_encoder(config.vision)
        self.language_model, self.tokenizer = build_llm(llm_spec)
        text_size = self.language_model.get_input_embeddings().embedding_dim
        self.projector = build_projector(config.projector, self.vision_encoder.hidden_size, text_size)
        self.num_image_tokens = self.vision_encoder.num_tokens
        for param in self.parameters():
            param.requires_grad = False
        for part, mode in config.tuning.items():
            if mode not in ("lora", "full", "frozen"):
                raise ValueError(f"tuning.{part} must be 'lora', 'full' or 'frozen', got {mode!r}")
        self.lora_config = None
        if config.lora.get("enabled", True) and _lora_target_regex(config, self.vision_encoder.lora_target_pattern):
            self._inject_lora()  # peft marks only the LoRA weights trainable ...
        for param in self.projector.parameters():
            param.requires_grad = True  # ... the projector is always trained in full ...
        for part, module in (("vision", self.vision_encoder), ("llm", self.language_model)):
            if config.tuning.get(part) == "full":  # ... and so is any part tuned "full"
                module.requires_grad_(True)
        self._prompt_cache: dict[tuple, tuple[list[int], list[int]]] = {}

    # ----- LoRA -----------------------------------------------------------------------------------------------
    def _inject_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        lora = self.config.lora
        self.lora_config = LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
            target_modules=_lora_target_regex(self.config, self.vision_encoder.lora_target_pattern),
        )
        inject_adapter_in_model(self.lora_config, self)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Called by Trainer for `gradient_checkpointing: true`; non-reentrant, so frozen inputs need no grads."""
        kwargs = gradient_checkpointing_kwargs or {"use_reentrant": False}
        for part in (self.language_model, getattr(self.vision_encoder, "tower", None)):
            if part is not None and getattr(part, "supports_gradient_checkpointing", False):
                part.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def lora_module_names(self) -> list[str]:
        return [name for name, module in self.named_modules() if hasattr(module, "lora_A")]

    # ----- prompts and batches --------------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self.tokenizer.pad_token_id  # placeholder value; those embeddings are overwritten

    def prompt_ids(self, fmt: AnswerFormat | str, au_set: AUSet | None = None) -> tuple[list[int], list[int]]:
        """Token ids before and after the image for one (AU set, format): identical for every image, hence cached.
        `au_set` defaults to the model's; a dataset labelling other AUs asks its own set (the paper's per-dataset
        descriptions)."""
        fmt = AnswerFormat.parse(fmt)
        au_set = au_set or self.au_set
        key = (au_set.name, au_set.ids, fmt.value)
        if key not in self._prompt_cache:
            prompt = build_prompt(au_set, fmt, self.config.prompt_style)
            bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
            prefix = bos + self.tokenizer(prompt.prefix, add_special_tokens=False)["input_ids"]
            question = self.tokenizer(prompt.question, add_special_tokens=False)["input_ids"]
            self._prompt_cache[key] = (prefix, question)
        return self._prompt_cache[key]

    def encode_example(self, fmt: AnswerFormat | str, values=None, mask=None,
                       au_set: AUSet | None = None) -> dict[str, list[int]]:
        """One sequence: prefix, image placeholders, question and, for training, the answer + EOS as labels.

        Answer tokens of AUs whose `mask` is False keep label -100 and their value is replaced by 0 in the input,
        so nothing about an unlabelled AU reaches the loss."""
        prefix, question = self.prompt_ids(fmt, au_set)
        ids = prefix + [self.image_token_id] * self.num_image_tokens + question
        image_mask = [0] * len(prefix) + [1] * self.num_image_tokens + [0] * len(question)
        labels = [-100] * len(ids)
        weights = [0.0] * len(ids)
        if values is not None:
            if mask is not None:  # an unlabelled value is written as 0 and not supervised: its label never enters
                values = np.where(np.asarray(mask, dtype=bool), np.asarray(values, dtype=np.float64), 0.0)
            answer = serialize_answer(values, fmt)
            encoded = self.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
            hidden_spans = _value_spans(answer, mask)
            answer_ids = encoded["input_ids"] + [self.tokenizer.eos_token_id]
            present_spans = _value_spans(answer, [float(v) <= 0 for v in answer[1:-1].split(", ")])
            offsets = encoded["offset_mapping"]
            ids += answer_ids
            image_mask += [0] * len(answer_ids)
            labels += [-100 if _overlaps(o, hidden_spans) else tok for tok, o in zip(encoded["input_ids"], offsets)]
            labels += [self.tokenizer.eos_token_id]
            weights += [float(self.config.present_weight) if _overlaps(o, present_spans) else 1.0 for o in offsets]
            weights += [1.0]
        return {"input_ids": ids, "image_mask": image_mask, "labels": labels, "label_weights": weights}

    # ----- forward --------------------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor, input_ids: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the projected visual tokens written at the placeholder positions."""
        pixel_values = self.vision_encoder.preprocess(images)
        visual = self.projector(self.vision_encoder(pixel_values))  # (B, N, D)
        embeds = self.language_model.get_input_embeddings()(input_ids)
        mask = image_mask.bool()
        if int(mask.sum()) != visual.shape[0] * visual.shape[1]:
            raise ValueError(f"{int(mask.sum())} image placeholders for {visual.shape[0]}×{visual.shape[1]} tokens")
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), visual.to(embeds.dtype).reshape(-1, embeds.shape[-1]))
        return embeds

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_mask: torch.Tensor, labels: torch.Tensor | None = None,
                prefix_ids: torch.Tensor | None = None,
                label_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`prefix_ids` (1, P): a description shared by every row, stripped from `input_ids`. It is run once, without
        gradient, and its key/value cache repeated over the batch, which roughly halves the training cost on a CPU;
        the LoRA weights still shape the prefix in the forward pass, only their gradient through it is dropped.
        `label_weights` (B, L): per-token loss weights aligned with `labels` (see `present_weight`)."""
        embeds = self.embed(images, input_ids, image_mask)
        decoder = self.language_model.get_decoder()
        cache, positions = None, None
        if prefix_ids is not None:
            cache = self.prefix_cache(prefix_ids, input_ids.shape[0])
            offset = prefix_ids.shape[1]
            attention_mask = torch.cat([attention_mask.new_ones((input_ids.shape[0], offset)), attention_mask], 1)
            positions = (offset + torch.arange(input_ids.shape[1], device=input_ids.device)).expand_as(input_ids)
        hidden = decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=cache, use_cache=cache is not None).last_hidden_state
        if labels is None:
            return {"logits": final_logits(self.language_model, hidden[:, -1:])}
        targets = labels[:, 1:]
        keep = targets != -100
        if self.config.loss_vocabulary == "answer":
            vocabulary, index_of = self.answer_vocabulary_ids()
            logits = final_logits(self.language_model, hidden[:, :-1][keep], vocabulary)
            answer_targets = index_of[targets[keep]]
            if bool((answer_targets < 0).any()):
                raise ValueError("a target token is outside the answer vocabulary; use loss_vocabulary: full")
            losses = F.cross_entropy(logits.float(), answer_targets, reduction="none")
        else:
            logits = final_logits(self.language_model, hidden[:, :-1][keep])
            losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")
        if label_weights is None:
            return {"loss": losses.mean(), "logits": logits}
        weights = label_weights[:, 1:][keep].to(losses.dtype)
        return {"loss": (losses * weights).sum() / weights.sum(), "logits": logits}

    def prefix_cache(self, prefix_ids: torch.Tensor, rows: int):
        """Key/value cache of a prefix shared by every row (run once, without gradient), repeated for `rows` rows."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.language_model.config)
        with torch.no_grad():
            self.language_model.get_decoder()(input_ids=prefix_ids, past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(rows)
        return cache

    def answer_vocabulary_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids an answer can consist of (+ EOS), and a map from token id to its row in that list."""
        if not hasattr(self, "_answer_vocab"):
            from aullava.model.decoding import answer_vocabulary

            ids = sorted({i for i, _ in answer_vocabulary(self.tokenizer)} | {self.tokenizer.eos_token_id})
            device = self.projector.weight.device if hasattr(self.projector, "weight") else None
            vocabulary = torch.tensor(ids, device=device)
            index_of = torch.full((len(self.tokenizer) + 1,), -100, dtype=torch.long, device=device)
            index_of[vocabulary] = torch.arange(len(ids), device=device)
            self._answer_vocab = (vocabulary, index_of)
        vocabulary, index_of = self._answer_vocab
        return vocabulary.to(self.language_model.device), index_of.to(self.language_model.device)

    # ----- save / load ----------------------------------------------------------------------------------------
    def _full_weight_prefixes(self) -> list[str]:
        """Parts whose every weight goes into the checkpoint: built with random init (nothing to reload them
        from), or tuned in full."""
        prefixes = []
        if self.config.llm.get("config") is not None or self.config.tuning.get("llm") == "full":
            prefixes.append("language_model.")
        vision = self.config.vision
        if (vision.get("config") is not None or self.config.tuning.get("vision") == "full"
                or (vision.get("type", "efficientnet-lite0") == "efficientnet-lite0"
                    and not vision.get("pretrained", True))):
            prefixes.append("vision_encoder.")
        return prefixes

    def save_pretrained(self, save_directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                        **_: Any) -> None:
        """Writes the checkpoint directory. `state_dict` (from Trainer under FSDP/DeepSpeed) overrides the live
        weights; extra keyword arguments from Trainer are accepted and ignored."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        config = self.config.to_dict()
        save_file({k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")},
                  str(out / PROJECTOR_NAME))
        if self.lora_config is not None:
            from peft import get_peft_model_state_dict

            adapter = get_peft_model_state_dict(self, state_dict=state)
            save_file({k: v.contiguous() for k, v in adapter.items()}, str(out / ADAPTER_NAME))
            self.lora_config.save_pretrained(str(out))
        random_parts = self._full_weight_prefixes()
        if random_parts:
            base = {k: v for k, v in state.items() if k.startswith(tuple(random_parts)) and "lora_" not in k}
            save_file(_untie(base), str(out / BASE_NAME))
        if self.config.llm.get("config") is not None:
            self.tokenizer.save_pretrained(str(out / "tokenizer"))
            config["llm"] = {**config["llm"], "tokenizer": "tokenizer"}
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "AuLlavaModel":
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory}: not an aullava checkpoint (no {CONFIG_NAME})")
        config = AuLlavaConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
        if config.template_version != TEMPLATE_VERSION:
            raise ValueError(f"{directory}: trained with prompt template {config.template_version!r}, "
                             f"this aullava speaks {TEMPLATE_VERSION!r}")
        model = cls(config, checkpoint_dir=directory)
        model.load_trainable(directory)
        model.eval()
        return model

    def load_trainable(self, directory: str | Path) -> None:
        """Loads base (random-init parts), projector and LoRA weights from a checkpoint directory in place."""
        directory = Path(directory)
        if (directory / BASE_NAME).is_file():
            missing, unexpected = self.load_state_dict(load_file(str(directory / BASE_NAME)), strict=False)
            if unexpected:
                raise ValueError(f"{directory / BASE_NAME}: unexpected weights {unexpected[:5]}")
        self.projector.load_state_dict(load_file(str(directory / PROJECTOR_NAME)))
        if self.lora_config is not None:
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self, load_file(str(directory / ADAPTER_NAME)))
            if result.unexpected_keys:
                raise ValueError(f"{directory / ADAPTER_NAME}: unexpected LoRA weights {result.unexpected_keys[:5]}")

    def trainable_parameters(self) -> dict[str, int]:
        counts = {"projector": 0, "lora_vision": 0, "lora_llm": 0}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            key = "projector" if name.startswith("projector.") else (
                "lora_vision" if name.startswith("vision_encoder.") else "lora_llm")
            counts[key] += param.numel()
        return counts


def _overlaps(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    """Whether a token's character span (start, end) overlaps any of `spans`."""
    a, b = offset
    return any(a < e and s < b for s, e in spans)


def _value_spans(answer: str, mask) -> list[tuple[int, int]]:
    """Character spans of the values whose mask is False in a canonical answer like '[0.12, 0.00]'."""
    if mask is None:
        return []
    spans, start = [], 1
    for keep, token in zip(mask, answer[1:-1].split(", ")):
        if not keep:
            spans.append((start, start + len(token)))
        start += len(token) + 2
    return spans


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): store each tensor once, as its own copy."""
    seen: dict[int, str] = {}
    out = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.setdefault(ptr, key)
    return out
