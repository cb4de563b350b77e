"""Kafka security: the settings, what each client library is given (agents/security.py), and that every
Kafka client in agents/ and tools/ is given it."""

from __future__ import annotations

import ast
import inspect
import socket
import ssl
from argparse import Namespace
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agents import topics
from agents.security import aiokafka_options, faust_credentials, kafka_python_options
from stream_rec.settings import SASL_MECHANISMS, Settings
from tests.integration.tls_proxy import client_pki

ROOT = Path(__file__).resolve().parents[2]
MECHANISMS = pytest.mark.parametrize("mechanism", SASL_MECHANISMS)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA file, and a client certificate and key it signed, as the files an operator would be handed."""
    return client_pki(tmp_path_factory.mktemp("pki"), "stream-rec-worker")[1]


def sasl(mechanism: str, protocol: str = "SASL_SSL", **more: Any) -> Settings:
    return Settings(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism, kafka_sasl_username="shop",
                    kafka_sasl_password="s3cret", **more)


# -- what each client library is given --------------------------------------------------------------

def test_plaintext_by_default() -> None:
    assert aiokafka_options(Settings()) == {"security_protocol": "PLAINTEXT", "ssl_context": None}
    assert kafka_python_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


@MECHANISMS
def test_sasl_over_tls_for_aiokafka(mechanism: str, pki: dict[str, str]) -> None:
    options = aiokafka_options(sasl(mechanism, kafka_ssl_cafile=pki["ca"]))
    context = options.pop("ssl_context")
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": mechanism, "sasl_plain_username": "shop",
                       "sasl_plain_password": "s3cret"}
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@MECHANISMS
def test_sasl_without_tls_for_aiokafka(mechanism: str) -> None:
    assert aiokafka_options(sasl(mechanism, "SASL_PLAINTEXT")) == {
        "security_protocol": "SASL_PLAINTEXT", "ssl_context": None, "sasl_mechanism": mechanism,
        "sasl_plain_username": "shop", "sasl_plain_password": "s3cret"}


@MECHANISMS
def test_sasl_over_tls_for_kafka_python(mechanism: str, pki: dict[str, str]) -> None:
    assert kafka_python_options(sasl(mechanism, kafka_ssl_cafile=pki["ca"])) == {
        "security_protocol": "SASL_SSL", "ssl_cafile": pki["ca"], "ssl_certfile": None, "ssl_keyfile": None,
        "sasl_mechanism": mechanism, "sasl_plain_username": "shop", "sasl_plain_password": "s3cret"}


@MECHANISMS
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_faust_hands_aiokafka_the_same_sasl_arguments(mechanism: str, protocol: str) -> None:
    """faust-streaming passes the mechanism through, SCRAM included: its consumer and producer get what the
    project's own aiokafka clients get."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = sasl(mechanism, protocol)
    faust_side = credentials_to_aiokafka_auth(faust_credentials(settings))
    ours = aiokafka_options(settings)
    assert {k: v for k, v in faust_side.items() if k != "ssl_context"} == {k: v for k, v in ours.items() if k != "ssl_context"}
    assert (faust_side["ssl_context"] is None) == (protocol == "SASL_PLAINTEXT")


def test_mutual_tls(pki: dict[str, str]) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"], kafka_ssl_certfile=pki["cert"],
                        kafka_ssl_keyfile=pki["key"])
    assert kafka_python_options(settings) == {"security_protocol": "SSL", "ssl_cafile": pki["ca"],
                                              "ssl_certfile": pki["cert"], "ssl_keyfile": pki["key"]}
    assert aiokafka_options(settings)["security_protocol"] == "SSL"
    context = aiokafka_options(settings)["ssl_context"]
    assert [cert["subject"] for cert in context.get_ca_certs()]  # the CA file is what brokers are checked against
    credentials = faust_credentials(settings)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


