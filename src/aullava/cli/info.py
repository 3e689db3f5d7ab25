"""`aullava info`: versions, the cache and the assets found."""

from __future__ import annotations

import argparse

from aullava.cli.checks import EXIT_OK


def add_commands(commands, common) -> None:
    info = commands.add_parser("info", parents=[common],
        help="versions, cache and assets found", description=(
        "Prints package versions, $AULLAVA_HOME and where each pretrained asset was found."))
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    from aullava.runtime.assets import asset_report
    from aullava.inference import default_model_dir

    for package in ("aullava", "torch", "transformers", "peft", "accelerate", "mediapipe", "safetensors"):
        try:
            print(f"{package:14s} {md.version(package)}")
        except md.PackageNotFoundError:
            print(f"{package:14s} not installed")
    for key, value in asset_report().items():
        print(f"{key:20s} {value}")
    default = default_model_dir()
    print(f"{'default model':20s} {default or 'none shipped: predict uses the untrained default'}")
    return EXIT_OK
