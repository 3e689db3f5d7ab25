"""`aullava export-llava`: a trained model as a standard transformers LLaVA directory, for the tools that serve
`LlavaForConditionalGeneration` (transformers itself, vLLM, SGLang).

How aullava's parts map, exactly:
- vision tower: the same `CLIPVisionModel` / `SiglipVisionModel`, LoRA merged into its weights. aullava reads the
  hidden states of `select_layer` (-2) and drops CLIP's class token: LLaVA's `vision_feature_layer` = select_layer
  and `vision_feature_select_strategy` = `default` (drops the first token) for CLIP, `full` for SigLIP (no class
  token).
- projector: LLaVA's is always two layers, `linear_2(act(linear_1(x)))`. aullava's `mlp2x_gelu` is exactly that with
  `gelu`; the paper's single linear layer becomes `linear_1` with `projector_hidden_act: linear` (identity) and an
  identity `linear_2` (weight I, bias 0), which computes the same numbers.
- language model: the decoder and LM head, LoRA merged. One token is added to the vocabulary, `<image>`, as the
  placeholder the LLaVA processor expands into the visual tokens (aullava reuses the pad id internally, which LLaVA
  cannot: padding would count as image tokens). Its embedding rows are the mean of the others; the generation
  config suppresses it, so it is never generated.
- prompt: chat-free, aullava's own: `aullava_prompts.json` holds, per format, the text (the AU description, `<image>`,
  the format question ending in "Answer: ") and its token ids. The model answers with the AU vector and EOS.
- image: an aligned face crop (what `aullava.faces` produces). The processor resizes it to the tower's size
  (bilinear) and normalises with aullava's mean/std; at the tower's size it is the same tensor aullava computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from aullava.aus.answer_format import ALL_FORMATS
from aullava.model.decoding.vocabulary import max_answer_tokens
from aullava.model.encoder import HFVisionTower
from aullava.model.modeling import AuLlavaModel
from aullava.model.prompts import build_prompt

IMAGE_TOKEN = "<image>"
PROMPTS_NAME = "aullava_prompts.json"
TOWERS = {"clip_vision_model": "default", "siglip_vision_model": "full"}  # → vision_feature_select_strategy
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_exportable(model: AuLlavaModel) -> None:
    """Refuses, naming the reason, models that have no exact LLaVA equivalent."""
    tower = model.vision_encoder
    if not isinstance(tower, HFVisionTower):
        raise ValueError(f"export-llava needs an HF CLIP/SigLIP vision tower; this model's vision side is "
                         f"{model.config.vision.type!r}, which LLaVA cannot load")
    if tower.tower.config.model_type not in TOWERS:
        raise ValueError(f"export-llava supports {sorted(TOWERS)} towers, not {tower.tower.config.model_type!r}")
    if model.config.projector not in ("linear", "mlp2x_gelu"):
        raise ValueError(f"projector {model.config.projector!r} has no LLaVA equivalent")
    if model.wants_geometry:
        raise ValueError("this model reads face geometry (model.geometry.enabled), a second input stream LLaVA "
                         "does not have")
    cap = getattr(model.language_model.config, "final_logit_softcapping", None)
    if cap:
        raise ValueError(f"the LLM caps its logits (final_logit_softcapping={cap}); LLaVA's LM head does not, so "
                         "its answers would differ")


def merge_lora(model: nn.Module) -> None:
    """Folds every LoRA layer into its base weight and puts the plain layer back (what peft's merge_and_unload does
    for a PeftModel; aullava injects one adapter into both sides of its own module)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())


