"""Through the real worker on the broker: SDK predictions (murmur2) and labels from the real
confluent-kafka client (librdkafka's default partitioner, CRC32 of the key, or no key at all)
all join. Before re-routing, 84 of 400 such labels joined and the rest vanished."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import orjson
import pytest
from harness import wait_for

from driftline.client import DriftlineClient
from driftline.config import Settings, TopicSettings
from driftline.kafka.partitioner import partition_for_key
from driftline.local.broker import free_port

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration

TOKEN = "reroute-test-token"
N = 400
KEYLESS_EVERY = 4  # every 4th label is produced without a key


def _request(url: str, content: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=content, method="POST" if content else "GET")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()




@pytest.mark.timeout(600)
def test_labels_from_librdkafka_and_keyless_labels_join_sdk_predictions(
    kafka_bootstrap: str, worker_clickhouse_url: str, tmp_path: Path
) -> None:
    port = free_port()
    tag = tmp_path.name[-12:].replace("-", "_")
    topics = {name: f"r{tag}.{name}" for name in TopicSettings.topic_fields()}
    env = {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLINE_CLICKHOUSE_URL": worker_clickhouse_url,
        "DRIFTLINE_CLICKHOUSE_DATABASE": f"r_{tag}",
        "DRIFTLINE_HOME": str(tmp_path / "home"),
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S": "0.5",
        "DRIFTLINE_WORKER_AUTH_TOKENS": TOKEN,
        **{f"DRIFTLINE_TOPICS_{name.upper()}": topic for name, topic in topics.items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.cli.main", "worker", "--web-port", str(port),
         "--run-seconds", "400", "--loglevel", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _request(f"{base}/healthz")[0] == 200, 60, "/healthz", proc)
        settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap}, topics=topics)
        partitions = settings.topics.partitions
        start = int(time.time() * 1000) - 120_000
        ids = [f"pred-{i}" for i in range(N)]
        with DriftlineClient(settings) as client:
            for i, pid in enumerate(ids):
                client.log_prediction(pid, "churn", "1", {"x": float(i)}, {"label": "yes"},
                                      timestamp=start + i * 10)
            assert client.flush(60)

        producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})  # default partitioner
        delivered: list[tuple[bytes | None, int]] = []

        def on_delivery(err: object, msg: object) -> None:
            assert err is None, err
            delivered.append((msg.key(), msg.partition()))  # type: ignore[attr-defined]

        for i, pid in enumerate(ids):
            label = {"prediction_id": pid, "label": "yes", "timestamp": start + i * 10 + 5_000}
            key = None if i % KEYLESS_EVERY == 0 else pid.encode()
            producer.produce(topics["labels"], orjson.dumps(label), key, on_delivery=on_delivery)
        assert producer.flush(60) == 0
        keyed = [(k, p) for k, p in delivered if k is not None]
        assert all(p == zlib.crc32(k) % partitions for k, p in keyed)  # librdkafka: CRC32, not murmur2
        assert sum(p != partition_for_key(k, partitions) for k, p in keyed) > N // 2

        def joined() -> bool:
            status, body = _request(f"{base}/query?format=json", b"SELECT count() AS n FROM outcomes FINAL")
            return status == 200 and int(orjson.loads(body)["data"][0]["n"]) == N

        wait_for(joined, 240, f"{N} outcomes in ClickHouse", proc)
        status, body = _request(f"{base}/metrics")
        assert status == 200
        rerouted = sum(
            float(line.rsplit(b" ", 1)[1]) for line in body.splitlines()
            if line.startswith(b"driftline_stage_rerouted_total{") and b'kind="label"' in line
        )
        assert rerouted >= N // 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
