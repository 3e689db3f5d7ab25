"""What the geometry stream costs at the default model's sizes (Gemma-3-270M, EfficientNet-Lite0 at 16 tokens).

    .venv/bin/python benchmarks/geometry_cost.py --repeats 5

Builds the default recipe's model (`configs/default-model.yaml`: pretrained bases, LoRA in Gemma's top 6 layers,
the vision side frozen as after its warm-up) three times: without geometry (`configs/default-model.yaml`), with
`geometry` (`--tokens` tokens, `--hidden` units) kept fixed in the LLM stage (`configs/default-model-geometry.yaml`:
warmed up in the vision stage), and with it trained in the LLM stage. Measured interleaved, so that other load on
the machine hits all alike:
- one LLM-stage training step (forward, backward, AdamW) on a batch of `--batch` examples (every format in turn, the
  shared description sent once), median seconds. A trained geometry stream enters at the LLM's input, so its
  gradient runs the backward pass through all 18 layers instead of stopping at layer 12;
- with `--faces` > 0, the parallel readout of that many faces, all three formats, median faces/s (an untrained
  projector makes answers that need many corrections: compare the variants, not the absolute rate);
- tokens per training row and the geometry stream's parameter count and checkpoint size.
Inputs are `patterns` images with their synthetic geometry: the cost does not depend on what the pixels show.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def build(model_spec: dict, geometry: dict | None, freeze: list[str]):
    from aullava.model.config import AuLlavaConfig
    from aullava.model.modeling import AuLlavaModel
    from aullava.training.recipe import freeze_parts

    spec = dict(model_spec)
    spec.pop("geometry", None)  # the recipe's own setting is replaced by the variant's
    if geometry:
        spec["geometry"] = geometry
    torch.manual_seed(0)
    model = AuLlavaModel(AuLlavaConfig.from_dict(spec))
    freeze_parts(model, freeze)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="configs/default-model.yaml")
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--faces", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    from aullava.datasets import FormatExpanded, PatternFaces
    from aullava.model.decoding.parallel import ParallelDecoder

    recipe = yaml.safe_load(Path(args.recipe).read_text())
    geometry = {"enabled": True, "num_tokens": args.tokens, "hidden_size": args.hidden}
    models = {"without geometry": build(recipe["model"], None, ["vision", "projector"]),
              "geometry, fixed": build(recipe["model"], geometry, ["vision", "projector", "geometry"]),
              "geometry, trained": build(recipe["model"], geometry, ["vision", "projector"])}
    with_geometry = models["geometry, fixed"]
    size = with_geometry.vision_encoder.image_size
    data = FormatExpanded(PatternFaces(len(with_geometry.au_set), num_samples=args.batch, image_size=size,
                                       geometry=True))
    features = [data[i] for i in range(args.batch)]
    crops = torch.from_numpy(np.stack([f["image"] for f in features]))[:args.faces]
    shapes = torch.from_numpy(np.stack([f["geometry"] for f in features]))[:args.faces]
    step_times = {name: [] for name in models}
    read_rates = {name: [] for name in models}
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for name, m in models.items()}
    rows = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, model in models.items():
            batch = model.processor.collate([{k: v for k, v in f.items() if model.wants_geometry or k != "geometry"}
                                             for f in features], share_prefix=True)
            rows[name] = batch["input_ids"].shape[1]
            model.train()
            start = time.perf_counter()
            loss = model(**batch)["loss"]
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            elapsed = time.perf_counter() - start
            model.eval()
            if repeat:
                step_times[name].append(elapsed)
            print(f"{name}: step {elapsed:.2f} s", file=sys.stderr, flush=True)
            if args.faces:
                decoder = ParallelDecoder(model)
                start = time.perf_counter()
                decoder.decode(crops[:args.faces], geometry=shapes if model.wants_geometry else None)
                if repeat:
                    read_rates[name].append(args.faces / (time.perf_counter() - start))
    geometry_params = sum(p.numel() for n, p in with_geometry.named_parameters() if n.startswith("geometry_"))
    print(f"geometry stream: {args.tokens} tokens, hidden {args.hidden}: {geometry_params:,} parameters "
          f"({geometry_params * 4 / 2**20:.1f} MiB as fp32 safetensors)")
    base = statistics.median(step_times["without geometry"])
    for name in models:
        step = statistics.median(step_times[name])
        line = (f"{name:>17}: {rows[name]} tokens per training row (after the shared description); step {step:.2f} s "
                f"(median of {args.repeats}, batch {args.batch}; {step / base:.2f}× without geometry)")
        if args.faces:
            line += f"; readout {statistics.median(read_rates[name]):.2f} faces/s ({args.faces} faces, all formats)"
        print(line)


if __name__ == "__main__":
    main()
