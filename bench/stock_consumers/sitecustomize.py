"""Put this directory on ``PYTHONPATH`` to run a worker (or any driftline process) whose consumers
are all stock aiokafka ones, as before the RawRecords fetch path (``driftline.kafka.records``):
``aiokafka_consumer`` ignores ``raw_records``, so ``getmany`` hands out ConsumerRecords that the
runner and the sink convert with ``as_raw``. For A/B runs of figure (1)::

    PYTHONPATH=bench/stock_consumers .venv/bin/python bench/bench_pipeline.py --worker-only --n 100000
"""

from typing import Any

from driftline.kafka import clients

_made = clients.aiokafka_consumer


def _stock(settings: Any, group_id: str | None, *, raw_records: bool = False, **options: Any) -> Any:
    return _made(settings, group_id, **options)


clients.aiokafka_consumer = _stock  # type: ignore[assignment]
