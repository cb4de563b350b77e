"""stream_rec: a streaming, online-learning recommender for e-commerce.

The package is a pure library (events, models, ranking, state, evaluation). It never imports
Faust or a Kafka client: the Faust runtime lives in ``agents/`` and the command line in ``tools/``.
"""

__version__ = "0.1.0"


import os as _os

#: Environment variable naming modules (comma-separated) that register more ranking sources (see
#: :mod:`stream_rec.sources`); read once, when the package is first imported.
SOURCE_MODULES_ENV = "STREAM_REC_SOURCE_MODULES"


def _kernel_cache_apart() -> None:
    """With sources registered from outside the package, the compiled kernels go to a cache folder of
    their own, named by those modules and their contents: numba's cache index names the sources' classes
    (a process without those modules cannot read it), and numba checks only a function's own file for
    changes, not the source steps compiled into the engine's kernels."""
    modules = [m.strip() for m in _os.environ.get(SOURCE_MODULES_ENV, "").split(",") if m.strip()]
    if not modules:
        return
    import hashlib
    import importlib.util

    from numba.core import config

    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.encode() + b"\0")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None  # stream_rec.sources says so when it imports the module
        if spec is not None and spec.origin and _os.path.isfile(spec.origin):
            with open(spec.origin, "rb") as f:
                digest.update(f.read())
    base = config.CACHE_DIR or _os.path.join(
        _os.environ.get("STREAM_REC_CACHE_DIR") or _os.path.expanduser("~/.cache/stream-rec"), "kernels")
    config.CACHE_DIR = _os.path.join(base, "sources-" + digest.hexdigest()[:16])


_kernel_cache_apart()
