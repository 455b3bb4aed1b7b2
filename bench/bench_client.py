"""Latency that DriftlineClient.log_prediction adds to a request, against a real (embedded) broker.

Runs 1k and 10k calls/s paced and an unpaced burst, measures each call with perf_counter_ns and
prints p50/p99/p99.9 in microseconds, plus drops and delivery. Target: p99 <= 50 us.

    .venv/bin/python bench/bench_client.py [--seconds 5] [--max-calls 200000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from driftline.client import DriftlineClient
from driftline.config import Settings
from driftline.local.broker import running_broker

FEATURES = {f"f{i}": i * 1.25 for i in range(8)} | {"plan": "pro", "country": "de"}


def run(client: DriftlineClient, tag: str, calls: int, rate: float | None) -> np.ndarray:
    """Per-call latencies (ns); with ``rate``, calls are spaced 1/rate apart without holding the GIL."""
    out = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    interval = int(1e9 / rate) if rate else 0
    due = clock()
    for i in range(calls):
        if interval:
            due += interval
            while (ahead := due - clock()) > 0:
                time.sleep(ahead / 1e9 - 0.0005 if ahead > 1_000_000 else 0)  # sleep(0) yields the GIL
        t0 = clock()
        client.log_prediction(f"{tag}-{i}", "bench-model", "1", FEATURES, {"label": "yes", "score": 0.93},
                              latency_ms=3.2)
        out[i] = clock() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each paced run")
    parser.add_argument("--max-calls", type=int, default=200_000, help="calls of the unpaced run")
    args = parser.parse_args()

    rows = []
    with running_broker() as broker:
        settings = Settings.model_validate({
            "kafka": {"bootstrap_servers": broker.bootstrap_servers},
            "topics": {"predictions": "bench.predictions", "labels": "bench.labels"},
        })
        with DriftlineClient(settings) as client:
            run(client, "warmup", 2000, None)
            client.flush(30)
            for name, rate, calls in (("1k/s paced", 1000.0, int(1000 * args.seconds)),
                                      ("10k/s paced", 10_000.0, int(10_000 * args.seconds)),
                                      ("max (unpaced)", None, args.max_calls)):
                before = dict(client.stats)
                started = time.perf_counter()
                lat = run(client, name.split()[0], calls, rate)
                elapsed = time.perf_counter() - started
                delivered = client.flush(60)
                after = client.stats
                percentiles = np.percentile(lat, [50, 99, 99.9]) / 1000
                rows.append((name, calls, calls / elapsed, percentiles, lat.max() / 1000,
                             after["dropped"] - before["dropped"], after["sent"] - before["sent"], delivered,
                             time.perf_counter() - started))

    print(f"{'run':<15}{'calls':>8}{'calls/s':>10}{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'max us':>9}"
          f"{'dropped':>9}{'sent':>9}{'all sent after (s)':>20}")
    for name, calls, cps, (p50, p99, p999), mx, dropped, sent, ok, total in rows:
        print(f"{name:<15}{calls:>8}{cps:>10.0f}{p50:>9.2f}{p99:>9.2f}{p999:>10.2f}{mx:>9.0f}{dropped:>9}{sent:>9}"
              f"{(f'{total:.2f}' if ok else 'timeout'):>20}")
    print("target: p99 <= 50 us per log_prediction call")


if __name__ == "__main__":
    main()
