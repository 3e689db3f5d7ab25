"""`aullava export-llava`: a trained model as a transformers LLaVA directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from aullava.cli.checks import EXIT_OK


def add_commands(commands, common) -> None:
    export = commands.add_parser("export-llava", parents=[common],
                                 help="write a model as a transformers LLaVA directory",
                                 description=(
        "Writes MODEL as a standard transformers LlavaForConditionalGeneration directory (config, safetensors with "
        "LoRA merged, processor and tokenizer, aullava_prompts.json with the chat-free prompt of each format), "
        "servable by LLaVA tooling such as vLLM or SGLang. Needs an HF CLIP or SigLIP vision tower (the paper "
        "setting); the default EfficientNet model has no LLaVA equivalent."))
    export.add_argument("model", help="aullava checkpoint directory")
    export.add_argument("out", help="new folder for the LLaVA model")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weight type written (bfloat16 halves a 7B model to ~14 GB)")
    export.set_defaults(func=_export_llava)


def _export_llava(args: argparse.Namespace) -> int:
    from aullava.inference import load_model
    from aullava.llava.export import export_llava

    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise ValueError(f"{args.out}: exists and is not empty; choose a new folder")
    model = load_model(args.model)
    out = export_llava(model, args.out, dtype=args.dtype)
    print(f"wrote a transformers LLaVA model to {out} (prompts: {out / 'aullava_prompts.json'}; usage: "
          f"{out / 'README.md'})")
    return EXIT_OK
