"""The worker's HTTP endpoint: metrics as before, liveness at once, readiness only once everything is there."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from agents.health import CONDITIONS, Readiness, serve
from stream_rec.metrics import Metrics


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Readiness, Metrics]]:
    metrics, readiness = Metrics(), Readiness()
    server = serve("127.0.0.1", 0, metrics.registry, readiness)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", readiness, metrics
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def test_metrics_are_the_registry_in_prometheus_format(endpoint: tuple[str, Readiness, Metrics]) -> None:
    base, _, metrics = endpoint
    metrics.applied.inc(3)
    status, kind, body = _get(base + "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    assert "stream_rec_learn_events_applied_total 3.0" in body.decode()


def test_healthz_answers_before_anything_is_loaded(endpoint: tuple[str, Readiness, Metrics]) -> None:
    base, readiness, _ = endpoint
    assert readiness.missing == list(CONDITIONS)
    status, _, body = _get(base + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_readyz_names_what_is_missing_until_nothing_is(endpoint: tuple[str, Readiness, Metrics]) -> None:
    base, readiness, _ = endpoint
    seen = []
    for condition in CONDITIONS:
        status, kind, body = _get(base + "/readyz")
        seen.append((status, json.loads(body)["waiting_for"]))
        assert kind == "application/json"
        readiness.mark(condition)
    assert seen == [(503, list(CONDITIONS[n:])) for n in range(len(CONDITIONS))]
    status, _, body = _get(base + "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "waiting_for": []}
    readiness.mark("partitions")  # a later rebalance: still ready
    assert _get(base + "/readyz")[0] == 200


@pytest.mark.parametrize("path", ["/", "/metric", "/readyz/x", "/users/1/recommendations"])
def test_every_other_path_is_404(endpoint: tuple[str, Readiness, Metrics], path: str) -> None:
    status, _, body = _get(endpoint[0] + path)
    assert status == 404 and "/readyz" in json.loads(body)["error"]
