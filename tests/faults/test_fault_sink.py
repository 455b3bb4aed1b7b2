"""(c) ClickHouse failing for a while and (d) a slow sink, with processors and sink as two processes.

(c) What is faulted: the embedded ClickHouse *storage* of the `--role sink` process. Every insert
fails inside ClickHouse for the outage (see ``harness.clickhouse_storage_down``), which drives
the sink's real retry path: ``SinkRunner._retrying`` keeps the rows, retries with backoff, pauses
fetching (``driftline_sink_blocked`` = 1, ``driftline_sink_write_failures_total`` grows) and
commits nothing until the write succeeds. SIGSTOP of the sink would not: a stopped process runs
no code at all. A ClickHouse *server* cut at the network level is not reproducible here (no
server can be installed on these machines); the storage failure is the closest real fault. The
`--role processor` process keeps going meanwhile; its memory stays bounded because the sink
topic, not the processor, absorbs the backlog.

(d) The sink is SIGSTOPped / SIGCONTed repeatedly (seeded; some pauses longer than the 3 s group
session, so the sink also loses its group membership and its next commit fails): the processors
finish far ahead of it, the sink topic holds the backlog (lag grows), then the sink catches up.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from harness import (
    RssSampler,
    Stream,
    assert_same_tables,
    clickhouse_storage_down,
    drain_sink,
    dump_tables,
    run_env,
    start_watched,
    wait_until,
    workers,
)

pytestmark = pytest.mark.integration


def _clickhouse_outage(
    stream: Stream, root: Path, clean: dict[str, list[list[str]]], outage_s: float, run: str
) -> None:
    env = run_env(stream, run, root)
    log = root / f"{run}.log"
    with workers() as started, RssSampler() as rss:
        sink = start_watched(started, rss, env, log, role="sink", idle=None, home=root / run / "sink-home")
        processor = start_watched(
            started, rss, env, log, role="processor", idle=5, home=root / run / "processor-home"
        )
        wait_until(
            lambda: sink.metric_sum("driftline_sink_rows_total") > 0,
            120,
            "first rows written",
            alive=[sink, processor],
        )
        with clickhouse_storage_down(root, run, sink):
            wait_until(
                lambda: sink.metric_sum("driftline_sink_blocked") == 1, 30, "the sink to block", alive=[sink]
            )
            written = sink.metric_sum("driftline_sink_rows_total")
            t0 = time.monotonic()
            while time.monotonic() - t0 < outage_s:
                assert sink.alive(), sink.tail()
                assert processor.process.poll() in (None, 0), processor.tail()  # may finish meanwhile
                time.sleep(0.25)
            assert sink.metric_sum("driftline_sink_rows_total") == written, "rows written during the outage"
            failures = sink.metric_sum("driftline_sink_write_failures_total")
            finished = not processor.alive()
        wait_until(
            lambda: sink.metric_sum("driftline_sink_blocked") == 0, 60, "the sink to recover", alive=[sink]
        )
        assert processor.wait(300) == 0, processor.tail()
        drain_sink(sink)
    print(
        f"outage {outage_s}s: {failures:.0f} failed writes, processor finished during the outage: {finished}"
        f"; {rss.check()}"
    )
    assert failures >= 2
    assert_same_tables(dump_tables(root, run), clean)


def test_clickhouse_failing_for_10s(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _clickhouse_outage(fault_stream, fault_root, clean_tables, 10, "chdown")


@pytest.mark.soak
def test_clickhouse_failing_for_30s(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _clickhouse_outage(fault_stream, fault_root, clean_tables, 30, "chdown_soak")


def _slow_sink(
    stream: Stream, root: Path, clean: dict[str, list[list[str]]], pauses: int, seed: int, run: str
) -> None:
    rng = random.Random(seed)
    env = run_env(stream, run, root)
    log = root / f"{run}.log"
    max_lag = 0.0
    with workers() as started, RssSampler() as rss:
        sink = start_watched(started, rss, env, log, role="sink", idle=None, home=root / run / "sink-home")
        processor = start_watched(
            started, rss, env, log, role="processor", idle=5, home=root / run / "processor-home"
        )
        wait_until(
            lambda: sink.metric_sum("driftline_sink_messages_total") > 0,
            120,
            "the sink to start",
            alive=[sink, processor],
        )
        for _ in range(pauses):
            sink.pause()
            time.sleep(rng.uniform(0.5, 4.5))
            sink.resume()
            time.sleep(rng.uniform(0.2, 0.8))
            max_lag = max(max_lag, sink.metric_sum("driftline_consumer_lag", stage="sink"))
            assert sink.alive(), sink.tail()
        assert processor.wait(300) == 0, processor.tail()
        drain_sink(sink)
    print(f"{pauses} pauses: max sink lag seen {max_lag:.0f} messages; {rss.check()}")
    assert_same_tables(dump_tables(root, run), clean)


def test_slow_sink_stopped_and_continued(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _slow_sink(fault_stream, fault_root, clean_tables, pauses=5, seed=7, run="slowsink")


@pytest.mark.soak
def test_slow_sink_many_pauses(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _slow_sink(fault_stream, fault_root, clean_tables, pauses=40, seed=8, run="slowsink_soak")
