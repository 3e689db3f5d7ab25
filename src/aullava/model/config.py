"""Typed, strict model configuration: what `config.json` holds and a recipe's `model:` section sets.

Every default lives here once (the encoder, LLM and peft builders read these fields, never a default of their own).
An unknown key anywhere is an error naming the key and the closest valid name, so `projecter: mlp` or
`lora: {rank: 8}` cannot silently train the defaults. Every `config.json` written so far uses these spellings.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from aullava.aus.answer_format import ALL_FORMATS, AnswerFormat
from aullava.aus.catalogue import AUSet, au_set as resolve_au_set
from aullava.model.prompts import PROMPT_STYLES, TEMPLATE_VERSION, TEMPLATE_VERSIONS

TUNING_MODES = ("lora", "full", "frozen")
VISION_TYPES = ("efficientnet-lite0", "hf")
LOSS_VOCABULARIES = ("full", "answer")


def unknown_key_error(key: str, valid, where: str) -> ValueError:
    """The one message for a misspelt key: where it is, the key, and the closest valid name (if any is close)."""
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(map(str, valid)))}"
    return ValueError(f"{where}: unknown key {key!r}{hint}")


def check_keys(data: Mapping[str, Any], valid, where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    for key in data:
        if key not in valid:
            raise unknown_key_error(key, valid, where)


class _Part:
    """A section of the config: built from a mapping with strict keys, saved as a plain dict."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str):
        if isinstance(data, cls):
            return data
        data = dict(data or {})
        check_keys(data, [f.name for f in dataclasses.fields(cls)], where)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VisionConfig(_Part):
    """`efficientnet-lite0` (the offline default; `token_grid`² pooled tokens at `image_size` px) or `hf` (a CLIP/SigLIP
    tower from `name_or_path`, random from `config`, or a transformers LLaVA directory's tower from `llava`; tokens
    from layer `select_layer`)."""

    type: str = "efficientnet-lite0"
    pretrained: bool = True
    image_size: int = 224
    token_grid: int = 7
    name_or_path: str | None = None
    config: dict[str, Any] | None = None
    select_layer: int = -2
    llava: str | None = None

    def __post_init__(self):
        if self.type not in VISION_TYPES:
            raise ValueError(f"unknown vision encoder type {self.type!r}; expected 'efficientnet-lite0' or 'hf'")


@dataclass
class LLMConfig(_Part):
    """`name_or_path`: a local directory, a hub id or the asset `gemma-3-270m`; or `config` (random init of that
    architecture) with `tokenizer` (a directory); or `llava`: a transformers LLaVA directory's language model and
    tokenizer."""

    name_or_path: str | None = "gemma-3-270m"
    config: dict[str, Any] | None = None
    tokenizer: str | None = None
    llava: str | None = None

    def __post_init__(self):
        if self.config is not None or self.llava is not None:
            self.name_or_path = None  # built from `config` or read from `llava`: no other model is referenced


