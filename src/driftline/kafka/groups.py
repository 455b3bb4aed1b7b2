"""The consumer group ids of one deployment: ``<kafka.group_prefix>-<role>``.

Two deployments sharing a Kafka cluster (staging and production, two teams) must not share a group:
its members would rebalance each other whenever either restarts (a rebalance costs a stage its
state restore), and an ACL on the group would have to admit both principals. A prefix per
deployment also lets one prefixed ACL (``kafka-acls --group <prefix>- --resource-pattern-type
prefixed``) grant every group a worker joins.

>>> from driftline.config import Settings
>>> consumer_group(Settings(), "sink")
'driftline-sink'
>>> s = Settings.model_validate({"kafka": {"group_prefix": "staging"}})
>>> consumer_group(s, "retrain-listener")
'staging-retrain-listener'
"""

from __future__ import annotations

from typing import Literal

from driftline.config import Settings

Role = Literal["shard", "model", "sink", "retrain-listener"]


def consumer_group(settings: Settings, role: Role) -> str:
    """The consumer group of ``role`` (stage 1 shards, stage 2, the ClickHouse sink, the retrain
    listener) in this deployment."""
    return f"{settings.kafka.group_prefix}-{role}"
