"""A TLS-terminating proxy on loopback: the embedded broker speaks plaintext only, so the TLS test puts this
in front of it and has the broker advertise the proxy's address, which every client then connects to."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path
from types import TracebackType

import trustme

#: Bytes relayed per read; Kafka's fetch answers are larger, and are relayed in several.
CHUNK = 1 << 16


class TlsProxy:
    """Accepts TLS on ``127.0.0.1`` (a free port) with ``context`` and relays each connection, decrypted, to
    ``target`` (``host:port``), in an event loop of its own thread.

    ``handshakes`` counts the connections whose TLS handshake succeeded: those that reached the broker.
    A context that requires client certificates (``verify_mode = CERT_REQUIRED``) makes it mutual TLS.
    """

    def __init__(self, target: str, context: ssl.SSLContext) -> None:
        host, _, port = target.rpartition(":")
        self.target, self.context = (host, int(port)), context
        self.handshakes = 0
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> TlsProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self.context)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # the handler only runs once the handshake succeeded
        try:
            broker_in, broker_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.close()
            return
        await asyncio.gather(_pipe(client_in, broker_out), _pipe(broker_in, client_out))

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until ``source`` ends, then close ``sink``: the other direction then ends in turn."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        sink.close()


def client_pki(folder: Path, client: str) -> tuple[trustme.CA, dict[str, str]]:
    """A test CA, and the files an operator would be handed, written into ``folder``: ``ca`` (the CA's
    certificate), ``cert`` and ``key`` (a client certificate named ``client``, signed by it, and its key)."""
    ca = trustme.CA()
    issued = ca.issue_cert(client)
    files = {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    issued.cert_chain_pems[0].write_to_path(str(files["cert"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    return ca, {name: str(path) for name, path in files.items()}
