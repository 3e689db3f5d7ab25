"""`aullava train`: a YAML recipe (with `--set` overrides) through `aullava.training.recipe.train`."""

from __future__ import annotations

import argparse

from aullava.cli.checks import EXIT_OK, check_input_file


def add_commands(commands, common) -> None:
    train = commands.add_parser("train", parents=[common],
        help="train or fine-tune a model from a YAML recipe", description=(
        "Trains with Hugging Face Trainer (works under `accelerate launch`). Resumes from the last checkpoint in "
        "training.output_dir unless --no-resume."))
    train.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set training.max_steps=100 (repeatable)")
    train.add_argument("--no-resume", action="store_true", help="start fresh even if checkpoints exist")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    check_input_file(args.config, "--config")
    from aullava.training.recipe import load_recipe, train

    recipe = load_recipe(args.config, args.set or [])
    trainer = train(recipe, resume=not args.no_resume)
    print(f"model saved to {trainer.args.output_dir}")
    return EXIT_OK
