"""Security: SASL/TLS reach every Kafka client, the embedded broker's authentication holds, secrets
stay out of logs and reprs, and SQL is parameterised.

Authenticated *success* needs a broker with SCRAM users. The embedded Tansu (memory store) cannot
create users, so against it we only show that an unauthenticated client is rejected and a SASL
client fails authentication; ``test_scram_round_trip_on_a_real_kafka`` covers success and runs
only with ``DRIFTLINE_TEST_BACKEND=testcontainers`` (Docker).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from driftline.config import ConfigError, Settings, load_settings
from driftline.kafka import clients
from driftline.local.broker import broker_binary, free_port

REPO = Path(__file__).resolve().parents[1]
SECRET = "pw-7f3a9c-DO-NOT-LOG"
KEY_SECRET = "keypass-51d2-DO-NOT-LOG"
CH_SECRET = "chpw-88e1-DO-NOT-LOG"
TOKEN_SECRET = "bearer-4c7d-DO-NOT-LOG-0123456789"
AIOKAFKA_CLASSES = ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient")
KAFKA_PYTHON_CLASSES = ("KafkaProducer", "KafkaConsumer", "KafkaAdminClient")
KWARG_FACTORIES = (
    "aiokafka_common",
    "aiokafka_consumer_kwargs",
    "aiokafka_producer_kwargs",
    "kafka_python_kwargs",
)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and a key encrypted with KEY_SECRET (openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-passout",
            f"pass:{KEY_SECRET}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {"cafile": cert, "certfile": cert, "keyfile": key}


@pytest.fixture
def secure(tls_files: dict[str, Path]) -> Settings:
    return Settings(
        kafka={
            "bootstrap_servers": "127.0.0.1:1",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "driftline",
            "sasl_password": SECRET,
            "ssl_cafile": tls_files["cafile"],
            "ssl_certfile": tls_files["certfile"],
            "ssl_keyfile": tls_files["keyfile"],
            "ssl_password": KEY_SECRET,
        },
        clickhouse={"password": CH_SECRET},
        worker={"auth_tokens": [TOKEN_SECRET]},
    )


def assert_aiokafka_secure(kwargs: dict[str, Any]) -> None:
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "driftline"
    assert kwargs["sasl_plain_password"] == SECRET
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def assert_kafka_python_secure(kwargs: dict[str, Any], tls: dict[str, Path]) -> None:
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "driftline"
    assert kwargs["sasl_plain_password"] == SECRET
    assert kwargs["ssl_cafile"] == str(tls["cafile"])
    assert kwargs["ssl_certfile"] == str(tls["certfile"]) and kwargs["ssl_keyfile"] == str(tls["keyfile"])
    assert kwargs["ssl_password"] == KEY_SECRET


# -- 1. every client factory -----------------------------------------------------------------------


def test_kwarg_factories_carry_sasl_and_tls(secure: Settings, tls_files: dict[str, Path]) -> None:
    assert_aiokafka_secure(clients.aiokafka_common(secure))
    assert_aiokafka_secure(clients.aiokafka_consumer_kwargs(secure, "g"))
    assert_aiokafka_secure(clients.aiokafka_producer_kwargs(secure))
    assert_kafka_python_secure(clients.kafka_python_kwargs(secure), tls_files)
    plain = Settings(kafka={"bootstrap_servers": "h:1"})
    assert "sasl_plain_password" not in clients.aiokafka_common(plain)
    assert "ssl_context" not in clients.aiokafka_common(plain)


def test_constructed_aiokafka_clients_hold_the_security_options(secure: Settings) -> None:
    async def build() -> list[Any]:
        producer = clients.aiokafka_producer(secure)
        consumer = clients.aiokafka_consumer(secure, "g")
        return [producer.client, consumer._client]

    for client in asyncio.run(build()):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "driftline"
        assert client._sasl_plain_password == SECRET
        assert isinstance(client._ssl_context, ssl.SSLContext)


class _RecordedNetworkClient:
    """The network client an aiokafka producer/consumer holds: the factories wrap its metadata
    calls (topic tracking, the metadata request counter), so the stand-in has them too."""

    async def _wait_on_metadata(self, topic: str) -> None:
        raise KafkaConnectionError("recorded, not connecting")

    async def add_topic(self, topic: str) -> None:
        return None

    async def _metadata_update(self, cluster_metadata: Any, topics: Any) -> None:
        return None


class _Recorder:
    """Stands in for a Kafka client class: records the kwargs, then fails like an unreachable broker
    (kafka-python clients connect in the constructor, aiokafka ones in ``start``)."""

    calls: list[dict[str, Any]]
    connects_in_init = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).calls.append(kwargs)
        if self.connects_in_init:
            raise KafkaConnectionError("recorded, not connecting")
        self.client = self._client = _RecordedNetworkClient()

    async def start(self) -> None:
        raise KafkaConnectionError("recorded, not connecting")

    async def stop(self) -> None:
        return None

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        return None


def _recorder(cls: str) -> type[_Recorder]:
    return type("Recorder", (_Recorder,), {"calls": [], "connects_in_init": cls in KAFKA_PYTHON_CLASSES})


# (factory in driftline.kafka.clients, library module, class it builds)
FACTORIES = (
    ("aiokafka_producer", "aiokafka", "AIOKafkaProducer"),
    ("aiokafka_consumer", "aiokafka", "AIOKafkaConsumer"),
    ("kafka_python_producer", "kafka", "KafkaProducer"),
    ("kafka_python_admin", "kafka", "KafkaAdminClient"),
)


def construction_sites() -> dict[str, list[str]]:
    """module.Class -> the source lines constructing it, found by parsing every driftline module."""
    package_dirs = {
        "driftline": REPO / "src" / "driftline",
        "driftline.streams": REPO / "streams",
        "driftline.jobs": REPO / "jobs",
        "driftline.schemas": REPO / "schemas",
    }
    sites: dict[str, list[str]] = {}
    for package, root in package_dirs.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join((package, *[p for p in parts if p != "__init__"]))
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                if name in AIOKAFKA_CLASSES + KAFKA_PYTHON_CLASSES:
                    sites.setdefault(f"{module}.{name}", []).append(
                        f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:120]}"
                    )
    return sites


# The embedded broker's readiness probe talks PLAINTEXT to a loopback Tansu it just started.
UNSECURED_ON_PURPOSE = {"driftline.local.broker.KafkaAdminClient"}


def test_every_client_construction_takes_the_security_kwargs() -> None:
    """Grep (AST): every Kafka client driftline constructs gets ``**<factory>(settings...)``."""
    offenders = []
    for site, lines in construction_sites().items():
        if site in UNSECURED_ON_PURPOSE:
            continue
        for line in lines:
            factory = r"\*\*\{?\*?\*?(clients\.)?(_with_options\()?(" + "|".join(KWARG_FACTORIES) + r")\("
            if not re.search(factory, line):
                offenders.append(line)
    assert not offenders, "Kafka clients built without driftline.kafka.clients kwargs:\n" + "\n".join(
        offenders
    )


def test_kafka_clients_are_built_only_by_the_factories() -> None:
    """Every other module asks driftline.kafka.clients for its clients, so the security options
    checked below reach every client driftline creates."""
    found = set(construction_sites()) - UNSECURED_ON_PURPOSE
    assert found == {f"driftline.kafka.clients.{cls}" for _, _, cls in FACTORIES}, construction_sites()


@pytest.mark.parametrize(("factory", "library", "cls"), FACTORIES)
def test_security_options_reach_the_client(
    factory: str, library: str, cls: str, secure: Settings, tls_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _recorder(cls)
    monkeypatch.setattr(importlib.import_module(library), cls, recorder)
    args: tuple[Any, ...] = (secure, "g") if factory == "aiokafka_consumer" else (secure,)
    with contextlib.suppress(KafkaConnectionError):  # kafka-python clients connect as they are built
        getattr(clients, factory)(*args)
    assert len(recorder.calls) == 1, f"{factory} did not build a {cls}"
    if cls in KAFKA_PYTHON_CLASSES:
        assert_kafka_python_secure(recorder.calls[0], tls_files)
    else:
        assert_aiokafka_secure(recorder.calls[0])


def test_callers_add_options_but_never_replace_connection_or_security(secure: Settings) -> None:
    with pytest.raises(ValueError, match="security_protocol"):
        clients.kafka_python_producer(secure, security_protocol="PLAINTEXT")
    with pytest.raises(ValueError, match="bootstrap_servers"):
        clients.aiokafka_consumer(secure, None, bootstrap_servers="elsewhere:9092")


def test_faust_app_credentials(secure: Settings) -> None:
    from driftline.streams.app import broker_credentials

    creds = broker_credentials(secure)
    assert creds.username == "driftline" and creds.password == SECRET
    assert str(creds.mechanism.value) == "SCRAM-SHA-512"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert SECRET not in repr(creds), "faust credentials repr shows the password"


# -- 2. against the embedded broker with --authentication ------------------------------------------


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("auth") / "tansu.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{port}",
                "--storage-engine",
                "memory://tansu/",
                "--authentication",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            with (
                contextlib.suppress(OSError),
                __import__("socket").create_connection(("127.0.0.1", port), 0.5),
            ):
                break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def _start_producer(s: Settings) -> None:
    producer = AIOKafkaProducer(**{**clients.aiokafka_producer_kwargs(s), "request_timeout_ms": 3000})
    try:
        await asyncio.wait_for(producer.start(), 20)
        await producer.send_and_wait("driftline.auth-probe", b"x")
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


@pytest.mark.integration
def test_wrong_credentials_give_one_clear_error_without_the_secret(auth_broker: str) -> None:
    from aiokafka import AIOKafkaProducer

    from driftline.kafka.clients import KafkaStartError, aiokafka_producer_kwargs, start_client

    s = Settings(
        kafka={
            "bootstrap_servers": auth_broker,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "driftline",
            "sasl_password": SECRET,
        }
    )

    async def start() -> None:
        await start_client(AIOKafkaProducer(**aiokafka_producer_kwargs(s)), s, "producer")

    with pytest.raises(KafkaStartError) as info:
        asyncio.run(start())
    message = str(info.value)
    assert auth_broker in message and "SCRAM-SHA-512" in message and "'driftline'" in message
    assert "authentication failed" in message and SECRET not in message


@pytest.mark.integration
def test_unauthenticated_client_is_rejected(auth_broker: str) -> None:
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_start_producer(Settings(kafka={"bootstrap_servers": auth_broker})))


@pytest.mark.integration
def test_sasl_client_without_a_user_fails_authentication(auth_broker: str) -> None:
    """SCRAM against Tansu's memory store (no users can exist): the handshake fails. aiokafka 0.14
    surfaces Tansu's SCRAM error reply (no ``v=`` attribute) as a bare ``KeyError('v')`` instead of
    an authentication error, so any exception except success is accepted here."""
    s = Settings(
        kafka={
            "bootstrap_servers": auth_broker,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "driftline",
            "sasl_password": SECRET,
        }
    )
    with pytest.raises((KafkaConnectionError, KeyError, ValueError)) as info:
        asyncio.run(_start_producer(s))
    assert SECRET not in str(info.value)


@pytest.mark.integration
@pytest.mark.skipif(
    os.environ.get("DRIFTLINE_TEST_BACKEND") != "testcontainers",
    reason="needs SCRAM users: DRIFTLINE_TEST_BACKEND=testcontainers (Docker)",
)
def test_scram_round_trip_on_a_real_kafka() -> None:  # pragma: no cover - needs Docker
    """A Kafka container with a SASL_PLAINTEXT SCRAM listener and a user created at format time:
    a driftline producer and consumer authenticate and round-trip a record; a wrong password fails."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_port()
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    container = (
        DockerContainer("apache/kafka:3.8.0")
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_LISTENERS", "SASL://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"SASL://127.0.0.1:{port}")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "SASL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "SASL")
        .with_env("KAFKA_SASL_ENABLED_MECHANISMS", "SCRAM-SHA-512")
        .with_env("KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL", "SCRAM-SHA-512")
        .with_env(
            "KAFKA_LISTENER_NAME_SASL_SCRAM-SHA-512_SASL_JAAS_CONFIG",
            jaas[:-1] + f' username="driftline" password="{SECRET}";',
        )
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("CLUSTER_ID", "4L6g3nShT-eMCtK--X86sw")
        # Create the SCRAM user when the storage is formatted (KRaft: before the broker starts).
        .with_command(
            [
                "bash",
                "-c",
                "/opt/kafka/bin/kafka-storage.sh format -t 4L6g3nShT-eMCtK--X86sw "
                "-c /opt/kafka/config/kraft/server.properties --ignore-formatted "
                f"--add-scram 'SCRAM-SHA-512=[name=driftline,password={SECRET}]' && "
                "/etc/kafka/docker/run",
            ]
        )
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        good = Settings(
            kafka={
                "bootstrap_servers": f"127.0.0.1:{port}",
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "driftline",
                "sasl_password": SECRET,
            }
        )
        asyncio.run(_start_producer(good))
        bad = good.model_copy(update={"kafka": good.kafka.model_copy(update={"sasl_password": "wrong"})})
        with pytest.raises(Exception):  # noqa: B017 - any authentication failure
            asyncio.run(_start_producer(bad))


# -- 3. secrets never in logs or reprs -------------------------------------------------------------


def test_secrets_are_not_in_reprs_or_config_errors(secure: Settings) -> None:
    for text in (
        repr(secure),
        str(secure),
        repr(secure.kafka),
        secure.model_dump_json(),
        str(secure.model_dump()),
        repr(secure.clickhouse),
        repr(secure.worker),
    ):
        assert SECRET not in text and KEY_SECRET not in text and CH_SECRET not in text
        assert TOKEN_SECRET not in text
    url = Settings(clickhouse={"url": f"http://bi:{CH_SECRET}@ch.internal:8123"})
    assert CH_SECRET not in url.clickhouse_url() and CH_SECRET not in repr(url)
    assert url.clickhouse.password.get_secret_value() == CH_SECRET
    os.environ["DRIFTLINE_KAFKA_SASL_PASSWORD"] = SECRET
    try:
        with pytest.raises(ConfigError) as info:
            load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "NOPE"})
    finally:
        del os.environ["DRIFTLINE_KAFKA_SASL_PASSWORD"]
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:  # a malformed token list: the message shows no token
        load_settings(worker={"auth_tokens": f"{TOKEN_SECRET}, with space"})
    assert "DRIFTLINE_WORKER_AUTH_TOKENS" in str(info.value) and TOKEN_SECRET not in str(info.value)


