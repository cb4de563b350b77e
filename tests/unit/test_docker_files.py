"""No Docker engine runs here: check the docker files statically against the code they deploy."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from stream_rec.settings import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SETTINGS = {"STREAM_REC_" + name.upper() for name in Settings.__dataclass_fields__}


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_runs_pinned_kraft_kafka_two_workers_and_prometheus() -> None:
    services = _compose()["services"]
    assert {"kafka", "worker-1", "worker-2", "prometheus"} <= set(services)
    for name in ("kafka", "prometheus"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name} image must be pinned: {image}"
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "zookeeper" not in services


def test_worker_environment_uses_only_real_settings_and_valid_values() -> None:
    services = _compose()["services"]
    ids = set()
    for name in ("worker-1", "worker-2"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert set(env) <= SETTINGS, f"unknown settings in {name}: {set(env) - SETTINGS}"
        settings = Settings.from_env(env)  # values parse and validate
        assert settings.kafka_bootstrap.split(":")[0] == "kafka"
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        ids.add(settings.worker_id)
    assert len(ids) == 2, "each worker needs its own STREAM_REC_WORKER_ID"
    assert services["worker-1"]["environment"]["STREAM_REC_APP_ID"] == services["worker-2"]["environment"]["STREAM_REC_APP_ID"]


def test_compose_runs_the_read_api_on_its_published_port() -> None:
    serve = _compose()["services"]["serve"]
    assert serve["command"] == ["serve"] and serve["build"]["dockerfile"] == "docker/Dockerfile"
    env = {k: str(v) for k, v in serve["environment"].items()}
    assert set(env) <= SETTINGS
    settings = Settings.from_env(env)
    assert settings.serve_host == "0.0.0.0"  # reachable from outside its container
    assert f"{settings.serve_port}:{settings.serve_port}" in serve["ports"]
    assert settings.kafka_bootstrap.split(":")[0] == "kafka"


def test_prometheus_scrapes_each_worker_on_its_metrics_port() -> None:
    services = _compose()["services"]
    targets = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"][0]["static_configs"][0]["targets"]
    expected = {f"{name}:{services[name]['environment']['STREAM_REC_METRICS_PORT']}" for name in ("worker-1", "worker-2")}
    assert set(targets) == expected


def test_dockerfile_installs_the_project_and_runs_the_worker() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11[\w.-]*$", text, re.M)
    for path in ("pyproject.toml", "stream_rec", "agents", "tools"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.M), f"{path} not copied"
    assert "pip install ." in text
    assert "warm_up()" in text  # kernels compiled at build time, not at every container's first start
    assert 'ENTRYPOINT ["stream-rec"]' in text and 'CMD ["worker"]' in text
    env_names = set(re.findall(r"(STREAM_REC_[A-Z_]+)=", text))
    assert env_names <= SETTINGS
