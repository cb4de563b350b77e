"""Checked number types for argparse: a bad value is refused with the flag's name, before any work starts.

>>> import argparse
>>> p = argparse.ArgumentParser(exit_on_error=False)
>>> _ = p.add_argument("--items", type=whole(1))
>>> _ = p.add_argument("--sizes", type=whole_list(1))
>>> p.parse_args(["--items", "5", "--sizes", "1,20"])
Namespace(items=5, sizes=(1, 20))
>>> p.parse_args(["--items", "0"])
Traceback (most recent call last):
argparse.ArgumentError: argument --items: must be at least 1, got 0
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole(minimum: int) -> Callable[[str], int]:
    """A whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def whole_list(minimum: int) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated whole numbers, each at least ``minimum``, at least one."""
    one = whole(minimum)

    def parse(text: str) -> tuple[int, ...]:
        values = tuple(one(part.strip()) for part in text.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
        return values

    return parse


def finite(*, positive: bool) -> Callable[[str], float]:
    """A finite number, > 0 if ``positive`` else >= 0 (``nan`` and ``inf``, which ``float`` accepts, are refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if positive else '>='} 0, got {text}")
        return value

    return parse
