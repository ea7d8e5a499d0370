"""The `charlstm` command: argument parsing only. Each command group's module defines its options and a thin run
function that imports the library when the command runs, so `charlstm --help` never loads torch or transformers."""

import argparse
import errno
import os
import sys

from .. import __version__
from ..errors import UsageError
from . import detect, generate, hub, rate, space, train

# A write refused for want of room or of a writable disk: for a redirected stdout (`> file` on a full disk) this is
# what the user must hear, in one line. Files the commands write themselves say so by name (runfiles.write_text).
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}

# Modules that add subcommands through `add_commands(subparsers)`, in the order `--help` lists them.
COMMAND_MODULES = (train, generate, rate, detect, hub, space)


class OneLineParser(argparse.ArgumentParser):
    """Bad options read as all other bad input does, one line and exit 2: argparse's own error puts its usage first.
    Subcommands' parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="charlstm",
        description="Train a character-level LSTM on reviews, write reviews with it, tell machine-written reviews "
        "from human ones, and publish the models and the Space on the Hugging Face Hub.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Bad input is one line on stderr and exit status 2; anything else is a bug and shows as one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args) or 0
        sys.stdout.flush()  # output that cannot be written fails here, not in a traceback as Python exits
        return status
    except UsageError as error:
        print(f"charlstm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in NO_ROOM:
            raise
        _drop_stdout()
        where = error.filename or "the standard output"
        print(f"charlstm {args.command}: error: could not write {where}: {error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _drop_stdout() -> None:
    """What is still buffered for a stdout that cannot take it is dropped, so Python's own flush at exit is quiet."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
