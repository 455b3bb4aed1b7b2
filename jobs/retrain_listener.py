"""The retrain listener: runs one retrain job per trigger, idempotently by ``trigger_id``.

A consumer group on ``topics.retrain_triggers``. Per trigger it runs ``retrain.command`` (through
``/bin/sh -c``) or, when that is empty, the Python entry point ``retrain.entrypoint``
(``module:function`` in a ``python -c`` subprocess). Neither is set by default: a listener with no
job configured says so when it starts and records every trigger as ``skipped`` (final, with that
reason) instead of running anything. Only triggers whose reason is in ``retrain.reasons`` run the
job (by default every reason but ``comparison``, which is promote/roll-back evidence, not a reason
to train); the others are recorded as ``skipped`` with a message naming their reason. The example
job (:mod:`driftline.jobs.example_retrain`, a toy River model) runs only when asked for explicitly
(``example_job=True``, ``driftline jobs retrain-listener --example-job``), as the demo does.
The job gets the trigger JSON on stdin and in ``DRIFTLINE_TRIGGER_JSON``, plus
``DRIFTLINE_TRIGGER_ID``, ``DRIFTLINE_MODEL_ID``, ``DRIFTLINE_MODEL_VERSION`` and
``DRIFTLINE_JOB_ATTEMPT``; its output goes to ``retrain.logs_dir/<model>/<trigger_id>.attempt<N>.log``.

Status events (``queued``, ``started``, ``succeeded``, ``failed``) go to
``topics.retrain_status`` (JSON of exactly the ``retrain_jobs`` columns, which the sink inserts
as is; key = trigger_id; header ``driftline-final`` = ``true`` on a trigger's last status) and,
through ``open_row_writer``, to the ``retrain_jobs`` table (a writer is opened per row, so the
listener never holds the embedded engine while jobs run). A failed attempt is retried after
``backoff_s * 2**(retry - 1)`` seconds up to ``max_attempts``; the last failure is final.

One success per trigger, across restarts:

* On start the listener reads the status topic from the beginning up to its true end (Fetch
  high watermark, see ``driftline.kafka.offsets``) and learns which triggers succeeded or
  exhausted their attempts, and how many attempts failed. Such triggers are skipped; others
  continue with the next attempt number. An attempt interrupted by a listener crash is re-run
  under the same attempt number (its ``retrain_jobs`` row is replaced).
* A trigger's offset is committed only after its final status was acknowledged by the broker.
* Jobs run under :mod:`driftline.jobs.runner` in their own process group and receive a
  parent-death signal, so a SIGKILLed listener takes its running jobs (and their children) with
  it; the next listener runs them again.
* What remains is the instant between a job exiting 0 and its ``succeeded`` status being
  acknowledged: a listener killed exactly then re-runs a job that did finish. Jobs should
  therefore be idempotent per trigger (the example job is: same version, same profile id).

At most ``max_concurrent`` triggers are in flight (running, or waiting for a retry); the
listener pauses its partitions meanwhile and keeps polling so it stays in the group. SIGTERM or
Ctrl-C: take no new triggers, let running jobs finish for up to ``shutdown_grace_s`` (a second
signal cuts this short), kill what is left (those triggers stay uncommitted and re-run next time),
and exit 0. If a status cannot be published (broker gone), the listener kills its jobs and exits
with the error; nothing unfinished was committed. Triggers received twice by one listener run
once. Run one listener per group: after a rebalance another instance only knows the statuses it
read at its own start.

The subprocesses are spawned from the event loop's thread; the parent-death signal fires when
that thread ends, so run the loop in the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import (
    aiokafka_consumer,
    aiokafka_producer,
)
from driftline.kafka.groups import consumer_group
from driftline.kafka.offsets import end_offsets
from driftline.runtime import tied_child_preexec
from driftline.schemas.events import RetrainTrigger
from driftline.store.writer import open_row_writer

LOG = logging.getLogger("driftline.jobs.retrain_listener")

JOBS_TABLE = "retrain_jobs"
FINAL_HEADER = "driftline-final"
POLL_MS = 200

EXAMPLE_ENTRYPOINT = "driftline.jobs.example_retrain:main"
NO_JOB = "no retrain job configured (set retrain.command or retrain.entrypoint)"

# Runs "module:function" (argv[1]); an int result is the exit code.
ENTRYPOINT_CODE = (
    "import importlib, sys\n"
    "module, _, function = sys.argv[1].partition(':')\n"
    "result = getattr(importlib.import_module(module), function or 'main')()\n"
    "sys.exit(result if isinstance(result, int) else 0)\n"
)


@dataclass
class TriggerHistory:
    """What the status topic says about one trigger."""

    succeeded: bool = False
    exhausted: bool = False
    failed_attempts: int = 0

    @property
    def final(self) -> bool:
        return self.succeeded or self.exhausted


def fold_status(history: dict[str, TriggerHistory], event: dict[str, Any], final: bool) -> None:
    """Apply one status event (and its ``driftline-final`` header) to the per-trigger history.

    >>> h: dict[str, TriggerHistory] = {}
    >>> fold_status(h, {"trigger_id": "t", "status": "failed", "attempt": 1}, final=False)
    >>> fold_status(h, {"trigger_id": "t", "status": "started", "attempt": 2}, final=False)
    >>> h["t"]
    TriggerHistory(succeeded=False, exhausted=False, failed_attempts=1)
    """
    tid = event.get("trigger_id")
    if not isinstance(tid, str):
        return
    entry = history.setdefault(tid, TriggerHistory())
    status = event.get("status")
    if status == "succeeded":
        entry.succeeded = True
    elif status == "skipped":  # no job configured, or not for this reason: final, nothing ran
        entry.exhausted = entry.exhausted or final
    elif status == "failed":
        entry.failed_attempts = max(entry.failed_attempts, int(event.get("attempt") or 0))
        entry.exhausted = entry.exhausted or final


async def read_status_history(settings: Settings, timeout_s: float = 60.0) -> dict[str, TriggerHistory]:
    """Read the status topic from its beginning up to its true end."""
    topic = settings.topics.retrain_status
    consumer = aiokafka_consumer(settings, None)
    await consumer.start()
    history: dict[str, TriggerHistory] = {}
    try:
        await consumer.topics()  # refresh metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await end_offsets(consumer, partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        if not pending:
            return history
        consumer.assign(sorted(pending))
        await consumer.seek_to_beginning(*pending)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} up to its end took longer than {timeout_s}s")
            batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        _fold_record(history, record)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return history


def _fold_record(history: dict[str, TriggerHistory], record: ConsumerRecord[Any, Any]) -> None:
    try:
        event = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        LOG.warning("ignoring undecodable status record at %s:%s", record.partition, record.offset)
        return
    if isinstance(event, dict):
        fold_status(history, event, is_final(record))


def is_final(record: ConsumerRecord[Any, Any]) -> bool:
    """Whether a status record carries the ``driftline-final: true`` header."""
    return any(key == FINAL_HEADER and value == b"true" for key, value in record.headers or ())


def not_run_for(trigger: RetrainTrigger, reasons: Sequence[str]) -> str:
    """Why a trigger was recorded as skipped: its reason is not one ``retrain.reasons`` runs for.

    >>> t = RetrainTrigger(trigger_id="t", model_id="m", model_version="2", reason="comparison",
    ...                    window_start=0, window_end=1, triggered_at=1)
    >>> not_run_for(t, ["drift", "performance"])
    "reason 'comparison' is not in retrain.reasons (drift, performance)"
    """
    return f"reason {trigger.reason.value!r} is not in retrain.reasons ({', '.join(reasons)})"


def job_argv(settings: Settings, *, example_job: bool = False) -> list[str] | None:
    """The command line of one job, wrapped in the runner: ``retrain.command``, else
    ``retrain.entrypoint``, else (``example_job``) the example job; None when no job is configured.

    >>> job_argv(Settings(retrain={"command": "", "entrypoint": ""})) is None
    True
    >>> job_argv(Settings(retrain={"command": "", "entrypoint": ""}), example_job=True)[-1]
    'driftline.jobs.example_retrain:main'
    """
    cfg = settings.retrain
    if cfg.command:
        job = ["/bin/sh", "-c", cfg.command]
    elif cfg.entrypoint or example_job:
        job = [sys.executable, "-c", ENTRYPOINT_CODE, cfg.entrypoint or EXAMPLE_ENTRYPOINT]
    else:
        return None
    return [sys.executable, "-m", "driftline.jobs.runner", "--", *job]


def _now_ms() -> int:
    return int(time.time() * 1000)


def job_env(trigger: RetrainTrigger, attempt: int) -> dict[str, str]:
    """What a job learns from its environment. Names must not collide with Settings sections
    (``DRIFTLINE_RETRAIN_*`` would be read, and refused, as retrain settings by the job)."""
    return {
        "DRIFTLINE_TRIGGER_ID": trigger.trigger_id,
        "DRIFTLINE_MODEL_ID": trigger.model_id,
        "DRIFTLINE_MODEL_VERSION": trigger.model_version,
        "DRIFTLINE_TRIGGER_JSON": trigger.model_dump_json(),
        "DRIFTLINE_JOB_ATTEMPT": str(attempt),
    }


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:200] or "_"


class _Shutdown(Exception):
    """The listener stopped while the trigger was not finished; it stays uncommitted."""


class RetrainListener:
    """Consume retrain triggers and run their jobs; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 max_concurrent: int | None = None, max_triggers: int | None = None,
                 idle_exit_s: float | None = None, once: bool = False,
                 shutdown_grace_s: float = 30.0, example_job: bool = False) -> None:
        self.settings = settings
        self.group_id = group_id or consumer_group(settings, "retrain-listener")
        self.max_concurrent = max_concurrent or settings.retrain.max_concurrent
        self.max_triggers = max_triggers
        self.idle_exit_s = idle_exit_s
        self.once = once
        self.shutdown_grace_s = shutdown_grace_s
        self.argv = job_argv(settings, example_job=example_job)
        self.history: dict[str, TriggerHistory] = {}
        self.stats = {"taken": 0, "succeeded": 0, "failed": 0, "skipped": 0, "invalid": 0, "no_job": 0,
                      "not_for_reason": 0}
        self._stopping = asyncio.Event()
        self._aborting = asyncio.Event()
        self._inflight: dict[TopicPartition, deque[tuple[int, asyncio.Task[bool]]]] = {}
        self._running: dict[str, asyncio.Task[bool]] = {}
        self._procs: dict[tuple[str, int], asyncio.subprocess.Process] = {}
        self._last_update: dict[tuple[str, int], int] = {}
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrain-rows")
        self._producer: AIOKafkaProducer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: graceful stop. Second call: stop without waiting for running jobs."""
        if self._stopping.is_set():
            self._aborting.set()
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handled = threading.current_thread() is threading.main_thread()
        if handled:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        if self.argv is None:
            LOG.warning("%s: every retrain trigger is recorded as skipped and nothing runs", NO_JOB)
        try:
            await loop.run_in_executor(self._io, ensure_topics, self.settings)
            self.history = await read_status_history(self.settings)
            LOG.info("status history: %d triggers known, %d final", len(self.history),
                     sum(h.final for h in self.history.values()))
            self._producer = aiokafka_producer(self.settings)
            await self._producer.start()
            try:
                await self._consume()
            finally:
                await self._producer.stop()
        finally:
            if handled:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self._io.shutdown(wait=True)
        LOG.info("retrain listener stopped: %s", self.stats)
        return 0

    async def _consume(self) -> None:
        consumer = aiokafka_consumer(self.settings, self.group_id)
        consumer.subscribe([self.settings.topics.retrain_triggers])
        await consumer.start()
        try:
            last_activity = time.monotonic()
            while not self._stopping.is_set():
                if await self._reap(consumer):
                    last_activity = time.monotonic()
                busy = bool(self._running) or any(self._inflight.values())
                if not busy and await self._should_exit(consumer, last_activity):
                    break
                capacity = self.max_concurrent - sum(len(q) for q in self._inflight.values())
                if self.max_triggers is not None:
                    capacity = min(capacity, self.max_triggers - self.stats["taken"])
                assigned = consumer.assignment()
                if capacity <= 0:
                    consumer.pause(*assigned)
                else:
                    consumer.resume(*assigned)
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=max(capacity, 1))
                for tp, records in batches.items():
                    for record in records:
                        self.stats["taken"] += 1
                        task = asyncio.create_task(self._handle(record))
                        self._inflight.setdefault(tp, deque()).append((record.offset, task))
                        last_activity = time.monotonic()
            await self._drain()
            await self._reap(consumer)
        except BaseException:
            self._abort_jobs()  # e.g. the status topic is unreachable: no job may outlive this
            raise
        finally:
            await consumer.stop()

    async def _should_exit(self, consumer: AIOKafkaConsumer, last_activity: float) -> bool:
        if self.max_triggers is not None and self.stats["taken"] >= self.max_triggers:
            return True
        if self.idle_exit_s is not None and time.monotonic() - last_activity >= self.idle_exit_s:
            return True
        if self.once:
            assigned = consumer.assignment()
            if not assigned:
                return False
            for tp in assigned:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    return False
            return True
        return False

    async def _drain(self) -> None:
        tasks = [t for q in self._inflight.values() for _, t in q if not t.done()]
        if not tasks:
            return
        if not self._aborting.is_set():
            LOG.info("stopping: waiting up to %.0fs for %d trigger(s)", self.shutdown_grace_s, len(tasks))
            abort = asyncio.ensure_future(self._aborting.wait())
            waiters: list[asyncio.Future[Any]] = [asyncio.gather(*tasks, return_exceptions=True), abort]
            await asyncio.wait(waiters, timeout=self.shutdown_grace_s, return_when=asyncio.FIRST_COMPLETED)
            abort.cancel()
        self._abort_jobs()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _abort_jobs(self) -> None:
        self._stopping.set()
        self._aborting.set()
        for (tid, attempt), proc in list(self._procs.items()):
            LOG.warning("killing the job of trigger %s attempt %d (listener stopping)", tid, attempt)
            self._kill(proc)

    async def _reap(self, consumer: AIOKafkaConsumer) -> bool:
        """Commit, per partition, past the prefix of in-flight triggers that reached a final state."""
        commits: dict[TopicPartition, int] = {}
        for tp, queue in self._inflight.items():
            while queue and queue[0][1].done():
                offset, task = queue[0]
                if not task.result():  # stopped before a final state: never commit past it
                    break
                queue.popleft()
                commits[tp] = offset + 1
        if commits:
            try:
                await consumer.commit(commits)
            except (CommitFailedError, KafkaError) as err:
                LOG.warning("offset commit failed (%s); the triggers will be seen again and skipped", err)
        return bool(commits)

    # -- one trigger -------------------------------------------------------------------------

    async def _handle(self, record: ConsumerRecord[Any, Any]) -> bool:
        """Process one trigger record; True when it reached a final state (commit past it)."""
        try:
            trigger = RetrainTrigger.model_validate_json(record.value)
        except ValidationError as err:
            self.stats["invalid"] += 1
            LOG.error("skipping invalid trigger at offset %d: %s", record.offset, str(err).splitlines()[0])
            return True
        tid = trigger.trigger_id
        other = self._running.get(tid)
        if other is not None:  # the same trigger is already being handled here
            await asyncio.wait([other])
            return other.done() and not other.cancelled() and other.exception() is None and other.result()
        known = self.history.get(tid)
        if known is not None and known.final:
            self.stats["skipped"] += 1
            LOG.info("trigger %s of %s:%s already %s; skipping", tid, trigger.model_id, trigger.model_version,
                     "succeeded" if known.succeeded else "failed")
            return True
        current = asyncio.current_task()
        assert current is not None
        self._running[tid] = current
        try:
            return await self._run_trigger(trigger, known.failed_attempts if known else 0)
        except _Shutdown:
            return False
        finally:
            del self._running[tid]

    async def _run_trigger(self, trigger: RetrainTrigger, failed_before: int) -> bool:
        cfg = self.settings.retrain
        history = self.history.setdefault(trigger.trigger_id, TriggerHistory(failed_attempts=failed_before))
        first = failed_before + 1
        if trigger.reason.value not in cfg.reasons:
            await self._status(trigger, 0, "skipped", final=True, message=not_run_for(trigger, cfg.reasons))
            history.exhausted = True
            self.stats["not_for_reason"] += 1
            return True
        if self.argv is None:
            await self._status(trigger, 0, "skipped", final=True, message=NO_JOB)
            history.exhausted = True
            self.stats["no_job"] += 1
            return True
        if first > cfg.max_attempts:
            await self._status(trigger, failed_before, "failed", final=True,
                               message=f"no attempts left ({failed_before} of {cfg.max_attempts} failed)")
            history.exhausted = True
            return True
        for attempt in range(first, cfg.max_attempts + 1):
            if attempt > first or failed_before:
                delay = cfg.backoff_s * 2 ** (attempt - 2)
                await self._status(trigger, attempt, "queued", message=f"retry in {delay:g}s")
                await self._pause(delay)
            else:
                await self._status(trigger, attempt, "queued")
            if self._stopping.is_set():
                raise _Shutdown
            if await self._attempt(trigger, attempt):
                history.succeeded = True
                self.stats["succeeded"] += 1
                return True
            history.failed_attempts = attempt
        history.exhausted = True
        self.stats["failed"] += 1
        return True

    async def _pause(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return
        raise _Shutdown

    async def _attempt(self, trigger: RetrainTrigger, attempt: int) -> bool:
        """Run one attempt; True on success. Publishes started and succeeded/failed."""
        cfg = self.settings.retrain
        argv = self.argv
        assert argv is not None  # _run_trigger records unconfigured triggers without an attempt
        tid = trigger.trigger_id
        log_dir = cfg.logs_dir / _safe_name(trigger.model_id)
        log_path = (log_dir / f"{_safe_name(tid)}.attempt{attempt}.log").resolve()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        payload = trigger.model_dump_json().encode()
        env = {**os.environ, **job_env(trigger, attempt)}
        started_at = _now_ms()
        await self._status(trigger, attempt, "started", started_at=started_at, log_path=str(log_path))
        begin = time.monotonic()
        with open(log_path, "ab") as log:
            log.write(f"# trigger {tid} attempt {attempt} of {cfg.max_attempts}: {argv[4:]}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=log, stderr=asyncio.subprocess.STDOUT,
                env=env, preexec_fn=tied_child_preexec(os.getpid()),
            )
        self._procs[(tid, attempt)] = proc
        timed_out = False
        try:
            await asyncio.wait_for(proc.communicate(payload), timeout=cfg.timeout_s)
        except TimeoutError:
            timed_out = True
            self._kill(proc)
            await proc.wait()
        finally:
            del self._procs[(tid, attempt)]
        if self._aborting.is_set() and not timed_out and proc.returncode != 0:
            raise _Shutdown  # killed by the listener's shutdown: not the job's failure
        duration = round(time.monotonic() - begin, 3)
        code = proc.returncode
        finished_at = _now_ms()
        if code == 0 and not timed_out:
            await self._status(trigger, attempt, "succeeded", started_at=started_at, finished_at=finished_at,
                               duration_s=duration, exit_code=code, log_path=str(log_path))
            return True
        final = attempt >= cfg.max_attempts
        reason = f"timed out after {cfg.timeout_s:g}s" if timed_out else f"exit code {code}"
        then = (f"giving up after {attempt} attempt(s)" if final
                else f"retry in {cfg.backoff_s * 2 ** (attempt - 1):g}s")
        await self._status(trigger, attempt, "failed", final=final, started_at=started_at,
                           finished_at=finished_at, duration_s=duration, exit_code=code,
                           log_path=str(log_path), message=f"{reason}; {then}")
        return False

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the runner leads the job's process group

    # -- status events -----------------------------------------------------------------------

    async def _status(self, trigger: RetrainTrigger, attempt: int, status: str, *, final: bool = False,
                      started_at: int | None = None, finished_at: int | None = None,
                      duration_s: float | None = None, exit_code: int | None = None, log_path: str = "",
                      message: str = "") -> None:
        key = (trigger.trigger_id, attempt)
        updated_at = max(_now_ms(), self._last_update.get(key, 0) + 1)
        self._last_update[key] = updated_at
        row = {
            "run_id": trigger.run_id, "trigger_id": trigger.trigger_id, "attempt": attempt,
            "model_id": trigger.model_id, "model_version": trigger.model_version, "status": status,
            "started_at": started_at, "finished_at": finished_at, "duration_s": duration_s,
            "exit_code": exit_code, "log_path": log_path, "message": message, "updated_at": updated_at,
        }
        headers = [(FINAL_HEADER, b"true" if final or status == "succeeded" else b"false")]
        assert self._producer is not None
        await self._producer.send_and_wait(self.settings.topics.retrain_status, orjson.dumps(row),
                                           key=trigger.trigger_id.encode(), headers=headers)
        LOG.info("trigger %s attempt %d: %s %s", trigger.trigger_id, attempt, status, message)
        await asyncio.get_running_loop().run_in_executor(self._io, self._write_row, row)

    def _write_row(self, row: dict[str, Any]) -> None:
        # A writer per row: a direct writer on the embedded engine must not hold it between jobs
        # (the worker, or the job itself, may need it).
        try:
            writer = open_row_writer(self.settings)
            try:
                writer.write(JOBS_TABLE, [row])
            finally:
                writer.close()
        except Exception as err:  # the status topic is authoritative, and the sink ingests it too
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            LOG.warning("writing the %s row failed: %s", JOBS_TABLE, first_line)


def run_listener(settings: Settings, **options: Any) -> int:
    """Run a listener until it stops (signal, --max-triggers, --idle-exit or --once)."""
    return asyncio.run(RetrainListener(settings, **options).run())