def test_the_arguments_are_ones_the_libraries_take() -> None:
    """A misspelt keyword would only fail when a client is opened against a secured cluster."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    settings = sasl("SCRAM-SHA-512")
    for client in (AIOKafkaConsumer, AIOKafkaProducer):
        assert set(aiokafka_options(settings)) <= set(inspect.signature(client).parameters)
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        assert set(kafka_python_options(settings)) <= set(client.DEFAULT_CONFIG)


# -- the settings ----------------------------------------------------------------------------------

def test_password_file_is_read_without_its_newline_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    settings = Settings.from_env({"STREAM_REC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                  "STREAM_REC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                                  "STREAM_REC_KAFKA_SASL_USERNAME": "shop",
                                  "STREAM_REC_KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert kafka_python_options(settings)["sasl_plain_password"] == "from-a-file"
    assert "s3cret" not in repr(sasl("PLAIN"))


@pytest.mark.parametrize("env, message", [
    ({"PROTOCOL": "TLS"}, "STREAM_REC_KAFKA_SECURITY_PROTOCOL='TLS': expected one of"),
    ({"PROTOCOL": "SASL_SSL", "MECHANISM": "GSSAPI", "USERNAME": "u", "PASSWORD": "p"},
     "STREAM_REC_KAFKA_SASL_MECHANISM='GSSAPI'"),
    ({"PROTOCOL": "SASL_SSL", "PASSWORD": "p"}, "STREAM_REC_KAFKA_SASL_USERNAME: required with"),
    ({"PROTOCOL": "SASL_PLAINTEXT", "USERNAME": "u"}, "STREAM_REC_KAFKA_SASL_PASSWORD: required with"),
    ({"PROTOCOL": "SASL_SSL", "USERNAME": "u", "PASSWORD": "p", "PASSWORD_FILE": __file__},
     "STREAM_REC_KAFKA_SASL_PASSWORD_FILE: give it or STREAM_REC_KAFKA_SASL_PASSWORD, not both"),
    ({"PROTOCOL": "SASL_SSL", "USERNAME": "u", "PASSWORD_FILE": "/nonexistent/password"},
     "STREAM_REC_KAFKA_SASL_PASSWORD_FILE='/nonexistent/password': no such readable file"),
    ({"PROTOCOL": "SSL", "CAFILE": "/nonexistent/ca.pem"}, "STREAM_REC_KAFKA_SSL_CAFILE='/nonexistent/ca.pem'"),
    ({"PROTOCOL": "SSL", "CERTFILE": "/nonexistent/c.pem"}, "STREAM_REC_KAFKA_SSL_CERTFILE='/nonexistent/c.pem'"),
    ({"PROTOCOL": "SSL", "KEYFILE": __file__}, "STREAM_REC_KAFKA_SSL_KEYFILE: a key without"),
    ({"CAFILE": __file__}, "STREAM_REC_KAFKA_SSL_CAFILE: not used with STREAM_REC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"PROTOCOL": "SSL", "USERNAME": "u"}, "STREAM_REC_KAFKA_SASL_USERNAME: not used with"),
])
def test_wrong_security_settings_fail_at_start_naming_the_variable(env: dict[str, str], message: str) -> None:
    names = {"PROTOCOL": "SECURITY_PROTOCOL", "MECHANISM": "SASL_MECHANISM", "USERNAME": "SASL_USERNAME",
             "PASSWORD": "SASL_PASSWORD", "PASSWORD_FILE": "SASL_PASSWORD_FILE", "CAFILE": "SSL_CAFILE",
             "CERTFILE": "SSL_CERTFILE", "KEYFILE": "SSL_KEYFILE"}
    with pytest.raises(ValueError, match="^invalid setting " + message.replace("(", r"\(")) as raised:
        Settings.from_env({f"STREAM_REC_KAFKA_{names[key]}": value for key, value in env.items()})
    assert "\n" not in str(raised.value)


# -- every client is given them ------------------------------------------------------------------

#: Client class -> the helper whose result it must be given (faust.App takes it as broker_credentials).
CLIENTS = {"AIOKafkaConsumer": "aiokafka_options", "AIOKafkaProducer": "aiokafka_options",
           "AIOKafkaClient": "aiokafka_options", "AIOKafkaAdminClient": "aiokafka_options",
           "KafkaConsumer": "kafka_python_options", "KafkaProducer": "kafka_python_options",
           "KafkaAdminClient": "kafka_python_options", "KafkaClient": "kafka_python_options",
           "App": "faust_credentials"}


def unsecured_clients(source: str) -> tuple[int, list[int]]:
    """(Kafka client constructor calls in ``source``, lines of those not given the security helper's result)."""
    found, bad = 0, []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in CLIENTS or (name == "App" and not _is_faust(node.func)):
            continue
        found += 1
        given = [kw.value for kw in node.keywords if (kw.arg is None) != (name == "App")
                 and (name != "App" or kw.arg == "broker_credentials")]
        if not any(isinstance(v, ast.Call) and getattr(v.func, "id", "") == CLIENTS[name] for v in given):
            bad.append(node.lineno)
    return found, bad


def _is_faust(func: ast.expr) -> bool:
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "faust"


def test_the_check_catches_a_plaintext_client() -> None:
    assert unsecured_clients("KafkaConsumer('t', bootstrap_servers=b, **kafka_python_options(s))") == (1, [])
    assert unsecured_clients("KafkaConsumer('t', bootstrap_servers=b)") == (1, [1])
    assert unsecured_clients("AIOKafkaProducer(bootstrap_servers=b, **kafka_python_options(s))") == (1, [1])
    assert unsecured_clients("faust.App('a', broker=b)") == (1, [1])
    assert unsecured_clients("faust.App('a', broker=b, broker_credentials=faust_credentials(s))") == (1, [])


def test_every_kafka_client_in_agents_and_tools_is_given_the_security_settings() -> None:
    total, unsecured = 0, []
    for path in sorted([*ROOT.glob("agents/*.py"), *ROOT.glob("tools/*.py")]):
        found, bad = unsecured_clients(path.read_text())
        total += found
        unsecured += [f"{path.relative_to(ROOT)}:{line}" for line in bad]
    assert not unsecured, f"Kafka clients that would connect in plaintext: {unsecured} (see agents/security.py)"
    assert total >= 20  # the check sees the clients at all (20 when written)


def test_clients_receive_the_settings_security(monkeypatch: pytest.MonkeyPatch, pki: dict[str, str]) -> None:
    """The same, by behaviour, for one client of each library: what the constructor actually receives."""
    import aiokafka
    import kafka

    from agents import app as worker_app
    from tools import replay, tail

    received: dict[str, dict[str, Any]] = {}

    class Recorder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            received[type(self).__name__] = kwargs

        def poll(self, **_: Any) -> dict:
            return {}

        def list_topics(self) -> list[str]:
            return list(topics.all_topics(settings))

        def close(self) -> None:
            pass

    settings = sasl("SCRAM-SHA-512", kafka_ssl_cafile=pki["ca"])
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", type("AIOKafkaProducer", (Recorder,), {}))
    monkeypatch.setattr(kafka, "KafkaConsumer", type("KafkaConsumer", (Recorder,), {}))
    monkeypatch.setattr(topics, "KafkaAdminClient", type("KafkaAdminClient", (Recorder,), {}))
    monkeypatch.setattr(topics, "reachable", lambda bootstrap: True)  # topics.broker_problem: tail's check too
    monkeypatch.setattr(topics, "tls_refused", lambda settings, bootstrap: None)
    monkeypatch.setattr(Settings, "from_env", classmethod(lambda cls, *a, **kw: settings))

    replay._producer(settings, "broker:9093")
    assert 0 == tail.run(Namespace(topic=None, dead_letter=False, bootstrap="broker:9093", jsonl=None, user=None, max=None,
                       idle_exit=0.0, from_beginning=True))
    topics.ensure_topics(settings, "broker:9093")
    for name in ("AIOKafkaProducer", "KafkaConsumer", "KafkaAdminClient"):
        assert received[name]["security_protocol"] == "SASL_SSL", name
        assert (received[name]["sasl_mechanism"], received[name]["sasl_plain_password"]) == ("SCRAM-SHA-512", "s3cret")
    assert isinstance(received["AIOKafkaProducer"]["ssl_context"], ssl.SSLContext)
    assert received["KafkaConsumer"]["ssl_cafile"] == pki["ca"]
    conf = worker_app.faust_app(replace(settings, worker_id="w"), "broker:9093").conf
    assert conf.broker_credentials.mechanism.value == "SCRAM-SHA-512"
    assert conf.broker_credentials.ssl_context is not None


def test_a_refused_tls_handshake_is_named_in_seconds(pki: dict[str, str]) -> None:
    from agents.security import tls_refused

    with socket.socket() as silent:  # accepts connections, never answers a handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        reason = tls_refused(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"]), address, timeout_s=0.3)
        assert tls_refused(Settings(), address) is None  # plaintext: nothing to check
    assert reason is not None and reason.startswith(f"no TLS handshake with any Kafka bootstrap server ({address}: ")
    assert "STREAM_REC_KAFKA_SSL_CAFILE" in reason
