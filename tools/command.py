"""How ``stream-rec`` speaks to a person: a mistake said in one line, help without reStructuredText markup.

A command refuses what its user can put right (a missing file, a busy port, a state folder a worker holds)
by raising :class:`UserError`; :func:`tools.cli.main` prints it as ``stream-rec COMMAND: message`` and exits
with its code. Anything else is a bug and keeps its traceback. Argument errors take the same one-line shape
(:class:`CommandParser`), and so does every subcommand, since argparse builds subparsers of the parser's class.
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

#: A Sphinx role (``:class:`~a.B```), kept as its target; a leading ``~`` keeps only the last name.
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


class UserError(Exception):
    """A failure its user can put right, said in one line without a traceback; ``code`` is the exit code."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``stream-rec generate: argument --out: ...``, exit 2)
    and whose help is plain text (the descriptions are module docstrings, written for Sphinx)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")

    def format_help(self) -> str:
        return plain(super().format_help())


def unreachable(bootstrap: str) -> str:
    """What a command that talks to Kafka (replay, tail) says when no broker answers at ``bootstrap``."""
    return f"cannot reach Kafka at {bootstrap} (is `stream-rec broker` running? see --bootstrap)"


def plain(text: str) -> str:
    """``text`` without reStructuredText's inline markup.

    >>> plain("see :class:`~stream_rec.state.RocksStore`, :func:`tools.checker.check` and ``--json``")
    'see RocksStore, tools.checker.check and --json'
    """
    text = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], text)
    return text.replace("``", "")
