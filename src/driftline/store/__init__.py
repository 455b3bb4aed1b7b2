"""ClickHouse storage: one job per module.

- ``client``: ``connect(settings)`` from the DSN (embedded chDB or server), ``EngineBusy``.
- ``migrate``: apply ``infra/clickhouse/NNN_name.sql`` once each (``driftline db migrate``).
- ``writer``: ``RowWriter`` straight into ClickHouse, or through the sink topic.
- ``owner``: the process owning the embedded engine, and its read-only ``POST /query`` handler.
- ``query``: ``run_query``, routed to the owner while the engine is busy (``driftline query``).
"""

from driftline.extras import require

require("worker", "driftline.store")
