"""No Docker engine runs here: check the docker files statically against the code they deploy."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import yaml

from stream_rec.extras import EXTRAS
from stream_rec.metrics import Metrics
from stream_rec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
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
    assert "pip install --no-deps ." in text
    assert "warm_up()" in text  # kernels compiled at build time, not at every container's first start
    assert 'ENTRYPOINT ["stream-rec"]' in text and 'CMD ["worker"]' in text
    env_names = set(re.findall(r"(STREAM_REC_[A-Z_]+)=", text))
    assert env_names <= SETTINGS


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's ``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments left out."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in _instructions():
        if op == "ENV":
            env.update(re.findall(r"([A-Z_]+)=(\S+)", args))
    return env


def _first(op: str, pattern: str) -> int:
    return next(n for n, (o, args) in enumerate(_instructions()) if o == op and re.search(pattern, args))


def test_dependencies_are_installed_in_a_layer_before_the_source_is_copied() -> None:
    steps = _instructions()
    install_deps = _first("RUN", r"pip install -r")
    assert _first("COPY", r"\bpyproject\.toml\b") < install_deps < _first("COPY", r"\bstream_rec\b")
    assert not any(op == "COPY" and "pyproject" not in args for op, args in steps[:install_deps])
    assert "['project']['dependencies']" in steps[install_deps][1]  # the dependencies alone: no extra
    assert _first("COPY", r"\btools\b") < _first("RUN", r"pip install --no-deps \.")


def test_the_worker_image_leaves_the_extras_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req)[0] for req in project["dependencies"]}
    assert not {distribution for distribution, _ in EXTRAS.values()} & names
    for module, (distribution, extra) in EXTRAS.items():
        assert any(req.startswith(distribution) for req in extras[extra]), f"{distribution} not in extra {extra}"
    assert extras["all"] == ["stream-rec[eval,broker]"] and "stream-rec[all]" in extras["test"]
    assert not any(re.search(r"pip install [^&]*(\.|stream-rec)\[", args) for op, args in _instructions() if op == "RUN")


def test_kernels_are_compiled_at_build_time_by_the_runtime_user_into_a_cache_it_owns() -> None:
    steps, env = _instructions(), _image_env()
    users = [(n, args.strip()) for n, (op, args) in enumerate(steps) if op == "USER"]
    runtime_user = users[-1][1]
    assert runtime_user not in ("root", "0")
    warm = _first("RUN", r"warm_up\(\)")
    assert max(u for u in users if u[0] < warm)[1] == runtime_user  # compiled as the user that loads them
    cache = env["NUMBA_CACHE_DIR"]
    assert _first("ENV", "NUMBA_CACHE_DIR=") < warm  # one ENV: the build and the runtime share the folder
    chown = steps[_first("RUN", r"chown")][1]
    assert re.search(rf"chown (-R )?{runtime_user} .*{re.escape(cache.rsplit('/', 1)[0])}\b", chown)
    assert env["NUMBA_CPU_NAME"] == "${NUMBA_CPU_NAME}" and re.search(r"^ARG NUMBA_CPU_NAME=generic$",
                                                                      (DOCKER / "Dockerfile").read_text(), re.M)
    # Not in a volume: a named volume keeps what it first held, so an upgraded image's kernels would not reach it.
    volumes = [path for op, args in steps if op == "VOLUME" for path in re.findall(r'"([^"]+)"', args)]
    assert volumes and not any(cache.startswith(volume) for volume in volumes)


def test_healthcheck_asks_readyz_on_the_metrics_port_which_listens_beyond_loopback() -> None:
    env = _image_env()
    (check,) = [args for op, args in _instructions() if op == "HEALTHCHECK"]
    assert "/readyz" in check and "STREAM_REC_METRICS_PORT" in check and "curl" not in check
    assert re.search(r"CMD \[\"python\"", check)  # the slim image has no curl
    assert env["STREAM_REC_METRICS_HOST"] == "0.0.0.0" and env["STREAM_REC_METRICS_PORT"] == "9464"
    for name in ("worker-1", "worker-2"):  # compose keeps the image's address, so Prometheus reaches the workers
        assert _compose()["services"][name]["environment"].get("STREAM_REC_METRICS_HOST", "0.0.0.0") == "0.0.0.0"


def test_the_read_api_has_a_healthcheck_of_its_own() -> None:
    serve = _compose()["services"]["serve"]
    port = serve["environment"]["STREAM_REC_SERVE_PORT"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(serve["healthcheck"]["test"])


def test_dockerignore_keeps_the_repository_clutter_out_and_what_the_image_copies_in() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
                   or fnmatch.fnmatch(part, pattern.removeprefix("**/"))
                   for pattern in patterns for prefix in prefixes for part in [prefix.rsplit("/", 1)[-1]])

    for path in (".git/HEAD", ".venv/bin/python", "stream_rec/__pycache__/service.cpython-311.pyc",
                 "stream_rec/engine/__pycache__/loop.run-1.py311.nbi", "stream_rec/engine/x.nbc",
                 "stream-rec-data/worker-1/state/CURRENT", ".pytest_cache/v", "tests/unit/test_cli.py"):
        assert ignored(path), path
    for op, args in _instructions():
        if op == "COPY":
            for source in args.split()[:-1]:
                assert not ignored(source), f"the image copies {source}, which .dockerignore leaves out"


def _exposed_names(metrics: Metrics) -> set[str]:
    """Every series name the registry exports, with the suffixes Prometheus gives each type."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {family.name + suffix for family in metrics.registry.collect() for suffix in suffixes[family.type]}


def test_the_dashboard_queries_only_metrics_the_workers_export_and_shows_each() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "stream-rec.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"\bstream_rec_\w+", expr)}
    exposed = _exposed_names(Metrics())
    assert queried <= exposed, f"not exported by any worker: {sorted(queried - exposed)}"
    families = {family.name for family in Metrics().registry.collect()}
    shown = {family for family in families if any(name.startswith(family) for name in queried)}
    assert shown == families, f"not on the dashboard: {sorted(families - shown)}"


def test_compose_provisions_grafana_with_prometheus_and_the_dashboard() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    assert ":" in grafana["image"] and not grafana["image"].endswith(":latest")
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = DOCKER / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "stream-rec.yaml").read_text())["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "stream-rec.json").read_text())
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {source["uid"]}
