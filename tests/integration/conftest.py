"""The integration tier: the embedded broker (started here, never skipped) and real worker processes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from stream_rec.service import warm_up
from stream_rec.settings import TOPIC_FIELDS, Settings
from tools.broker import EmbeddedBroker

_run = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    # Compile the model kernels into numba's on-disk cache first, so worker processes start in seconds.
    warm_up()
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=str(log)) as running:
        yield running


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings with this test's own topics, consumer group and state folder."""
    prefix = f"t{next(_run)}-{request.node.name[:40].replace('[', '-').replace(']', '')}"
    topics = {name: f"{prefix}.{getattr(Settings, name)}" for name in TOPIC_FIELDS}
    return replace(Settings(), kafka_bootstrap=broker.bootstrap, app_id=prefix, data_dir=str(tmp_path / "data"),
                   metrics_port=0, explore=0.0, batch_max=500, **topics)
