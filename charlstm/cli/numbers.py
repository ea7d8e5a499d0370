"""argparse `type=` functions for numbers that something can use.

argparse's own `float` takes "nan" and "inf", and its `int` any number of digits: values that pass parsing and then
train forever, or end in an OverflowError deep inside torch. These refuse them while the options are read, in the
command's one-line error. Light: every command module may import it.
"""

import argparse
import math
from collections.abc import Callable


def finite_float(text: str) -> float:
    """A number that is not nan or infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate, a time limit)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


def whole_number(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """
    A `type=` for a whole number from `low` to `high` (an end that is None is open). Without bounds it still refuses
    integers too large for a float, which the libraries underneath turn into one.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low} to {high}" if low is not None and high is not None else (
                f"at least {low}" if low is not None else f"at most {high}")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {_short(text)}")
        try:
            float(value)
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{_short(text)} is too large") from None
        return value

    parse.__name__ = "whole number"  # what argparse calls the type in its own messages
    return parse


def _short(text: str) -> str:
    """A number as typed, cut if it is hundreds of digits long."""
    text = text.strip()
    return text if len(text) <= 20 else f"{text[:8]}...({len(text)} digits)"


# The plain cases, as the command modules name their options' types.
integer = whole_number()
number = finite_float
