"""What grows in the process hosting the embedded ClickHouse (chDB) under the sink's writes, without Kafka.

Opens chDB on a temp dir through ``driftline.store.client.connect``, migrates, calls
``driftline.runtime.tune_gc`` as the worker does, then plays the sink's traffic for ``--minutes``:
``--batches-per-s`` flushes a second of ``--rate`` outcomes/s (plus the odd late event and dead
letter) through a ClickHouseRowWriter, staged and flushed in a thread pool as SinkRunner does; the
window tables (feature_windows, drift_scores, model_drift, model_metrics) once a minute; and every
``--query-every`` seconds a ``SELECT ... FINAL`` through a read-only client, as ``/query`` does.

Every ``--sample`` seconds it records RSS (anonymous, and the chDB library's resident code), glibc's
heap (mallinfo2), live Python blocks and GC-tracked objects, jemalloc's allocated / active /
resident / mapped / retained / metadata (system.jemalloc_stats), MemoryTracking and the caches of
system.metrics, parts (active, outdated, in-memory index bytes) and threads. At the end: the series
and every figure's slope after warm-up (per 10 minutes; MB for byte figures).

``--variant baseline`` is the writer's flush before the fix (a new clickhouse-connect InsertContext
per insert: a reference cycle that keeps the inserted rows until the cyclic GC, which tune_gc makes
rare); ``fixed`` is the writer as it is. ``--attach HOME`` samples a running sink instead (e.g. the
one of ``bench/soak.py soak --split``, whose home is ``<tmp>/sink-home``) through its ``/query``.

    .venv/bin/python bench/chdb_memory.py --variant baseline --minutes 6
    .venv/bin/python bench/chdb_memory.py --variant fixed --minutes 6 --json /tmp/fixed.json
    .venv/bin/python bench/chdb_memory.py --attach /tmp/driftline-soak-XXXX/sink-home --minutes 7
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import clickhouse_connect
import psutil
from common import slope_per_10min

from driftline.config import Settings
from driftline.runtime import tune_gc
from driftline.store.client import connect
from driftline.store.migrate import migrate
from driftline.store.owner import owner_path
from driftline.store.writer import ClickHouseRowWriter

MB = 2**20
CACHE_METRICS = (
    "MemoryTracking",
    "MergesMutationsMemoryTracking",
    "MarkCacheBytes",
    "PrimaryIndexCacheBytes",
    "UncompressedCacheBytes",
    "IndexMarkCacheBytes",
    "QueryCacheBytes",
    "QueryConditionCacheBytes",
    "CompiledExpressionCacheBytes",
    "PageCacheBytes",
    "SerializationCacheBytesInMemoryAllocated",
    "PartsActive",
    "PartsOutdated",
    "Merge",
    "MMapCacheCells",
    "GlobalThread",
    "AsyncInsertCacheSize",
)
_JEMALLOC = re.compile(
    r"^Allocated: (\d+), active: (\d+), metadata: (\d+).*?resident: (\d+), mapped: (\d+), retained: (\d+)",
    re.M,
)
N_NUMERIC, CATEGORICAL = (
    10,
    {"region": ["eu", "us", "apac"], "plan": ["free", "pro"], "device": ["ios", "web"]},
)
FEATURES = [f"x{i}" for i in range(N_NUMERIC)] + list(CATEGORICAL)
WINDOWS_S = (60, 300)
QUERIES = (  # what /query users and the demo ask
    "SELECT feature, psi, drifted FROM latest_drift",
    "SELECT model_id, time, accuracy FROM accuracy_over_time WHERE run_id = '' ORDER BY time DESC LIMIT 50",
    "SELECT count(), avg(correct) FROM outcomes FINAL WHERE run_id = '' AND prediction_time > now() - 600",
    "SELECT count() FROM drift_scores FINAL WHERE run_id = '' AND drifted = 1",
)


# -- the sink's rows -------------------------------------------------------------------------------


class Rows:
    """Rows shaped like the pipeline's, for one model (10 numeric + 3 categorical features)."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.offsets = itertools.count()
        self.model = dict(run_id="", model_id="soak", model_version="1")

    def outcome(self, now_ms: int) -> dict[str, Any]:
        rng = self.rng
        features: dict[str, Any] = {f"x{i}": round(rng.gauss(0, 1), 6) for i in range(N_NUMERIC)}
        features.update({k: rng.choice(v) for k, v in CATEGORICAL.items()})
        delay = int(rng.expovariate(1 / 30_000))
        predicted, label = rng.choice("ab"), rng.choice("ab")
        return dict(
            self.model,
            prediction_id=uuid.uuid4().hex,
            segment=f"region={features['region']}",
            prediction_time=now_ms - delay,
            label_time=now_ms,
            label_delay_ms=delay,
            predicted_label=predicted,
            predicted_score=rng.random(),
            predicted_value=None,
            label=label,
            label_value=None,
            correct=int(predicted == label),
            abs_error=None,
            features=features,
        )

    def late_event(self, now_ms: int) -> dict[str, Any]:
        return dict(
            self.model,
            source_topic="soak.labels",
            source_partition=0,
            source_offset=next(self.offsets),
            event_type="label",
            prediction_id=uuid.uuid4().hex,
            event_time=now_ms - 400_000,
            watermark_time=now_ms - 10_000,
        )

    def dead_letter(self, now_ms: int) -> dict[str, Any]:
        payload = '{"model_id": "soak", "features": {"x0": "not a number"}'
        return dict(
            run_id="",
            source_topic="soak.predictions",
            source_partition=0,
            source_offset=next(self.offsets),
            source_timestamp=now_ms,
            error_kind="schema",
            error_message="features.x0: not a number",
            payload=payload,
            payload_size=len(payload),
            model_id="soak",
        )

    def windows(self, end_ms: int, size_s: int) -> dict[str, list[dict[str, Any]]]:
        """What the processor emits when a window of ``size_s`` closes at ``end_ms``."""
        rng = self.rng
        out: dict[str, list[dict[str, Any]]] = {"feature_windows": [], "drift_scores": [], "model_drift": []}
        for segment in ["", *(f"region={r}" for r in CATEGORICAL["region"])]:
            window = dict(
                self.model,
                window_size_s=size_s,
                segment=segment,
                window_start=end_ms - size_s * 1000,
                window_end=end_ms,
            )
            for feature in [*FEATURES, "__prediction", "__latency"]:
                numeric = feature.startswith("x") or feature == "__latency"
                kind = "numeric" if numeric else "prediction" if feature == "__prediction" else "categorical"
                bins = 10 if numeric else 4
                hist = [rng.random() for _ in range(bins)]
                total = sum(hist)
                out["feature_windows"].append(
                    dict(
                        window,
                        feature=feature,
                        feature_kind=kind,
                        count=size_s * 50,
                        missing=rng.randrange(5),
                        invalid=0,
                        out_of_range=rng.randrange(3),
                        **(
                            {k: rng.random() for k in ("mean", "variance", "min", "max", "p50", "p90", "p99")}
                            if numeric
                            else {}
                        ),
                        bin_edges=[i / bins for i in range(bins + 1)] if numeric else [],
                        bin_labels=[f"b{i}" for i in range(bins)],
                        histogram=[h / total for h in hist],
                        reference_histogram=[1 / bins] * bins,
                        reference_id="ref1",
                    )
                )
                psi = rng.random() * 0.3
                out["drift_scores"].append(
                    dict(
                        window,
                        feature=feature,
                        feature_kind=kind,
                        count=size_s * 50,
                        psi=psi,
                        ks_stat=rng.random() if numeric else None,
                        ks_pvalue=rng.random() if numeric else None,
                        ks_pvalue_adj=rng.random() if numeric else None,
                        js_distance=rng.random(),
                        wasserstein=rng.random() if numeric else None,
                        chi2_stat=None if numeric else rng.random(),
                        chi2_pvalue=None if numeric else rng.random(),
                        chi2_pvalue_adj=None if numeric else rng.random(),
                        drifted=psi > 0.25,
                        drifted_by=["psi"] if psi > 0.25 else [],
                        reference_id="ref1",
                        config_hash="abc",
                    )
                )
            out["model_drift"].append(
                dict(
                    window,
                    n_events=size_s * 50,
                    n_features=len(FEATURES),
                    n_drifted=0,
                    drifted=0,
                    drifted_features=[],
                    reference_id="ref1",
                    config_hash="abc",
                )
            )
        return out

    def metrics(self, now_ms: int) -> list[dict[str, Any]]:
        rng = self.rng
        return [
            dict(
                self.model,
                segment=segment,
                row_kind="interval",
                time=now_ms,
                interval_s=60,
                n_outcomes=rng.randrange(9000, 11000),
                n_outcomes_total=rng.randrange(10**6),
                n_expired=2,
                label_coverage=0.9,
                accuracy=rng.random(),
                accuracy_ew=rng.random(),
                mae=None,
                mae_ew=None,
                rmse=None,
                rmse_ew=None,
                baseline=0.5,
                label_delay_p50_ms=30_000.0,
                label_delay_p90_ms=70_000.0,
                label_delay_p99_ms=140_000.0,
                detector="adwin",
                alarm=0,
                alarms_total=0,
            )
            for segment in ["", *(f"region={r}" for r in CATEGORICAL["region"])]
        ]


