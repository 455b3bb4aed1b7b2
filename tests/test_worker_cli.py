"""`driftline worker` as a subprocess: endpoints, HTTP ingest through both stages, a malformed
reference profile visible as one dead_letters row (both stages' shards skip it), graceful SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from harness import wait_for
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from driftline.config import TopicSettings
from driftline.kafka import records as kafka_records
from driftline.local.broker import free_port
from driftline.operators import decode_native, watch_native
from driftline.operators.join import native as join_native

pytestmark = pytest.mark.integration


@dataclass
class Reply:
    status_code: int
    text: str

    def json(self) -> object:
        return orjson.loads(self.text)


def _get(url: str, method: str = "GET", content: bytes | None = None) -> Reply:
    request = urllib.request.Request(url, data=content, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return Reply(response.status, response.read().decode())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read().decode())




def test_worker_help_lists_roles() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "driftline.cli.main", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--role {all,processor,sink}" in out and "--exit-when-idle" in out
    words = " ".join(out.split())  # argparse wraps the description
    assert "POST /query" in words and "ClickHouse's HTTP interface at /" in words


def _worker_env(kafka_bootstrap: str, clickhouse_url: str, tmp_path: Path) -> tuple[dict[str, str], str]:
    """The environment of a worker with topics, database and home of its own; and its tag."""
    tag = tmp_path.name[-12:].replace("-", "_")
    env = {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLINE_CLICKHOUSE_URL": clickhouse_url,
        "DRIFTLINE_CLICKHOUSE_DATABASE": f"w_{tag}",
        "DRIFTLINE_HOME": str(tmp_path / "home"),
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S": "0.5",
        "DRIFTLINE_KAFKA_GROUP_PREFIX": f"w{tag}",
    }
    for name in TopicSettings.topic_fields():
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = f"w{tag}.{name}"
    return env, tag


def _assert_the_sink_commits_in_its_deployments_group(kafka_bootstrap: str, tag: str) -> None:
    """The worker's consumer groups carry its kafka.group_prefix: a group shared with another
    deployment on the cluster rebalanced both, and one prefixed ACL could not cover them. (The
    embedded broker lists only groups that committed offsets: the stages never commit.)"""
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        outcomes = [TopicPartition(f"w{tag}.outcomes", p) for p in range(4)]
        for group, committed in ((f"w{tag}-sink", 20), ("driftline-sink", 0)):
            offsets = admin.list_group_offsets({group: outcomes}).get(group, {})
            assert sum(max(0, o.offset) for o in offsets.values()) == committed, (group, offsets)
    finally:
        admin.close()


def test_worker_serves_ingests_and_stops_gracefully(
    kafka_bootstrap: str, worker_clickhouse_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env, tag = _worker_env(kafka_bootstrap, worker_clickhouse_url, tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.cli.main",
            "worker",
            "--web-port",
            str(port),
            "--run-seconds",
            "90",
            "--loglevel",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{base}/healthz").status_code == 200, 40, "/healthz", proc)
        now = int(time.time() * 1000)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        no_task = {"model_id": "m", "model_version": "1", "profile_id": "bad", "created_at_ms": now,
                   "effective_from_ms": now, "source": "training", "features": {}}
        producer.send(f"w{tag}.profiles", orjson.dumps(no_task), key=b"m").get(10)
        producer.close()
        preds = [
            {
                "prediction_id": f"p{i}",
                "model_id": "m",
                "timestamp": now,
                "features": {"x": i},
                "prediction": {"label": "a"},
            }
            for i in range(20)
        ]
        labels = [{"prediction_id": f"p{i}", "label": "a", "timestamp": now + 10} for i in range(20)]
        assert _get(f"{base}/predictions", method="POST", content=orjson.dumps(preds)).status_code == 202
        assert _get(f"{base}/feedback", method="POST", content=orjson.dumps(labels)).status_code == 202
        assert _get(f"{base}/feedback", method="POST", content=b"{").status_code == 400

        def joined() -> bool:
            sql = b"SELECT count() AS n FROM outcomes FINAL"
            q = _get(f"{base}/query?format=json", method="POST", content=sql)
            body = q.json()
            return q.status_code == 200 and isinstance(body, dict) and int(body["data"][0]["n"]) == 20

        wait_for(joined, 40, "20 outcomes in ClickHouse", proc)  # the worker runs on past the bad profile

        def dead_profiles() -> list[object]:
            sql = (b"SELECT error_kind, error_message, model_id FROM dead_letters FINAL"
                   b" WHERE source_topic LIKE '%.profiles'")
            q = _get(f"{base}/query?format=json", method="POST", content=sql)
            body = q.json()
            return body["data"] if q.status_code == 200 and isinstance(body, dict) else []

        wait_for(lambda: bool(dead_profiles()), 40, "the bad profile's dead letter", proc)
        assert dead_profiles() == [{"error_kind": "invalid_profile", "model_id": "m",
                                    "error_message": "not a valid ReferenceProfile: task: Field required"}]
        metrics = _get(f"{base}/metrics").text
        assert f'driftline_events_in_total{{stage="shard",topic="w{tag}.predictions"}} 20.0' in metrics
        assert "driftline_consumer_lag{" in metrics and "driftline_checkpoint_age_seconds{" in metrics
        assert 'driftline_checkpoint_bytes_total{kind="delta",stage="shard"}' in metrics
        assert "driftline_stage_" in metrics and 'driftline_sink_rows_total{table="outcomes"}' in metrics
        built = {"decode": decode_native._decode is not None, "join": join_native._native is not None,
                 "watch": watch_native._watch is not None, "fetch": kafka_records._records is not None}
        for path in ("decode", "join", "watch", "fetch"):  # on where this install built it
            assert f'driftline_compiled_path{{path="{path}"}} {float(built[path])}' in metrics
        _assert_the_sink_commits_in_its_deployments_group(kafka_bootstrap, tag)
        owner = orjson.loads((tmp_path / "home" / "clickhouse-owner.json").read_bytes())
        assert owner == {"pid": proc.pid, "query_url": f"{base}/query"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not (tmp_path / "home" / "clickhouse-owner.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_worker_on_port_0_logs_the_address_it_listens_on(
    kafka_bootstrap: str, worker_clickhouse_url: str, tmp_path: Path
) -> None:
    """A user starting a worker sees where /metrics is: one line with the bound address, the port
    port 0 got included (Faust's own setting refused 0); the owner record names that port too.
    ``kill -QUIT`` writes its threads' and tasks' stacks to the log, and it runs on."""
    env, _ = _worker_env(kafka_bootstrap, worker_clickhouse_url, tmp_path)
    env["DRIFTLINE_WORKER_COMPILED_PATHS"] = "false"  # and it says the C paths are off
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "driftline.cli.main", "worker", "--web-port", "0",
                                 "--run-seconds", "60"], env=env, stdout=sink, stderr=subprocess.STDOUT)
    line = re.compile(r"web server listening on 127\.0\.0\.1:(\d+): (http://127\.0\.0\.1:(\d+))/metrics, "
                      r"/healthz, /query, /predictions, /feedback")
    try:
        wait_for(lambda: line.search(log.read_text()) is not None, 40, "the web server's line", proc, log)
        found = line.search(log.read_text())
        assert found is not None and found[1] == found[3] != "0"
        base = found[2]
        assert _get(f"{base}/healthz").status_code in (200, 503)  # it answers there (503: still joining)
        metrics = _get(f"{base}/metrics").text
        for path in ("decode", "join", "ks", "watch", "fetch"):
            assert f'driftline_compiled_path{{path="{path}"}} 0.0' in metrics
        assert "compiled paths: decode off, join off, ks off, watch off, fetch off" in log.read_text()
        # the runners' tasks exist once /healthz says they run (before that, on a busy machine, a
        # dump could come before the shard's task is made, and a later one is never asked for)
        wait_for(lambda: _get(f"{base}/healthz").status_code == 200, 40, "/healthz 200", proc, log)
        proc.send_signal(signal.SIGQUIT)  # kill -QUIT: the stacks in its log, and it runs on
        wait_for(lambda: "task driftline-shard" in log.read_text(), 40, "the stack dump", proc, log)
        assert "Current thread" in log.read_text()
        assert "driftline_" in _get(f"{base}/metrics").text
        if worker_clickhouse_url.startswith("chdb://"):  # the owner of an embedded engine records its URL
            owner = orjson.loads((tmp_path / "home" / "clickhouse-owner.json").read_bytes())
            assert owner == {"pid": proc.pid, "query_url": f"{base}/query"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
