"""The worker's cyclic-collector pacing (driftline.runtime.CollectorPacing, installed by tune_gc): the
generation-0 threshold rises while collections find no garbage and falls back to the floor at once
when one finds more than it allows. Run in a fresh interpreter: the collector's settings are the
process's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import gc, json
    from driftline.runtime import (GC_GARBAGE_ALLOWED, GC_THRESHOLD0_CEILING, GC_THRESHOLDS,
                                   CollectorPacing, tune_gc)

    def cyclic_garbage(n):
        for _ in range(n):
            node = []
            node.append(node)

    seen = {}
    tune_gc()
    tune_gc()  # a second call installs no second pacing
    seen["pacings"] = sum(isinstance(c, CollectorPacing) for c in gc.callbacks)
    seen["start"] = gc.get_threshold()[0]
    gc.collect(0)
    seen["after_clean"] = gc.get_threshold()[0]
    gc.collect(0)
    seen["after_two_clean"] = gc.get_threshold()[0]
    cyclic_garbage(GC_GARBAGE_ALLOWED // 2)
    gc.collect(0)
    seen["after_little_garbage"] = gc.get_threshold()[0]
    cyclic_garbage(GC_GARBAGE_ALLOWED + 5_000)
    gc.collect(0)
    seen["after_garbage"] = gc.get_threshold()[0]
    for _ in range(20):
        gc.collect(0)
    seen["after_many_clean"] = gc.get_threshold()[0]
    seen["older"] = list(gc.get_threshold()[1:])
    seen["expected"] = {"floor": GC_THRESHOLDS[0], "ceiling": GC_THRESHOLD0_CEILING,
                        "older": list(GC_THRESHOLDS[1:])}
    print(json.dumps(seen))
""")


def test_the_threshold_rises_while_collections_find_nothing_and_falls_back_on_garbage() -> None:
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120,
                         check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    floor, ceiling = seen["expected"]["floor"], seen["expected"]["ceiling"]
    assert seen["pacings"] == 1
    assert seen["start"] == floor
    assert seen["after_clean"] == 2 * floor
    assert seen["after_two_clean"] == 4 * floor
    assert seen["after_little_garbage"] == min(8 * floor, ceiling)  # within what it allows: still rising
    assert seen["after_garbage"] == floor  # more than it allows: back to the floor at once
    assert seen["after_many_clean"] == ceiling  # and never past the ceiling
    assert seen["older"] == seen["expected"]["older"]  # the older generations' thresholds kept