# -- measurement -----------------------------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def _proc_memory(pid: int) -> dict[str, float]:
    """Anonymous and file-backed RSS, and how much of the chDB library's code is resident."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key.lower().replace("rss", "rss_")] = int(value.split()[0]) / 1024
    chdb_kb, current = 0, ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                current = line.rstrip().rsplit(" ", 1)[-1]
            elif line.startswith("Rss:") and "_chdb" in current:
                chdb_kb += int(line.split()[1])
    out["rss_chdb_so"] = chdb_kb / 1024
    return out


Rows_ = list[tuple[Any, ...]]


def sample(query: Callable[[str], Rows_], pid: int, t: float) -> dict[str, float]:
    """One row of the series for process ``pid`` whose engine ``query`` reaches; byte figures in MB."""
    process = psutil.Process(pid)
    row: dict[str, float] = {
        "t": round(t, 1),
        "rss": process.memory_info().rss / MB,
        "threads": process.num_threads(),
    }
    row.update(_proc_memory(pid))
    if pid == os.getpid():
        if _LIBC is not None:
            info = _LIBC.mallinfo2()
            row["glibc_heap"] = (info.arena + info.hblkhd) / MB  # obtained from the OS by glibc malloc
            row["glibc_used"] = (info.uordblks + info.hblkhd) / MB  # of which in use
        row["py_blocks_k"] = sys.getallocatedblocks() / 1000  # live pymalloc blocks, thousands
        row["gc_objects_k"] = len(gc.get_objects()) / 1000  # tracked containers outside gc.freeze()
        row["gc_full"] = gc.get_stats()[2]["collections"]
    stats = query("SELECT stats FROM system.jemalloc_stats")[0][0]
    found = _JEMALLOC.search(stats)
    if found:
        for name, value in zip(
            ("je_alloc", "je_active", "je_meta", "je_resident", "je_mapped", "je_retained"),
            found.groups(),
            strict=True,
        ):
            row[name] = int(value) / MB
    names = ", ".join(f"'{m}'" for m in CACHE_METRICS)
    for metric, value in query(f"SELECT metric, value FROM system.metrics WHERE metric IN ({names})"):
        value = int(value)
        row[metric] = value / MB if metric.endswith(("Bytes", "Tracking", "Allocated")) else value
    parts = query(
        "SELECT countIf(active), countIf(NOT active), sumIf(rows, active), sum(bytes_on_disk),"
        " sum(primary_key_bytes_in_memory_allocated + index_granularity_bytes_in_memory_allocated)"
        " FROM system.parts"
    )[0]
    row.update(
        parts_active=int(parts[0]),
        parts_outdated=int(parts[1]),
        rows=int(parts[2]),
        disk=int(parts[3]) / MB,
        index_mem=int(parts[4]) / MB,
    )
    return row


def parts_by_table(query: Callable[[str], Rows_]) -> list[list[Any]]:
    return [
        list(r)
        for r in query(
            "SELECT database, table, countIf(active), countIf(NOT active), sumIf(rows, active),"
            " sum(bytes_on_disk) FROM system.parts GROUP BY database, table ORDER BY database, table"
        )
    ]


def owner_query(query_url: str) -> Callable[[str], Rows_]:
    """Read-only SQL through a running sink's ``POST /query`` (the engine can't be opened twice)."""

    def query(sql: str) -> Rows_:
        request = urllib.request.Request(f"{query_url}?format=json", data=sql.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        return [tuple(r.values()) for r in body["data"]]

    return query


# -- variants --------------------------------------------------------------------------------------


VARIANTS = {
    "baseline": "ClickHouseRowWriter.flush as before the fix: a new InsertContext per insert",
    "fixed": "ClickHouseRowWriter as is: reused InsertContexts, inserted columns emptied",
}


class PreFixWriter(ClickHouseRowWriter):
    """The writer's flush before the fix: each insert leaves an InsertContext reference cycle that
    holds the inserted columns until the cyclic GC runs."""

    def flush(self) -> None:
        for key in list(self._batches):
            batch = self._batches[key]
            self._client.insert(
                key[0],
                batch.data,
                column_names=[c.name for c in batch.columns],
                column_type_names=[c.type_name for c in batch.columns],
                column_oriented=True,
                database=self._database,
            )
            del self._batches[key]
            self._buffered -= batch.rows


WRITERS: dict[str, type[ClickHouseRowWriter]] = {"baseline": PreFixWriter, "fixed": ClickHouseRowWriter}


# -- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="driftline-chdb-mem-"))
    settings = Settings(home=root / "home", clickhouse={"url": f"chdb://{root / 'chdb'}", "database": "mem"})
    # Engine start-up options (server settings) apply when the first handle opens the directory.
    first = (
        clickhouse_connect.get_client(dsn=settings.clickhouse_url(), chdb_options=dict(args.chdb_option))
        if args.chdb_option
        else None
    )
    client = connect(settings)
    if first is not None:
        first.close()
    migrate(client, settings)
    if args.tune_gc:
        tune_gc()  # as the worker does (streams/app.py): gen-0 every 200k allocations, frozen start-up heap
    reader = connect(settings, readonly=True)  # the /query handler's client
    writer = WRITERS[args.variant](client, "mem", close_client=False)
    lock = threading.Lock()

    def query(sql: str) -> Rows_:
        with lock:
            return [tuple(r) for r in client.query(sql).result_rows]

    rows = Rows()
    # The sink stages and flushes in asyncio's default executor: min(32, cpus + 4) threads.
    pool = ThreadPoolExecutor(args.threads) if args.threads else None
    duration = args.minutes * 60
    per_flush = args.rate / args.batches_per_s
    # Simulated event time runs `--speedup` times faster than the wall clock for the window tables, so
    # a short run sees as many window closes as a long soak (their rows are few: the outcomes dominate).
    series: list[dict[str, float]] = []
    t0 = time.monotonic()
    next_sample = next_query = 0.0
    next_purge = args.purge_every
    next_window = {size: size / args.speedup for size in WINDOWS_S}
    next_metrics = 60 / args.speedup
    carry = 0.0
    inserts = queries = 0
    header_printed = False
    try:
        for tick in itertools.count():
            due = t0 + tick / args.batches_per_s
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            t = time.monotonic() - t0
            if t >= duration:
                break
            now_ms = int(time.time() * 1000)
            carry += per_flush
            n, carry = int(carry), carry - int(carry)
            batch: dict[str, list[dict[str, Any]]] = {"outcomes": [rows.outcome(now_ms) for _ in range(n)]}
            if rows.rng.random() < 0.3:
                batch["late_events"] = [rows.late_event(now_ms)]
            if rows.rng.random() < 0.1:
                batch["dead_letters"] = [rows.dead_letter(now_ms)]
            for size in WINDOWS_S:
                if t >= next_window[size]:
                    next_window[size] += size / args.speedup
                    for table, table_rows in rows.windows(now_ms - now_ms % 1000, size).items():
                        batch.setdefault(table, []).extend(table_rows)
            if t >= next_metrics:
                next_metrics += 60 / args.speedup
                batch["model_metrics"] = rows.metrics(now_ms)

            def stage(batch: dict[str, list[dict[str, Any]]] = batch) -> None:
                with lock:
                    for table, table_rows in batch.items():
                        writer.write(table, table_rows)

            def flush() -> None:
                with lock:
                    writer.flush()

            if pool is None:
                stage()
                flush()
            else:  # like SinkRunner: asyncio.to_thread(self._stage, ...) then asyncio.to_thread(self._flush)
                pool.submit(stage).result()
                pool.submit(flush).result()
            inserts += len(batch)
            if args.purge_every and t >= next_purge:
                next_purge += args.purge_every
                with lock:
                    client.command("SYSTEM JEMALLOC PURGE")
            if args.query_every and t >= next_query:
                next_query += args.query_every
                with lock:
                    reader.query(QUERIES[queries % len(QUERIES)])
                queries += 1
            if t >= next_sample:
                next_sample += args.sample
                row = sample(query, os.getpid(), t)
                row["inserts"] = inserts
                series.append(row)
                _print_row(row, not header_printed)
                header_printed = True
        final = sample(query, os.getpid(), time.monotonic() - t0)
        final["inserts"] = inserts
        series.append(final)
        _print_row(final, False)
        by_table = parts_by_table(query)
    finally:
        if pool is not None:
            pool.shutdown()
        writer.close()
        reader.close()
        client.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    head = {
        "variant": args.variant,
        "what": VARIANTS[args.variant],
        "chdb_options": dict(args.chdb_option),
        "purge_every": args.purge_every,
        "tune_gc": args.tune_gc,
        "minutes": args.minutes,
        "rate": args.rate,
        "batches_per_s": args.batches_per_s,
        "threads": args.threads,
        "inserts": inserts,
        "queries": queries,
    }
    return summarize(
        head, series, by_table, args.warmup if args.warmup is not None else min(120.0, duration / 3)
    )


def summarize(
    head: dict[str, Any], series: list[dict[str, float]], by_table: list[list[Any]], warmup: float
) -> dict[str, Any]:
    steady = [r for r in series if r["t"] >= warmup]
    slopes = {
        k: round(slope_per_10min([(r["t"], r[k]) for r in steady if k in r]), 2)
        for k in series[-1]
        if k not in ("t", "inserts")
    }
    return {
        **head,
        "warmup_s": warmup,
        "rss_first_mb": round(steady[0]["rss"], 1) if steady else None,
        "rss_last_mb": round(steady[-1]["rss"], 1) if steady else None,
        "rss_slope_mb_per_10min": slopes.get("rss"),
        "slopes_per_10min": slopes,
        "parts_by_table": by_table,
        "series": series,
    }


def attach(args: argparse.Namespace) -> dict[str, Any]:
    """Sample a running sink (e.g. ``bench/soak.py soak --split``'s) through its ``/query``.

    ``--attach HOME`` is the sink's DRIFTLINE_HOME: its owner record names the pid and the URL.
    """
    record = json.loads(owner_path(args.attach).read_text())
    pid, query = int(record["pid"]), owner_query(record["query_url"])
    series: list[dict[str, float]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.minutes * 60 and psutil.pid_exists(pid):
        try:
            row = sample(query, pid, time.monotonic() - t0)
        except (OSError, psutil.Error) as err:  # the sink went away
            print(f"sampling stopped: {err}", flush=True)
            break
        series.append(row)
        _print_row(row, len(series) == 1)
        time.sleep(max(0.0, t0 + len(series) * args.sample - time.monotonic()))
    by_table = parts_by_table(query) if psutil.pid_exists(pid) else []
    warmup = args.warmup if args.warmup is not None else min(200.0, args.minutes * 20)
    return summarize({"variant": f"attached to pid {pid}", "minutes": args.minutes}, series, by_table, warmup)


_COLUMNS = (
    "t",
    "rss",
    "rss_anon",
    "rss_chdb_so",
    "glibc_heap",
    "py_blocks_k",
    "gc_objects_k",
    "je_alloc",
    "je_resident",
    "je_retained",
    "MemoryTracking",
    "MarkCacheBytes",
    "index_mem",
    "parts_active",
    "parts_outdated",
    "threads",
)


def _print_row(row: dict[str, float], header: bool) -> None:
    if header:
        print(" ".join(f"{c[:11]:>11}" for c in _COLUMNS), flush=True)
    print(" ".join(f"{row.get(c, float('nan')):>11.1f}" for c in _COLUMNS), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant",
        choices=tuple(VARIANTS),
        default="fixed",
        help="; ".join(f"{k}: {v}" for k, v in VARIANTS.items()),
    )
    parser.add_argument(
        "--no-tune-gc",
        dest="tune_gc",
        action="store_false",
        help="keep CPython's default GC thresholds (the worker calls driftline.runtime.tune_gc)",
    )
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--rate", type=float, default=180, help="outcome rows per second")
    parser.add_argument("--batches-per-s", type=float, default=4, help="sink flushes per second")
    parser.add_argument("--speedup", type=float, default=1.0, help="window/metric rows this much faster")
    parser.add_argument(
        "--query-every", type=float, default=15, help="seconds between /query-like reads; 0 = none"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=min(32, (os.cpu_count() or 1) + 4),
        help="write and flush in a pool of this many threads, as the sink does; 0 = main thread",
    )
    parser.add_argument(
        "--purge-every", type=float, default=0, help="SYSTEM JEMALLOC PURGE every this many s"
    )
    parser.add_argument(
        "--chdb-option",
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        metavar="NAME=VALUE",
        help="engine start-up option (server setting), e.g. mark_cache_size=...",
    )
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="seconds ignored for slopes (default 120)")
    parser.add_argument("--json", type=Path, default=None, help="write the result and series here")
    parser.add_argument("--keep", action="store_true", help="keep the temp data directory")
    parser.add_argument(
        "--attach",
        type=Path,
        default=None,
        metavar="HOME",
        help="instead of a workload, sample the running sink whose DRIFTLINE_HOME this is",
    )
    args = parser.parse_args(argv)
    result = attach(args) if args.attach is not None else run(args)
    summary = {k: v for k, v in result.items() if k != "series"}
    slopes = summary.pop("slopes_per_10min")
    print(json.dumps(summary, indent=2))
    print("slope after warm-up, per 10 min (MB for byte figures):")
    for key, value in sorted(slopes.items(), key=lambda kv: -abs(kv[1])):
        print(f"  {key:>42} {value:>10.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
