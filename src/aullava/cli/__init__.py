"""`aullava` command line: predict (also under torchrun / accelerate launch), merge-shards, plot, serve, train, eval,
calibrate, synth, teacher, export-llava, info — one module per command (`predict`, `plot`, `serve`, `train`,
`evaluate`, `data`, `export`, `info`), the shared option checks in `checks`. A command parses and checks its options
and paths before any work, calls the library, and prints.

Exit codes: 0 all done; 1 some inputs (images) failed, each named on an `error:` line, the others done; 2 a
mistake that stops the command: an option or path (found before any model is loaded), or a config, recipe, spec,
checkpoint or data file that cannot be used. No traceback for a user's mistake;
`--debug` (or AULLAVA_DEBUG=1) shows it."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aullava.cli import data, evaluate, export, info, plot, predict, serve, train
from aullava.cli.checks import EXIT_SOME_FAILED, EXIT_USAGE, Parser, UsageError
from aullava.runtime.quiet import set_verbose

DEBUG_ENV = "AULLAVA_DEBUG"
COMMANDS = (predict, plot, serve, train, evaluate, data, export, info)  # in the order `aullava --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="aullava", description="Facial Action Unit recognition with an LLM "
                                     "(AU-LLaVA): binary occurrence, 0-5 intensity and 0-1 intensity.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more, and show third-party log lines")
    parser.add_argument("--debug", action="store_true",
                        help=f"show Python tracebacks for errors (or set {DEBUG_ENV}=1)")
    common = argparse.ArgumentParser(add_help=False)  # the same two flags after the command name
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_commands(commands, common)
    return parser


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose, debug = getattr(args, "verbose", False), getattr(args, "debug", False) or bool(os.environ.get(DEBUG_ENV))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    set_verbose(verbose)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from aullava.runtime.assets import AssetError, aullava_home, downloads_allowed

    try:
        aullava_home()
    except AssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not downloads_allowed():  # the README's promise: nothing is downloaded (read before huggingface_hub loads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (AssetError, ValueError, OSError, ImportError) as err:  # the user's files, data and settings
        if debug:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - anything else is our bug: still one line, the traceback on request
        if debug:
            raise
        print(f"error: {type(err).__name__}: {_one_line(err)} (unexpected; rerun with --debug for the traceback "
              "and please report it)", file=sys.stderr)
        return EXIT_SOME_FAILED


if __name__ == "__main__":
    sys.exit(main())
