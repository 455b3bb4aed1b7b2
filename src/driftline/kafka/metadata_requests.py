"""How many cluster-metadata requests this process's aiokafka clients sent, by kind of client.

A worker sends a few dozen in a run. aiokafka's sender and fetcher ask again, with no backoff, as
each answer arrives while a partition they need has no known leader; that once went unseen but for
the CPU (several hundred requests a second, docs/scaling.md). ``/metrics`` exposes the count
(``driftline_kafka_metadata_requests_total``) so a storm shows as a rate, not only as CPU.
"""

from __future__ import annotations

from typing import Any

_sent: dict[str, int] = {}


def metadata_requests() -> dict[str, int]:
    """Metadata requests sent so far, by kind of client ("producer", "consumer")."""
    return dict(_sent)


def count_metadata_requests(client: Any, kind: str) -> None:
    """Count the metadata requests of an aiokafka ``client`` (``AIOKafkaClient``) under ``kind``.

    Every request goes through the client's ``_metadata_update`` (the periodic and forced refreshes
    and ``fetch_all_metadata``; only the bootstrap's first one does not), so a wrapper on the
    instance sees them all. An aiokafka without that method is left alone, uncounted.
    """
    update = getattr(client, "_metadata_update", None)
    if update is None:
        return
    _sent.setdefault(kind, 0)

    async def counted(cluster_metadata: Any, topics: Any) -> Any:
        _sent[kind] += 1
        return await update(cluster_metadata, topics)

    client._metadata_update = counted
