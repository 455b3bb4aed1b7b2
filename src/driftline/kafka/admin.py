"""Topic creation and partition metadata (kafka-python admin client).

Every driftline topic is created up front with the partition counts the pipeline relies on:
predictions, labels and outcomes share `topics.partitions` (stage 1 runs one shard per
partition index, so predictions and labels must be co-partitioned), model-events has
`topics.model_events_partitions`, everything else one partition.

The input topics (predictions, labels) get ``message.timestamp.type`` from
``windows.input_timestamp_type`` (default LogAppendTime): the record timestamp is then the
broker's clock, so the decoder's future bound catches a producer whose whole clock runs ahead,
not only one whose event times run ahead of its own record timestamps. A broker that refuses the
setting gets the topic without it (logged).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kafka.errors as kafka_errors

from driftline.config import Settings
from driftline.kafka.clients import kafka_python_admin

# Compaction keeps the latest value per key; Tansu stores the setting but does not enforce it.
COMPACTED = {"cleanup.policy": "compact"}
TIMESTAMP_TYPE = "message.timestamp.type"

log = logging.getLogger(__name__)


class CopartitioningError(RuntimeError):
    """Predictions and labels have different partition counts, so shards cannot join them."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every configured topic with the partitions and configs it is created with."""
    t = settings.topics
    rf = t.replication_factor
    sharded = {t.predictions, t.labels, t.outcomes, t.repartition}
    specs: dict[str, TopicSpec] = {}
    for name in (t.predictions, t.labels, t.outcomes, t.model_events, t.dead_letters, t.retrain_triggers,
                 t.retrain_status, t.profiles, t.sink, t.state, t.repartition):
        if name in specs:
            continue
        if name in sharded:
            partitions = t.partitions
        elif name == t.model_events:
            partitions = t.model_events_partitions
        else:
            partitions = 1
        configs = dict(COMPACTED) if name in (t.profiles, t.state) else {}
        if name in (t.predictions, t.labels):
            configs[TIMESTAMP_TYPE] = settings.windows.input_timestamp_type
        specs[name] = TopicSpec(name, partitions, rf, configs)
    return list(specs.values())


@contextlib.contextmanager
def admin_client(settings: Settings, request_timeout_ms: int = 10_000) -> Iterator[Any]:
    """A KafkaAdminClient with driftline's connection and security options, closed on exit."""
    admin = kafka_python_admin(settings, request_timeout_ms=request_timeout_ms)
    try:
        yield admin
    finally:
        admin.close()


def ensure_topics(settings: Settings) -> list[str]:
    """Create the configured topics that do not exist yet; returns the names created.

    Existing topics are left as they are (their partition counts are not changed).
    """
    specs = {s.name: s for s in topic_specs(settings)}

    def request(configs: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
        return {name: {"num_partitions": specs[name].partitions,
                       "replication_factor": specs[name].replication_factor, "configs": c}
                for name, c in configs.items()}

    with admin_client(settings) as admin:
        results = admin.create_topics(request({n: s.configs for n, s in specs.items()}),
                                      raise_errors=False)["topics"]
        refused = [
            r["name"] for r in results
            if kafka_errors.for_code(r["error_code"]) is kafka_errors.InvalidConfigurationError
            and TIMESTAMP_TYPE in specs[r["name"]].configs
        ]
        if refused:
            log.warning("the broker refused %s for %s: created without it (record timestamps are the "
                        "producers' own)", TIMESTAMP_TYPE, ", ".join(refused))
            without = {n: {k: v for k, v in specs[n].configs.items() if k != TIMESTAMP_TYPE} for n in refused}
            again = admin.create_topics(request(without), raise_errors=False)["topics"]
            results = [r for r in results if r["name"] not in refused] + list(again)
        created: list[str] = []
        for result in results:
            error = kafka_errors.for_code(result["error_code"])
            if error is kafka_errors.NoError:
                created.append(result["name"])
            elif error is not kafka_errors.TopicAlreadyExistsError:
                detail = result.get("error_message") or error.__name__
                raise RuntimeError(f"cannot create topic {result['name']!r}: {detail}")
        # CreateTopics only means "accepted"; wait until the partitions have leaders.
        admin.wait_for_topics(created)
    order = {name: i for i, name in enumerate(specs)}
    return sorted(created, key=order.__getitem__)


def partition_counts(settings: Settings, topics: Iterable[str] | None = None) -> dict[str, int]:
    """Partition count per existing topic (all topics if `topics` is None); absent topics are left out."""
    with admin_client(settings) as admin:
        described = admin.describe_topics(None if topics is None else list(topics))
    return {
        t["name"]: len(t["partitions"])
        for t in described
        if kafka_errors.for_code(t["error_code"]) is kafka_errors.NoError
    }


def topic_partitions(settings: Settings, topic: str) -> int | None:
    """Partition count of `topic` from cluster metadata, None if it does not exist."""
    return partition_counts(settings, [topic]).get(topic)


def verify_copartitioned(settings: Settings) -> None:
    """Raise CopartitioningError unless predictions and labels exist with equal partition counts."""
    t = settings.topics
    counts = partition_counts(settings, [t.predictions, t.labels])
    missing = [name for name in (t.predictions, t.labels) if name not in counts]
    if missing:
        raise CopartitioningError(f"topic(s) {', '.join(missing)} do not exist; create them with "
                                  "the configured partition counts (`driftline local up` does so "
                                  "on the embedded broker)")
    if counts[t.predictions] != counts[t.labels]:
        raise CopartitioningError(
            f"{t.predictions} has {counts[t.predictions]} partitions but {t.labels} has "
            f"{counts[t.labels]}: predictions and labels must be co-partitioned (same count, same "
            "key = prediction_id) for the join; recreate one of them"
        )