@dataclass
class LoRAConfig(_Part):
    """LoRA on both sides. `llm_layers`: None puts LoRA in every decoder layer (the paper); a list of indices only
    there, e.g. the top layers, which also stops the backward pass below the lowest one (a CPU budget).
    `vision_pattern` overrides the encoder's own target pattern."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    llm_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    llm_layers: list[int] | None = None
    vision: bool = True
    vision_pattern: str | None = None


@dataclass
class TuningConfig(_Part):
    """Per part: "lora" (the paper), "full" (every weight trained and saved) or "frozen"."""

    vision: str = "lora"
    llm: str = "lora"

    def __post_init__(self):
        for part in ("vision", "llm"):
            if getattr(self, part) not in TUNING_MODES:
                raise ValueError(f"tuning.{part} must be 'lora', 'full' or 'frozen', got {getattr(self, part)!r}")


@dataclass
class GeometryConfig(_Part):
    """The optional second stream of the face encoder (beyond the paper; off by default): the face's MediaPipe
    geometry (`aullava.faces.geometry_features`) through a small MLP into `num_tokens` tokens of `hidden_size`, and its own
    projector into the LLM, placed right after the image tokens. `use_landmarks` / `use_blendshapes` choose which
    part of the geometry it reads. Its weights are always trained in full (they are new)."""

    enabled: bool = False
    num_tokens: int = 4
    hidden_size: int = 256
    use_landmarks: bool = True
    use_blendshapes: bool = True
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("enabled", "use_landmarks", "use_blendshapes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model.geometry.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("num_tokens", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.geometry.{name} must be a whole number ≥ 1, got {value!r}")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ValueError(f"model.geometry.dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.enabled and not (self.use_landmarks or self.use_blendshapes):
            raise ValueError("model.geometry: enabled but reads nothing; set use_landmarks or use_blendshapes")


_PARTS = {"vision": VisionConfig, "llm": LLMConfig, "lora": LoRAConfig, "tuning": TuningConfig,
          "geometry": GeometryConfig}


@dataclass
class AuLlavaConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    projector: str = "linear"
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    au_set: Any = "default"  # a built-in name, a YAML path, an id list, or AUSet.to_dict() (what is saved)
    prompt_style: str = "full"
    template_version: str = TEMPLATE_VERSION
    formats: list[str] = field(default_factory=lambda: [f.value for f in ALL_FORMATS])
    tuning: TuningConfig = field(default_factory=TuningConfig)
    # "full": the LM loss over the whole vocabulary (the paper); "answer": only over the tokens an answer can use
    # (what constrained decoding allows), which makes the loss the exact objective of decoding and is far cheaper
    # with a large vocabulary (Gemma: 262k entries, ~115 of them answer tokens)
    loss_vocabulary: str = "full"
    # loss weight of the answer tokens of present AUs (value > 0) against 1 for the rest: a class-balanced loss,
    # as AU detectors use against ~85 % absent labels; without it an LLM first learns to answer "absent" everywhere
    present_weight: float = 1.0
    # AU id → the weight of that AU's present tokens instead of `present_weight`. Training writes it for a recipe
    # with `present_weight: balanced` (`aullava.training.present_weights`): one weight for all AUs over-weights
    # those present in half the data, and the model then answers "present" wherever it is unsure.
    present_weights: dict[str, float] = field(default_factory=dict)
    trained: bool = False  # set by training; `predict` warns when a model never was
    # format → temperature dividing the answer logits when the readout turns them into probabilities (fitted on a
    # held-out split by `aullava calibrate`; 1 = the raw softmax). It never changes an answer, only its probabilities.
    probability_temperature: dict[str, float] = field(default_factory=dict)
    # format → a shift added to the log-odds of "present" after the temperature (Platt scaling; binary only). A model
    # trained with `present_weight` > 1 says "present" too readily; the shift moves its probabilities back without
    # touching the answers, so a calibrated p(present) may fall below 0.5 on a face the answer calls present.
    probability_bias: dict[str, float] = field(default_factory=dict)
    # the face's landmarks and blendshapes as extra tokens beside the image tokens (off: the paper's model)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    model_type: str = "aullava"

    def __setattr__(self, name: str, value: Any) -> None:
        # a part given (or later assigned) as a mapping is checked and typed, e.g. `config.tuning = {"llm": "full"}`
        if name in _PARTS:
            value = _PARTS[name].from_dict(value, where=f"model.{name}")
        super().__setattr__(name, value)

    def __post_init__(self):
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"model.prompt_style: unknown prompt style {self.prompt_style!r}; expected one of "
                             f"{PROMPT_STYLES}")
        if self.template_version not in TEMPLATE_VERSIONS:
            raise ValueError(f"model.template_version: unknown prompt template {self.template_version!r}; expected one "
                             f"of {TEMPLATE_VERSIONS}")
        if self.loss_vocabulary not in LOSS_VOCABULARIES:
            raise ValueError(f"model.loss_vocabulary must be one of {LOSS_VOCABULARIES}, got {self.loss_vocabulary!r}")
        for fmt, temperature in dict(self.probability_temperature or {}).items():
            if fmt not in [f.value for f in ALL_FORMATS]:
                raise ValueError(f"model.probability_temperature: unknown format {fmt!r}; expected one of "
                                 f"{[f.value for f in ALL_FORMATS]}")
            if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
                raise ValueError(f"model.probability_temperature.{fmt} must be a number > 0, got {temperature!r}")
        for au, weight in dict(self.present_weights or {}).items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
                raise ValueError(f"model.present_weights.{au} must be a number > 0, got {weight!r}")
        for fmt, bias in dict(self.probability_bias or {}).items():
            if fmt != AnswerFormat.BINARY.value:
                raise ValueError(f"model.probability_bias: only 'binary' takes a bias (a log-odds shift), got {fmt!r}")
            if not isinstance(bias, (int, float)) or isinstance(bias, bool) or not math.isfinite(bias):
                raise ValueError(f"model.probability_bias.{fmt} must be a finite number, got {bias!r}")

    def resolved_au_set(self) -> AUSet:
        return AUSet.from_dict(self.au_set) if isinstance(self.au_set, dict) else resolve_au_set(self.au_set)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["au_set"] = self.resolved_au_set().to_dict()
        if not self.geometry.enabled:  # a model without the stream writes the config.json it always wrote
            del data["geometry"]
        if not self.present_weights:  # likewise a model trained with one present weight
            del data["present_weights"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model") -> "AuLlavaConfig":
        """From `config.json` or a recipe's `model:` section. A part may set only some of its keys, e.g.
        `lora: {r: 8}`; every key must be a known one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping of keys, got {type(data).__name__} {data!r}")
        data = dict(data)
        check_keys(data, [f.name for f in dataclasses.fields(cls)], where)
        for name, part in _PARTS.items():
            if name in data:
                data[name] = part.from_dict(data[name], where=f"{where}.{name}")
        return cls(**data)
