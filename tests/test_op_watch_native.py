"""The quiet-model watch's C path (``driftline.operators._watch``: a monitor's few values deferred)
against the Python methods it stands in for: the same events and the same state after every call,
for numeric, categorical and rate monitors through openings, escalations and closings; and the
common case (values no CUSUM can alarm on) taken in C, not left to Python."""

from __future__ import annotations

import hashlib
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.operators import model_watch, watch_native
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.episodes import EpisodeMonitor
from driftline.operators.window_stats import MAX_ABS_VALUE

ARL = 1e6


def test_the_c_path_is_built_where_a_compiler_is() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the watch runs in Python alone")
    assert watch_native.NATIVE is not None
    built = Path(watch_native.NATIVE.__file__)  # not older than its source (a failed rebuild)
    source = built.with_name("_watch.c")
    if source.exists():
        assert built.stat().st_mtime >= source.stat().st_mtime, f"{built.name} is older than {source}"


def _monitors_and_streams() -> list[tuple[EpisodeMonitor, list[Any]]]:
    """A numeric, a categorical and a rate monitor, each with a stream that drifts and comes back
    (skipped values among them)."""
    rng = np.random.default_rng(7)
    numeric = np.concatenate([rng.normal(m, 1.0, n) for m, n in ((0.0, 2_000), (1.2, 2_500), (0.0, 3_000))])
    numeric[rng.choice(numeric.size, 30, replace=False)] = np.nan
    cats = rng.choice(list("abcd"), 7_500, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    cats[2_000:4_500] = rng.choice(list("abcde"), 2_500, p=[0.1, 0.2, 0.2, 0.1, 0.4])
    cats[rng.choice(cats.size, 20, replace=False)] = None
    errs = (rng.random(7_500) < np.where((np.arange(7_500) >= 2_000) & (np.arange(7_500) < 4_500), 0.3, 0.1))
    return [
        (EpisodeMonitor.from_reference(np.random.default_rng(1).normal(size=20_000), arl=ARL, learning=1_000),
         numeric.tolist()),
        (EpisodeMonitor.from_categories(rng.choice(list("abcd"), 10_000, p=[0.4, 0.3, 0.2, 0.1]), arl=ARL,
                                        learning=1_000), cats.tolist()),
        (EpisodeMonitor.from_rate(0.1, arl=ARL, learning=1_000), errs.astype(float).tolist()),
    ]


def _deferred(monitor: EpisodeMonitor) -> tuple[object, ...]:
    """The per-value bookkeeping a pickle leaves out: values waiting in the watching detector and
    its bounds (the bank's and its groups'), as they are (nothing found on reading)."""
    det = monitor._watching()
    return (monitor.n, monitor._ring.tobytes(), det.n, list(det._pending), det._rise, det._slack,
            list(det._rises), list(det._slacks), det._due)


def _fed(monitor: EpisodeMonitor, xs: list[Any], sizes: list[int]) -> tuple[list[Any], list[Any]]:
    """The events of ``xs`` fed in groups of ``sizes`` (cycled) and the state after each group."""
    events: list[Any] = []
    states: list[Any] = []
    lo, k = 0, 0
    while lo < len(xs):
        hi = min(len(xs), lo + sizes[k % len(sizes)])
        events += [(lo + i, e) for i, e in monitor.update_each(xs[lo:hi])]
        states.append((_deferred(monitor), pickle.dumps(monitor)))
        lo, k = hi, k + 1
    return events, states


@pytest.mark.parametrize("sizes", [[1], [2, 1, 3], [7, 5, 1, 2]])
def test_c_and_python_leave_the_same_events_and_state(sizes: list[int]) -> None:
    for base, xs in _monitors_and_streams():
        fast = _fed(pickle.loads(pickle.dumps(base)), xs, sizes)
        with reference_paths():
            slow = _fed(pickle.loads(pickle.dumps(base)), xs, sizes)
        assert fast == slow, base.kind
        assert {"opened", "closed"} <= {e.kind for _, e in fast[0]}, base.kind  # every state crossed


def test_values_no_cusum_can_alarm_on_are_deferred_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-reference values a few at a time: C defers them, the reach and the groups' bounds built
    on first use included; Python's _defer runs only where the ring of recent symbols grows (it
    doubles up to ``learning``: 5 times here)."""
    if watch_native.NATIVE is None:
        pytest.skip("no C path in this install")
    calls: list[int] = []
    defer = EpisodeMonitor._defer
    monkeypatch.setattr(EpisodeMonitor, "_defer", lambda self, values: calls.append(len(values)) or defer(
        self, values))
    for base, xs in _monitors_and_streams():
        calls.clear()
        quiet = xs[:1_500]  # before the drift: 750 groups of 2
        for lo in range(0, len(quiet), 2):
            base.update_each(quiet[lo : lo + 2])
        assert len(calls) <= 6, (base.kind, len(calls))


@pytest.mark.parametrize("edge", ["slack", "due"])
def test_the_bound_s_edges_are_python_s(edge: str) -> None:
    """A rise reaching a slack exactly stops the deferral (``>=``), as does the count reaching the
    detector's due point: set so on two copies of a monitor, C and Python count the same head."""

    def at_the_edge(monitor: EpisodeMonitor, xs: list[Any]) -> list[int]:
        monitor.update_each(xs[:50])  # armed: the reach built, the groups' bounds found
        det = monitor._opener
        syms, _ = det._symbol_list(xs[50:56])
        if edge == "due":
            det._due = det.n + 3  # room for 2
        elif det._lanes is not None:
            k = syms[0] * len(det._rises)
            det._slacks = [max(r + det._lanes.reach[k + g], 0) for g, r in enumerate(det._rises)]
        else:
            det._slack = max(det._rise + det._reach[syms[0]], 0)
        return syms

    for base, xs in _monitors_and_streams():
        fast_monitor, slow_monitor = pickle.loads(pickle.dumps(base)), pickle.loads(pickle.dumps(base))
        syms = at_the_edge(fast_monitor, xs)
        fast = fast_monitor.update_each(xs[50:56]), _deferred(fast_monitor)
        with reference_paths():
            assert at_the_edge(slow_monitor, xs) == syms
            slow = slow_monitor.update_each(xs[50:56]), _deferred(slow_monitor)
        assert fast == slow, base.kind
        control = pickle.loads(pickle.dumps(base))  # the same values with no edge set
        control.update_each(xs[:50])
        control.update_each(xs[50:56])
        assert _deferred(control) != fast[1], base.kind  # the edge changed the path taken


