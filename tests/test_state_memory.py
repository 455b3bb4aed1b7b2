"""Memory around a base checkpoint: the envelope holds the pickle itself (same bytes as before it
was pickled straight into the buffer), and freed heap memory goes back to the system."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.operators.join import LabelJoin
from driftline.pipeline.state import (
    RAW_ABOVE,
    STATE_FORMAT,
    dump_delta,
    dump_state,
    load_delta,
    load_state,
    release_free_memory,
)
from driftline.schemas.events import LabelEvent, PredictionEvent


def test_a_large_base_is_its_pickle_behind_the_envelope_and_a_small_one_its_zlib() -> None:
    large = {"records": [bytes(range(256)) * 4096 for _ in range(40)], "counters": list(range(10_000))}
    blob = dump_state(large)
    assert len(blob) > RAW_ABOVE
    assert blob == b"DLST" + bytes([STATE_FORMAT]) + b"r" + pickle.dumps(large, pickle.HIGHEST_PROTOCOL)
    assert load_state(blob, dict, "test") == large
    small = {"seen": list(range(1000))}
    assert zlib.decompress(dump_state(small)[6:]) == pickle.dumps(small, pickle.HIGHEST_PROTOCOL)
    delta = dump_delta(small)  # LZ4 where the package is installed
    unpack = zlib.decompress if delta[5:6] == b"z" else importlib.import_module("lz4.frame").decompress
    assert unpack(delta[6 + 8 :]) == pickle.dumps(small, pickle.HIGHEST_PROTOCOL)  # after its record count


_FRAGMENTED_HEAP = """
import sys
from driftline.pipeline.state import release_free_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

# 300 MB of malloc'd blocks (over pymalloc's 512 bytes), one in 32 kept: free() alone cannot give
# the holes back (only the heap's top), as the base's freed records and messages were kept.
blocks = [bytes(1500) for _ in range(200_000)]
kept = blocks[::32]
del blocks
before = rss_mb()
release_free_memory()
print(before, rss_mb(), len(kept))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not release_free_memory(),
                    reason="malloc_trim is glibc's")
def test_release_free_memory_gives_a_fragmented_heap_back() -> None:
    out = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    before, after, _ = map(float, out.stdout.split())
    assert before > 250 and after < before - 200, (before, after)


def _prediction(i: int) -> PredictionEvent:
    features = {f"x{k}": float(i * 31 + k) for k in range(25)}
    return PredictionEvent(prediction_id=f"{i:08x}-0000-4000-8000-000000000000", model_id="m",
                           timestamp=i, features=features, prediction={"label": "a", "score": 0.25})


def test_a_spilling_joins_base_restores_equal_to_the_same_join_in_memory(tmp_path: Path) -> None:
    """Its spilled records are read back group by group as the base pickles (not all first): the
    restored join holds every record whole, as the in-memory join does, and joins the same."""
    spilling = LabelJoin(60_000, max_pending=100_000, max_held=100)
    spilling.set_memory_budget(300_000, tmp_path)
    in_memory = LabelJoin(60_000, max_pending=100_000, max_held=100)
    for i in range(8_000):
        for join in (spilling, in_memory):
            join.on_prediction(_prediction(i), segment="s")
    assert spilling.spilled_count > 4_000
    restored = load_state(dump_state(spilling), LabelJoin, "test")
    twin = load_state(dump_state(in_memory), LabelJoin, "test")
    assert restored.__getstate__() == twin.__getstate__() == in_memory.__getstate__()
    assert restored.spilled_count == 0 and spilling.spilled_count > 4_000  # the original still spills
    labels = [LabelEvent(prediction_id=_prediction(i).prediction_id, label="a", timestamp=9_000)
              for i in range(0, 8_000, 7)]
    assert [restored.on_label(label) for label in labels] == [in_memory.on_label(label) for label in labels]


class _Item:
    __slots__ = ("__weakref__", "value")

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[type[_Item], tuple[int]]:
        return _Item, (self.value,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Item) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


class _Fresh:
    """Items made as they are asked for; records how many earlier ones were still alive."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.most_alive = 0

    def fresh_items(self) -> Iterator[_Item]:
        made: list[weakref.ref[_Item]] = []
        for value in range(self.count):
            self.most_alive = max(self.most_alive, sum(ref() is not None for ref in made))
            item = _Item(value)
            made.append(weakref.ref(item))
            yield item
            del item


def test_the_envelope_lets_each_fresh_item_go_once_pickled() -> None:
    """A pickler's memo would keep every item until the end (a spilling join's whole table)."""
    fresh = _Fresh(3_000)
    shared = [1, 2]
    state = {"groups": fresh, "a": shared, "b": shared}
    restored = load_delta(dump_delta(state), "test")
    assert restored["groups"] == [_Item(v) for v in range(3_000)]
    assert restored["a"] is restored["b"]  # the rest of the state is memoized as before
    assert fresh.most_alive <= 2
