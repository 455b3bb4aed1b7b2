"""Retrain listener on the real (embedded) broker: retries, statuses, crash safety, idempotence."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from harness import wait_for
from kafka import KafkaProducer

from driftline.config import Settings
from driftline.jobs.retrain_listener import (
    EXAMPLE_ENTRYPOINT,
    NO_JOB,
    RetrainListener,
    TriggerHistory,
    is_final,
    job_argv,
    read_status_history,
)
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_consumer_kwargs, kafka_python_kwargs
from driftline.kafka.offsets import end_offsets
from driftline.operators.triggers import trigger_id
from driftline.schemas.events import RetrainTrigger, TriggerReason
from driftline.store.client import connect
from driftline.store.migrate import migrate

FAST_GROUP = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 3000}


def make_trigger(model_id: str, start: int = 0) -> RetrainTrigger:
    return RetrainTrigger(
        trigger_id=trigger_id(model_id, "1", TriggerReason.DRIFT, start, start + 3_600_000),
        model_id=model_id, model_version="1", reason=TriggerReason.DRIFT, message="test",
        window_start=start, window_end=start + 3_600_000, triggered_at=start + 3_600_000,
        evidence={"drifted_windows": 3},
    )


def with_retrain(settings: Settings, tmp_path: Path, command: str, **retrain: Any) -> Settings:
    return settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update=FAST_GROUP),
        "retrain": settings.retrain.model_copy(update={
            "command": command, "logs_dir": tmp_path / "logs", "artifacts_dir": tmp_path / "artifacts",
            **retrain,
        }),
    })


def produce(settings: Settings, triggers: list[RetrainTrigger]) -> None:
    producer = KafkaProducer(**kafka_python_kwargs(settings), acks="all")
    try:
        for t in triggers:
            producer.send(settings.topics.retrain_triggers, key=t.model_id.encode(),
                          value=t.model_dump_json().encode())
        producer.flush()
    finally:
        producer.close()


async def _read_topic(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                records.extend(r for r in batch if r.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


def status_events(settings: Settings) -> list[dict[str, Any]]:
    """Status values, plus their driftline-final header as "final"."""
    records = asyncio.run(_read_topic(settings, settings.topics.retrain_status))
    return [{**orjson.loads(r.value), "final": is_final(r)} for r in records]


@pytest.mark.parametrize(("entrypoint", "code"), [("os:getcwd", 0), ("sys:getrecursionlimit", 1000 % 256),
                                                   ("no_such_module:main", 1)])
def test_entrypoint_job_exit_codes(entrypoint: str, code: int) -> None:
    argv = job_argv(Settings(retrain={"command": "", "entrypoint": entrypoint}))
    assert argv is not None and argv[:4] == [sys.executable, "-m", "driftline.jobs.runner", "--"]
    assert subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode == code


@pytest.mark.integration
def test_success_once_and_failure_after_max_attempts(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    command = (f'if [ "$DRIFTLINE_MODEL_ID" = bad ]; then echo boom >&2; exit 7; fi; '
               f'cat > {out}/"$DRIFTLINE_TRIGGER_ID".json; echo "ok $DRIFTLINE_MODEL_VERSION"')
    s = with_retrain(settings, tmp_path, command, max_attempts=3, backoff_s=0.05)
    ensure_topics(s)
    client = connect(s)
    migrate(client, s)
    good, bad = make_trigger("good"), make_trigger("bad")
    produce(s, [good, bad])

    listener = RetrainListener(s, group_id=f"g-{uuid.uuid4().hex}", once=True)
    assert asyncio.run(listener.run()) == 0
    assert listener.stats == {
        "taken": 2, "succeeded": 1, "failed": 1, "skipped": 0, "invalid": 0, "no_job": 0,
        "not_for_reason": 0}

    events = status_events(s)
    # the sink inserts status values as retrain_jobs rows: exactly the table's columns
    columns = [c for (c,) in client.query("SELECT name FROM system.columns "
                                          "WHERE database = currentDatabase() AND table = 'retrain_jobs'"
                                          ).result_rows]
    assert all(sorted(set(e) - {"final"}) == sorted(columns) for e in events)
    by_trigger = {t.trigger_id: [e for e in events if e["trigger_id"] == t.trigger_id] for t in (good, bad)}
    assert [(e["status"], e["attempt"]) for e in by_trigger[good.trigger_id]] == [
        ("queued", 1), ("started", 1), ("succeeded", 1)]
    done = by_trigger[good.trigger_id][-1]
    assert done["exit_code"] == 0 and done["final"] and done["duration_s"] >= 0
    assert "ok 1" in Path(done["log_path"]).read_text()
    # the job got the trigger JSON on stdin
    assert RetrainTrigger.model_validate_json((out / f"{good.trigger_id}.json").read_text()) == good

    bad_events = by_trigger[bad.trigger_id]
    assert [(e["status"], e["attempt"]) for e in bad_events] == [
        ("queued", 1), ("started", 1), ("failed", 1), ("queued", 2), ("started", 2), ("failed", 2),
        ("queued", 3), ("started", 3), ("failed", 3)]
    failures = [e for e in bad_events if e["status"] == "failed"]
    assert [e["final"] for e in failures] == [False, False, True]
    assert all(e["exit_code"] == 7 for e in failures)
    assert "boom" in Path(failures[-1]["log_path"]).read_text()
    assert "giving up after 3 attempt(s)" in failures[-1]["message"]

    rows = client.query("SELECT trigger_id, attempt, status, exit_code FROM retrain_jobs FINAL "
                        "ORDER BY trigger_id, attempt").result_rows
    expected = [(good.trigger_id, 1, "succeeded", 0)] + [(bad.trigger_id, a, "failed", 7) for a in (1, 2, 3)]
    assert sorted(tuple(r) for r in rows) == sorted(expected)
    client.close()

    history = asyncio.run(read_status_history(s))
    assert history[good.trigger_id] == TriggerHistory(succeeded=True)
    assert history[bad.trigger_id] == TriggerHistory(exhausted=True, failed_attempts=3)


def test_no_retrain_job_by_default_and_the_example_only_when_asked_for() -> None:
    """Production settings name no job: the example's toy models are never trained by default."""
    unconfigured = Settings()
    assert unconfigured.retrain.command == unconfigured.retrain.entrypoint == ""
    assert job_argv(unconfigured) is None
    example = job_argv(unconfigured, example_job=True)
    assert example is not None and example[-1] == EXAMPLE_ENTRYPOINT
    # A configured job wins over the example.
    configured = job_argv(Settings(retrain={"command": "train.sh"}), example_job=True)
    assert configured is not None and configured[-2:] == ["-c", "train.sh"]