DATA = Path("/work/shared/data")


@pytest.mark.parametrize(("name", "column"), [("elec2.csv", "nswprice"), ("elec2.csv", "nswdemand"),
                                              ("noaa_weather.csv", "feat_1"), ("noaa_weather.csv", "feat_4")])
def test_c_and_python_agree_on_real_streams(name: str, column: str) -> None:
    """Real streams that drift slowly, cycle daily and stay drifted (Elec2, NOAA weather): the
    monitors' events and state are the same with the C path and without, in groups of 1-5, and
    with each group first offered to defer_values as a grid line's flush offers it."""
    import csv

    path = DATA / name
    if not path.exists():
        pytest.skip(f"needs {path}")
    with path.open() as f:
        xs = [float(row[column]) for row in csv.DictReader(f)][:14_000]
    base = EpisodeMonitor.from_reference(np.array(xs[:2_000]), arl=ARL, learning=1_000)
    fast = _fed(pickle.loads(pickle.dumps(base)), xs[2_000:], [1, 3, 2, 5])
    with reference_paths():
        slow = _fed(pickle.loads(pickle.dumps(base)), xs[2_000:], [1, 3, 2, 5])
    assert fast == slow and fast[0]  # (each of these streams opens episodes)
    if watch_native.NATIVE is not None:
        *flushed, taken = _fed_raw(pickle.loads(pickle.dumps(base)), xs[2_000:], [1, 3, 2, 5])
        assert tuple(flushed) == slow and taken > 0


def _fed_raw(monitor: EpisodeMonitor, xs: list[Any], sizes: list[int]) -> tuple[list[Any], list[Any], int]:
    """As :func:`_fed`, each group first offered to ``defer_values`` (as FeatureWatch._feed_few
    does) and its rest to ``update_each``; also how many groups C took."""
    fast = watch_native.NATIVE
    events: list[Any] = []
    states: list[Any] = []
    taken = 0
    lo, k = 0, 0
    while lo < len(xs):
        hi = min(len(xs), lo + sizes[k % len(sizes)])
        group = xs[lo:hi]
        counted = fast.defer_values(monitor, group, MAX_ABS_VALUE)
        if counted < 0:
            events += [(lo + i, e) for i, e in monitor.update_each(group)]
        else:
            taken += 1
            events += [(lo + counted + i, e) for i, e in monitor.update_each(group[counted:])]
        states.append((_deferred(monitor), pickle.dumps(monitor)))
        lo, k = hi, k + 1
    return events, states, taken


@pytest.mark.parametrize("sizes", [[1], [2, 1, 3], [7, 5, 1, 2]])
def test_defer_values_and_update_each_leave_the_same_events_and_state(sizes: list[int]) -> None:
    """A numeric monitor's floats (NaN, infinities and values beyond the bound among them: those
    groups left to Python) and a categorical one's strings (None among them), through an opening,
    escalations and a closing: what C counts and the rest fed on equal update_each alone; a rate
    monitor's values are never taken (its kind is neither)."""
    if watch_native.NATIVE is None:
        pytest.skip("no C path in this install")
    streams = _monitors_and_streams()
    numeric = streams[0][1]
    numeric[100], numeric[200], numeric[300] = float("inf"), -1e101, 1e100  # the bound itself is watched
    for base, xs in streams:
        *ours, taken = _fed_raw(pickle.loads(pickle.dumps(base)), xs, sizes)
        with reference_paths():
            theirs = _fed(pickle.loads(pickle.dumps(base)), xs, sizes)
        assert tuple(ours) == theirs, base.kind
        assert {"opened", "closed"} <= {e.kind for _, e in theirs[0]}, base.kind
        assert (taken > 0) == (base.kind != "binary"), (base.kind, taken)