@pytest.mark.integration
def test_worker_debug_logs_never_contain_secrets(auth_broker: str, tmp_path: Path) -> None:
    """A worker with a SASL password and a ClickHouse password, at debug level, against the
    authenticating broker: it retries the handshake for a while; nothing it logs shows a secret.
    Then a worker given a ClickHouse URL with an inline password that cannot be reached."""
    env = {
        **os.environ,
        "DRIFTLINE_HOME": str(tmp_path / "home"),
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": auth_broker,
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "DRIFTLINE_KAFKA_SASL_USERNAME": "driftline",
        "DRIFTLINE_KAFKA_SASL_PASSWORD": SECRET,
        "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "DRIFTLINE_CLICKHOUSE_PASSWORD": CH_SECRET,
        "DRIFTLINE_WORKER_AUTH_TOKENS": TOKEN_SECRET,
    }
    log = tmp_path / "worker.log"
    command = [
        sys.executable,
        "-m",
        "driftline.cli.main",
        "worker",
        "--web-port",
        str(free_port()),
        "--loglevel",
        "debug",
        "--run-seconds",
        "30",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Importing Faust and retrying the handshake takes long on a busy machine: wait until the
        # worker has logged its attempts (or exited), not for a fixed time.
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if len(log.read_text(errors="replace").splitlines()) > 60:
                break
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)
    first = log.read_text(errors="replace")
    assert len(first.splitlines()) > 20, first  # it did log, at debug level
    env_url = {
        **env,
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "DRIFTLINE_CLICKHOUSE_URL": f"http://driftline:{CH_SECRET}@127.0.0.1:{free_port()}",
    }
    for key in (
        "DRIFTLINE_KAFKA_SASL_MECHANISM",
        "DRIFTLINE_KAFKA_SASL_USERNAME",
        "DRIFTLINE_CLICKHOUSE_PASSWORD",
    ):
        env_url.pop(key)
    second = subprocess.run(command, env=env_url, capture_output=True, timeout=120)
    assert second.returncode != 0
    text = first + second.stdout.decode(errors="replace") + second.stderr.decode(errors="replace")
    for secret in (SECRET, CH_SECRET, TOKEN_SECRET):
        assert secret not in text, [line for line in text.splitlines() if secret in line][:3]