@pytest.mark.integration
def test_unconfigured_listener_records_every_trigger_as_skipped(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = with_retrain(settings, tmp_path, "", entrypoint="")
    ensure_topics(s)
    migrate(connect(s), s)
    first, second = make_trigger("m1"), make_trigger("m2")
    produce(s, [first, second])

    with caplog.at_level(logging.WARNING, logger="driftline.jobs.retrain_listener"):
        listener = RetrainListener(s, group_id=f"g-{uuid.uuid4().hex}", once=True)
        assert asyncio.run(listener.run()) == 0
    assert NO_JOB in caplog.text
    assert listener.stats["no_job"] == 2 and listener.stats["succeeded"] == listener.stats["failed"] == 0
    assert not (tmp_path / "logs").exists()  # nothing ran
    events = status_events(s)
    recorded = sorted((e["trigger_id"], e["status"], e["attempt"], e["message"], e["final"]) for e in events)
    assert recorded == sorted((t.trigger_id, "skipped", 0, NO_JOB, True) for t in (first, second))
    rows = connect(s).query("SELECT trigger_id, status, message FROM retrain_jobs FINAL").result_rows
    assert sorted(rows) == sorted((t.trigger_id, "skipped", NO_JOB) for t in (first, second))
    # A restarted listener knows they are final and does not record them again.
    history = asyncio.run(read_status_history(s))
    assert all(history[t.trigger_id].final for t in (first, second))


@pytest.mark.integration
def test_comparison_triggers_are_recorded_not_run(settings: Settings, tmp_path: Path) -> None:
    """A comparison trigger (promote/roll-back evidence) runs no retrain job by default: it gets a
    final ``skipped`` row saying why, while a drift trigger of the same model runs."""
    marker = tmp_path / "ran"
    s = with_retrain(settings, tmp_path, f'cat >> "{marker}"; echo >> "{marker}"')
    ensure_topics(s)
    migrate(connect(s), s)
    drift = make_trigger("m1")
    comparison = RetrainTrigger(
        trigger_id=trigger_id("m1", "2", TriggerReason.COMPARISON, 0, 3_600_000), model_id="m1",
        model_version="2", reason=TriggerReason.COMPARISON, message="challenger worse",
        window_start=0, window_end=3_600_000, triggered_at=3_600_000,
        evidence={"recommendation": "roll_back"},
    )
    produce(s, [comparison, drift])
    listener = RetrainListener(s, group_id=f"g-{uuid.uuid4().hex}", once=True)
    assert asyncio.run(listener.run()) == 0
    assert listener.stats["not_for_reason"] == 1 and listener.stats["succeeded"] == 1
    ran = [orjson.loads(line) for line in marker.read_text().splitlines() if line.strip()]
    assert [t["trigger_id"] for t in ran] == [drift.trigger_id]
    rows = dict(connect(s).query("SELECT trigger_id, message FROM retrain_jobs FINAL "
                                 "WHERE status = 'skipped'").result_rows)
    assert rows == {comparison.trigger_id: "reason 'comparison' is not in retrain.reasons "
                                            "(drift, performance, concept_drift, manual)"}
    # Asked to, the listener runs for comparisons too (a deploy job reading evidence.recommendation).
    assert Settings(retrain={"reasons": "drift,comparison"}).retrain.reasons == ["drift", "comparison"]
    with pytest.raises(ValueError):
        Settings(retrain={"reasons": ["retrain-please"]})


def _listener_env(s: Settings, clickhouse_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({
        "DRIFTLINE_HOME": str(s.home),
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "DRIFTLINE_CLICKHOUSE_URL": clickhouse_url,
        "DRIFTLINE_CLICKHOUSE_DATABASE": s.clickhouse.database,
    })
    for name, value in s.kafka.model_dump(include=set(FAST_GROUP)).items():
        env[f"DRIFTLINE_KAFKA_{name.upper()}"] = str(value)
    for name, value in s.topics.model_dump().items():
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = str(value)
    for name, value in s.retrain.model_dump(mode="json").items():
        text = orjson.dumps(value).decode() if isinstance(value, list) else str(value)
        env[f"DRIFTLINE_RETRAIN_{name.upper()}"] = text
    return env


def _start_listener(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "driftline.cli.main", "jobs", "retrain-listener", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"listener did not exit within {timeout}s:\n{err.decode()[-3000:]}")
    return proc.returncode, err.decode()


@pytest.mark.integration
def test_sigkilled_listener_job_reruns_and_succeeds_exactly_once(settings: Settings, tmp_path: Path,
                                                                 worker_clickhouse_url: str) -> None:
    marker = tmp_path / "marker.txt"
    command = (f'echo "start $DRIFTLINE_JOB_ATTEMPT" >> {marker}; sleep 2; '
               f'echo "succeeded $DRIFTLINE_TRIGGER_ID" >> {marker}')
    s = with_retrain(settings, tmp_path, command, max_attempts=2, backoff_s=0.1)
    ensure_topics(s)
    env = _listener_env(s, worker_clickhouse_url)
    group = f"g-{uuid.uuid4().hex}"
    trig = make_trigger("slow")
    produce(s, [trig])

    first = _start_listener(env, "--group", group)
    try:
        wait_for(lambda: "start" in marker.read_text(), 120, "the job to start", proc=first)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    second = _start_listener(env, "--group", group, "--max-triggers", "1", "--idle-exit", "40")
    code, err = _wait(second, 60)
    assert code == 0, err[-3000:]
    lines = marker.read_text().splitlines()
    # the killed job never finished: one success, from the second listener's run of attempt 1
    assert lines == ["start 1", "start 1", f"succeeded {trig.trigger_id}"]

    # a fresh group re-reads the trigger (and a duplicate of it): skipped, already succeeded
    produce(s, [trig])
    third = _start_listener(env, "--group", f"g-{uuid.uuid4().hex}", "--max-triggers", "2",
                            "--idle-exit", "30")
    code, err = _wait(third, 60)
    assert code == 0, err[-3000:]
    assert "already succeeded; skipping" in err
    assert marker.read_text().splitlines() == lines

    events = [e for e in status_events(s) if e["trigger_id"] == trig.trigger_id]
    assert [(e["status"], e["attempt"]) for e in events] == [
        ("queued", 1), ("started", 1), ("queued", 1), ("started", 1), ("succeeded", 1)]


@pytest.mark.integration
def test_graceful_stop_waits_for_running_job(settings: Settings, tmp_path: Path,
                                             worker_clickhouse_url: str) -> None:
    marker = tmp_path / "marker.txt"
    s = with_retrain(settings, tmp_path, f"sleep 1; echo done >> {marker}")
    ensure_topics(s)
    trig = make_trigger("graceful")
    produce(s, [trig])
    proc = _start_listener(_listener_env(s, worker_clickhouse_url), "--group", f"g-{uuid.uuid4().hex}")
    try:
        def started() -> bool:
            mine = [e for e in status_events(s) if e["trigger_id"] == trig.trigger_id]
            return any(e["status"] == "started" for e in mine)

        wait_for(started, 120, "the job's started status", proc=proc)
        proc.send_signal(signal.SIGTERM)
        code, err = _wait(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, err[-3000:]
    assert marker.read_text() == "done\n"
    assert [e["status"] for e in status_events(s) if e["trigger_id"] == trig.trigger_id][-1] == "succeeded"


@pytest.mark.integration
def test_manual_trigger_cli_publishes_and_audits(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from driftline.cli.main import main

    ensure_topics(settings)
    client = connect(settings)
    migrate(client, settings)
    now = int(time.time() * 1000)
    client.insert("model_drift", [["", "m", "7", 300, "", now - 600_000, now - 300_000]],
                  column_names=["run_id", "model_id", "model_version", "window_size_s", "segment",
                                "window_start", "window_end"])
    for key, value in {"HOME": settings.home, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                       "CLICKHOUSE_URL": settings.clickhouse.url,
                       "CLICKHOUSE_DATABASE": settings.clickhouse.database}.items():
        monkeypatch.setenv(f"DRIFTLINE_{key}", str(value))
    for name, topic in settings.topics.model_dump().items():
        monkeypatch.setenv(f"DRIFTLINE_TOPICS_{name.upper()}", str(topic))

    assert main(["trigger", "--model", "m", "--version", "3", "--reason", "new labels", "--json"]) == 0
    explicit = RetrainTrigger.model_validate_json(capsys.readouterr().out)
    assert main(["trigger", "--model", "m", "--reason", "looks off", "--json"]) == 0
    looked_up = RetrainTrigger.model_validate_json(capsys.readouterr().out)
    assert main(["trigger", "--model", "unknown", "--reason", "?"]) == 1
    assert "pass --version" in capsys.readouterr().err

    assert (explicit.model_version, looked_up.model_version) == ("3", "7")
    assert explicit.reason == TriggerReason.MANUAL and explicit.message == "new labels"
    assert explicit.window_end - explicit.window_start == 60_000 and explicit.window_start % 60_000 == 0
    assert explicit.trigger_id == trigger_id("m", "3", "manual", explicit.window_start, explicit.window_end,
                                             note="new labels")
    on_topic = asyncio.run(_read_topic(settings, settings.topics.retrain_triggers))
    assert [RetrainTrigger.model_validate_json(r.value) for r in on_topic] == [explicit, looked_up]
    rows = client.query("SELECT model_version, trigger_id, reason, message FROM retrain_triggers FINAL "
                        "ORDER BY model_version").result_rows
    assert [tuple(r) for r in rows] == [("3", explicit.trigger_id, "manual", "new labels"),
                                        ("7", looked_up.trigger_id, "manual", "looks off")]
    client.close()


def test_a_jobs_environment_still_loads_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the listener hands a job must not be mistaken for (invalid) settings."""
    from driftline.config import load_settings
    from driftline.jobs.retrain_listener import job_env
    from driftline.schemas.events import RetrainTrigger

    trigger = RetrainTrigger(trigger_id="t", model_id="m", model_version="1", reason="manual",
                             window_start=0, window_end=1, triggered_at=1)
    for name, value in job_env(trigger, 2).items():
        monkeypatch.setenv(name, value)
    assert load_settings().retrain.max_attempts >= 1
