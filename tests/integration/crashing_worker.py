"""``python -m tests.integration.crashing_worker``: the real worker, whose service raises on its first batch.

The integration tests run it to see what the worker does when an exception escapes an agent; nothing but
the service differs from ``stream-rec worker``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from agents.worker import run_worker
from stream_rec.service import BatchResult, Position, RecService
from stream_rec.settings import Settings

MESSAGE = "injected failure in apply"


class CrashingService(RecService):
    def apply(self, batch: Sequence[tuple[Position, Any]], **kwargs: Any) -> BatchResult:
        raise RuntimeError(MESSAGE)


if __name__ == "__main__":
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run_worker(settings, service_factory=CrashingService))