# -- 4. only parameterised SQL ---------------------------------------------------------------------

_SQL = re.compile(
    r"\b(SELECT|INSERT|CREATE|ALTER|DROP|FROM|WHERE|AND|LIMIT|DATABASE|TABLE|OPTIMIZE|TRUNCATE|"
    r"VALUES)\b"
)

# Interpolations that are safe by construction: identifiers checked by database_name(), module
# constants, and integers (int(...) can only render digits).
SAFE_INTERPOLATIONS = {
    ("src/driftline/store/client.py", "database"),  # = database_name(settings)
    ("src/driftline/store/migrate.py", "database"),  # = database_name(settings)
    ("src/driftline/store/migrate.py", "MIGRATIONS_TABLE"),
    ("src/driftline/cli/trigger.py", "database_name(settings)"),
    ("src/driftline/cli/profile.py", "database_name(settings)"),
    ("src/driftline/cli/replay.py", "database_name(settings)"),
    ("jobs/example_retrain.py", "database_name(settings)"),
    ("src/driftline/demo/summary.py", "_REQUEST"),  # a constant SQL expression
    ("src/driftline/demo/run.py", "attempts"),  # settings.retrain.max_attempts, a validated int
    ("src/driftline/replay/results.py", "where"),  # a constant with {name:Type} placeholders
    # ON CLUSTER DDL: the cluster name is checked against [\w.-]+ (ClusterDDL, _migrations_table_ddl);
    # everything else is cut out of the project's own migration files (identifiers, ORDER BY keys)
    ("src/driftline/store/migrate.py", "on_cluster"),
    ("src/driftline/store/migrate.py", "engine"),  # a constant engine clause
    ("src/driftline/store/cluster_ddl.py", "self.cluster"),
    ("src/driftline/store/cluster_ddl.py", "self._on_cluster"),
    ("src/driftline/store/cluster_ddl.py", "', '.join(key_columns)"),
    ("src/driftline/store/cluster_ddl.py", "(database or self.database).strip('`')"),
    ("src/driftline/store/cluster_ddl.py", "_split_name(local)[1].strip('`')"),
    ("src/driftline/store/cluster_ddl.py", "local"),
    ("src/driftline/store/cluster_ddl.py", "match.group('ine') or ''"),
    ("src/driftline/store/cluster_ddl.py", "name"),
}


