"""One settings object for workers, tools and the demo, read from ``STREAM_REC_*`` environment variables.

Every field documents itself (``help`` in its metadata); ``stream-rec --help`` and the README's
configuration table are generated from the same place (:func:`settings_table`).
"""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Mapping

from stream_rec.events import EVENT_TYPES

ENV_PREFIX = "STREAM_REC_"
#: Values of ``STREAM_REC_LOG_FORMAT`` (:mod:`stream_rec.logsetup`).
LOG_FORMATS = ("text", "json")


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    # A secret stays out of repr(settings), and so out of every log line and traceback that shows one.
    return field(default=default, repr=not secret, metadata={"help": help})


#: Kafka's security protocols and SASL mechanisms that every client stream_rec opens can speak.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Settings:
    """Everything a stream_rec process can be told. Defaults work on a laptop out of the box."""

    kafka_bootstrap: str = _setting(
        "", "Kafka bootstrap servers (host:port,...). Empty: the embedded broker on 127.0.0.1:9092 "
        "(`stream-rec broker`); the demo starts its own on a free port.")
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (user and "
        "password over TLS). See docs/operations.md, Secured Kafka.")
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", "SASL mechanism with a SASL protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str = _setting("", "SASL user name (required with a SASL protocol).")
    kafka_sasl_password: str = _setting(
        "", "SASL password; prefer STREAM_REC_KAFKA_SASL_PASSWORD_FILE, which keeps it out of the environment.",
        secret=True)
    kafka_sasl_password_file: str = _setting(
        "", "File holding the SASL password, read at start (a trailing newline is dropped); give this or "
        "STREAM_REC_KAFKA_SASL_PASSWORD, not both.")
    kafka_ssl_cafile: str = _setting(
        "", "PEM file of the CA certificates that sign the brokers' certificates, with SSL or SASL_SSL (empty: the "
        "system's CAs). The broker's name is checked against its certificate.")
    kafka_ssl_certfile: str = _setting(
        "", "PEM client certificate for brokers that require one (mutual TLS), with SSL or SASL_SSL.")
    kafka_ssl_keyfile: str = _setting(
        "", "PEM private key of STREAM_REC_KAFKA_SSL_CERTFILE (empty: the key is in the certificate file).")
    app_id: str = _setting("stream-rec", "Consumer group and Faust app id; workers with the same id share the work.")
    worker_id: str = _setting("worker-1", "Names this worker's state folder under data_dir; unique per worker on a host.")
    data_dir: str = _setting("./stream-rec-data", "Where workers and `stream-rec serve` keep their RocksDB state.")
    topic_browse: str = _setting("stream-rec.browse", "Input topic for view events.")
    topic_click: str = _setting("stream-rec.click", "Input topic for click and add_to_cart events.")
    topic_purchase: str = _setting("stream-rec.purchase", "Input topic for purchase events.")
    topic_items: str = _setting(
        "stream-rec.items", "Input topic (compacted, keyed by item id) for item availability, `{\"item_id\": ..., "
        "\"available\": false}`; a null value (tombstone) deletes the item. Every worker reads all of it from the start.")
    topic_impressions: str = _setting(
        "stream-rec.impressions", "Input topic (optional): what a front end showed, `{\"list_id\", \"user_id\", "
        "\"items\"}` keyed by user id; counted per source and variant, and exploration's counts with "
        "STREAM_REC_IMPRESSIONS.")
    topic_forget: str = _setting(
        "stream-rec.forget", "Input topic: a message keyed by a user id erases everything held about that user.")
    topic_events: str = _setting("stream-rec.events-by-user", "Internal topic: valid events re-keyed by user id.")
    topic_recommendations: str = _setting(
        "stream-rec.recommendations", "Output topic (compacted): refreshed top-N per user, keyed by user id; the empty "
        "key holds the list for a user not seen yet; a null value (tombstone) is a forgotten user.")
    topic_dead_letter: str = _setting("stream-rec.dead-letter", "Rejected messages, untouched (cut to fit 1,000,000 bytes when larger), with the reason in headers.")
    topic_user_state: str = _setting(
        "stream-rec.user-state", "Internal compacted changelog of user state, keyed by user id, partitioned like the "
        "user-keyed events: a worker that gains a partition restores its users from it.")
    topic_item_updates: str = _setting(
        "stream-rec.item-updates", "Internal topic of item updates: what each worker learned about items, which every "
        "other worker applies so that all of them rank from one item model.")
    partitions: int = _setting(4, "Partitions of the topics stream_rec creates (the most workers that can share the work).")
    replication_factor: int = _setting(
        1, "Replication factor of the topics stream_rec creates (3 on a production cluster; 1 for one broker).")
    top_n: int = _setting(20, "Items per recommendation list.")
    batch_max: int = _setting(2000, "Most events per micro-batch.")
    batch_wait_ms: int = _setting(20, "Longest wait to fill a micro-batch, in milliseconds.")
    max_message_bytes: int = _setting(65536, "Messages larger than this are dead-lettered (reason too_large).")
    max_future_ms: int = _setting(86_400_000, "Events stamped further than this in the future are dead-lettered.")
    input_keys: str = _setting(
        "any", "How producers key the input messages. `any`: re-key valid events by user id through topic_events "
        "(works with any keys, or none). `user_id`: every message is keyed by its user id, so workers apply events "
        "straight from the input topics, one Faust hop instead of two (much faster).")
    fetch_max_wait_ms: int = _setting(
        20, "Longest time the broker may hold a worker's fetch when no data is waiting (Faust fixes it at 1500; a "
        "broker that always holds fetches that long would add it to every event's freshness).")
    inline_delivery: bool = _setting(
        True, "Hand each fetched message to its stream inline when that cannot block (agents/transport.py); false "
        "runs Faust's stock consumer loop, four tasks per message (`stream-rec bench` measures both: 2.5x for a "
        "do-nothing agent, 1.4x for the worker).")
    weights: str = _setting("view=1,click=2,add_to_cart=4,purchase=8", "Learning weight per event type.")
    mf_factors: int = _setting(32, "Latent factors of the matrix factorization model.")
    mf_learning_rate: float = _setting(0.05, "SGD learning rate of the matrix factorization model.")
    mf_index_above: int = _setting(
        20_000, "From this many items on, matrix factorization lists its candidates from item clusters kept current "
        "as it learns (a cost that grows with the square root of the catalogue) instead of scoring every item; 0 "
        "scores every item always (the exact reference, for evaluation).")
    cooc_history: int = _setting(10, "Recent items per user that a new event co-occurs with.")
    cooc_half_life_days: float = _setting(
        30.0, "Half-life of co-occurrence counts, in days, so item neighbourhoods follow trends (0 = never forget).")
    popularity_half_life_h: float = _setting(72.0, "Half-life of time-decayed popularity, in hours.")
    fusion_adapt: bool = _setting(
        True, "Choose how sources are fused online: on a sample of live events, every policy (211 weightings of "
        "reciprocal-rank fusion and a scorer learned from those events) is scored by whether it would have listed "
        "the event's item; lists use the best one, for new and for returning users apart (false = equal fixed "
        "weights).")
    fusion_sample_every: int = _setting(
        2, "Measure one event in this many (of users with history) for the adaptive fusion: 1 adapts fastest and "
        "ranked best in evaluation; each measured event costs a worker one more ranking.")
    rebuy_after_days: float = _setting(
        0.0, "Days after a purchase before the bought item may be recommended to that user again (0 = never; set it "
        "for consumables that people buy again).")
    explore: float = _setting(0.1, "Share of list slots given to new, little-seen items (0 = deterministic lists).")
    impressions: bool = _setting(
        False, "The front end reports what it showed on the impressions topic: exploration counts an item as "
        "shown from those reports instead of from every list published.")
    variants: str = _setting(
        "", "A/B variants, `name:key=value,...;name:...` (keys: explore, adapt, or a source's weight, e.g. "
        "`a:;b:explore=0.2,mf=2`): each user's lists are ranked by one, chosen by a hash of the user id; empty = "
        "one variant, `default`.")
    seed: int = _setting(0, "Seed of every random choice (model init, sampling, exploration).")
    threads: int = _setting(
        1, "Threads of the learning loop: 2 runs matrix factorisation (its lists and learning) and the adaptive "
        "fusion's measuring on a second core beside the other sources, with the same results. It pays on an idle "
        "machine with a core to spare; when the second thread keeps losing its core the loop goes on alone (for a "
        "second), so it does not cost under load either.")
    metrics_port: int = _setting(
        9464, "HTTP port of a worker's /metrics (Prometheus), /healthz and /readyz (0 = no endpoint).")
    metrics_host: str = _setting(
        "127.0.0.1", "Address a worker's metrics and health endpoint listens on: loopback keeps it off the network "
        "of a laptop or a shared host; 0.0.0.0 (set in the container image) lets Prometheus and probes from other "
        "hosts reach it.")
    session_timeout_s: float = _setting(
        6.0, "How long the group waits for a silent worker before handing its partitions on (kill -9, a hung "
        "host). 6 s is the lowest Apache Kafka accepts by default (group.min.session.timeout.ms).")
    heartbeat_interval_s: float = _setting(
        0.5, "How often a worker tells the group it is alive, and so how soon it hears of a rebalance (at most a "
        "third of session_timeout_s).")
    rebalance_timeout_s: float = _setting(
        5.0, "How long a rebalance waits for members to rejoin (Faust's default makes a fresh group take 30 s to "
        "join).")
    broker_unreachable_s: float = _setting(
        60.0, "A worker that has reached no broker for this long exits (code 69) for its supervisor to restart it.")
    stop_timeout_s: float = _setting(
        8.0, "Longest graceful stop after SIGTERM or SIGINT; a worker still stopping then exits with code 75.")
    item_sync_ms: int = _setting(
        100, "How often a worker applies the item updates other workers published (each worker publishes its own "
        "with every micro-batch); lower is fresher, higher applies bigger batches.")
    serve_host: str = _setting("127.0.0.1", "Address `stream-rec serve` listens on (0.0.0.0: every interface).")
    serve_port: int = _setting(
        8080, "HTTP port of `stream-rec serve`; it also names the replica's copy of the lists under data_dir "
        "(serve-<port>), as two replicas on one host cannot share a port.")
    log_level: str = _setting("info", "Logging level.")
    log_format: str = _setting(
        "text", "`text`: one readable line per record; `json`: one JSON object per line (ts, level, logger, message, "
        "and exception with its traceback), for a log collector.")

    def __post_init__(self) -> None:
        checks = {
            "partitions": self.partitions >= 1,
            "replication_factor": self.replication_factor >= 1,
            "top_n": self.top_n >= 1,
            "batch_max": self.batch_max >= 1,
            "batch_wait_ms": self.batch_wait_ms >= 1,
            "max_message_bytes": self.max_message_bytes >= 64,
            "mf_factors": self.mf_factors >= 1,
            "mf_index_above": self.mf_index_above >= 0,
            "cooc_history": self.cooc_history >= 1,
            "popularity_half_life_h": self.popularity_half_life_h > 0,
            "cooc_half_life_days": self.cooc_half_life_days >= 0,
            "explore": 0.0 <= self.explore <= 1.0,
            "rebuy_after_days": self.rebuy_after_days >= 0.0,
            "fusion_sample_every": self.fusion_sample_every >= 1,
            "threads": 1 <= self.threads <= 2,
            "metrics_port": 0 <= self.metrics_port < 65536,
            "metrics_host": bool(self.metrics_host),
            "log_format": self.log_format in LOG_FORMATS,
            "worker_id": bool(self.worker_id) and "/" not in self.worker_id,
            "input_keys": self.input_keys in ("any", "user_id"),
            "fetch_max_wait_ms": self.fetch_max_wait_ms >= 0,
            "item_sync_ms": self.item_sync_ms >= 1,
            "session_timeout_s": self.session_timeout_s >= 1.0,
            "heartbeat_interval_s": 0.0 < self.heartbeat_interval_s <= self.session_timeout_s / 3,
            "rebalance_timeout_s": self.rebalance_timeout_s >= 1.0,
            "broker_unreachable_s": self.broker_unreachable_s > 0.0,
            "stop_timeout_s": self.stop_timeout_s > 0.0,
            "serve_host": bool(self.serve_host),
            "serve_port": 0 < self.serve_port < 65536,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid setting {_env_name(bad[0])}={getattr(self, bad[0])!r}")
        self._check_kafka_security()
        self.event_weights()  # validates the weights string
        from stream_rec.variants import parse_variants

        parse_variants(self.variants)  # validates the variants string

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``STREAM_REC_*`` variables (then ``overrides``), validated.

        >>> Settings.from_env({"STREAM_REC_TOP_N": "5"}).top_n
        5
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(_env_name(f.name))
            if raw is not None:
                values[f.name] = _convert(f.name, raw, type(f.default))
        return replace(cls(**values), **overrides) if overrides else cls(**values)

    def _check_kafka_security(self) -> None:
        """One line naming the variable for each way the Kafka security settings can be wrong."""
        protocol = self.kafka_security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise _invalid("kafka_security_protocol", protocol, f"expected one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise _invalid("kafka_sasl_mechanism", self.kafka_sasl_mechanism, f"expected one of {', '.join(SASL_MECHANISMS)}")
        sasl, tls = self.kafka_sasl, self.kafka_tls
        with_protocol = f"with {_env_name('kafka_security_protocol')}={protocol}"
        # Credentials or files the protocol would not use mean a forgotten protocol: the clients would connect
        # in plaintext and fail later with a far less telling error.
        for name, used in (("kafka_sasl_username", sasl), ("kafka_sasl_password", sasl),
                           ("kafka_sasl_password_file", sasl), ("kafka_ssl_cafile", tls),
                           ("kafka_ssl_certfile", tls), ("kafka_ssl_keyfile", tls)):
            if getattr(self, name) and not used:
                raise _wrong(name, f"not used {with_protocol}")
        if sasl and not self.kafka_sasl_username:
            raise _wrong("kafka_sasl_username", f"required {with_protocol}")
        if self.kafka_sasl_password and self.kafka_sasl_password_file:
            raise _wrong("kafka_sasl_password_file", f"give it or {_env_name('kafka_sasl_password')}, not both")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise _wrong("kafka_ssl_keyfile", f"a key without {_env_name('kafka_ssl_certfile')}")
        for name in ("kafka_sasl_password_file", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise _invalid(name, path, "no such readable file")
        if sasl and not self.kafka_password():
            raise _wrong("kafka_sasl_password", f"required {with_protocol} (or {_env_name('kafka_sasl_password_file')})")

    @property
    def kafka_tls(self) -> bool:
        """Whether the Kafka clients connect over TLS (SSL or SASL_SSL)."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_sasl(self) -> bool:
        """Whether the Kafka clients authenticate with SASL (SASL_PLAINTEXT or SASL_SSL)."""
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def kafka_password(self) -> str:
        """The SASL password: ``kafka_sasl_password``, else the content of ``kafka_sasl_password_file``.

        >>> Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="p").kafka_password()
        'p'
        """
        if not self.kafka_sasl_password_file:
            return self.kafka_sasl_password
        try:
            return Path(self.kafka_sasl_password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as err:
            raise _invalid("kafka_sasl_password_file", self.kafka_sasl_password_file, f"cannot read it: {err}") from None

    def event_weights(self) -> dict[str, float]:
        """The learning weight of each event type.

        >>> Settings().event_weights()["purchase"]
        8.0
        """
        weights: dict[str, float] = {}
        for part in self.weights.split(","):
            name, _, value = part.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"invalid setting STREAM_REC_WEIGHTS: {part!r} is not type=number") from None
        missing = set(EVENT_TYPES) - set(weights)
        if missing or set(weights) - set(EVENT_TYPES):
            raise ValueError(f"invalid setting STREAM_REC_WEIGHTS={self.weights!r}: give exactly {', '.join(EVENT_TYPES)}")
        return weights

    @property
    def worker_dir(self) -> Path:
        """This worker's folder: ``<data_dir>/<worker_id>``."""
        return Path(self.data_dir) / self.worker_id

    @property
    def state_path(self) -> Path:
        """This worker's RocksDB state."""
        return self.worker_dir / "state"

    @property
    def serve_path(self) -> Path:
        """The RocksDB copy of the recommendations topic that ``stream-rec serve`` on ``serve_port`` keeps."""
        return Path(self.data_dir) / f"serve-{self.serve_port}" / "lists"

    def input_topics(self) -> dict[str, str]:
        """Stream name -> topic name."""
        return {"browse": self.topic_browse, "click": self.topic_click, "purchase": self.topic_purchase}


#: Every topic setting: a demo, a bench run or a test gives each its own prefixed copy.
TOPIC_FIELDS = ("topic_browse", "topic_click", "topic_purchase", "topic_items", "topic_impressions", "topic_forget",
                "topic_events", "topic_recommendations", "topic_dead_letter", "topic_user_state", "topic_item_updates")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _invalid(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"invalid setting {_env_name(name)}={value!r}: {why}")


def _wrong(name: str, why: str) -> ValueError:
    return ValueError(f"invalid setting {_env_name(name)}: {why}")


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _convert(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.strip().lower() not in _BOOLEANS:
            raise ValueError(f"invalid setting {_env_name(name)}={raw!r}: expected true or false")
        return _BOOLEANS[raw.strip().lower()]
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"invalid setting {_env_name(name)}={raw!r}: expected {kind.__name__}") from None


def settings_table() -> list[tuple[str, str, str]]:
    """``(environment variable, default, meaning)`` for every setting, in declaration order."""
    rows = []
    for f in fields(Settings):
        default = "" if f.default is MISSING else f.default
        rows.append((_env_name(f.name), repr(default) if default == "" else str(default), f.metadata["help"]))
    return rows
