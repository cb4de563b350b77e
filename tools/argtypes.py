"""Checked argument types for argparse: a bad value is refused with the flag's name, before any work starts.

Numbers, and the paths a command reads or writes: a run that would write its report into a folder that is
not there, or not writable, is refused at once rather than after its hours of work.

>>> import argparse
>>> p = argparse.ArgumentParser(exit_on_error=False)
>>> _ = p.add_argument("--items", type=whole(1))
>>> _ = p.add_argument("--sizes", type=whole_list(1))
>>> p.parse_args(["--items", "5", "--sizes", "1,20"])
Namespace(items=5, sizes=(1, 20))
>>> p.parse_args(["--items", "0"])
Traceback (most recent call last):
argparse.ArgumentError: argument --items: must be at least 1, got 0
>>> _ = p.add_argument("--json", type=output_file())
>>> p.parse_args(["--json", "/nonexistent/report.json"])
Traceback (most recent call last):
argparse.ArgumentError: argument --json: the folder /nonexistent does not exist
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


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


def input_file(text: str) -> str:
    """A file that exists and can be read."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text}")
    return text


def output_file(*, stdout: bool = False) -> Callable[[str], str]:
    """A file to write: its folder exists and is writable (a missing folder is never made: a mistyped path
    must not leave folders behind); with ``stdout``, ``-`` stands for standard output."""
    def parse(text: str) -> str:
        if stdout and text == "-":
            return text
        path = Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
        _writable_folder(path.parent)
        if path.exists() and not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write {text}")
        return text

    return parse


def output_folder(text: str) -> str:
    """A folder to write in: a writable one, or one that can be made in a writable folder that exists."""
    path = Path(text)
    _writable_folder(path if path.exists() else path.parent)
    return text


def _writable_folder(folder: Path) -> None:
    if not folder.exists():
        raise argparse.ArgumentTypeError(f"the folder {folder} does not exist")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"the folder {folder} is not writable")