def llava_projector(model: AuLlavaModel, config) -> nn.Module:
    """LLaVA's two-layer projector (built from the LLaVA `config`) holding aullava's exactly."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    source = model.projector
    projector = LlavaMultiModalProjector(config)
    with torch.no_grad():
        if config.projector_hidden_act == "linear":
            projector.linear_1.load_state_dict(source.state_dict())
            projector.linear_2.weight.copy_(torch.eye(projector.linear_2.out_features))
            projector.linear_2.bias.zero_()
        else:
            projector.linear_1.load_state_dict(source[0].state_dict())
            projector.linear_2.load_state_dict(source[2].state_dict())
    return projector


def add_image_token(lm: nn.Module, tokenizer) -> int:
    """Adds `<image>` to the tokenizer and, if needed, a row to the LLM's embeddings and LM head (the mean row)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    old = lm.get_input_embeddings().num_embeddings
    if len(tokenizer) > old:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for layer in {id(m): m for m in (lm.get_input_embeddings(), lm.get_output_embeddings())}.values():
                layer.weight[old:] = layer.weight[:old].mean(0)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def export_llava(model: AuLlavaModel, out: str | Path, dtype: str = "float32") -> Path:
    """Writes `out` (config.json, model.safetensors, processor and tokenizer files, generation_config.json,
    aullava_prompts.json, README.md). `model` is changed in place (LoRA merged, one token added): load a fresh one
    for anything else."""
    from transformers import (AutoTokenizer, CLIPImageProcessorPil, GenerationConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    check_exportable(model)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    aullava_ids = {fmt: model.processor.prompt_ids(fmt) for fmt in ALL_FORMATS}  # before the vocabulary changes
    merge_lora(model)

    model.tokenizer.save_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    lm = model.language_model
    image_token_id = add_image_token(lm, tokenizer)

    tower: HFVisionTower = model.vision_encoder
    vision_config = tower.tower.config
    text_config = lm.config
    config = LlavaConfig(
        vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), image_token_index=image_token_id,
        image_seq_length=tower.num_tokens, projector_hidden_act="linear" if model.config.projector == "linear"
        else "gelu", vision_feature_select_strategy=TOWERS[vision_config.model_type],
        vision_feature_layer=tower.select_layer, multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)))
    with torch.device("meta"):  # only the wrapper: every part is aullava's own module, moved in below
        llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower = tower.tower
    llava.model.language_model = lm.get_decoder()
    llava.model.multi_modal_projector = llava_projector(model, config)
    llava.lm_head = lm.get_output_embeddings()
    left = [n for n, t in (*llava.named_parameters(), *llava.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"LLaVA has parts aullava's model does not fill: {left[:5]}")
    n_aus = len(model.au_set)
    llava.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        do_sample=False, max_new_tokens=max_answer_tokens(n_aus), suppress_tokens=[image_token_id])
    llava.to(DTYPES[dtype]).save_pretrained(str(out))

    image_processor = CLIPImageProcessorPil(
        size={"height": tower.image_size, "width": tower.image_size}, do_center_crop=False,
        crop_size={"height": tower.image_size, "width": tower.image_size}, resample=2,  # PIL bilinear
        image_mean=list(tower.mean), image_std=list(tower.std), do_convert_rgb=True)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=vision_config.patch_size,
                               vision_feature_select_strategy=TOWERS[vision_config.model_type],
                               num_additional_image_tokens=1 if tower.has_class_token else 0, image_token=IMAGE_TOKEN)
    processor.save_pretrained(str(out))
    prompts = write_prompts(model, tokenizer, image_token_id, aullava_ids, out)
    (out / "README.md").write_text(_card(model, prompts, out))
    return out


def write_prompts(model: AuLlavaModel, tokenizer, image_token_id: int, aullava_ids: dict, out: Path) -> dict:
    """`aullava_prompts.json`: per format, the prompt as text (for a processor / a completions API) and as token
    ids (exact whatever the tokenizer does at the text's seams), and whether the two agree."""
    needs_bos = tokenizer.bos_token is not None and tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id]
    formats = {}
    for fmt in ALL_FORMATS:
        prompt = build_prompt(model.au_set, fmt, model.config.prompt_style)
        text = (tokenizer.bos_token if needs_bos else "") + prompt.prefix + IMAGE_TOKEN + prompt.question
        prefix, question = aullava_ids[fmt]
        ids = prefix + [image_token_id] * model.num_image_tokens + question
        expanded = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * model.num_image_tokens)
        formats[fmt.value] = {"text": text, "input_ids": ids,
                              "text_gives_input_ids": tokenizer(expanded)["input_ids"] == ids}
    prompts = {"template_version": model.config.template_version, "au_set": model.au_set.name,
               "aus": list(model.au_set.ids), "image_token": IMAGE_TOKEN, "image_token_id": image_token_id,
               "image_tokens": model.num_image_tokens, "formats": formats,
               "answer": {f.value: f"a list of {len(model.au_set)} values in the order of `aus`, then EOS; "
                                   f"parse with aullava.aus.answer_format.parse_answer(text, '{f.value}', "
                                   f"{len(model.au_set)})" for f in ALL_FORMATS}}
    (out / PROMPTS_NAME).write_text(json.dumps(prompts, indent=2))
    return prompts


def _card(model: AuLlavaModel, prompts: dict, out: Path) -> str:
    exact = all(f["text_gives_input_ids"] for f in prompts["formats"].values())
    seam = ("The text prompts tokenize to exactly the ids aullava uses." if exact else
            "This tokenizer tokenizes the text prompts slightly differently from aullava at the `<image>` seams: "
            "send `input_ids` (vLLM: `prompt_token_ids`) for aullava's exact answers.")
    example = prompts["formats"]["binary"]["text"]
    return f"""# AU-LLaVA model exported by aullava

A transformers `LlavaForConditionalGeneration` directory: facial Action Unit recognition ({prompts['au_set']}:
{', '.join(prompts['aus'])}) in three answer formats. No chat template: the prompt is plain text, one per format,
in `{PROMPTS_NAME}` (text and token ids). {seam}

```python
import json
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

model = LlavaForConditionalGeneration.from_pretrained("{out.name}")
processor = AutoProcessor.from_pretrained("{out.name}")
prompts = json.load(open("{out.name}/{PROMPTS_NAME}"))
face = Image.open("face_crop.png")  # an aligned face crop, as aullava's face detector makes
inputs = processor(images=face, text=prompts["formats"]["continuous"]["text"], return_tensors="pt")
answer = model.generate(**inputs)[0, inputs["input_ids"].shape[1]:]
print(processor.decode(answer, skip_special_tokens=True))  # e.g. [0.12, 0.00, ...]
```

Binary prompt, as text:

```
{example}
```

Greedy decoding is what aullava does; aullava additionally constrains every step to a valid answer, which plain
LLaVA serving does not, so an answer may rarely fail to parse.
"""
