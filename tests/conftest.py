"""Test backends: one integration suite, three ways to get Kafka and ClickHouse.

DRIFTLINE_TEST_BACKEND selects:
- ``embedded`` (default, CI): a Tansu broker per test module and the in-process chDB engine;
- ``testcontainers``: Apache Kafka and ClickHouse server containers (skipped without Docker);
- ``external``: servers named by DRIFTLINE_TEST_KAFKA_BOOTSTRAP_SERVERS and
  DRIFTLINE_TEST_CLICKHOUSE_URL.

chDB allows one engine path per process, so the test process opens a single session-wide
embedded path and isolates tests by database name; worker subprocesses get their own paths.
"""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from driftline.config import Settings, TopicSettings
from driftline.operators.float_block import FloatBlock

# faults/harness.py holds the helpers of every test that runs real processes (workers, waits).
sys.path.insert(0, str(Path(__file__).parent / "faults"))

BACKEND = os.environ.get("DRIFTLINE_TEST_BACKEND", "embedded")
if BACKEND != "embedded":
    # The suite produces fixed historical event times with matching record timestamps. A real broker
    # enforces LogAppendTime on the input topics driftline creates, which would restamp them "now"
    # and dead-letter them as out of range; the embedded broker stores the setting but ignores it.
    os.environ.setdefault("DRIFTLINE_WINDOWS_INPUT_TIMESTAMP_TYPE", "CreateTime")


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def _containers() -> Iterator[dict[str, str]]:
    if BACKEND != "testcontainers":
        yield {}
        return
    if not _docker_available():
        pytest.skip("testcontainers backend: no Docker engine reachable on this machine")
    from testcontainers.clickhouse import ClickHouseContainer
    from testcontainers.kafka import KafkaContainer

    with (
        KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka,
        ClickHouseContainer("clickhouse/clickhouse-server:24.8") as ch,
    ):
        url = f"http://{ch.get_container_host_ip()}:{ch.get_exposed_port(8123)}"
        yield {
            "kafka": kafka.get_bootstrap_server(),
            "clickhouse": url,
            "clickhouse_user": ch.username,
            "clickhouse_password": ch.password,
        }


@pytest.fixture(scope="module")
def kafka_bootstrap(_containers: dict[str, str]) -> Iterator[str]:
    """Bootstrap servers of a real broker; the embedded one is fresh per test module."""
    if BACKEND == "embedded":
        from driftline.local.broker import running_broker

        with running_broker() as broker:
            yield broker.bootstrap_servers
    elif BACKEND == "testcontainers":
        yield _containers["kafka"]
    elif BACKEND == "external":
        servers = os.environ.get("DRIFTLINE_TEST_KAFKA_BOOTSTRAP_SERVERS")
        if not servers:
            pytest.skip("external backend: set DRIFTLINE_TEST_KAFKA_BOOTSTRAP_SERVERS")
        yield servers
    else:
        raise pytest.UsageError(f"unknown DRIFTLINE_TEST_BACKEND {BACKEND!r}")


@pytest.fixture(scope="session")
def _session_clickhouse_url(_containers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    if BACKEND == "embedded":
        return f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}"
    if BACKEND == "testcontainers":
        return _containers["clickhouse"]
    url = os.environ.get("DRIFTLINE_TEST_CLICKHOUSE_URL")
    if not url:
        pytest.skip("external backend: set DRIFTLINE_TEST_CLICKHOUSE_URL")
    return url


@pytest.fixture
def clickhouse_url(_session_clickhouse_url: str) -> str:
    """A ClickHouse DSN the test process may open (one chDB path per process)."""
    return _session_clickhouse_url


@pytest.fixture
def worker_clickhouse_url(tmp_path: Path, _session_clickhouse_url: str) -> str:
    """A ClickHouse DSN for a *subprocess* (worker, CLI): its own embedded path, or the server."""
    if BACKEND == "embedded":
        return f"chdb://{tmp_path / 'worker-chdb'}"
    return _session_clickhouse_url


def _unique() -> str:
    return uuid.uuid4().hex[:10]


def _settings_on_backend(kafka_bootstrap: str, clickhouse_url: str, home: Path,
                         containers: dict[str, str]) -> Settings:
    """Settings on the selected backend, with topics and database of their own."""
    tag = _unique()
    topics = {name: f"t{tag}.{name}" for name in TopicSettings.topic_fields()}
    clickhouse: dict[str, object] = {"url": clickhouse_url, "database": f"dl_{tag}"}
    if containers.get("clickhouse_user"):
        clickhouse["username"] = containers["clickhouse_user"]
        clickhouse["password"] = containers["clickhouse_password"]
    return Settings(
        home=home,
        kafka={"bootstrap_servers": kafka_bootstrap},
        topics=topics,
        clickhouse=clickhouse,
    )


@pytest.fixture
def settings(
    kafka_bootstrap: str, clickhouse_url: str, tmp_path: Path, _containers: dict[str, str]
) -> Settings:
    """Settings on the selected backend, with topics and database unique to this test."""
    return _settings_on_backend(kafka_bootstrap, clickhouse_url, tmp_path / "home", _containers)


