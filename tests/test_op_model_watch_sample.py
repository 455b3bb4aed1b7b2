"""The window's bottom-k sample, kept as arrays, against a heap fed one event at a time (what it
replaced, and what a checkpoint written before holds)."""

from __future__ import annotations

import heapq
import pickle
from typing import Any

import numpy as np

from driftline.operators.model_watch import MultivariateWindow, id_hash, id_hashes, merge_windows


def _heap_sample(batches: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[tuple[int, tuple[float, ...]]]:
    """The reference: every event pushed while there is room, then replacing the largest kept
    hash if its own is smaller; ascending hash (equal hashes: descending row)."""
    heap: list[tuple[int, tuple[float, ...]]] = []
    for hashes, x in batches:
        for h, row in zip(hashes.tolist(), x.tolist(), strict=True):
            if len(heap) < k:
                heapq.heappush(heap, (-h, tuple(row)))
            elif -h > heap[0][0]:
                heapq.heapreplace(heap, (-h, tuple(row)))
    return sorted(heap, reverse=True)


def _batches(rng: np.random.Generator, n: int, *, reused: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    hashes = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    if reused:  # ids reused within the window: equal hashes, some at the sample's boundary
        hashes[rng.choice(n, n // 4, replace=False)] = hashes[rng.choice(n // 10, n // 4)]
    x = rng.normal(size=(n, 3))
    cuts = np.sort(rng.choice(np.arange(1, n), 7, replace=False)).tolist()
    return [(hashes[a:b], x[a:b]) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


def _window(batches: list[tuple[np.ndarray, np.ndarray]], k: int) -> MultivariateWindow:
    window = MultivariateWindow(reference_id="r")
    for hashes, x in batches:
        window._sample(x, hashes, k)
    return window


def test_the_sample_is_the_heaps_with_and_without_equal_hashes() -> None:
    rng = np.random.default_rng(5)
    for reused in (False, True):
        for n, k in ((2_000, 300), (250, 300), (900, 1)):
            batches = _batches(rng, n, reused=reused)
            expected = _heap_sample(batches, k)
            window = _window(batches, k)
            assert window.sample_hashes.tolist() == [-h for h, _ in expected]
            assert window.sample_rows.tolist() == [list(row) for _, row in expected]


def test_a_checkpoint_holding_the_heap_restores_the_same_sample() -> None:
    rng = np.random.default_rng(6)
    batches = _batches(rng, 1_500, reused=True)
    window = _window(batches, 200)
    old_form: dict[str, Any] = {k: v for k, v in window.__dict__.items()
                                if k not in ("sample_hashes", "sample_rows")}
    old_form["heap"] = _heap_sample(batches, 200)  # (-hash, row) pairs
    heapq.heapify(old_form["heap"])
    restored = MultivariateWindow.__new__(MultivariateWindow)
    restored.__setstate__(old_form)
    assert restored.to_dict() == window.to_dict()
    again = pickle.loads(pickle.dumps(window))
    assert again.to_dict() == window.to_dict()


def test_merged_samples_keep_the_smallest_hashes_in_order() -> None:
    rng = np.random.default_rng(7)
    batches = _batches(rng, 3_000, reused=False)
    whole = merge_windows([_window(batches, 400).to_dict()], k=400).sample
    parts = [_window(batches[:3], 400).to_dict(), _window(batches[3:], 400).to_dict()]
    for ordered in (parts, parts[::-1]):  # distinct hashes: the union's 400 smallest, any order
        assert merge_windows(ordered, k=400).sample.tobytes() == whole.tobytes()
    assert merge_windows([], k=400).sample.shape == (0, 0)
    # equal hashes across parts: the parts' order, then each part's (a stable sort of the pairs)
    tied = [_window(b, 300).to_dict() for b in (_batches(rng, 800, reused=True), ) * 2]
    pairs = [(h, row) for part in tied
             for h, row in zip(part["sample_hashes"], merge_windows([part], k=300).sample.tolist(),
                               strict=True)]
    pairs.sort(key=lambda t: t[0])
    assert merge_windows(tied, k=500).sample.tolist() == [row for _, row in pairs[:500]]


def test_the_batch_hashes_are_each_ids_hash() -> None:
    rng = np.random.default_rng(8)
    alphabet = [*"abcXYZ019-_", "é", "ß", "中", "\U0001F600"]
    ids = ["".join(rng.choice(alphabet, int(rng.integers(0, 40)))) for _ in range(2_000)]
    ids += ["0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a", "p1", "p1"]
    hashes = id_hashes(ids)
    assert hashes.dtype == np.int64 and bool(np.all(hashes >= 0))
    assert hashes.tolist() == [id_hash(p) for p in ids]
    assert id_hashes([]).shape == (0,)
