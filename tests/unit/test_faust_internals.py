"""The Faust, aiokafka and mode internals stream_rec patches or reaches into are still what it was written
against. Each of these fails loudly, naming what to re-read, when a dependency changes under it; the
version bounds in pyproject.toml keep such a change from arriving unannounced.

- agents/transport.py replaces Faust's consumer loop (``Consumer._drain_messages``) with one that hands a
  message to its stream inline: it must keep doing what the stock loop does (read offsets, gaps, commits,
  flow control), so any change to the stock loop has to be read and carried over.
- agents/app.py sets aiokafka's ``Fetcher._fetch_max_wait_ms`` through Faust's consumer thread, since
  Faust fixes the fetch wait at 1,500 ms with no setting for it.
- agents/lifecycle.py overrides mode's signal handlers ``Worker._on_sigterm`` / ``_on_sigint``.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
from importlib.metadata import version

import aiokafka
import pytest
from aiokafka.consumer.fetcher import Fetcher
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.worker import Worker

from agents import transport
from agents.app import _set_fetch_max_wait

#: sha256 of the source of Faust's stock ``Consumer._drain_messages`` that agents/transport.py was written
#: against (faust-streaming 0.15.3). When this changes, read the new loop, carry what changed over to
#: ``agents.transport.Consumer._drain_messages`` / ``_on_fetched``, then record the new digest here.
STOCK_DRAIN_MESSAGES_SHA256 = "8f35dd7a11144daa6ec9a3739a497b03a9dd6b57cca18aa861bb4a549400fc68"


def _digest(function: object) -> str:
    return hashlib.sha256(textwrap.dedent(inspect.getsource(function)).encode()).hexdigest()  # type: ignore[arg-type]


def test_fausts_consumer_loop_is_the_one_agents_transport_replaces() -> None:
    found = _digest(faust_consumer.Consumer._drain_messages)
    assert found == STOCK_DRAIN_MESSAGES_SHA256, (
        f"faust-streaming {version('faust-streaming')} changed Consumer._drain_messages (sha256 {found}): agents/transport.py "
        "replaces that loop; re-read it, carry the change over, then update STOCK_DRAIN_MESSAGES_SHA256")


def test_the_consumer_state_the_inline_loop_uses_is_still_fausts() -> None:
    """What agents/transport.py reads and writes of Faust's consumer: set in ``__init__`` or defined."""
    init = inspect.getsource(faust_consumer.Consumer.__init__)
    for attribute in ("_read_offset", "_commit_every", "callback"):
        assert f"self.{attribute} =" in init, f"Faust's Consumer no longer sets {attribute} (agents/transport.py uses it)"
    # Counted where a message is acked, read and reset where the loop commits every broker_commit_every acks.
    assert "self._n_acked += 1" in inspect.getsource(faust_consumer.Consumer), "Faust no longer counts acks in _n_acked"
    for method in ("_add_gap", "getmany", "commit", "wait_first", "on_buffer_full", "on_buffer_drop", "resume_flow",
                   "highwater"):  # highwater: agents/app.py _note_lag (public, but kept in the same check)
        assert callable(getattr(faust_consumer.Consumer, method, None)), f"Faust's Consumer has no {method}"
    assert "consumer_stopped_errors" in dir(faust_aiokafka.Consumer)
    assert issubclass(transport.Consumer, faust_aiokafka.Consumer)
    assert faust_aiokafka.Transport.Consumer is faust_aiokafka.Consumer  # the attribute our Transport overrides
    # Our loop replaces the stock one by name: the Fetcher service must still call it by that name.
    assert "_drain_messages" in inspect.getsource(faust_consumer.Fetcher)


def test_the_fetch_wait_is_still_reachable_where_agents_app_sets_it() -> None:
    thread = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread)
    assert "self._consumer = self._create_consumer(" in thread, (
        "Faust's AIOKafkaConsumerThread no longer keeps its aiokafka consumer in _consumer (agents/app.py "
        "_set_fetch_max_wait reaches the fetcher through it)")
    assert "self._thread = " in inspect.getsource(faust_consumer.ThreadDelegateConsumer.__init__)
    assert "self._fetcher = Fetcher(" in inspect.getsource(aiokafka.AIOKafkaConsumer), (
        f"aiokafka {aiokafka.__version__}'s consumer no longer keeps its Fetcher in _fetcher")
    fetcher = inspect.getsource(Fetcher)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in fetcher and "self._fetch_max_wait_ms," in fetcher, (
        f"aiokafka {aiokafka.__version__}'s Fetcher no longer sends _fetch_max_wait_ms in its fetch requests")


def test_set_fetch_max_wait_reaches_the_fetcher_and_warns_when_it_cannot(caplog: pytest.LogCaptureFixture) -> None:
    class Holder:
        def __init__(self, **attributes: object) -> None:
            self.__dict__.update(attributes)

    fetcher = Holder(_fetch_max_wait_ms=1500)
    app = Holder(consumer=Holder(_thread=Holder(_consumer=Holder(_fetcher=fetcher))))
    _set_fetch_max_wait(app, 20)  # type: ignore[arg-type]
    assert fetcher._fetch_max_wait_ms == 20
    _set_fetch_max_wait(Holder(consumer=Holder()), 20)  # type: ignore[arg-type]
    assert "internals changed" in caplog.text


def test_mode_still_has_the_signal_handlers_agents_lifecycle_overrides() -> None:
    for handler in ("_on_sigterm", "_on_sigint"):
        assert callable(getattr(Worker, handler, None)), (
            f"mode-streaming {version('mode-streaming')}'s Worker has no {handler} (agents/lifecycle.py overrides it)")


def test_the_dependencies_leaned_on_have_upper_bounds() -> None:
    """A new major Faust, mode, aiokafka, kafka-python or numba must be taken on purpose, after the checks above."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    bounded = {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]: spec for spec in project["dependencies"]}
    for name in ("faust-streaming", "mode-streaming", "aiokafka", "kafka-python", "numba"):
        assert "<" in bounded.get(name, ""), f"pyproject.toml: {name} needs an upper bound ({bounded.get(name)!r})"
        assert version(name), name  # installed, so the bound was checked by pip
