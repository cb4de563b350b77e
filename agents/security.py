"""How every Kafka client stream_rec opens connects: the ``STREAM_REC_KAFKA_SECURITY_PROTOCOL``,
``STREAM_REC_KAFKA_SASL_*`` and ``STREAM_REC_KAFKA_SSL_*`` settings, in the shape each client library takes.

- aiokafka (the workers' own readers, ``serve``, ``replay``, the bench): :func:`aiokafka_options`, with an
  :class:`ssl.SSLContext`;
- kafka-python (topic admin, ``tail``, the tools' readers and producers): :func:`kafka_python_options`, with
  file paths, which kafka-python loads into a context of its own;
- Faust (the worker's group consumer and its producer): :func:`faust_credentials`, which Faust turns into
  aiokafka's arguments itself. faust-streaming's ``SASLMechanism`` has PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512,
  and ``SASLCredentials`` hands its ``mechanism`` on as aiokafka's ``sasl_mechanism``, so SCRAM needs nothing
  more; with an ``ssl_context`` the protocol becomes SASL_SSL, without one SASL_PLAINTEXT.

A call site spreads one of them into the constructor, ``AIOKafkaConsumer(..., **aiokafka_options(settings))``;
``tests/unit/test_kafka_security.py`` fails on a client in ``agents/`` or ``tools/`` that does not.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING, Any

from stream_rec.settings import Settings

if TYPE_CHECKING:
    from faust.types import CredentialsT


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``settings`` (None without TLS): the brokers' certificates checked against the CA
    file (else the system's CAs) and their names against the certificates; the client certificate if any."""
    if not settings.kafka_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
    return context


def _sasl(settings: Settings) -> dict[str, Any]:
    # Both libraries name the user and password "plain" whatever the mechanism; SCRAM takes them too.
    if not settings.kafka_sasl:
        return {}
    return {"sasl_mechanism": settings.kafka_sasl_mechanism, "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_password()}


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaConsumer``/``AIOKafkaProducer``.

    >>> aiokafka_options(Settings())
    {'security_protocol': 'PLAINTEXT', 'ssl_context': None}
    """
    return {"security_protocol": settings.kafka_security_protocol, "ssl_context": ssl_context(settings),
            **_sasl(settings)}


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``KafkaConsumer``/``KafkaProducer``/``KafkaAdminClient``.

    >>> kafka_python_options(Settings())
    {'security_protocol': 'PLAINTEXT'}
    """
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_tls:
        options |= {"ssl_cafile": settings.kafka_ssl_cafile or None, "ssl_certfile": settings.kafka_ssl_certfile or None,
                    "ssl_keyfile": settings.kafka_ssl_keyfile or None}
    return options | _sasl(settings)


def tls_refused(settings: Settings, bootstrap: str, timeout_s: float = 3.0) -> str | None:
    """Why no bootstrap server completes a TLS handshake with ``settings``, in a sentence for the operator
    (None: one does, or no TLS).

    The Kafka clients retry a failed handshake until their 30 s timeout and then say only that they could not
    bootstrap; this says which certificate was refused, in seconds. (A broker that wants a client certificate
    may only refuse a missing one after the handshake, on TLS 1.3: the clients' timeout still covers that.)
    """
    context = ssl_context(settings)
    if context is None:
        return None
    reasons = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        host = host.strip("[]") or "localhost"
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
                context.wrap_socket(raw, server_hostname=host).close()
            return None
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            reasons.append(f"{server}: {err}")
    return (f"no TLS handshake with any Kafka bootstrap server ({'; '.join(reasons)}); check "
            "STREAM_REC_KAFKA_SSL_CAFILE and STREAM_REC_KAFKA_SECURITY_PROTOCOL")


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` (None: plaintext, Faust's default)."""
    import faust

    if settings.kafka_sasl:
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_password(),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context(settings))
    if settings.kafka_tls:
        return faust.SSLCredentials(ssl_context(settings))
    return None
