"""infra/docker-compose.yml and infra/Dockerfile, validated without Docker.

Structure (services, images, KRaft settings, ports, healthchecks, dependencies, mounts) is checked
against the compose file format, and the driftline services' environment is loaded into Settings
exactly as the containers would load it: same variables, same mounted TOML file.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from driftline.cli.main import build_parser
from driftline.config import CONFIG_FILE_ENV, ENV_PREFIX, Settings
from driftline.streams.http_security import bind_refusal

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
DRIFTLINE_SERVICES = ("migrate", "topics", "worker")
# Values for the variables compose requires (${VAR:?message}: no default, compose stops without them).
REQUIRED = {"DRIFTLINE_AUTH_TOKEN": "compose-test-token-7c21e0b4"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    return data


def interpolate(value: Any) -> str:
    """Compose variable interpolation with only REQUIRED set: ${VAR:-default} -> default,
    ${VAR:?message} -> REQUIRED[VAR]; any other form has no value and fails."""
    text = str(value)

    def sub(match: re.Match[str]) -> str:
        name, operator, rest = match.groups()
        if operator == ":?":
            assert name in REQUIRED and rest, f"{match.group(0)}: required without a message or test value"
            return REQUIRED[name]
        assert operator == ":-", f"{match.group(0)} has no default"
        return rest

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: interpolate(v) for k, v in env.items()}


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (relative to infra/)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (INFRA / source).resolve()
    return mounts


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "clickhouse", "grafana", "migrate", "topics", "worker"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in DRIFTLINE_SERVICES:
        build = services[name]["build"]
        context = (INFRA / build["context"]).resolve()
        assert context == REPO and (context / build["dockerfile"]).is_file()
        assert services[name]["image"] == "driftline:local"
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]


def test_kafka_kraft_configuration_is_complete(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16  # a base64url UUID
    voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert voters == {env["KAFKA_NODE_ID"]: "kafka:9093"}

    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {name: int(port) for name, port in
                 (re.fullmatch(r"(\w+)://[^:]*:(\d+)", entry).groups()  # type: ignore[union-attr]
                  for entry in env["KAFKA_LISTENERS"].split(","))}
    advertised = {name: address for name, address in
                  (entry.split("://") for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(","))}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) == set(protocols)
    assert controller in listeners and controller not in advertised
    assert listeners[controller] == int(voters[env["KAFKA_NODE_ID"]].split(":")[1])
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert set(advertised) <= set(listeners)
    for name, address in advertised.items():
        assert int(address.rsplit(":", 1)[1]) == listeners[name]
    # Single node: internal topics cannot have more than one replica.
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1"
    # The worker's bootstrap address is the internal advertised listener; the published port the external one.
    worker_env = environment(compose["services"]["worker"])
    internal = advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert worker_env["DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS"] == internal
    published = {int(p.split(":")[1]) for p in compose["services"]["kafka"]["ports"]}
    assert published == {listeners["EXTERNAL"]}
    assert advertised["EXTERNAL"] == f"localhost:{listeners['EXTERNAL']}"


def _field_exists(env_name: str) -> bool:
    """Whether DRIFTLINE_<NAME> is a Settings field (section and field joined by one underscore)."""
    rest = env_name[len(ENV_PREFIX):].lower()
    if rest in Settings.model_fields:
        return True
    section, _, field = rest.partition("_")
    info = Settings.model_fields.get(section)
    model = info.annotation if info else None
    return isinstance(model, type) and issubclass(model, BaseModel) and field in model.model_fields


@pytest.mark.parametrize("name", DRIFTLINE_SERVICES)
def test_driftline_environment_loads_into_settings(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"][name]
    env = environment(service)
    mounts = bind_mounts(service)
    for key in env:
        assert key == CONFIG_FILE_ENV or _field_exists(key), f"{name}: {key} is not a Settings field"
    # The config file is the repo's example, mounted read-only where DRIFTLINE_CONFIG points.
    host_config = mounts[env[CONFIG_FILE_ENV]]
    assert host_config == INFRA / "driftline.toml"

    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(host_config) if key == CONFIG_FILE_ENV else value)
    settings = Settings()

    for key, value in env.items():
        if key == CONFIG_FILE_ENV:
            continue
        rest = key[len(ENV_PREFIX):].lower()
        if rest in Settings.model_fields:
            loaded = getattr(settings, rest)
        else:
            section, _, field = rest.partition("_")
            loaded = getattr(getattr(settings, section), field)
        if isinstance(loaded, SecretStr):
            loaded = loaded.get_secret_value()
        elif isinstance(loaded, list) and all(isinstance(item, SecretStr) for item in loaded):
            loaded = ",".join(item.get_secret_value() for item in loaded)  # the tokens' comma form
        assert str(loaded) == value, f"{name}: {key}"
    assert settings.bootstrap_servers() == "kafka:9092"
    assert settings.clickhouse_url() == "http://clickhouse:8123"
    assert not settings.clickhouse.embedded
    assert settings.clickhouse.database == "driftline"
    # Values only the TOML file sets arrive too.
    assert settings.kafka.client_id == "driftline-compose"
    if name == "worker":
        assert settings.worker.web_host == "0.0.0.0"
        published = {int(p.split(":")[1]) for p in service["ports"]}
        assert published == {settings.worker.web_port}
        # published on every interface: only with a token, which compose requires (no default)
        tokens = [t.get_secret_value() for t in settings.worker.auth_tokens]
        assert tokens == [REQUIRED["DRIFTLINE_AUTH_TOKEN"]]
        assert bind_refusal(settings.worker.web_host, settings.worker) is None
        assert bind_refusal(settings.worker.web_host, settings.worker.model_copy(update={"auth_tokens": []}))


def test_driftline_commands_parse(compose: dict[str, Any]) -> None:
    services = compose["services"]
    parser = build_parser()
    assert services["migrate"]["command"] == ["driftline", "db", "migrate"]
    for name in ("migrate", "worker"):
        command = services[name]["command"]
        assert command[0] == "driftline"
        assert parser.parse_args(command[1:]).handler is not None
    python, flag, code = services["topics"]["command"]
    assert (python, flag) == ("python", "-c")
    compile(code, "topics", "exec")
    for module, names in re.findall(r"from ([\w.]+) import ([\w, ]+)", code):
        imported = __import__(module, fromlist=["_"])
        assert all(hasattr(imported, n.strip()) for n in names.split(","))


def test_ports_volumes_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    host_ports = [int(p.split(":")[0]) for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))
    container_ports = {name: {int(p.split(":")[1]) for p in service.get("ports", [])}
                       for name, service in services.items()}
    assert container_ports["clickhouse"] == {8123, 9000}
    assert container_ports["grafana"] == {3000}

    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"

    for name in ("kafka", "clickhouse", "grafana", "worker"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) >= 2
        assert check["retries"] >= 3
    assert "/ping" in " ".join(services["clickhouse"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["worker"]["healthcheck"]["test"])

    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} health"
            else:
                assert condition["condition"] == "service_completed_successfully"
                assert services[target].get("restart") == "no"
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["migrate"]["condition"] == "service_completed_successfully"
    assert worker_deps["topics"]["condition"] == "service_completed_successfully"
    assert set(worker_deps) == {"kafka", "clickhouse", "migrate", "topics"}


def test_grafana_mounts_and_environment_match_provisioning(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == INFRA / "grafana" / "provisioning"
    provider = yaml.safe_load((INFRA / "grafana/provisioning/dashboards/driftline.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == INFRA / "grafana" / "dashboards"
    env = environment(grafana)
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[str(Path(home).parent)] / Path(home).name).is_file()
    datasources = (INFRA / "grafana/provisioning/datasources/clickhouse.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", datasources))
    assert used and used <= set(env), "every variable the datasource file uses is set"
    # Grafana and the driftline services use the same ClickHouse account by default.
    clickhouse_env = environment(compose["services"]["clickhouse"])
    assert env["DRIFTLINE_GRAFANA_CLICKHOUSE_USER"] == clickhouse_env["CLICKHOUSE_USER"]


def test_dockerfile_copies_existing_paths_and_runs_the_worker() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    copies = [shlex.split(line)[1:-1] for line in lines if line.startswith("COPY ")]
    sources = [source for sources in copies for source in sources]
    assert sources
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        included = {line.rstrip("/") for line in ignore}
        assert f"!{source.rstrip('/')}" in included, f"{source} is docker-ignored"
    # Every folder pyproject maps onto a driftline package is in the image.
    for folder in ("src", "streams", "jobs", "schemas", "infra"):
        assert folder in sources
    assert any(line.startswith("RUN pip install '.[worker]'") for line in lines)  # not the light install
    assert lines[-1] == 'CMD ["driftline", "worker", "--web-host", "0.0.0.0"]'
