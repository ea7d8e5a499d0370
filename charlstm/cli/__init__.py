"""The `charlstm` command: argument parsing only. Each command group's module defines its options and a thin run
function that imports the library when the command runs, so `charlstm --help` never loads torch or transformers."""

import argparse
import sys

from ..errors import UsageError
from . import detect, generate, hub, rate, train

# Modules that add subcommands through `add_commands(subparsers)`, in the order `--help` lists them.
COMMAND_MODULES = (train, generate, rate, detect, hub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charlstm",
        description="Train a character-level LSTM on reviews, write reviews with it, tell machine-written reviews "
        "from human ones, and publish the models and the Space on the Hugging Face Hub.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Bad input is one line on stderr and exit status 2; anything else is a bug and shows as one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UsageError as error:
        print(f"charlstm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
