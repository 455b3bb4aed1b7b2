"""Fault-injection harness: a recorded stream, real worker processes, a controllable network, RSS.

The pattern of ``tests/test_worker_crash.py``, generalised: every run reads the same recorded
predictions/labels topics with its own internal topics, state, home and embedded ClickHouse
directory; after the run every table is dumped with FINAL and compared row for row with the
clean run's.

- :class:`TcpProxy` forwards a loopback port to the broker; ``cut()`` closes every connection and
  refuses new ones until ``restore()``.
- :func:`start_proxied_broker` starts a dedicated Tansu whose advertised listener is the proxy, so
  every client connection (bootstrap *and* the address from metadata) goes through the proxy.
- :class:`Worker` is one ``driftline worker`` process (role all|processor|sink) with its web port,
  log file and ``/metrics`` parsing; :class:`RssSampler` samples the RSS of live workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import psutil
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from driftline.config import Settings, TopicSettings
from driftline.local.broker import broker_binary, free_port, wait_for_metadata

TABLES = (
    "feature_windows",
    "drift_scores",
    "model_drift",
    "model_metrics",
    "outcomes",
    "dead_letters",
    "late_events",
    "unjoined_events",
    "reference_profiles",
    "retrain_triggers",
    "drift_alerts",
    "drift_episodes",
    "multivariate_drift",
    "outlier_rate",
    "estimated_performance",
)
# Every topic but the recorded input: each run gets its own.
INTERNAL = tuple(t for t in TopicSettings.topic_fields() if t not in ("predictions", "labels"))
# Stage 2's shards: run_env leaves the model-events topic at its default partitions.
MODEL_EVENTS_PARTITIONS: int = TopicSettings.model_fields["model_events_partitions"].default

# Generous ceilings (bytes): a worker with the embedded ClickHouse engine settles around 300-500 MB
# here; a runaway buffer (a sink that kept fetching while blocked, say) goes far past these.
RSS_LIMIT = {"all": 1_500 * 2**20, "sink": 1_500 * 2**20, "processor": 1_000 * 2**20}


# -- a stage-1 runner in this process ------------------------------------------------------------


@contextlib.asynccontextmanager
async def stage_one_runner(s: Settings, group: str) -> AsyncIterator[tuple[Any, asyncio.Task[None]]]:
    """A running stage-1 ``StageRunner`` (the real processors, its own producer and checkpoint
    store) and its task; stopped, and its clients closed, on the way out."""
    from aiokafka import AIOKafkaProducer

    from driftline.kafka.clients import aiokafka_producer_kwargs
    from driftline.pipeline.shard import ShardFactory
    from driftline.streams.checkpoint import CheckpointStore
    from driftline.streams.runner import StageRunner

    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
    await producer.start()
    store = CheckpointStore(s, producer)
    await store.start()
    runner = StageRunner(s, "shard", f"{group}-{s.topics.state}",
                         [s.topics.predictions, s.topics.labels, s.topics.repartition], ShardFactory(s),
                         [s.topics.profiles], producer=producer, checkpoints=store)
    task = asyncio.create_task(runner.run())
    try:
        yield runner, task
    finally:
        runner.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 30)
        await store.stop()
        await producer.stop()


# -- network ---------------------------------------------------------------------------------------


def load_module(path: Path, name: str) -> ModuleType:
    """The Python file at ``path`` as a fresh module called ``name``: for what is not importable by
    name here, a sibling test module (pytest's importlib import mode) or a notebook's script."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TcpProxy:
    """A loopback TCP forwarder run by an asyncio loop in a thread of the test process."""

    def __init__(self, target_port: int, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.target_port = target_port
        self.connections = 0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def cut(self) -> None:
        """Close every proxied connection and refuse new ones (connection refused) until restore()."""
        self.cuts += 1
        self._call(self._shutdown())

    def restore(self) -> None:
        self._call(self._listen())

    @property
    def is_cut(self) -> bool:
        return self._server is None

    # -- inside the loop --------------------------------------------------------------------------

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((client_writer, upstream_writer))

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(pump(client_reader, upstream_writer), pump(upstream_reader, client_writer))
        self._writers.discard(client_writer)
        self._writers.discard(upstream_writer)


@dataclass
class ProxiedBroker:
    process: subprocess.Popen[bytes]
    proxy: TcpProxy
    broker_port: int

    @property
    def bootstrap_servers(self) -> str:
        return self.proxy.address

    def stop(self) -> None:
        self.proxy.stop()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_proxied_broker(log_path: Path, *, extra_args: Iterable[str] = ()) -> ProxiedBroker:
    """A dedicated Tansu listening on one port and advertising the proxy's address."""
    broker_port = free_port()
    proxy = TcpProxy(broker_port).start()
    command = [
        broker_binary(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{broker_port}",
        "--advertised-listener-url",
        f"tcp://{proxy.address}",
        "--storage-engine",
        "memory://tansu/",
        *extra_args,
    ]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    broker = ProxiedBroker(process, proxy, broker_port)
    try:
        wait_for_metadata(proxy.address, 15, process)
    except BaseException:
        broker.stop()
        raise
    return broker


# -- runs and workers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """The recorded input every run of a suite reads."""

    bootstrap: str
    predictions: str
    labels: str
    partitions: int
    counts: dict[str, int]
    profiles: tuple[bytes, ...] = ()  # training profiles, published to each run's profiles topic


def run_env(stream: Stream, run: str, root: Path, **extra: str) -> dict[str, str]:
    """Environment of every process of one run (its own internal topics and database).

    Also publishes the stream's training profiles to the run's own profiles topic (before any
    worker of the run starts), so stage 1's sequential detectors watch the run from its first event.
    """
    env = {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": stream.bootstrap,
        "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{root / run / 'chdb'}",
        "DRIFTLINE_CLICKHOUSE_DATABASE": f"fault_{run}",
        "DRIFTLINE_TOPICS_PREDICTIONS": stream.predictions,
        "DRIFTLINE_TOPICS_LABELS": stream.labels,
        "DRIFTLINE_TOPICS_PARTITIONS": str(stream.partitions),
        "DRIFTLINE_WINDOWS_SIZES_S": "[60, 300]",
        "DRIFTLINE_WINDOWS_ALLOWED_LATENESS_S": "10",
        "DRIFTLINE_WINDOWS_METRICS_INTERVAL_S": "60",
        "DRIFTLINE_JOIN_LABEL_HORIZON_S": "300",
        "DRIFTLINE_TRIGGERS_COOLDOWN_S": "600",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S": "1",
        "DRIFTLINE_WORKER_BATCH_MAX_RECORDS": "2000",
    }
    for name in INTERNAL:
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = f"{stream.predictions}.{run}.{name}"
    env.update(extra)
    if stream.profiles:
        _publish_profiles(stream, env["DRIFTLINE_TOPICS_PROFILES"])
    return env


def _publish_profiles(stream: Stream, topic: str) -> None:
    from kafka import KafkaProducer

    from driftline.config import Settings
    from driftline.kafka.admin import ensure_topics

    ensure_topics(Settings(kafka={"bootstrap_servers": stream.bootstrap},
                           topics={"partitions": stream.partitions, "profiles": topic}))
    producer = KafkaProducer(bootstrap_servers=stream.bootstrap)
    try:
        for profile in stream.profiles:
            producer.send(topic, profile, key=b"profile")
        producer.flush(30)
    finally:
        producer.close()


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})? (\S+)$", re.M)
_LABELS = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for name, labels, value in _SAMPLE.findall(text):
        out.append((name, dict(_LABELS.findall(labels or "")), float(value)))
    return out


class Worker:
    """One `driftline worker` subprocess; stopped (SIGCONT + SIGKILL if needed) by ``close``."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *,
        role: str = "all",
        idle: float | None = 5,
        run_seconds: float = 400,
        home: Path | None = None,
        loglevel: str = "warning",
    ) -> None:
        self.role = role
        self.port = free_port()
        self.log = log
        env = dict(env)
        if home is not None:
            env["DRIFTLINE_HOME"] = str(home)
        command = [
            sys.executable,
            "-m",
            "driftline.cli.main",
            "worker",
            "--role",
            role,
            "--web-port",
            str(self.port),
            "--run-seconds",
            str(run_seconds),
            "--loglevel",
            loglevel,
        ]
        if idle is not None:
            command += ["--exit-when-idle", str(idle)]
        with log.open("ab") as err:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                return parse_metrics(response.read().decode())
        except OSError:
            return []

    def metric_sum(self, name: str, **labels: str) -> float:
        return sum(
            v
            for n, lab, v in self.metrics()
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    def predictions_in(self) -> float:
        return sum(
            v
            for n, lab, v in self.metrics()
            if n == "driftline_events_in_total"
            and lab.get("stage") == "shard"
            and lab.get("topic", "").endswith("predictions")
        )

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def where(self) -> str:
        """What its /metrics says of its progress: shards owned, lag, events in, checkpoints
        (one line each; "no /metrics answer" if it did not answer)."""
        wanted = ("driftline_shards_owned", "driftline_consumer_lag", "driftline_events_in_total",
                  "driftline_checkpoint_offset", "driftline_idle_partitions")
        lines = [f"{n}{lab} {v:g}" for n, lab, v in self.metrics() if n in wanted or "restor" in n]
        return "\n".join(["/metrics:", *lines]) if lines else "no /metrics answer"

    def stacks(self, timeout: float = 15) -> str:
        """The log's tail, then what ``kill -QUIT`` makes the worker write to it: every thread's stack,
        then every task's once its event loop runs (waited for up to ``timeout``; a stuck loop never
        does)."""
        before = self.tail(6000)  # the log's last lines first: a warning may say it all
        try:
            start = self.log.stat().st_size
        except OSError:
            return before
        self.signal(signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while True:
            with self.log.open("rb") as f:
                f.seek(start)
                written = f.read().decode(errors="replace")
            if "asyncio tasks ---" in written or time.monotonic() >= deadline or not self.alive():
                return f"{before}\n--- kill -QUIT wrote ---\n{written[-40_000:]}"
            time.sleep(0.2)

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP, and wait until the kernel reports the process stopped."""
        self.signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(self.pid)
            while process.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                assert time.monotonic() < deadline, "SIGSTOP did not take effect"
                time.sleep(0.005)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.kill()


