"""What the geometry stream costs at the default model's sizes (Gemma-3-270M, EfficientNet-Lite0 at 16 tokens).

    .venv/bin/python benchmarks/geometry_cost.py --repeats 5

Builds the default recipe's model (`configs/default-model.yaml`: pretrained bases, LoRA in Gemma's top 6 layers,
the vision side frozen as after its warm-up) twice, without and with `geometry` (`--tokens` tokens), and measures,
interleaved so that other load on the machine hits both alike:
- one LLM-stage training step (forward, backward, AdamW) on a batch of `--batch` examples (every format in turn, the
  shared description sent once), median seconds;
- the parallel readout of `--faces` faces, all three formats, median faces/s;
- tokens per training row and the geometry stream's parameter count and checkpoint size.
Inputs are `patterns` images with their synthetic geometry: the cost does not depend on what the pixels show.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def build(model_spec: dict, geometry: dict | None):
    from aullava.model.config import AuLlavaConfig
    from aullava.model.modeling import AuLlavaModel
    from aullava.training.recipe import freeze_parts

    spec = dict(model_spec)
    if geometry:
        spec["geometry"] = geometry
    torch.manual_seed(0)
    model = AuLlavaModel(AuLlavaConfig.from_dict(spec))
    freeze_parts(model, ["vision", "projector"])  # the default recipe's LLM stage
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="configs/default-model.yaml")
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--faces", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    from aullava.datasets import FormatExpanded, PatternFaces
    from aullava.model.parallel_decoding import ParallelDecoder

    recipe = yaml.safe_load(Path(args.recipe).read_text())
    models = {"without": build(recipe["model"], None),
              "with": build(recipe["model"], {"enabled": True, "num_tokens": args.tokens, "hidden_size": args.hidden})}
    size = models["with"].vision_encoder.image_size
    data = FormatExpanded(PatternFaces(len(models["with"].au_set), num_samples=args.batch, image_size=size,
                                       geometry=True))
    features = [data[i] for i in range(args.batch)]
    crops = torch.from_numpy(np.stack([f["image"] for f in features[:args.faces]]))
    shapes = torch.from_numpy(np.stack([f["geometry"] for f in features[:args.faces]]))
    step_times = {name: [] for name in models}
    read_rates = {name: [] for name in models}
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for name, m in models.items()}
    rows = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, model in models.items():
            batch = model.processor.collate([{k: v for k, v in f.items() if name == "with" or k != "geometry"}
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
            decoder = ParallelDecoder(model)
            start = time.perf_counter()
            decoder.decode(crops[:args.faces], geometry=shapes if name == "with" else None)
            rate = args.faces / (time.perf_counter() - start)
            if repeat:
                step_times[name].append(elapsed)
                read_rates[name].append(rate)
    geometry_params = sum(p.numel() for n, p in models["with"].named_parameters() if n.startswith("geometry_"))
    print(f"geometry stream: {args.tokens} tokens, hidden {args.hidden}: {geometry_params:,} parameters "
          f"({geometry_params * 4 / 2**20:.1f} MiB as fp32 safetensors)")
    for name in models:
        print(f"{name:>7} geometry: {rows[name]} tokens per training row (after the shared description); "
              f"step {statistics.median(step_times[name]):.2f} s (median of {args.repeats}, batch {args.batch}); "
              f"readout {statistics.median(read_rates[name]):.2f} faces/s ({args.faces} faces, all formats)")
    ratio = statistics.median(step_times["with"]) / statistics.median(step_times["without"])
    print(f"training step with/without: {ratio:.3f}×")


if __name__ == "__main__":
    main()