@pytest.fixture(scope="module")
def module_settings(
    kafka_bootstrap: str, _session_clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory,
    _containers: dict[str, str],
) -> Settings:
    """As ``settings``, one per test module: for a module fixture that writes rows its tests only read."""
    home = tmp_path_factory.mktemp("module") / "home"
    return _settings_on_backend(kafka_bootstrap, _session_clickhouse_url, home, _containers)


def _feed_with_crashes(
    pipeline: Any, batches: list[Any], crash_at: set[int], every: int
) -> dict[str, list[Any]]:
    """Feed ``batches`` into an InProcessPipeline, snapshotting every processor each ``every``
    batches; after each batch index in ``crash_at`` 'crash' (lose all state since the snapshot),
    restore and re-feed from there. Returns the rows deduplicated as a ReplacingMergeTree would."""
    import orjson

    from driftline.pipeline.model import ModelProcessor
    from driftline.pipeline.shard import ShardProcessor

    pending = set(crash_at)
    checkpoint = None
    i = 0
    while i < len(batches):
        if i % every == 0:
            checkpoint = (i, [s.snapshot() for s in pipeline.shards], [m.snapshot() for m in pipeline.models])
        pipeline.feed(batches[i])
        i += 1
        if i in pending and checkpoint is not None:
            pending.discard(i)
            i, shard_blobs, model_blobs = checkpoint
            pipeline.shards = [ShardProcessor.restore(b, pipeline.settings) for b in shard_blobs]
            pipeline.models = [ModelProcessor.restore(b, pipeline.settings) for b in model_blobs]
    assert not pending, f"crash points never reached: {pending}"
    return {
        t: list({orjson.dumps(r, option=orjson.OPT_SORT_KEYS): r for r in rs}.values())
        for t, rs in pipeline.rows.items()
    }


@pytest.fixture
def feed_with_crashes() -> Any:
    """The crash/restore driver of the in-process determinism tests (see _feed_with_crashes)."""
    return _feed_with_crashes


def _run_with_producer(settings: Settings, scenario: Callable[[Any], Awaitable[None]]) -> None:
    """Create ``settings``' topics, then run ``scenario`` with one started aiokafka producer (stopped
    after it, whatever it raised) in a fresh event loop."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from driftline.kafka.admin import ensure_topics
    from driftline.kafka.clients import aiokafka_producer_kwargs

    ensure_topics(settings)

    async def main() -> None:
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
        await producer.start()
        try:
            await scenario(producer)
        finally:
            await producer.stop()

    asyncio.run(main())


@pytest.fixture
def run_with_producer() -> Callable[[Settings, Callable[[Any], Awaitable[None]]], None]:
    """The checkpoint tests' driver: ``run_with_producer(settings, scenario)`` (see _run_with_producer)."""
    return _run_with_producer