def test_a_quiet_model_s_flush_takes_its_monitors_in_one_c_call_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """At a grid line a quiet model's held few in-reference values go to defer_values, one call a
    monitor (each held pair's first event past a grid line: a cut the C path does not stop at)."""
    if watch_native.NATIVE is None:
        pytest.skip("no C path in this install")
    from driftline.operators.feature_watch import FeatureWatch
    from driftline.operators.profile import build_profile

    rng = np.random.default_rng(5)
    table = {"x": rng.normal(size=3000), "y": rng.normal(size=3000),
             "c": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1]).tolist()}
    profile = build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                            created_at_ms=0, effective_from_ms=0, source="training")
    watch = FeatureWatch(1.0, status_grid_ms=1000, batch_events=64)
    watch.add_profile(profile)
    calls: list[str] = []
    update_each = EpisodeMonitor.update_each
    monkeypatch.setattr(EpisodeMonitor, "update_each",
                        lambda self, xs: calls.append(self.kind) or update_each(self, xs))
    for second in range(40):
        events = [{"x": float(rng.normal()), "y": float(rng.normal()), "c": str(rng.choice(["a", "b"]))}
                  for _ in range(2)]
        watch.observe("m", "1", [second * 1000 + 10, second * 1000 + 20], [f"p{second}a", f"p{second}b"],
                      events)
        watch.flush_due(second * 1000 + 1500)
        assert watch.held_events() == 0
    # update_each runs only where C leaves values to Python: a monitor's ring of recent symbols to
    # grow (32 slots doubled at 32 and 64 values: twice for each of the 3 monitors) and a value at
    # the opener's bound (3 here: it settles), of 120 monitor feeds
    assert len(calls) <= 9, calls


def test_the_c_calls_refuse_arguments_they_cannot_read() -> None:
    """A wrong call raises TypeError and changes nothing (the Python callers never make one)."""
    fast = watch_native.NATIVE
    if fast is None:
        pytest.skip("no C compiler built the extension here")
    with pytest.raises(TypeError, match="defer_few takes 3 arguments"):
        fast.defer_few(None, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="defer_few: syms must be a list"):
        fast.defer_few(None, None, (1, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="defer_values takes 3 arguments"):
        fast.defer_values(None, [1.0])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="defer_values: xs must be a list"):
        fast.defer_values(None, (1.0,), 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("native", [True, False])
def test_an_opener_keeps_its_per_value_lists_through_steps_and_settles(native: bool) -> None:
    """A detector's pending symbols and per-group bounds change in place, in C and in Python: a
    new list a settle or step was a young object for the cyclic collector, ~50,000 of them at a
    time across a worker's 100,000 detectors at 1,000 models (docs/scaling.md, session 42)."""
    if native and watch_native.NATIVE is None:
        pytest.skip("no C path in this install")
    for base, xs in _monitors_and_streams():
        monitor = pickle.loads(pickle.dumps(base))
        opener = monitor._opener
        held = (opener._pending, opener._rises, opener._slacks)
        if native:
            *_, taken = _fed_raw(monitor, xs, [2, 1, 3])
            assert taken > 0 or base.kind == "binary"
        else:
            with reference_paths():
                _fed(monitor, xs, [2, 1, 3])
        assert monitor._opener is opener and opener.n > 1_000, base.kind
        assert all(now is then for now, then in zip((opener._pending, opener._rises, opener._slacks), held,
                                                    strict=True)), base.kind


def test_id_hashes_in_c_are_blake2b_s_of_every_length() -> None:
    """The multivariate sample's order: BLAKE2b-64 of each id's UTF-8 written in C (_watch.c), the
    same bits as hashlib's at every length across the 128-byte blocks, multi-byte text included; an
    id with no UTF-8 raises as str.encode does, and anything but a str is refused."""
    if watch_native.NATIVE is None:
        pytest.skip("the watch's C extension is not built in this install")
    rng = random.Random(3)
    ids = ["x" * n for n in range(400)] + ["".join(rng.choice("ab-é😀7") for _ in range(rng.randint(0, 200)))
                                           for _ in range(300)]
    want = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") >> 1 for i in ids]
    assert model_watch.id_hashes(ids).tolist() == want
    with reference_paths():
        assert model_watch.id_hashes(ids).tolist() == want
    with pytest.raises(UnicodeEncodeError):
        model_watch.id_hashes(["p", "\ud800"])
    with pytest.raises(TypeError):
        watch_native.NATIVE.id_hashes(["p", 5], np.empty(2, dtype=np.int64))
    with pytest.raises(ValueError):
        watch_native.NATIVE.id_hashes(["p"], np.empty(2, dtype=np.int64))
