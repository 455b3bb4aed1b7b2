"""(b) Network cut between the worker and the broker, through a TCP proxy the test controls.

The broker is a dedicated Tansu that advertises the proxy's address, so the worker's bootstrap
connection *and* every connection it opens from metadata go through the proxy. A cut closes all
proxied connections and refuses new ones for N seconds (longer than the 3 s group session, so
the broker also expires the worker's group memberships), then restores the listener. The worker
must ride it out in-process (no restart) and end with exactly the clean run's tables.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import (
    ProxiedBroker,
    RssSampler,
    Stream,
    Worker,
    assert_same_tables,
    dump_tables,
    run_env,
    wait_until,
    workers,
)

pytestmark = pytest.mark.integration


def _cut_during_run(
    broker: ProxiedBroker,
    stream: Stream,
    root: Path,
    clean: dict[str, list[list[str]]],
    cuts: list[tuple[float, float]],
    run: str,
) -> None:
    """`cuts`: (share of predictions consumed when the cut starts, seconds it lasts)."""
    env = run_env(stream, run, root)
    n = stream.counts["predictions"]
    with workers() as started, RssSampler() as rss:
        worker = Worker(env, root / f"{run}.log", home=root / run / "home", idle=5)
        started.append(worker)
        rss.watch(worker)
        try:
            for share, seconds in cuts:
                wait_until(
                    lambda s=share: worker.predictions_in() >= s * n,
                    120,
                    f"{share:.0%} of predictions",
                    alive=[worker],
                )
                broker.proxy.cut()
                time.sleep(seconds)
                assert worker.alive(), f"worker died during the cut:\n{worker.tail()}"
                broker.proxy.restore()
        finally:
            if broker.proxy.is_cut:
                broker.proxy.restore()
        code = worker.wait(300)
        assert code == 0, worker.tail()
        retries = worker.tail(20000).count("retrying")
    print(
        f"{len(cuts)} cuts, {broker.proxy.connections} proxied connections, {retries} retry log lines; "
        f"{rss.check()}"
    )
    assert_same_tables(dump_tables(root, run), clean)


def test_network_cut_longer_than_the_session_timeout(
    proxied_broker: ProxiedBroker,
    fault_stream: Stream,
    fault_root: Path,
    clean_tables: dict[str, list[list[str]]],
) -> None:
    _cut_during_run(
        proxied_broker, fault_stream, fault_root, clean_tables, [(0.25, 8.0), (0.6, 2.0)], "netcut"
    )


@pytest.mark.soak
def test_repeated_long_network_cuts(
    proxied_broker: ProxiedBroker,
    fault_stream: Stream,
    fault_root: Path,
    clean_tables: dict[str, list[list[str]]],
) -> None:
    cuts = [(0.1, 20.0), (0.3, 5.0), (0.45, 30.0), (0.6, 1.0), (0.8, 20.0)]
    _cut_during_run(proxied_broker, fault_stream, fault_root, clean_tables, cuts, "netcut_soak")