async def _produce_keyed(settings: Settings, n_per_topic: int, start: int = 0, n_keys: int = 40) -> None:
    """Produce records ``start .. start + n_per_topic`` (value ``x``, key ``k{i % n_keys}``) to the
    predictions topic, then the same to the labels topic: the runner tests' input."""
    from aiokafka import AIOKafkaProducer

    from driftline.kafka.clients import aiokafka_producer_kwargs

    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        for topic in (settings.topics.predictions, settings.topics.labels):
            for i in range(start, start + n_per_topic):
                await producer.send(topic, b"x", key=f"k{i % n_keys}".encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
def produce_keyed() -> Callable[..., Awaitable[None]]:
    """``await produce_keyed(settings, n_per_topic, start=0, n_keys=40)`` (see _produce_keyed)."""
    return _produce_keyed


async def _wait_async(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``predicate`` from a coroutine every 50 ms; fail at the deadline, naming ``what``."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def wait_async() -> Callable[..., Awaitable[None]]:
    """``await wait_async(predicate, what, timeout_s=60)`` (see _wait_async)."""
    return _wait_async


# -- scheduling under `make test` (-n 4 --dist loadfile --no-loadscope-reorder) ----------------------
# The fault tests compared with the clean run are one xdist work unit: their session fixtures (a
# proxied broker, the recorded stream, the clean worker run: ~30 s) are then paid by one worker, not
# by every worker that gets one of their files. The fault tests on streams of their own (comparison
# and episodes need only a broker; reroute the recorded stream and its own clean run) are a second
# unit beside it: as one unit the fault suite was the suite's critical path (~720 of CI's 736 s of
# pytest). Work units run longest first (the units below, measured in CI, then collection order), so
# no worker starts a two-minute file while the others sit idle at the end. A stale entry here only
# costs wall time.
_FAULTS = "tests/faults/"
_FAULTS_OWN_STREAMS = "tests/faults/ on streams of their own"
_OWN_STREAM_FILES = tuple(f"{_FAULTS}test_fault_{name}.py" for name in ("comparison", "episodes", "reroute"))
_LONGEST_FIRST = (
    _FAULTS,
    _FAULTS_OWN_STREAMS,
    "tests/test_bench_smoke_in_process.py",  # run_all --quick's in-process rows
    "tests/test_demo.py",
    "tests/test_fuzz_decoders.py",
    "tests/test_bench_smoke.py",  # its rows on the broker, bench_delivery, bench_restart
    "tests/test_pipeline_two_phase.py",  # at 10 events/s since da93c16: half its CPU
    "tests/test_report.py",
    "tests/test_pipeline_e2e.py",
    "tests/test_pipeline_sequential.py",
    "tests/test_pipeline_comparison.py",
    "tests/test_grafana.py",
    "tests/test_replay.py",
    "tests/test_retrain_listener.py",
)


def _work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its file, or one of the fault suite's two units."""
    if nodeid.startswith(_OWN_STREAM_FILES):
        return _FAULTS_OWN_STREAMS
    return _FAULTS if nodeid.startswith(_FAULTS) else nodeid.split("::", 1)[0]


def _longest_first(item: pytest.Item) -> int:
    unit = _work_unit(item.nodeid)
    return next((i for i, name in enumerate(_LONGEST_FIRST) if unit == name), len(_LONGEST_FIRST))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FaultSuiteInTwoUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return FaultSuiteInTwoUnits(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_longest_first)  # stable: collection order within a rank
    if os.environ.get("DRIFTLINE_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak run: set DRIFTLINE_SOAK=1 (long; CI skips it)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


# The join's tests run twice: all in memory, and with a one-byte memory budget (every pending
# payload moves to the on-disk pending store as soon as it can): results must not differ.
_JOIN_TEST_MODULES = ("test_op_join", "test_evicted_predictions")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1].startswith(_JOIN_TEST_MODULES):
        metafunc.fixturenames.append("join_memory_budget")
        metafunc.parametrize("join_memory_budget", [0, 1], indirect=True, ids=["in_memory", "spilled"])


BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_path() -> Iterator[None]:
    """bench/ on sys.path while the test module runs, so its scripts import as modules."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH_DIR))


@pytest.fixture
def join_memory_budget(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Give every LabelJoin made or restored in the test this memory budget (bytes)."""
    from driftline.operators.join import LabelJoin

    budget: int = request.param
    if budget:
        init, setstate = LabelJoin.__init__, LabelJoin.__setstate__

        def init_with_budget(self: LabelJoin, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.set_memory_budget(budget)

        def setstate_with_budget(self: LabelJoin, state: dict[str, Any]) -> None:
            setstate(self, state)
            self.set_memory_budget(budget)

        monkeypatch.setattr(LabelJoin, "__init__", init_with_budget)
        monkeypatch.setattr(LabelJoin, "__setstate__", setstate_with_budget)
    return budget


def _watch_feature_maps(x: list[Any], y: list[Any], c: list[Any], odd: list[Any]) -> list[dict[str, Any]]:
    """Feature maps of numeric x, y and categorical c, with the odd values a monitor must take in its
    stride: every 37th x one of ``odd``, every 53rd c not a string, every 41st y missing."""
    features: list[dict[str, Any]] = []
    for i in range(len(x)):
        row: dict[str, Any] = {"x": x[i], "y": y[i], "c": c[i]}
        if i % 37 == 5:
            row["x"] = odd[i % len(odd)]
        if i % 53 == 7:
            row["c"] = [None, 3, 2.5, False][i % 4]
        if i % 41 == 3:
            del row["y"]
        features.append(row)
    return features


@pytest.fixture
def watch_feature_maps() -> Callable[[list[Any], list[Any], list[Any], list[Any]], list[dict[str, Any]]]:
    """The feature-watch tests' event maps (x, y, c with odd values): one builder, shared."""
    return _watch_feature_maps


def _shard_feature_split(
    features: list[dict[str, Any]], as_columns: bool | str,
) -> tuple[list[dict[str, Any]], Mapping[str, Any] | None, dict[str, list[Any]] | None]:
    """x, y, c as a stage-1 shard hands them to a feature watch: float64 columns for all-float
    features and value lists for the others, the maps without them (``as_columns``; ``"block"``:
    the columns as one :class:`FloatBlock`, as a shard hands a model of a many-model batch); else
    each event's whole map."""
    if not as_columns:
        return features, None, None
    columns: dict[str, Any] = {}
    values: dict[str, list[Any]] = {}
    for name in ("x", "y", "c"):
        column = [f.get(name) for f in features]
        if all(type(v) is float for v in column):
            columns[name] = np.asarray(column, dtype=np.float64)
        else:
            values[name] = column
    rest = [{k: v for k, v in f.items() if k not in columns} for f in features]
    if as_columns == "block" and columns:
        return rest, FloatBlock(tuple(columns), np.vstack(list(columns.values()))), values
    return rest, columns, values


@pytest.fixture
def shard_feature_split() -> Callable[..., tuple[list[dict[str, Any]], Mapping[str, Any] | None,
                                                 dict[str, list[Any]] | None]]:
    """The feature-watch tests' split of event maps into a shard's columns: one helper, shared."""
    return _shard_feature_split


BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_module() -> Iterator[Callable[[str], ModuleType]]:
    """Import a bench script as its own runs do (``bench/`` first on ``sys.path``, so its
    ``common`` and sibling imports resolve), for the test's duration."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(BENCH_DIR))
