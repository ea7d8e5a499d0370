"""The `charlstm` command. Thin: each feature module registers its own subcommands and does the work."""

import argparse
import importlib
import sys

# Modules that add subcommands through `register(subparsers)`, in the order `--help` lists them.
COMMAND_MODULES = [
    "charlstm.training.trainer",
    "charlstm.generation.sampling",
    "charlstm.detection.detector",
    "charlstm.hub.push",
    "charlstm.hub.model_card",
]


class UsageError(ValueError):
    """Bad input from the user: the CLI prints the message on one line and exits with status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="charlstm", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"charlstm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

