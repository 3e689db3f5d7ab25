"""AU-LLaVA: vision encoder → projector → causal LLM, with LoRA in both the encoder and the LLM.

Visual tokens are spliced into the LLM's input embeddings at placeholder positions (`image_mask`), as in
transformers' LLaVA. Logits are computed only where a loss or a next token is needed.

Checkpoint directory (what `save_pretrained` writes and `from_pretrained` reads):

    config.json                  AuLlavaConfig: parts, LoRA, AU set, prompt style, template version
    projector.safetensors        the fully trained projector
    geometry.safetensors         only with `geometry.enabled`: the geometry encoder and its projector (full weights)
    draft_head.safetensors       optional: a guess of the binary answer the exact readout starts from (`draft_head`)
    adapter_config.json          peft LoRA config (encoder + LLM in one adapter)
    adapter_model.safetensors    peft LoRA weights
    base_model.safetensors       only for parts built from a config with random init (nothing pretrained to reload)
    tokenizer/                   only when the LLM was built from a config

Pretrained bases (Gemma-3-270M, EfficientNet-Lite0, a hub/local CLIP or LLaMA) are referenced, not copied, so a
trained default model is a few MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from aullava.model.config import AuLlavaConfig
from aullava.model import checkpoint
from aullava.model.checkpoint import (ADAPTER_NAME, BASE_NAME, CONFIG_NAME, GEOMETRY_NAME, GEOMETRY_PREFIXES,
                                     PROJECTOR_NAME)
from aullava.model.draft_head import DraftHead, load_draft_head
from aullava.model.encoder import build_vision_encoder
from aullava.model.geometry_encoder import GeometryEncoder
from aullava.model.llm import build_llm, cache_argument, final_logits
from aullava.model.processing import AuLlavaProcessor
from aullava.model.projector import build_projector

__all__ = ["ADAPTER_NAME", "BASE_NAME", "CONFIG_NAME", "GEOMETRY_NAME", "PROJECTOR_NAME", "AuLlavaModel",
           "AuLlavaOutput"]


def _lora_target_regex(config: AuLlavaConfig, vision_pattern: str) -> str:
    lora = config.lora
    parts = []
    if lora.llm_targets and config.tuning.llm == "lora":
        layers = lora.llm_layers  # None: every decoder layer; else the indices that get LoRA
        within = r"layers\.(?:" + "|".join(str(int(i)) for i in layers) + r")\..*" if layers else ""
        parts.append(r"language_model\..*\." + within + "(?:" + "|".join(lora.llm_targets) + ")")
    if lora.vision and config.tuning.vision == "lora":
        parts.append(r"vision_encoder\.(?:.*\.)?(?:" + (lora.vision_pattern or vision_pattern) + ")")
    return "|".join(parts)


@dataclass
class AuLlavaOutput(ModelOutput):
    """What `AuLlavaModel.forward` returns (a `ModelOutput`: `out.loss` or `out["loss"]`, as `Trainer` reads it).
    `loss`: with labels, the (weighted) answer-token cross-entropy; `logits`: with labels, those of the supervised
    positions (over the answer vocabulary with `loss_vocabulary: answer`), without, the last position's."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class AuLlavaModel(nn.Module):
    base_model_prefix = ""  # peft/transformers weight-conversion helpers read this attribute of the root module
    # Trainer passes `num_items_in_batch` (the loss normaliser of the whole global batch, all ranks and accumulation
    # steps together), so several processes or accumulated micro-batches give the loss of one big batch
    accepts_loss_kwargs = True

    def __init__(self, config: AuLlavaConfig, checkpoint_dir: Path | None = None):
        super().__init__()
        self.config = config
        self.au_set = config.resolved_au_set()
        tokenizer_dir = config.llm.tokenizer
        if checkpoint_dir is not None and tokenizer_dir and not Path(tokenizer_dir).is_absolute():
            tokenizer_dir = str(checkpoint_dir / tokenizer_dir)
        self.vision_encoder = build_vision_encoder(config.vision)
        self.language_model, self.tokenizer = build_llm(config.llm, tokenizer_dir)
        text_size = self.language_model.get_input_embeddings().embedding_dim
        self.projector = build_projector(config.projector, self.vision_encoder.hidden_size, text_size)
        self.num_image_tokens = self.vision_encoder.num_tokens
        self.num_geometry_tokens = 0
        if config.geometry.enabled:  # the optional second stream (model/geometry_encoder.py); absent, the paper's model
            self.geometry_encoder = GeometryEncoder(config.geometry)
            self.geometry_projector = build_projector(config.projector, config.geometry.hidden_size, text_size)
            self.num_geometry_tokens = config.geometry.num_tokens
        for param in self.parameters():
            param.requires_grad = False
        self.lora_config = None
        if config.lora.enabled and _lora_target_regex(config, self.vision_encoder.lora_target_pattern):
            self._inject_lora()  # peft marks only the LoRA weights trainable ...
        for param in self.projector.parameters():
            param.requires_grad = True  # ... the projector is always trained in full ...
        if self.wants_geometry:
            self.geometry_encoder.requires_grad_(True)  # ... as is the geometry stream (new weights) ...
            self.geometry_projector.requires_grad_(True)
        for part, module in (("vision", self.vision_encoder), ("llm", self.language_model)):
            if getattr(config.tuning, part) == "full":  # ... and so is any part tuned "full"
                module.requires_grad_(True)
        self.draft_head: DraftHead | None = None  # optional: `from_pretrained` loads one the checkpoint has
        self.processor = AuLlavaProcessor(self.tokenizer, self.au_set, config.prompt_style, self.num_image_tokens,
                                          config.present_weight, num_geometry_tokens=self.num_geometry_tokens,
                                          present_weights=config.present_weights,
                                          template_version=config.template_version)

    @property
    def wants_geometry(self) -> bool:
        """Whether this model reads each face's geometry (`aullava.faces.geometry_features` vectors) beside its crop."""
        return self.num_geometry_tokens > 0

    @property
    def num_face_tokens(self) -> int:
        """LLM positions one face takes: its image tokens, then its geometry tokens (if any)."""
        return self.num_image_tokens + self.num_geometry_tokens

    # ----- LoRA -----------------------------------------------------------------------------------------------
    def _inject_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        lora = self.config.lora
        self.lora_config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=_lora_target_regex(self.config, self.vision_encoder.lora_target_pattern),
        )
        inject_adapter_in_model(self.lora_config, self)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        """Called by Trainer for `activation_checkpointing: true` (a 7B LLM's activations do not fit otherwise);
        non-reentrant, so frozen inputs need no grads. Passed on to the parts that are transformers models."""
        kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        for part in (self.language_model, getattr(self.vision_encoder, "tower", None)):
            if part is not None and getattr(part, "supports_gradient_checkpointing", False):
                part.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs,
                                                     every_n_layers=every_n_layers, offload=offload)

    def merge_lora(self) -> "AuLlavaModel":
        """For inference only: folds every LoRA update into its base weight and removes the LoRA wrappers (one
        matmul per layer instead of three). The adapter can no longer be saved or trained afterwards."""
        for name, module in list(self.named_modules()):
            if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(self.get_submodule(parent) if parent else self, child, module.get_base_layer())
        self.lora_config = None
        return self

    def lora_module_names(self) -> list[str]:
        return [name for name, module in self.named_modules() if hasattr(module, "lora_A")]

    # ----- forward --------------------------------------------------------------------------------------------
    def face_tokens(self, images: torch.Tensor, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """A face's tokens in the LLM's embedding space, (B, N + G, D): the projected visual tokens and, for a model
        with the geometry stream, its projected geometry tokens after them."""
        visual = self.projector(self.vision_encoder(self.vision_encoder.preprocess(images)))  # (B, N, D)
        if not self.wants_geometry:
            return visual
        if geometry is None:
            raise ValueError("this model reads face geometry (model.geometry.enabled): pass each face's geometry "
                             "vector (aullava.faces.geometry_features.geometry_features) with its crop")
        geometry = geometry.to(visual.device)
        if geometry.shape[0] != visual.shape[0]:
            raise ValueError(f"{geometry.shape[0]} geometry vectors for {visual.shape[0]} face crops")
        shapes = self.geometry_projector(self.geometry_encoder(geometry))  # (B, G, D)
        return torch.cat([visual, shapes.to(visual.dtype)], dim=1)

    def embed(self, images: torch.Tensor, input_ids: torch.Tensor, image_mask: torch.Tensor,
              geometry: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the face tokens (`face_tokens`) written at the placeholder positions."""
        visual = self.face_tokens(images, geometry)
        embeds = self.language_model.get_input_embeddings()(input_ids)
        mask = image_mask.bool()
        if int(mask.sum()) != visual.shape[0] * visual.shape[1]:
            raise ValueError(f"{int(mask.sum())} image placeholders for {visual.shape[0]}×{visual.shape[1]} tokens")
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), visual.to(embeds.dtype).reshape(-1, embeds.shape[-1]))
        return embeds

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_mask: torch.Tensor, labels: torch.Tensor | None = None,
                prefix_ids: torch.Tensor | None = None, label_weights: torch.Tensor | None = None,
                num_items_in_batch: torch.Tensor | int | None = None,
                geometry: torch.Tensor | None = None) -> "AuLlavaOutput":
        """`prefix_ids` (1, P): a description shared by every row, stripped from `input_ids`. It is run once, without
        gradient, and its key/value cache repeated over the batch, which roughly halves the training cost on a CPU;
        the LoRA weights still shape the prefix in the forward pass, only their gradient through it is dropped.
        `label_weights` (B, L): per-token loss weights aligned with `labels` (see `present_weight`).
        `num_items_in_batch`: the sum of the answer-token weights (their count when unweighted) over the global
        batch, from `AuLlavaTrainer`; the loss is then this batch's share of the global weighted mean, which makes
        2 processes × batch B train exactly like 1 process × batch 2B. Without it, the mean over this batch.
        `geometry` (B, FEATURE_SIZE): each row's face geometry, for a model with the geometry stream."""
        embeds = self.embed(images, input_ids, image_mask, geometry)
        decoder = self.language_model.get_decoder()
        cache, positions = None, None
        if prefix_ids is not None:
            cache = self.prefix_cache(prefix_ids, input_ids.shape[0])
            offset = prefix_ids.shape[1]
            attention_mask = torch.cat([attention_mask.new_ones((input_ids.shape[0], offset)), attention_mask], 1)
            positions = (offset + torch.arange(input_ids.shape[1], device=input_ids.device)).expand_as(input_ids)
        hidden = decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
                         use_cache=cache is not None, **{cache_argument(decoder): cache}).last_hidden_state
        if labels is None:
            return AuLlavaOutput(logits=final_logits(self.language_model, hidden[:, -1:]))
        targets = labels[:, 1:]
        keep = targets != -100
        if self.config.loss_vocabulary == "answer":
            vocabulary, index_of = self._answer_vocabulary()
            logits = final_logits(self.language_model, hidden[:, :-1][keep], vocabulary)
            answer_targets = index_of[targets[keep]]
            if bool((answer_targets < 0).any()):
                raise ValueError("a target token is outside the answer vocabulary; use loss_vocabulary: full")
            losses = F.cross_entropy(logits.float(), answer_targets, reduction="none")
        else:
            logits = final_logits(self.language_model, hidden[:, :-1][keep])
            losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")
        weights = None if label_weights is None else label_weights[:, 1:][keep].to(losses.dtype)
        total = losses.sum() if weights is None else (losses * weights).sum()
        if num_items_in_batch is not None:
            return AuLlavaOutput(loss=total / num_items_in_batch, logits=logits)
        return AuLlavaOutput(loss=total / (losses.numel() if weights is None else weights.sum()), logits=logits)

    def prefix_cache(self, prefix_ids: torch.Tensor, rows: int):
        """Key/value cache of a prefix shared by every row (run once, without gradient), repeated for `rows` rows."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.language_model.config)
        with torch.no_grad():
            decoder = self.language_model.get_decoder()
            decoder(input_ids=prefix_ids, use_cache=True, **{cache_argument(decoder): cache})
        cache.batch_repeat_interleave(rows)
        return cache

    def _answer_vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        vocabulary, index_of = self.processor.answer_vocabulary_ids()
        return vocabulary.to(self.language_model.device), index_of.to(self.language_model.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----- save / load (aullava.model.checkpoint) ----------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                        **_: Any) -> None:
        """Writes the checkpoint directory (the module docstring lists its files). `state_dict` (from Trainer under
        FSDP/DeepSpeed) overrides the live weights; extra keyword arguments from Trainer are accepted and ignored."""
        checkpoint.save(self, Path(save_directory), state_dict)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "AuLlavaModel":
        model = cls(checkpoint.read_config(Path(directory)), checkpoint_dir=Path(directory))
        model.load_trainable(directory)
        model.draft_head = load_draft_head(directory, model.language_model.get_input_embeddings().embedding_dim,
                                           len(model.au_set))
        model.eval()
        return model

    def expected_tensors(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Per checkpoint file, the tensor names and shapes a checkpoint of this model must hold."""
        return checkpoint.expected_tensors(self)

    def read_checkpoint(self, directory: str | Path) -> dict[str, dict[str, torch.Tensor]]:
        """Every tensor file of a checkpoint, checked against `expected_tensors` (CheckpointError otherwise)."""
        return checkpoint.read_checked(self, Path(directory))

    def load_trainable(self, directory: str | Path) -> None:
        """Loads base (random-init parts), projector and LoRA weights from a checkpoint directory in place, after
        checking that every expected tensor is there with its shape."""
        checkpoint.load_parts(self, Path(directory), keep=lambda key: True)

    def load_image_side(self, directory: str | Path) -> None:
        """Loads only what the vision stage trains (encoder LoRA or weights, projector, geometry stream) from
        another model's checkpoint; the LLM keeps its fresh LoRA. Arms that differ only in their LLM stage can
        then share one warm-up instead of repeating it (`vision_stage.from` in a recipe). The whole checkpoint is
        checked first, so a model of another architecture is refused with the tensor that differs."""
        checkpoint.load_parts(self, Path(directory), keep=lambda key: not key.startswith("language_model."))

    def load_llm_side(self, directory: str | Path) -> None:
        """Loads only the LLM's LoRA (or weights) from another model's checkpoint of the same architecture, as the
        starting point of an LLM stage (`llm_stage.from`): a model retrained for a new prompt layout or a changed
        image side starts from what the old one learnt about answering instead of from nothing."""
        checkpoint.load_parts(self, Path(directory), keep=lambda key: key.startswith("language_model."),
                              projector=False)

    def trainable_parameters(self) -> dict[str, int]:
        counts = {"projector": 0, "lora_vision": 0, "lora_llm": 0, **({"geometry": 0} if self.wants_geometry else {})}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            key = "projector" if name.startswith("projector.") else "geometry" if name.startswith(
                GEOMETRY_PREFIXES) else ("lora_vision" if name.startswith("vision_encoder.") else "lora_llm")
            counts[key] += param.numel()
        return counts

