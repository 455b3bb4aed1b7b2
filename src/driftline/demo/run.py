"""The demo run: broker, topics, worker, retrain listener, traffic, drain, summary, report, shutdown.

Every child is stopped on every exit path (success, failure, Ctrl-C): the retrain listener first,
then the worker (it saves its final checkpoints to the broker), then the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from rich.console import Console

from driftline.client.http import client_ssl_context, open_worker, worker_url
from driftline.config import Settings, load_settings_or_exit
from driftline.demo.plan import DemoPlan, build_plan, pace
from driftline.demo.progress import LIVE_COUNTS_SQL, Progress, metric_sums, progress_display
from driftline.demo.report import write_report
from driftline.demo.stack import Child, StartupError, spawn, wait_healthy
from driftline.demo.summary import build_summary, fetch_rows, queries, query_parameters, rfc3339
from driftline.demo.training import training_profiles
from driftline.kafka.admin import ensure_topics
from driftline.local.broker import EmbeddedBroker, free_port, start_broker
from driftline.simulate import ground_truth, produce
from driftline.store.client import StoreError
from driftline.store.guard import QueryRejected
from driftline.store.profiles import PublishError, publish_profile
from driftline.store.query import run_query

MARKER = ".driftline-demo"
T = TypeVar("T")


@dataclass(frozen=True)
class DemoOptions:
    home: Path
    duration_s: float | None = None
    fast: bool = False
    report: Path | None = None
    config: str | None = None
    startup_timeout_s: float = 90.0
    drain_timeout_s: float = 120.0
    job_wait_s: float = 90.0


@dataclass
class Timings:
    marks: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)
    _t0: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.marks[phase] = round(now - self._last, 1)
        self._last = now

    def as_dict(self) -> dict[str, float]:
        return {**self.marks, "total": round(time.monotonic() - self._t0, 1)}


class DemoError(RuntimeError):
    """The demo cannot run or a component failed; the message says which."""


def prepare_home(home: Path) -> Path:
    """Wipe and recreate the demo home; refuses to wipe a directory the demo did not create."""
    home = home.resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise DemoError(f"refusing to wipe {home}: not empty and not a demo home (no {MARKER} file)")
        shutil.rmtree(home)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `driftline demo`; wiped at the start of every demo run\n")
    return home


@contextlib.contextmanager
def scoped_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by children spawned meanwhile); restore them on exit."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _get(settings: Settings, url: str, timeout: float = 5.0) -> str:
    with open_worker(settings, urllib.request.Request(url), timeout) as response:  # token, TLS trust
        return bytes(response.read()).decode()


async def _guarded(work: Awaitable[T], children: list[Child]) -> T:
    """Await ``work``; fail as soon as a child exits."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            for child in children:
                if not child.running():
                    raise DemoError(
                        f"{child.name} exited with code {child.process.returncode}:\n{child.log_tail()}"
                    )
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class Driver:
    """Traffic, progress polling, drain and the wait for retrain jobs (one asyncio run)."""

    def __init__(self, plan: DemoPlan, settings: Settings, progress: Progress, children: list[Child]) -> None:
        self.plan = plan
        self.settings = settings
        self.progress = progress
        self.children = children
        self.metrics_url = worker_url(settings, "/metrics", host="127.0.0.1")
        self.traffic_started = 0.0

    def query(self, sql: str) -> dict[str, Any]:
        return dict(orjson.loads(run_query(self.settings, sql, "json"))["data"][0])

    async def _poll_metrics(self) -> str:
        text = await asyncio.to_thread(_get, self.settings, self.metrics_url)
        self.progress.apply_metrics(text)
        return text

    async def poll(self) -> None:
        """Refresh the display: worker metrics twice a second, ClickHouse counts every 3 s."""
        last_counts = 0.0
        while True:
            with contextlib.suppress(OSError, ValueError):
                await self._poll_metrics()
                if time.monotonic() - last_counts >= 3.0:
                    last_counts = time.monotonic()
                    self.progress.apply_counts(await asyncio.to_thread(self.query, LIVE_COUNTS_SQL))
            if self.traffic_started:
                scenario = self.plan.scenario
                sim_s = min(
                    (time.monotonic() - self.traffic_started) * float(scenario.speed), scenario.duration_s
                )
                self.progress.simulated_until = (
                    f"{rfc3339(scenario.start_ms() + int(sim_s * 1000))} "
                    f"(x{float(scenario.speed):g} wall time)"
                )
            await asyncio.sleep(0.5)

    async def traffic(self) -> dict[str, int]:
        self.progress.phase = "producing traffic"
        self.traffic_started = time.monotonic()

        def on_counts(counts: Counter[str]) -> None:
            self.progress.set_produced(sum(counts.values()))

        counts = await produce(self.plan.scenario, self.settings, progress=on_counts)
        self.progress.produced = sum(counts.values())
        self.progress.produce_rate = self.progress.produced / (time.monotonic() - self.traffic_started)
        return counts

    async def drain(self, produced: int, timeout: float) -> None:
        """Until the worker consumed everything produced, has no lag, and its counters stand still."""
        self.progress.phase = "draining the worker"
        deadline = time.monotonic() + timeout
        last: dict[str, float] = {}
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                sums = metric_sums(await self._poll_metrics())
            except (OSError, ValueError):
                await asyncio.sleep(0.5)
                continue
            moved = {k: v for k, v in sums.items() if k.endswith("_total")} != last
            if moved or self.progress.lag or self.progress.processed < produced:
                last = {k: v for k, v in sums.items() if k.endswith("_total")}
                still_since = time.monotonic()
            elif time.monotonic() - still_since >= 3.0:
                return
            await asyncio.sleep(0.5)
        raise DemoError(
            f"the worker did not drain within {timeout:.0f}s "
            f"(processed {self.progress.processed} of {produced}, lag {self.progress.lag})"
        )

    async def wait_jobs(self, timeout: float) -> bool:
        """Until every retrain trigger's job succeeded or used up its attempts (bounded)."""
        self.progress.phase = "waiting for retrain jobs"
        attempts = self.settings.retrain.max_attempts
        sql = (
            "SELECT (SELECT count() FROM retrain_triggers FINAL WHERE run_id = '') AS triggers, "
            "(SELECT uniqExactIf(trigger_id, status = 'succeeded' OR (status = 'failed' AND attempt >= "
            f"{attempts})) FROM retrain_jobs FINAL WHERE run_id = '') AS finished"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = await asyncio.to_thread(self.query, sql)
            self.progress.apply_counts(await asyncio.to_thread(self.query, LIVE_COUNTS_SQL))
            if int(row["finished"]) >= int(row["triggers"]):
                return True
            await asyncio.sleep(1.0)
        return False

    async def run(self, options: DemoOptions, timings: Timings) -> tuple[dict[str, int], bool]:
        poller = asyncio.create_task(self.poll())
        try:
            counts = await _guarded(self.traffic(), self.children)
            timings.mark("traffic")
            await _guarded(self.drain(sum(counts.values()), options.drain_timeout_s), self.children)
            timings.mark("drain")
            jobs_done = await _guarded(self.wait_jobs(options.job_wait_s), self.children)
            timings.mark("retrain_jobs")
            return counts, jobs_done
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller


def _start_children(
    plan: DemoPlan, settings: Settings, env: dict[str, str], home: Path, timeout: float, children: list[Child]
) -> None:
    """The worker, then (once it owns ClickHouse) the training profiles, then the retrain listener."""
    worker = spawn("worker", ["worker", "--loglevel", "warning"], home / "logs" / "worker.log", env)
    children.append(worker)
    health = worker_url(settings, "/healthz", host="127.0.0.1")  # https with a certificate configured
    wait_healthy(worker, health, timeout, client_ssl_context(settings))
    for profile in training_profiles(
        plan.scenario, settings.drift.bins, settings.drift.top_k, plan.scenario.start_ms()
    ):
        publish_profile(settings, profile)
    listener = spawn(
        "retrain-listener",
        ["jobs", "retrain-listener", "--grace", "10", "--example-job"],  # the demo's only retrain job
        home / "logs" / "retrain-listener.log",
        env,
    )
    children.append(listener)


def _stop_children(children: list[Child]) -> dict[str, int | None]:
    """The listener first, then the worker (newest first); returns their exit codes."""
    codes: dict[str, int | None] = {}
    for child in reversed(children):
        codes[child.name] = child.stop(timeout=45.0 if child.name == "worker" else 20.0)
    return codes


def run_demo(options: DemoOptions, console: Console) -> dict[str, Any]:
    """Run the demo end to end; returns the summary (also after writing the report)."""
    timings = Timings()
    home = prepare_home(options.home)
    broker: EmbeddedBroker | None = None
    children: list[Child] = []
    try:
        broker = start_broker(log_path=home / "logs" / "broker.log", detach=True)
        plan = build_plan(
            home,
            broker.bootstrap_servers,
            free_port(),
            pace(options.duration_s, options.fast),
            int(time.time() * 1000),
        )
        env = {**os.environ, **plan.env}
        with scoped_env(plan.env):
            settings = load_settings_or_exit(options.config)
        ensure_topics(settings)
        console.print(
            f"[bold]driftline demo[/] in {home}: broker {broker.bootstrap_servers}, "
            f"worker web port {settings.worker.web_port}"
        )
        _start_children(plan, settings, env, home, options.startup_timeout_s, children)
        timings.mark("startup")
        progress = Progress()
        driver = Driver(plan, settings, progress, children)
        with progress_display(console, progress):
            counts, jobs_done = asyncio.run(driver.run(options, timings))
            progress.phase = "summarizing"
        truth = ground_truth(plan.scenario)
        parameters = query_parameters(
            settings.windows.sizes_s[0],
            settings.windows.metrics_interval_s,
            [m for m, spec in truth["models"].items() if spec["challenger"]],
        )
        rows = fetch_rows(
            lambda statement: run_query(settings, statement, "json", parameters=parameters), queries()
        )
        summary = build_summary(truth, rows, plan.injection_ms)
        report = write_report(options.report or home / "report.html", summary, truth, rows,
                              lambda sql, values: run_query(settings, sql, "json", parameters=values))
        timings.mark("summary_and_report")
        pids = {"broker": broker.pid, **{child.name: child.pid for child in children}}
        codes = _stop_children(children)
        children.clear()
        broker.stop()
        timings.mark("shutdown")
        summary.update(
            report=str(report.resolve()),
            home=str(home),
            events=counts,
            retrain_jobs_finished=jobs_done,
            simulated_seconds=plan.simulated_s,
            speed=plan.scenario.speed,
            timings_s=timings.as_dict(),
            pids=pids,
            exit_codes=codes,
        )
        return summary
    except (StartupError, StoreError, QueryRejected, PublishError) as err:
        raise DemoError(str(err)) from None
    finally:
        _stop_children(children)
        if broker is not None:
            broker.stop()