@contextlib.contextmanager
def workers() -> Iterator[list[Worker]]:
    """Every worker appended to the yielded list is killed on exit, whatever happened."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            with contextlib.suppress(Exception):
                worker.close()


def start_watched(
    started: list[Worker], rss: RssSampler, env: dict[str, str], log: Path, **kwargs: Any
) -> Worker:
    """Start a worker that is stopped on every exit path (``started``) and whose RSS is sampled."""
    worker = Worker(env, log, **kwargs)
    started.append(worker)
    rss.watch(worker)
    return worker


def pauses(first: float = 0.05, most: float = 0.5) -> Iterator[float]:
    """Pauses between polls of a worker's /metrics: short at first, so a condition that soon holds
    is seen soon, then 1.5x longer each time up to ``most``. A scrape costs the worker ~2.6 ms CPU and
    the test about as much; the waits for a drained or idle worker polled at a fixed 4-5 Hz."""
    pause = first
    while True:
        yield pause
        pause = min(most, pause * 1.5)


def wait_until(predicate: object, timeout: float, what: str, *, alive: Iterable[Worker] = ()) -> None:
    deadline = time.monotonic() + timeout
    check = predicate  # a zero-argument callable
    while not check():  # type: ignore[operator]
        for worker in alive:
            assert worker.alive(), (
                f"{worker.role} worker exited ({worker.process.returncode}) while "
                f"waiting for {what}:\n{worker.tail()}"
            )
        if time.monotonic() >= deadline:
            stuck = "".join(f"\n--- the {w.role} worker {w.pid}: {w.where()}\n{w.stacks()}"
                            for w in alive if w.alive())
            raise AssertionError(f"timed out waiting for {what}{stuck}")
        time.sleep(0.1)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``predicate`` (an OSError, e.g. not listening yet, counts as false) until it holds;
    fail at ``timeout`` or as soon as ``proc`` exits, with the tail of ``log`` or its stderr."""
    deadline = time.monotonic() + timeout
    pause = pauses()
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            if log is not None:
                tail = log.read_text(errors="replace")
            else:
                tail = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"process exited early ({proc.returncode}): {tail[-3000:]}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(next(pause))
    raise AssertionError(f"timed out waiting for {what}")


