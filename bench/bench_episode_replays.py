"""Drift episodes on the two real replays, per feature: what a user reads in ``drift_episodes``,
``drift_alerts`` and ``retrain_triggers``.

* ``noaa``: NOAA weather with the faults of ``tests/test_real_stream_trust.py`` (a sensor stuck
  from row 9,000, a feature gone for 1,000 events, one sensor's deviation from its mean tripled
  from row 14,000, re-sends, invalid events), profile of rows 0-2,999, ``triggers.cooldown_s``
  1800, one row a simulated second (so an offset in seconds is a row number);
* ``elec2``: elec2 (45,312 rows), profile of rows 0-4,999, default settings.

Prints each episode (opened / closed at, in seconds from the first event; reason; unit;
magnitude and peak; escalations), how often a row's unit changed between its versions and how
many versions show a peak smaller than an earlier one in that unit (restarted), the alerts by
kind and reason, each escalation, the triggers'
times and the replay's CPU time. Data are read from ``/work/shared/data``; nothing is copied.

    .venv/bin/python bench/bench_episode_replays.py noaa|elec2

Before/after a change: ``PYTHONPATH=<other checkout>/src`` runs another tree's code.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import driftline
from driftline.config import Settings
from driftline.operators.profile import build_profile
from driftline.replay.run import replay_files
from driftline.simulate import Scenario, write_jsonl
from driftline.simulate.scenario import ModelSpec
from driftline.store.writer import MemoryRowWriter

TESTS = Path(__file__).resolve().parent.parent / "tests"
DATA = Path("/work/shared/data")
START = 1_767_225_600_000


def _inputs(which: str, tmp: Path) -> tuple[Settings, bytes]:
    """Write the replay's predictions and labels under ``tmp / "in"``; the settings and profile."""
    if which == "noaa":
        sys.path.insert(0, str(TESTS))  # the faults are the test's: one definition of them
        import test_real_stream_trust as trust

        scenario = Scenario(seed=2, start=trust.START, duration_s=trust.ROWS, rate=1, models=[
            ModelSpec(model_id="noaa", source="csv", csv_path=trust.NOAA, label_column="target")])
        write_jsonl(scenario, tmp / "src")
        trust._derive(tmp / "src", tmp / "in")
        return Settings(triggers={"cooldown_s": trust.COOLDOWN_S}), trust._profile()
    path, label = DATA / "elec2.csv", "class"
    scenario = Scenario(seed=2, start=START, duration_s=45_312, rate=1, models=[
        ModelSpec(model_id="elec2", source="csv", csv_path=path, label_column=label)])
    write_jsonl(scenario, tmp / "in")
    with path.open() as f:
        rows = [row for _, row in zip(range(5_000), csv.DictReader(f), strict=False)]
    columns: dict[str, list[Any]] = {n: [float(r[n]) for r in rows] for n in rows[0] if n != label}
    columns[label] = [r[label] for r in rows]
    profile = build_profile("elec2", "1", columns, label_column=label, prediction_column=None, bins=10,
                            top_k=10, created_at_ms=START)
    return Settings(), profile.model_dump_json().encode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stream", choices=("noaa", "elec2"))
    args = parser.parse_args(argv)
    print(f"driftline from {Path(driftline.__file__).parent}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        settings, profile = _inputs(args.stream, tmp)
        writer = MemoryRowWriter()
        cpu = time.process_time()
        replay_files(settings, args.stream, writer, tmp / "in" / "predictions.jsonl",
                     tmp / "in" / "labels.jsonl", profiles=[profile])
        cpu = time.process_time() - cpu
    rows = writer.rows

    def at(ms: int | None) -> str:
        return "-" if ms is None else f"{(ms - START) // 1000:,}"

    latest: dict[str, dict[str, Any]] = {}
    for r in rows["drift_episodes"]:
        if r["episode_id"] not in latest or r["version"] >= latest[r["episode_id"]]["version"]:
            latest[r["episode_id"]] = r
    print(f"episodes {len(latest)} ({len(rows['drift_episodes'])} row versions); replay {cpu:.1f} CPU-s")
    print(f"{'feature':12s} {'opened':>7s} {'closed':>7s} {'reason':18s} {'unit':8s} {'magnitude':>9s} "
          f"{'peak':>6s} escalations")
    for e in sorted(latest.values(), key=lambda e: (e["feature"], e["opened_at"])):
        escalated = f"{e['escalations']} ({e['escalation_reason']} at {at(e['escalated_at'])})" \
            if e["escalations"] else "0"
        print(f"{e['feature']:12s} {at(e['opened_at']):>7s} {at(e['closed_at']):>7s} {e['close_reason']:18s} "
              f"{e['unit']:8s} {e['magnitude']:+9.2f} {e['peak_magnitude']:+6.2f} {escalated}")
    # what a user watching the rows sees change: the unit, and the peak shown in a unit smaller
    # than one an earlier version showed in it (restarted when the row came back to that unit)
    flips, shrunk = [], 0
    versions: dict[str, list[dict[str, Any]]] = {}
    for r in rows["drift_episodes"]:
        versions.setdefault(r["episode_id"], []).append(r)
    for rs in versions.values():
        rs.sort(key=lambda r: r["version"])
        shown: dict[str, float] = {}  # the largest peak shown so far, by unit
        for before, after in itertools.pairwise(rs):
            if before["unit"] != after["unit"]:
                flips.append(f"{after['feature']} {before['unit']}->{after['unit']} "
                             f"at {at(after['version'])}")
        for r in rs:
            size = _size(r["unit"], r["peak_magnitude"])
            shrunk += size < shown.get(r["unit"], 0.0) - 1e-9
            shown[r["unit"]] = max(shown.get(r["unit"], 0.0), size)
    print(f"row unit changes {len(flips)}" + (f" ({', '.join(flips)})" if flips else "")
          + f"; row versions whose peak shrank in its unit {shrunk}")
    alerts = rows.get("drift_alerts", [])
    counts = Counter(f"{a['event_kind']} {a['reason']}" for a in alerts)
    print("alerts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for a in alerts:
        if a["event_kind"] == "escalated":
            what = a["component"] or "learned sample"
            print(f"  escalated {a['feature']} at {at(a['event_time'])}: {a['reason']}, "
                  f"{a['magnitude']:+.2f} {a['unit']} ({what}, shard {a['shard']})")
    triggers = sorted(t["triggered_at"] for t in rows["retrain_triggers"])
    print(f"triggers {len(triggers)} at " + ", ".join(at(t) for t in triggers))
    return 0


def _size(unit: str, value: float) -> float:
    """How far a reading is from "as in the reference" (a ratio by its log)."""
    return abs(math.log(max(value, 1e-12))) if unit.endswith("_ratio") else abs(value)


if __name__ == "__main__":
    raise SystemExit(main())
