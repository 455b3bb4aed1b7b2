"""ClickHouse storage: one job per module.

- ``client``: ``connect(settings)`` from the DSN (embedded chDB or server), ``EngineBusy``.
- ``migrate``: apply ``infra/clickhouse/NNN_name.sql`` once each (``driftline db migrate``).
- ``writer``: ``RowWriter`` straight into ClickHouse, or through the sink topic.
- ``owner``: the record of the process owning the embedded engine (its /query URL).
- ``guard``: the read-only SQL check and ``QueryLimits`` of everything served to other processes.
- ``readonly``: checked read-only SQL on a clickhouse-connect client (the worker's ``POST /query``).
- ``embedded_reader``: read-only chDB session behind the ClickHouse HTTP interface (streams/clickhouse_http).
- ``query``: ``run_query``, routed to the owner while the engine is busy (``driftline query``).
"""

from driftline.extras import require

require("worker", "driftline.store")
