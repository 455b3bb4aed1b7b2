"""Reference profiles: builders, ids, JSON form, table loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from driftline.operators.profile import (
    FeatureProfile,
    ReferenceProfile,
    build_profile,
    load_profile_table,
    profile_from_window,
)
from driftline.operators.window_stats import FeatureStats, WindowAccumulator, merge_partials
from driftline.schemas.events import Prediction


def _table(n: int = 2_000, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    x = rng.normal(5, 2, n)
    color = rng.choice(["red", "green", "blue", "grey"], n, p=[0.5, 0.3, 0.15, 0.05])
    label = rng.choice(["yes", "no"], n)
    pred = np.where(rng.random(n) < 0.8, label, np.where(label == "yes", "no", "yes"))
    return {"x": x.tolist(), "color": color.tolist(), "label": label.tolist(), "pred": pred.tolist()}


def test_build_profile_classification() -> None:
    t = _table()
    p = build_profile("m", "1", t, label_column="label", prediction_column="pred", bins=10, top_k=2)
    assert p.task == "classification" and p.source == "training"
    assert set(p.features) == {"x", "color"}
    x, color = p.features["x"], p.features["color"]
    assert x.kind == "numeric" and len(x.edges) == 9 and len(x.ref_counts) == 10
    assert sum(x.ref_counts) == x.n == 2_000
    assert all(150 <= c <= 250 for c in x.ref_counts)  # deciles
    assert x.mean == pytest.approx(np.mean(t["x"])) and x.std == pytest.approx(np.std(t["x"], ddof=1))
    assert color.kind == "categorical" and color.categories == ["red", "green"]
    assert sum(color.ref_counts) == 2_000 and len(color.ref_counts) == 3
    assert p.prediction is not None and p.prediction.kind == "categorical"
    accuracy = np.mean(np.array(t["label"]) == np.array(t["pred"]))
    assert p.baseline == {"accuracy": pytest.approx(accuracy)}


def test_build_profile_regression_and_column_types() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 500)
    yhat = y + rng.normal(0, 0.1, 500)
    frame = pd.DataFrame({"a": rng.integers(0, 5, 500), "flag": rng.random(500) < 0.3, "y": y, "yhat": yhat})
    columns = {
        "a": frame["a"],  # pandas ints: numeric
        "flag": frame["flag"].to_numpy(),  # numpy bools: categorical "true"/"false"
        "s": pa.array(["u", None] * 250),  # pyarrow strings with nulls
        "y": frame["y"],
        "yhat": frame["yhat"],
    }
    p = build_profile("m", "2", columns, label_column="y", prediction_column="yhat", bins=5, top_k=5)
    assert p.task == "regression"
    assert p.features["a"].kind == "numeric" and p.features["a"].n == 500
    flag = p.features["flag"]
    assert flag.kind == "categorical" and set(flag.categories) == {"true", "false"}
    assert p.features["s"].n == 250
    assert p.prediction is not None and p.prediction.kind == "numeric"
    err = yhat - y
    assert p.baseline["mae"] == pytest.approx(np.abs(err).mean())
    assert p.baseline["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))


def test_profile_id_is_a_content_hash() -> None:
    def build(table: dict[str, list], created_at_ms: int) -> ReferenceProfile:
        return build_profile(
            "m",
            "1",
            table,
            label_column=None,
            prediction_column=None,
            bins=4,
            top_k=3,
            created_at_ms=created_at_ms,
        )

    a, b, c = build(_table(), 1), build(_table(), 2), build(_table(seed=1), 1)
    assert a.profile_id == b.profile_id != c.profile_id
    assert len(a.profile_id) == 16
    assert ReferenceProfile.model_validate_json(a.model_dump_json()) == a


def test_missing_target_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="nope"):
        build_profile("m", "1", _table(), label_column="nope", prediction_column=None, bins=4, top_k=3)


def test_feature_profile_validates_bins() -> None:
    with pytest.raises(ValidationError):
        FeatureProfile(kind="categorical", categories=["a"], ref_counts=[1], n=1)
    with pytest.raises(ValidationError):
        FeatureProfile(kind="numeric", edges=[1.0], ref_counts=[1, 2], n=3)  # no sketch


def test_discrete_values_get_one_edge_each() -> None:
    values = [0.0] * 70 + [1.0] * 30
    p = build_profile("m", "1", {"b": values}, label_column=None, prediction_column=None, bins=10, top_k=3)
    f = p.features["b"]
    assert len(f.edges) == 2 and f.ref_counts == [0, 70, 30]
    assert f.bin_labels == ["< 0", "[0, 1)", ">= 1"]


def test_profile_from_window() -> None:
    rng = np.random.default_rng(2)
    acc = WindowAccumulator()
    xs, ks = rng.normal(0, 1, 3_000), rng.integers(0, 4, 3_000)
    feats = [{"x": float(v), "c": str(k)} for v, k in zip(xs, ks, strict=True)]
    acc.add(feats, [Prediction(label="a" if i % 3 else "b", score=0.5) for i in range(3_000)], [1.0] * 3_000)
    merged = merge_partials([acc.to_partial()])
    p = profile_from_window(merged, "m", "1", window_start_ms=60_000, bins=10, top_k=3)
    assert (p.source, p.task, p.effective_from_ms) == ("first_window", "classification", 60_000)
    assert p.baseline == {}
    assert p.features["x"].kind == "numeric" and sum(p.features["x"].ref_counts) == 3_000
    assert p.features["c"].kind == "categorical" and len(p.features["c"].categories) == 3
    assert p.prediction is not None and p.prediction.categories == ["a", "b"]
    assert profile_from_window(merged, "m", "1", 60_000, 10, 3) == p  # deterministic, id included


def test_load_profile_table(tmp_path: Path) -> None:
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("x,c,flag\n1.5,a,true\n2.5,,false\n,b,true\n")
    cols = load_profile_table(csv_path)
    assert cols["x"] == [1.5, 2.5, None]
    assert cols["flag"] == [True, False, True]
    parquet_path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "c": ["a", None]}), parquet_path)
    assert load_profile_table(parquet_path) == {"x": [1.0, 2.0], "c": ["a", None]}
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        load_profile_table(tmp_path / "train.json")


def test_profile_from_accumulated_feature_stats_equals_profile_from_columns() -> None:
    rng = np.random.default_rng(22)
    columns = {"x": rng.normal(0.0, 1.0, 2_000).tolist(), "c": rng.choice(["a", "b"], 2_000).tolist(),
               "y": rng.integers(0, 2, 2_000).tolist()}
    stats = {}
    for name in ("x", "c"):
        stats[name] = FeatureStats()
        stats[name].add(columns[name])
    direct = build_profile("m", "1", columns, label_column="y", prediction_column=None, bins=10, top_k=5,
                           created_at_ms=0)
    accumulated = build_profile("m", "1", {"y": columns["y"]}, label_column="y", prediction_column=None,
                                bins=10, top_k=5, created_at_ms=0, feature_stats=stats)
    assert accumulated == direct
