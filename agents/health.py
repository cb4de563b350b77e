"""A worker's HTTP endpoint on ``STREAM_REC_METRICS_HOST:STREAM_REC_METRICS_PORT``: metrics, liveness, readiness.

``GET /metrics``
    Prometheus exposition of the worker's registry (:mod:`stream_rec.metrics`).
``GET /healthz``
    200 as long as the process answers at all: a supervisor restarts a worker that stops answering.
``GET /readyz``
    200 once the worker does its job, 503 before, with a JSON body naming what it still waits for:

    ``kernels``       the compiled kernels are loaded (or compiled: minutes, at a machine's first start);
    ``state``         the local state is loaded (:func:`agents.worker.open_state`);
    ``item_model``    the item updates other workers published are applied, up to where they stood at start;
    ``partitions``    the group gave this worker its assignment, and every user partition in it is restored
                      from the changelog.

    An *empty* assignment counts: in a group with more workers than partitions a worker may get none; it is
    then a standby, with its item model kept current, that takes partitions over at the next rebalance, and
    holding it unready would only stall a rolling update that waits for it. Once ready, a worker stays ready
    through later rebalances: they are the group's business, and a readiness that flapped with each would
    mark every worker unready at once whenever one of them joins or leaves.

Any other path answers 404. The server runs on a thread of its own, so it answers while the event loop is
busy (a long batch, a restore) and before the loop exists (kernels compiling, state loading).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

#: What a worker waits for before it is ready, in the order it happens.
CONDITIONS = ("kernels", "state", "item_model", "partitions")


class Readiness:
    """Which of :data:`CONDITIONS` are met; marked from the worker's threads, read by the server's."""

    def __init__(self, conditions: tuple[str, ...] = CONDITIONS) -> None:
        self.conditions = conditions
        self._missing = list(conditions)
        self._lock = threading.Lock()

    def mark(self, condition: str) -> None:
        """``condition`` is met (for good: see the module docstring)."""
        with self._lock:
            if condition in self._missing:
                self._missing.remove(condition)
                if not self._missing:
                    log.info("ready: %s", ", ".join(self.conditions))

    @property
    def missing(self) -> list[str]:
        with self._lock:
            return list(self._missing)


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    readiness: Readiness

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            missing = self.readiness.missing
            self._json(503 if missing else 200, {"ready": not missing, "waiting_for": missing})
        else:
            self._json(404, {"error": f"no such path: {path} (try /metrics, /healthz, /readyz)"})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # one line per scrape and probe on stderr would drown the worker's own log


def serve(host: str, port: int, registry: CollectorRegistry, readiness: Readiness) -> ThreadingHTTPServer:
    """Start answering on ``host:port`` (port 0: a free one, see ``server_address``) on a daemon thread;
    ``shutdown()`` stops it."""
    handler = type("Handler", (_Handler,), {"registry": registry, "readiness": readiness})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