def read_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 120) -> list[ConsumerRecord]:
    """Every record of ``topic``, partition by partition in offset order.

    Read until each partition's position reaches the high watermark of a Fetch response (the
    embedded broker's ListOffsets(LATEST) answer is wrong, its Fetch high watermark is right), not
    until the consumer has seen nothing for a few seconds: that cost those seconds at every read
    and, on a loaded machine, could take a stalled fetch for the end of the topic.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records: dict[TopicPartition, list[ConsumerRecord]] = {tp: [] for tp in tps}
        deadline = time.monotonic() + timeout
        while True:
            for tp, batch in consumer.poll(timeout_ms=200).items():
                records[tp].extend(batch)
            ends = {tp: consumer.highwater(tp) for tp in tps}
            if all(end is not None and consumer.position(tp) >= end for tp, end in ends.items()):
                return [record for tp in tps for record in records[tp]]
            assert time.monotonic() < deadline, f"{topic}: not read to its end in {timeout} s"
    finally:
        consumer.close()


def stop_when_idle(worker: Worker, partitions: int, timeout: float = 300, quiet_s: float = 5) -> None:
    """``--exit-when-idle quiet_s``, armed from now: once the worker runs every shard of both stages
    (each restored: ``partitions`` of stage 1, the model-events topic's of stage 2), has no lag and
    consumed nothing new for ``quiet_s``, SIGTERM it (the path idle exit takes) and expect exit 0.
    For a processor that must not exit while idle earlier in a test."""
    shards = {"shard": partitions, "model": MODEL_EVENTS_PARTITIONS}
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    pause = pauses()
    while True:
        assert worker.alive(), f"{worker.role} worker exited ({worker.process.returncode}):\n{worker.tail()}"
        assert time.monotonic() < deadline, f"{worker.role} worker did not go idle:\n{worker.stacks()}"
        metrics = worker.metrics()
        seen = sum(v for n, _, v in metrics if n == "driftline_events_in_total")
        lag = sum(v for n, _, v in metrics if n == "driftline_consumer_lag")
        owned = {lab.get("stage"): v for n, lab, v in metrics if n == "driftline_shards_owned"}
        if owned != shards or lag or seen != last:
            last, since = seen, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(next(pause))
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.tail()


def kill_after_progress(worker: Worker, records: float, timeout: float = 120) -> None:
    """SIGKILL `worker` once its shard stage consumed `records` predictions (this incarnation)."""
    wait_until(
        lambda: worker.predictions_in() >= records, timeout, f"{records:.0f} predictions in", alive=[worker]
    )
    worker.kill()


def run_to_idle(
    env: dict[str, str],
    log: Path,
    started: list[Worker],
    home: Path,
    sampler: RssSampler | None = None,
    timeout: float = 300,
) -> None:
    worker = Worker(env, log, home=home)
    started.append(worker)
    if sampler is not None:
        sampler.watch(worker)
    try:
        code = worker.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not go idle in {timeout} s:\n{worker.stacks()}") from None
    assert code == 0, worker.tail()


def drain_sink(sink: Worker, timeout: float = 120, quiet_s: float = 2.5) -> None:
    """Wait until the sink has no lag and read nothing new for `quiet_s`, then stop it (exit 0)."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    pause = pauses()
    while True:
        assert sink.alive(), f"sink exited ({sink.process.returncode}):\n{sink.tail()}"
        assert time.monotonic() < deadline, f"sink did not drain:\n{sink.stacks()}"
        metrics = sink.metrics()
        seen = sum(v for n, _, v in metrics if n == "driftline_sink_messages_total")
        lag = sum(v for n, lab, v in metrics if n == "driftline_consumer_lag" and lab.get("stage") == "sink")
        if not metrics or lag or seen != last:
            last, since = seen, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(next(pause))
    sink.signal(signal.SIGTERM)
    assert sink.wait(60) == 0, sink.tail()


# -- memory ----------------------------------------------------------------------------------------


@dataclass
class RssSampler:
    """Samples the RSS of watched workers every `interval` seconds in a background thread."""

    interval: float = 0.5
    peaks: dict[str, int] = field(default_factory=dict)  # role -> max RSS seen
    series: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # pid -> (t, rss)
    _watched: dict[int, tuple[str, psutil.Process]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, worker: Worker) -> None:
        with contextlib.suppress(psutil.Error):
            self._watched[worker.pid] = (worker.role, psutil.Process(worker.pid))

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.interval):
            for pid, (role, process) in list(self._watched.items()):
                try:
                    if process.status() == psutil.STATUS_ZOMBIE:
                        continue
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[role] = max(self.peaks.get(role, 0), rss)
                self.series.setdefault(pid, []).append((time.monotonic() - t0, rss))

    def check(self, limits: dict[str, int] = RSS_LIMIT) -> str:
        """Assert every role stayed under its limit; returns a one-line report (MB)."""
        for role, peak in self.peaks.items():
            assert peak < limits[role], (
                f"{role} RSS peaked at {peak / 2**20:.0f} MB (limit {limits[role] / 2**20:.0f} MB)"
            )
        return ", ".join(f"{role} peak {peak / 2**20:.0f} MB" for role, peak in sorted(self.peaks.items()))


