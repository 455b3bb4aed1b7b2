"""The Faust application: lifecycle, web server and signals around the batch runners.

Faust is a thin shell here. Its per-event agent path does ~5k events/s on the embedded broker,
while aiokafka ``getmany`` batches read ~118k msg/s, so the stages run as batch consumers
(``driftline.streams.runner``) hosted as a Faust service. Faust's own Kafka consumer and producer
are not started (no agents or tables are declared): the app joins no group of its own, creates no
topics (``topic_allow_declare`` off) and starts in milliseconds. Its broker URL, credentials and
group timeouts are still configured from Settings for anything later declared on the app.
SIGTERM/SIGINT stop the worker gracefully: final checkpoints, ownership released, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

import faust
import mode
from faust.app.base import BootStrategy

from driftline.config import Settings
from driftline.kafka.clients import aiokafka_common
from driftline.kafka.records import process_compiled_paths, use_process_compiled_paths
from driftline.operators.calibration import share_calibrations
from driftline.operators.performance import preload_detectors
from driftline.runtime import install_stack_dump, tune_gc
from driftline.streams.http_security import server_ssl_context
from driftline.streams.web import WorkerWeb, announce, install_routes
from driftline.streams.worker import WorkerRuntime

log = logging.getLogger(__name__)

APP_ID = "driftline"


class _ShellBoot(BootStrategy):
    """Web, sensors and app services; no Faust consumer/producer (the runners own theirs)."""

    enable_kafka_consumer = False
    enable_kafka_producer = False


class DriftlineApp(faust.App):
    BootStrategy = _ShellBoot

    def _new_web(self) -> WorkerWeb:
        return WorkerWeb(self)


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials equivalent to ``driftline.kafka.clients`` (None for PLAINTEXT)."""
    opts = aiokafka_common(settings)
    protocol = settings.kafka.security_protocol
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=opts["sasl_plain_username"],
                                     password=opts["sasl_plain_password"],
                                     ssl_context=opts.get("ssl_context"), mechanism=opts["sasl_mechanism"])
    if protocol == "SSL":
        return faust.SSLCredentials(opts["ssl_context"])
    return None


def create_app(runtime: WorkerRuntime, *, run_seconds: float | None = None,
               exit_when_idle: float | None = None) -> faust.App:
    settings = runtime.settings
    k = settings.kafka
    datadir = settings.home / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = DriftlineApp(
        APP_ID,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers().split(",")],
        broker_credentials=broker_credentials(settings),
        broker_client_id=k.client_id,
        broker_session_timeout=k.session_timeout_ms / 1000,
        broker_heartbeat_interval=k.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=k.rebalance_timeout_ms / 1000,
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=True,
        web_host=settings.worker.web_host,
        web_port=settings.worker.web_port or 6066,  # unused for binding (WorkerWeb); Faust refuses 0
        web_bind=settings.worker.web_host,
        web_ssl_context=server_ssl_context(settings.worker),
        datadir=str(datadir),
    )
    web = app.web
    assert isinstance(web, WorkerWeb)
    server: WorkerWeb = web  # the type the service below sees
    server.bind_port = settings.worker.web_port
    install_routes(app, runtime)

    @app.service
    class Runners(mode.Service):
        async def on_start(self) -> None:
            # App services start after the web server: its port is known before the owner record
            runtime.web_port = announce(server, runtime)
            log.info("compiled paths: %s",  # logged here: Faust's logging is set up by now
                     ", ".join(f"{name} {'on' if on else 'off'}"
                               for name, on in process_compiled_paths().items()))
            install_stack_dump(asyncio.get_running_loop())
            if runtime.runs_processors:  # stage 2's detectors' import (~1 CPU-s) while the runners
                # join their groups, not on the event loop at the first outcome
                threading.Thread(target=preload_detectors, name="driftline-preload", daemon=True).start()
            await runtime.start()
            self.add_future(_supervise(runtime, run_seconds, exit_when_idle))

        async def on_stop(self) -> None:
            await runtime.stop()

    return app


async def _supervise(runtime: WorkerRuntime, run_seconds: float | None, exit_when_idle: float | None) -> None:
    """Stop the worker (as SIGTERM would) when a runner fails, time is up or it has gone idle."""
    started = time.monotonic()
    last_seen, since = -1, time.monotonic()
    while True:
        await asyncio.sleep(0.2)
        now = time.monotonic()
        if runtime.failure is not None:
            log.error("stopping: %r", runtime.failure)
            break
        if run_seconds is not None and now - started >= run_seconds:
            log.info("stopping: --run-seconds %s elapsed", run_seconds)
            break
        if exit_when_idle is not None:
            seen, lag = runtime.progress()
            # Joining a consumer group takes seconds on the embedded broker; before every runner
            # holds partitions, "nothing seen" means "not started", not idle.
            ready = all(r.running and r.shards for r in runtime.runners) and (
                runtime.sink is None or (runtime.sink.running and runtime.sink.assigned())
            )
            if seen != last_seen or lag or not ready:
                last_seen, since = seen, now
            elif now - since >= exit_when_idle:
                log.info("stopping: idle for %ss", exit_when_idle)
                break
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful path


def logging_config(loglevel: str) -> dict[str, Any] | None:
    """driftline's own lines at ``loglevel``; Kafka, Faust and aiohttp chatter only from WARNING
    on, unless debugging (merged into mode's logging setup)."""
    if loglevel.lower() == "debug":
        return None
    level = loglevel.upper()
    quiet = "WARNING" if level == "INFO" else level
    return {"merge": True, "root": {"level": quiet, "handlers": ["default"]},
            "loggers": {"driftline": {"level": level}}}


def faust_worker(app: faust.App, loglevel: str) -> faust.Worker:
    """Faust's worker for ``app`` at ``loglevel``, without its terminal spinner: at ``warning`` or
    ``error`` the spinner set the root logger to DEBUG (and ticked for every record), so every
    aiokafka debug line (a few per request) became a LogRecord the handlers then dropped: ~11 us
    each instead of a ~0.4 us level check."""
    worker = app.Worker(loglevel=loglevel, redirect_stdouts=False, quiet=True,
                        logging_config=logging_config(loglevel))
    worker.spinner = None
    return worker


def run_worker(runtime: WorkerRuntime, *, run_seconds: float | None = None,
               exit_when_idle: float | None = None, loglevel: str = "info") -> int:
    """Run until SIGTERM/SIGINT (or the limits above); returns the exit code."""
    runtime.prepare_store()
    tune_gc()
    use_process_compiled_paths(runtime.settings.worker.compiled_paths)
    state_dir = runtime.settings.worker.state_dir  # processes on this disk calibrate a reference once
    share_calibrations(None if state_dir is None else state_dir / "calibrations")
    app = create_app(runtime, run_seconds=run_seconds, exit_when_idle=exit_when_idle)
    worker = faust_worker(app, loglevel)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0
        return 1 if runtime.failure is not None else code
    return 1 if runtime.failure is not None else 0
