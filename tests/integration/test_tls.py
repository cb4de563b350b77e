"""Kafka over mutual TLS: a worker, ``stream-rec replay`` and ``stream-rec tail`` against the embedded broker
behind a TLS proxy that requires client certificates (tests/integration/tls_proxy.py). The broker advertises
the proxy's address, so every connection of every client, not only the first, goes through TLS."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from stream_rec.service import warm_up
from stream_rec.settings import TOPIC_FIELDS, Settings
from tests.integration.helpers import STATE_EVENTS, T0, bought_together, event, start_worker
from tests.integration.tls_proxy import TlsProxy, client_pki
from tools.broker import EmbeddedBroker, free_port
from tools.workers import settings_env

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Secured:
    """The proxy in front of the broker, and the files a client is handed: the CA, its certificate and key."""

    proxy: TlsProxy
    ca: str
    cert: str
    key: str

    def settings(self, tmp_path: Path, name: str) -> Settings:
        topics = {field: f"tls-{name}.{getattr(Settings, field)}" for field in TOPIC_FIELDS}
        return replace(Settings(), kafka_bootstrap=self.proxy.address, app_id=f"tls-{name}",
                       data_dir=str(tmp_path / "data"), metrics_port=0, explore=0.0, batch_max=500,
                       kafka_security_protocol="SSL", kafka_ssl_cafile=self.ca, kafka_ssl_certfile=self.cert,
                       kafka_ssl_keyfile=self.key, **topics)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    warm_up()  # the worker's kernels into numba's cache first, so it starts in seconds
    folder = tmp_path_factory.mktemp("tls")
    ca, files = client_pki(folder, "stream-rec-test-client")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)  # the name the clients connect to
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate signed by the CA, no connection
    port = free_port()
    with TlsProxy(f"127.0.0.1:{port}", context) as proxy, \
            EmbeddedBroker(port, advertised=proxy.address, log_path=str(folder / "broker.log")):
        yield Secured(proxy, **files)


def stream_rec(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``stream-rec ARGS`` in its own process, configured by the ``STREAM_REC_*`` environment only."""
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], env={**os.environ, **settings_env(settings)},
                          capture_output=True, text=True, timeout=180)


def test_events_replayed_over_tls_give_lists_that_tail_reads_over_tls(secured: Secured, tmp_path: Path) -> None:
    settings = secured.settings(tmp_path, "pipeline")
    buyer = [event("new-buyer", "tripod", "view", T0 + 10_000_000),
             event("new-buyer", "camera", "purchase", T0 + 10_002_000)]
    events = bought_together(20) + buyer
    log = tmp_path / "shop.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    handshakes = secured.proxy.handshakes
    worker = start_worker(settings, tmp_path)
    try:
        replayed = stream_rec(settings, "replay", str(log))
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        worker.wait_for(STATE_EVENTS, len(events), timeout_s=120)
        tailed = stream_rec(settings, "tail", "--from-beginning", "--jsonl", "-", "--idle-exit", "3")
    finally:
        code = worker.stop()
    assert code == 0, (tmp_path / "worker-1.log").read_text()[-3000:]
    assert tailed.returncode == 0, tailed.stderr

    lists = {rec["user_id"]: rec for rec in map(json.loads, tailed.stdout.splitlines()) if rec.get("user_id")}
    assert set(lists) == {e["user_id"] for e in events}
    items = [item["item_id"] for item in lists["new-buyer"]["items"]]
    assert "memory-card" in items[:3], items  # bought together with the camera, learned from the replayed log
    # The worker's group consumer, producer and own readers, replay's producer and tail's consumer: each
    # connection was a TLS handshake with a client certificate at the proxy.
    assert secured.proxy.handshakes - handshakes >= 5


def test_clients_without_the_ca_or_without_a_certificate_are_refused(secured: Secured, tmp_path: Path) -> None:
    settings = secured.settings(tmp_path, "refused")
    log = tmp_path / "one.jsonl"
    log.write_text(json.dumps(event("u", "i", "view", T0)) + "\n")
    no_ca = replace(settings, kafka_ssl_cafile="")  # the system's CAs do not know the test CA
    for args in (["replay", str(log)], ["tail", "--from-beginning", "--idle-exit", "1"]):
        refused = stream_rec(no_ca, *args)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "no TLS handshake" in refused.stdout + refused.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stdout + refused.stderr
    # Trusting the CA but showing no certificate: the proxy refuses the connection (on TLS 1.3 once the
    # handshake is over, at the first bytes sent).
    host, _, port = secured.proxy.address.rpartition(":")
    context = ssl.create_default_context(cafile=secured.ca)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"\0\0\0\0")
            if not tls.recv(1):
                raise ConnectionResetError("closed without an answer")