# -- results ---------------------------------------------------------------------------------------

DUMP = textwrap.dedent("""
    import sys, orjson, clickhouse_connect
    client = clickhouse_connect.get_client(dsn=sys.argv[1])
    out = {}
    for table in sys.argv[3].split(","):
        result = client.query(f"SELECT * FROM {sys.argv[2]}.{table} FINAL ORDER BY ALL")
        out[table] = [list(map(str, row)) for row in result.result_rows]
    sys.stdout.buffer.write(orjson.dumps(out))
""")


def dump_tables(root: Path, run: str, tables: Iterable[str] = TABLES) -> dict[str, list[list[str]]]:
    """Every table of a finished run, read with FINAL (in a subprocess: one chDB path per process)."""
    result = subprocess.run(
        [sys.executable, "-c", DUMP, f"chdb://{root / run / 'chdb'}", f"fault_{run}", ",".join(tables)],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return orjson.loads(result.stdout)


def assert_same_tables(faulted: dict[str, list[list[str]]], clean: dict[str, list[list[str]]]) -> None:
    for table in clean:
        got, want = faulted[table], clean[table]
        if got != want:
            got_set, want_set = {tuple(r) for r in got}, {tuple(r) for r in want}
            missing, extra = len(want_set - got_set), len(got_set - want_set)
            raise AssertionError(
                f"{table}: {len(got)} rows vs {len(want)} in the clean run "
                f"({missing} missing, {extra} extra or different)"
            )


# -- ClickHouse storage outage ---------------------------------------------------------------------


@contextlib.contextmanager
def clickhouse_storage_down(root: Path, run: str, sink: Worker) -> Iterator[None]:
    """Make the run's embedded ClickHouse fail every insert until the block exits.

    The engine's ``store`` directory (all table data) is moved aside and a plain *file* takes its
    place: creating a part directory then fails inside ClickHouse ("Not a directory"), while
    metadata queries keep working. On exit the directory is put back and inserts succeed again
    with every earlier part intact. (A missing directory would just be recreated, empty.) The
    sink is SIGSTOPped for the few microseconds of each swap, so it cannot race them.
    """
    store = root / run / "chdb" / "store"
    aside = store.with_name("store.down")
    sink.pause()
    try:
        store.rename(aside)
        store.touch()
    finally:
        sink.resume()
    try:
        yield
    finally:
        sink.pause()
        try:
            store.unlink()
            aside.rename(store)
        finally:
            sink.resume()