def sql_interpolations() -> set[tuple[str, str]]:
    """(file, interpolated expression) of every f-string / .format / % that builds SQL text."""
    found: set[tuple[str, str]] = set()
    for root in ("src", "streams", "jobs", "schemas"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.JoinedStr):
                    text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
                    if _SQL.search(text):
                        found.update(
                            (rel, ast.unparse(v.value))
                            for v in node.values
                            if isinstance(v, ast.FormattedValue)
                            and not (
                                isinstance(v.value, ast.Call) and getattr(v.value.func, "id", "") == "int"
                            )
                        )
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "format"
                    and isinstance(node.func.value, ast.Constant)
                    and isinstance(node.func.value.value, str)
                    and _SQL.search(node.func.value.value)
                ):
                    found.add((rel, ".format(...)"))
                elif (
                    isinstance(node, ast.BinOp)
                    and isinstance(node.op, ast.Mod)
                    and isinstance(node.left, ast.Constant)
                    and isinstance(node.left.value, str)
                    and _SQL.search(node.left.value)
                ):
                    found.add((rel, "% ..."))
    return found


def test_only_parameterised_sql() -> None:
    """Every interpolation into SQL text is a validated identifier, a constant or an int; values
    travel as ClickHouse query parameters ({name:Type}). Anything new fails here."""
    unknown = sql_interpolations() - SAFE_INTERPOLATIONS
    assert not unknown, f"SQL built from values (use query parameters): {sorted(unknown)}"
