"""Migration 026: the comments of unjoined_events.reason and .time say that a label of a prediction
evicted at join.max_pending is an 'evicted' row too (023 named predictions only; applied migrations
are immutable, so a new file says it), as infra/clickhouse/README.md does."""

from __future__ import annotations

import pytest

from driftline.config import Settings
from driftline.infra import clickhouse_sql_dir
from driftline.store.client import connect
from driftline.store.migrate import migrate

pytestmark = pytest.mark.integration


def test_the_reason_and_time_comments_name_evicted_labels(settings: Settings) -> None:
    client = connect(settings)
    migrate(client, settings)
    comments = dict(client.query(
        "SELECT name, comment FROM system.columns WHERE database = {db:String} AND table = 'unjoined_events'",
        parameters={"db": settings.clickhouse.database}).result_rows)
    assert "'evicted' (prediction dropped at join.max_pending, or a label of such a prediction)" in comments[
        "reason"]
    assert "label time (no_prediction, held_label_evicted, an evicted prediction's label)" in comments["time"]
    readme = (clickhouse_sql_dir() / "README.md").read_text()
    for name in ("reason", "time"):  # the README's column table says the same, markup aside
        row = next(line for line in readme.split("### `unjoined_events`")[1].splitlines()
                   if line.startswith(f"| `{name}` |"))
        assert row.split(" | ")[2].rstrip(" |").replace("`", "") == comments[name]
