"""Stage 2 given stage 1's own model-events records with one value changed (a count past int64, a
sketch of another accuracy, a multivariate sum far out of range): the record is dead-lettered
where it arrives, and no exception reaches the worker where the window closes, as one did before
(a worker reads its committed model-events again after a restart, so it stopped at every restart).
The records are those a real in-process run of a model with a multivariate section sends."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import Settings
from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.windows import check_partial
from driftline.simulate.traffic import SimEvent

START = 1_767_225_600_000
SETTINGS = Settings(windows={"sizes_s": [60], "allowed_lateness_s": 5, "metrics_interval_s": 60},
                    topics={"partitions": 2})


def _profile_and_records() -> tuple[bytes, list[RawRecord]]:
    rng = np.random.default_rng(1)
    cols: dict[str, Any] = {f: rng.normal(size=2000).tolist() for f in "abc"}
    cols["k"] = [str(x) for x in rng.integers(0, 4, 2000)]
    cols["score"] = rng.random(2000).tolist()
    cols["y"] = (rng.random(2000) < 0.5).tolist()
    cols["pred"] = [bool(v >= 0.5) for v in cols["score"]]
    section = multivariate_section({f: cols[f] for f in "abc"}, scores=cols["score"], labels=cols["y"])
    profile = build_profile("m", "1", cols, label_column="y", prediction_column="pred",
                            bins=SETTINGS.drift.bins, top_k=SETTINGS.drift.top_k, created_at_ms=0,
                            multivariate=section)
    events = []
    for i in range(2400):
        t = START + i * 100
        score = float(rng.random())
        prediction = {"prediction_id": f"p{i}", "model_id": "m", "timestamp": t,
                      "features": {**{f: float(rng.normal()) for f in "abc"}, "k": str(i % 5)},
                      "prediction": {"label": score >= 0.5, "score": score}}
        label = {"prediction_id": f"p{i}", "model_id": "m", "label": bool(i % 2), "timestamp": t + 2000}
        events.append(SimEvent("predictions", f"p{i}".encode(), orjson.dumps(prediction), t))
        events.append(SimEvent("labels", f"p{i}".encode(), orjson.dumps(label), t + 2000))
    events.sort(key=lambda e: e.timestamp_ms)
    return profile.model_dump_json().encode(), logged_records(events, SETTINGS)


@pytest.fixture(scope="module")
def stage_2_input() -> tuple[bytes, list[tuple[int, list[RawRecord]]]]:
    """The profile and every batch stage 2 got, by its partition, in a run of 2,400 labelled
    predictions (windows of 60 s: 4 close, each with 2 shards' partials)."""
    profile, records = _profile_and_records()
    pipeline = InProcessPipeline(SETTINGS, profiles=[profile])
    batches: list[tuple[int, list[RawRecord]]] = []
    for q, model in enumerate(pipeline.models):
        def kept(batch: list[RawRecord], process: Callable[..., Any] = model.process, q: int = q) -> Any:
            batches.append((q, list(batch)))
            return process(batch)
        model.process = kept  # type: ignore[method-assign]
    for i in range(0, len(records), 500):
        pipeline.feed(records[i:i + 500])
    pipeline.finish(START + 10**7)
    return profile, batches


def _partials(batches: list[tuple[int, list[RawRecord]]]) -> list[tuple[int, int, dict[str, Any]]]:
    return [(b, i, orjson.loads(r.value or b"")) for b, (_, batch) in enumerate(batches)
            for i, r in enumerate(batch) if orjson.loads(r.value or b"{}").get("type") == "partial"]


CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "a feature's count past int64": lambda p: p["features"]["a"].update(count=1e300, n=1e300),
    "a feature's count negative": lambda p: p["features"]["k"].update(count=-5),
    "a category's count past int64": lambda p: p["features"]["k"]["categories"].update({"1": 2**63}),
    "a sketch of another accuracy": lambda p: p["features"]["a"]["sketch"].update(alpha=0.01),
    "a sketch of another size": lambda p: p["features"]["b"]["sketch"].update(max_buckets=1024),
    "a sketch's zero count negative": lambda p: p["features"]["c"]["sketch"].update(zero=-1),
    "a sketch's first key far out": lambda p: p["features"]["c"]["sketch"]["pos"].__setitem__(0, 1e300),
    "a moment that is not a number": lambda p: p["features"]["a"].update(mean=[1.0]),
    "multivariate outliers past int64": lambda p: p["multivariate"].update(outliers=1e300),
    "multivariate count negative": lambda p: p["multivariate"].update(n=-3),
    "a multivariate sample hash past int64":
        lambda p: p["multivariate"]["sample_hashes"].__setitem__(0, 1e300),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_partial_is_dead_lettered_and_the_windows_still_close(
        change: str, stage_2_input: tuple[bytes, list[tuple[int, list[RawRecord]]]]) -> None:
    profile, batches = stage_2_input
    found = [(b, i, m) for b, i, m in _partials(batches) if m["partial"].get("form") is None
             and "multivariate" in m["partial"]]
    assert found, "no partial with sketches and a multivariate part in the run"
    b, i, message = found[0]
    assert check_partial(message["partial"]).n_events > 0
    changed = copy.deepcopy(message)
    CHANGES[change](changed["partial"])
    with pytest.raises(ValueError, match="malformed window partial"):
        check_partial(changed["partial"])
    fresh = InProcessPipeline(SETTINGS, profiles=[profile])
    dead = []
    for k, (q, batch) in enumerate(batches):
        if k == b:
            record = batch[i]
            batch = [*batch[:i], RawRecord(record.topic, record.partition, record.offset, record.timestamp_ms,
                                           record.key, orjson.dumps(changed)), *batch[i + 1:]]
        out = fresh.models[q].process(batch)  # raised where the window closed, before the check
        dead += [m for m in out if m.topic == SETTINGS.topics.dead_letters]
    assert len(dead) == 1 and b"malformed window partial" in dead[0].value
    closed = sum(model.windows.totals["windows_closed"] for model in fresh.models)
    assert closed == 4  # every window closed, the one with the refused shard's partial too
