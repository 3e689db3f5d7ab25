"""Where bf16 autocast pays in the default model's LLM-stage training step, part by part, and what training the face
side jointly costs (issue 13, part 3).

    .venv/bin/python benchmarks/training_precision.py --repeats 3

An inference forward pass of Gemma-3-270M ran 2.8× faster under bf16 autocast than in fp32 on this CPU, but a whole
training step ran slower (6.0 against 4.3 s). A step has three parts of different kinds: the shared description
(run once per batch, no gradient), Gemma's layers 0–11 (no LoRA there, and with the face side fixed nothing below
them needs a gradient, so they are inference too) and layers 12–17 (LoRA, forward and backward). This builds the
default recipe's model (`configs/default-model.yaml`; `--recipe configs/default-model-geometry.yaml` for the
geometry arm) and times one training step (forward, backward, AdamW; batch
`--batch`, every format in turn, description shared) with bf16 autocast applied to each part in turn:

- ``fp32``: the shipped recipe;
- ``bf16 description``: only the shared description's pass;
- ``bf16 layers 0-11``: the layers without LoRA, for the description and the rows (their key/value cache is kept in
  bf16; layers 12–17 stay fp32 and take fp32 input);
- ``bf16 description + layers 0-11``;
- ``bf16 everywhere``: the whole step under autocast;
- ``joint fp32`` / ``joint bf16 layers 0-11``: the face side (EfficientNet LoRA, projector, geometry stream) trained
  in this stage too instead of fixed after the warm-up, so the backward pass runs through all 18 layers and the
  encoder.

Each variant also reports its loss on the first (same) batch against fp32's, to show what bf16 changes numerically.
Inputs are `patterns` images with synthetic geometry: the cost does not depend on what the pixels show. Variants are
measured interleaved so other load on the machine hits all alike; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

BF16 = torch.bfloat16


def _autocast_layers(model, indices) -> None:
    """Run these decoder layers under bf16 autocast, handing fp32 hidden states on (the next layer may be fp32)."""
    decoder = model.language_model.get_decoder()
    for i in indices:
        layer = decoder.layers[i]
        inner = layer.forward

        def forward(*args, _inner=inner, **kwargs):
            with torch.autocast("cpu", dtype=BF16):
                out = _inner(*args, **kwargs)
            return (out[0].float(), *out[1:]) if isinstance(out, tuple) else out.float()

        layer.forward = forward


def _autocast_prefix(model) -> None:
    inner = model.prefix_cache

    def prefix_cache(*args, **kwargs):
        with torch.autocast("cpu", dtype=BF16):
            return inner(*args, **kwargs)

    model.prefix_cache = prefix_cache


def build(recipe: dict, variant: str):
    from aullava.model.config import AuLlavaConfig
    from aullava.model.modeling import AuLlavaModel
    from aullava.training.recipe import freeze_parts

    torch.manual_seed(0)
    model = AuLlavaModel(AuLlavaConfig.from_dict(recipe["model"]))
    freeze_parts(model, [] if variant.startswith("joint") else recipe["vision_stage"]["freeze"])
    frozen = [i for i in range(len(model.language_model.get_decoder().layers))
              if i not in set(recipe["model"]["lora"]["llm_layers"])]
    if "description" in variant:
        _autocast_prefix(model)
    if "layers 0-11" in variant:
        _autocast_layers(model, frozen)
    return model


VARIANTS = ("fp32", "bf16 description", "bf16 layers 0-11", "bf16 description + layers 0-11", "bf16 everywhere",
            "joint fp32", "joint bf16 layers 0-11")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="configs/default-model.yaml")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()

    from aullava.datasets import FormatExpanded, PatternFaces
    from aullava.runtime.quiet import set_verbose

    set_verbose(False)
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    models = {name: build(recipe, name) for name in args.variants}
    any_model = next(iter(models.values()))
    data = FormatExpanded(PatternFaces(len(any_model.au_set), num_samples=args.batch,
                                       image_size=any_model.vision_encoder.image_size,
                                       geometry=any_model.wants_geometry))
    features = [data[i] for i in range(args.batch)]
    batch = any_model.processor.collate(features, share_prefix=True)
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for name, m in models.items()}
    times = {name: [] for name in models}
    first_loss = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, model in models.items():
            model.train()
            context = torch.autocast("cpu", dtype=BF16) if name == "bf16 everywhere" else contextlib.nullcontext()
            start = time.perf_counter()
            with context:
                loss = model(**batch)["loss"]
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            elapsed = time.perf_counter() - start
            if repeat:
                times[name].append(elapsed)
            else:
                first_loss[name] = float(loss.detach())
            print(f"{name}: {elapsed:.2f} s", file=sys.stderr, flush=True)
    print(f"batch {args.batch}, {batch['input_ids'].shape[1]} tokens per row after the shared description of "
          f"{batch['prefix_ids'].shape[1]}; median of {args.repeats} steps after one warm-up step")
    base = statistics.median(times.get("fp32", times[args.variants[0]]))
    ref = first_loss.get("fp32")
    for name in models:
        step = statistics.median(times[name])
        delta = "" if ref is None else f"; first-step loss {first_loss[name]:.4f} (fp32 {ref:.4f})"
        print(f"{name:>31}: {step:.2f} s per step ({step / base:.2f}× fp32){delta}")


if __name__ == "__main__":
    main()
