"""The batch drift scorer: known answers, agreement with the pipeline's operators, BH, input checks."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

from driftline.config import DriftSettings
from driftline.operators.drift import score_feature, verdicts
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.scorer import ROW_FIELDS, DriftScorer, ScoreReport
from driftline.operators.window_stats import FeatureStats, WindowAccumulator, merge_partials
from driftline.schemas.events import Prediction

COLORS = ["red", "green", "blue", "grey"]
SHARES = [0.5, 0.3, 0.15, 0.05]


def _table(rng: np.random.Generator, n: int, *, shift: float = 0.0, shares: list[float] = SHARES,
           ) -> dict[str, Any]:
    return {
        "x": rng.normal(10.0 + 2.0 * shift, 2.0, n),  # shift in standard deviations
        "y": rng.lognormal(1.0, 0.4, n),
        "k": rng.poisson(4.0, n),
        "color": rng.choice(COLORS, n, p=shares),
        "flag": rng.random(n) < 0.3,
    }


@pytest.fixture(scope="module")
def scorer() -> DriftScorer:
    return DriftScorer.from_reference(_table(np.random.default_rng(0), 20_000))


# -- known answers ---------------------------------------------------------------------------------


def test_identical_distributions_drift_nowhere(scorer: DriftScorer) -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        report = scorer.score(_table(rng, 5_000))
        assert not report.drifted and report.drifted_features == [] and report.n_drifted == 0
        assert report.n_tested == report.n_features == 5
        assert all(not r.drifted and r.drifted_by == () for r in report)


def test_the_reference_itself_scores_zero() -> None:
    table = _table(np.random.default_rng(2), 3_000)
    report = DriftScorer.from_reference(table).score(table)
    for r in report:
        assert r.psi == pytest.approx(0.0, abs=1e-12) and r.js == pytest.approx(0.0, abs=1e-7)
        assert r.pvalue == pytest.approx(1.0) and not r.drifted
    assert report["x"].ks == 0.0 and report["x"].wasserstein == pytest.approx(0.0, abs=1e-12)
    assert report["color"].chi2 == pytest.approx(0.0, abs=1e-9)


def test_shifted_numeric_and_changed_categorical_are_exactly_the_ones_flagged(scorer: DriftScorer) -> None:
    rng = np.random.default_rng(3)
    window = _table(rng, 5_000, shift=0.5, shares=[0.25, 0.3, 0.15, 0.3])
    report = scorer.score(window)
    assert report.drifted and report.drifted_features == ["color", "x"]
    x, color = report["x"], report["color"]
    assert x.kind == "numeric" and x.drifted_by[0] == "ks" and "psi" in x.drifted_by
    assert color.kind == "categorical" and color.drifted_by[0] == "chi2"
    assert x.p_adj is not None and x.p_adj < 1e-10 and x.wasserstein == pytest.approx(1.0, rel=0.1)
    assert color.ks is None and color.wasserstein is None and color.chi2_pvalue is not None
    assert {r.feature for r in report if not r.drifted} == {"y", "k", "flag"}


def test_statistics_equal_score_feature_and_verdicts_directly() -> None:
    rng = np.random.default_rng(4)
    reference = _table(rng, 8_000)
    window = _table(rng, 2_000, shift=0.15, shares=[0.45, 0.3, 0.15, 0.1])
    cfg = DriftSettings(bins=12, top_k=3, fdr_q=0.05)
    scorer = DriftScorer.from_reference(reference, drift=cfg)
    columns = {k: v.tolist() for k, v in reference.items()}
    profile = build_profile("batch", "reference", columns, label_column=None, prediction_column=None,
                            bins=12, top_k=3)
    assert scorer.profile.profile_id == profile.profile_id and scorer.profile.features == profile.features
    scores = {}
    for name, fprofile in profile.features.items():
        stats = FeatureStats()
        stats.add(window[name].tolist())
        scores[name] = score_feature(fprofile, stats, cfg)
    expected = verdicts(scores, cfg)
    report = scorer.score(window)
    for name, s in scores.items():
        r = report[name]
        assert r.score == s
        assert (r.n, r.psi, r.js, r.ks, r.ks_pvalue, r.wasserstein, r.chi2, r.chi2_pvalue, r.pvalue) == (
            s.count, s.psi, s.js_distance, s.ks_stat, s.ks_pvalue, s.wasserstein, s.chi2_stat,
            s.chi2_pvalue, s.pvalue)
        v = expected.features[name]
        assert (r.drifted, list(r.drifted_by), r.p_adj) == (v.drifted, v.drifted_by, v.p_adj)
    assert report.drifted_features == expected.drifted_features and report.drifted == expected.drifted


def test_benjamini_hochberg_keeps_false_verdicts_at_the_configured_rate() -> None:
    """Under the global null, BH at q bounds P(any false verdict) by q (magnitude gate switched off)."""
    q, trials, n_features = 0.05, 300, 20
    cfg = DriftSettings(fdr_q=q, psi_threshold=1e-9, js_threshold=1e-9)
    rng = np.random.default_rng(5)
    any_false = any_raw = 0
    for _ in range(trials):
        reference = {f"f{i}": rng.normal(0.0, 1.0, 1_000) for i in range(n_features)}
        reference["c"] = rng.choice(COLORS, 1_000, p=SHARES)
        window = {f"f{i}": rng.normal(0.0, 1.0, 400) for i in range(n_features)}
        window["c"] = rng.choice(COLORS, 400, p=SHARES)
        report = DriftScorer.from_reference(reference, drift=cfg).score(window)
        any_false += report.drifted
        any_raw += any(r.pvalue is not None and r.pvalue < q for r in report)
    sd = math.sqrt(trials * q * (1 - q))
    assert any_false <= q * trials + 3 * sd  # 15 expected at most, 26.3 allowed (20 seen)
    # Without the correction (21 raw tests at q) most trials would carry a false flag.
    assert any_raw >= 0.5 * trials  # 1 - 0.95**21 = 66 % expected


def test_small_windows_get_scores_but_no_verdict(scorer: DriftScorer) -> None:
    window = _table(np.random.default_rng(6), 50, shift=3.0)
    report = scorer.score(window)
    assert report.n_tested == 0 and not report.drifted
    assert report["x"].n == 50 and report["x"].psi is not None and report["x"].psi > 1
    assert report["x"].p_adj is None and not report["x"].drifted


# -- missing values, reports ------------------------------------------------------------------------


def test_missing_and_invalid_values_are_counted(scorer: DriftScorer) -> None:
    window = _table(np.random.default_rng(7), 1_000)
    x = window["x"].tolist()
    x[:10] = [None] * 5 + [math.nan] * 5
    x[10:13] = [math.inf, -math.inf, math.inf]
    color = window["color"].astype(object)
    color[:7] = None
    color[7:9] = math.nan  # pandas' missing string
    window.update(x=x, color=color)
    report = scorer.score(window)
    assert (report["x"].n, report["x"].missing, report["x"].invalid) == (987, 10, 3)
    assert (report["color"].n, report["color"].missing, report["color"].invalid) == (991, 9, 0)
    assert report.n_rows == 1_000


def test_rows_table_and_profile_round_trip(scorer: DriftScorer) -> None:
    window = _table(np.random.default_rng(8), 5_000, shift=0.5)
    report = scorer.score(window)
    rows = report.to_rows()
    assert [r["feature"] for r in rows] == ["x", "y", "k", "color", "flag"]
    assert all(tuple(r) == ROW_FIELDS for r in rows)
    assert rows[0]["drifted"] is True and rows[0]["drifted_by"].startswith("ks,")
    text = str(report)
    assert text.splitlines()[0].split()[:3] == ["feature", "kind", "n"]
    assert text.splitlines()[-1].startswith("5 features, 1 drifted (x) at fdr_q=0.01")
    assert "categorical" in report.table(columns=("feature", "kind"))
    with pytest.raises(ValueError, match="unknown column"):
        report.table(columns=("feature", "nope"))
    with pytest.raises(KeyError, match="'nope'"):
        report["nope"]
    loaded = ReferenceProfile.model_validate_json(scorer.profile.model_dump_json())
    assert DriftScorer(loaded).score(window).to_rows() == rows


def test_prediction_column_is_scored_but_not_in_the_verdict() -> None:
    rng = np.random.default_rng(9)
    ref = _table(rng, 4_000)
    ref["label"] = rng.integers(0, 2, 4_000)
    ref["pred"] = np.where(rng.random(4_000) < 0.9, ref["label"], 1 - ref["label"])
    scorer = DriftScorer.from_reference(ref, label_column="label", prediction_column="pred")
    assert scorer.features == ["x", "y", "k", "color", "flag"]
    assert scorer.profile.task == "classification" and scorer.profile.baseline["accuracy"] > 0.85
    window = _table(rng, 2_000)
    window["pred"] = np.ones(2_000, dtype=np.int64)  # every prediction the same class
    report = scorer.score(window)
    assert report.prediction is not None and report.prediction.feature == "pred"
    assert report.prediction.kind == "categorical" and report.prediction.psi is not None
    assert report.prediction.psi > 1 and not report.prediction.drifted and not report.drifted
    assert "pred" not in report and len(report.to_rows(include_prediction=True)) == 6
    del window["pred"]
    assert scorer.score(window).prediction is None  # the window may lack it


# -- input checks ----------------------------------------------------------------------------------


def test_feature_selection_and_its_errors() -> None:
    table = _table(np.random.default_rng(10), 500)
    assert DriftScorer.from_reference(table, features=["color", "x"]).features == ["color", "x"]
    with pytest.raises(ValueError, match=r"column\(s\) 'nope' not in the reference table"):
        DriftScorer.from_reference(table, features=["x", "nope"])
    with pytest.raises(ValueError, match="not the string 'x'"):
        DriftScorer.from_reference(table, features="x")
    with pytest.raises(ValueError, match=r"column\(s\) 'lbl' not in the reference table"):
        DriftScorer.from_reference(table, label_column="lbl")
    with pytest.raises(ValueError, match="both a feature and the label"):
        DriftScorer.from_reference(table, features=["x", "k"], label_column="k")


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ([b"a", b"b"], "column 'bad' holds bytes values"),
        ([np.datetime64("2024-01-01"), None], "column 'bad' holds date values"),
        ([{"a": 1}, None], "column 'bad' holds dict values"),
        ([1.0, "a"], "column 'bad' of the reference table mixes numbers and strings"),
        ("ab", "column 'bad' is not a sequence"),
        ([None, math.nan], r"column\(s\) 'bad' hold no usable value"),
    ],
)
def test_reference_columns_of_the_wrong_type(column: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftScorer.from_reference({"ok": [1.0, 2.0], "bad": column})


def test_window_errors_name_the_column(scorer: DriftScorer) -> None:
    window = _table(np.random.default_rng(11), 200)
    with pytest.raises(ValueError, match=r"column\(s\) 'x', 'flag' not in the window table"):
        scorer.score({k: v for k, v in window.items() if k not in ("x", "flag")})
    with pytest.raises(ValueError, match="column 'x' is numeric in the reference but the window holds"):
        scorer.score({**window, "x": ["a"] * 200})
    with pytest.raises(ValueError, match="column 'color' is categorical in the reference but"):
        scorer.score({**window, "color": np.arange(200)})
    with pytest.raises(ValueError, match="columns differ in length"):
        scorer.score({**window, "y": window["y"][:10]})
    with pytest.raises(ValueError, match="column 'k' holds bytes values"):
        scorer.score({**window, "k": [b"1"] * 200})
    with pytest.raises(ValueError, match="expected a table"):
        scorer.score([1, 2, 3])
    with pytest.raises(ValueError, match="has no rows"):
        DriftScorer.from_reference({"x": []})
    # Extra columns are ignored; numpy scalars in plain lists are plain values.
    extra = {**window, "id": list(range(200)), "color": [np.str_(c) for c in window["color"]]}
    assert scorer.score(extra).n_features == 5


def test_pandas_input() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(12)
    frame = pd.DataFrame(_table(rng, 5_000))
    frame["color"] = frame["color"].astype("category")
    frame["k"] = frame["k"].astype("Int64")
    frame.loc[:9, "k"] = pd.NA
    scorer = DriftScorer.from_reference(frame)
    assert scorer.profile.features["k"].n == 4_990
    window = pd.DataFrame(_table(rng, 2_000, shift=0.5, shares=[0.25, 0.3, 0.15, 0.3]))
    window.loc[:4, "color"] = np.nan
    window.loc[:2, "x"] = np.nan
    report = scorer.score(window)
    assert isinstance(report, ScoreReport) and report.drifted_features == ["color", "x"]
    assert (report["x"].missing, report["color"].missing) == (3, 5)
    assert pd.DataFrame(report.to_rows()).shape == (5, len(ROW_FIELDS))
    dict_report = DriftScorer.from_reference(frame.to_dict("list")).score(window.to_dict("list"))
    assert dict_report.to_rows() == report.to_rows()
    with pytest.raises(ValueError, match="column 'when' holds Timestamp values"):
        DriftScorer.from_reference(frame.assign(when=pd.Timestamp("2024-01-01")))


def test_pyarrow_input() -> None:
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(13)
    ref, win = _table(rng, 3_000), _table(rng, 1_000, shift=0.5)
    scorer = DriftScorer.from_reference(pa.table(ref))
    assert scorer.score(pa.table(win)).to_rows() == DriftScorer.from_reference(ref).score(win).to_rows()


# -- decision rule, reasons ------------------------------------------------------------------------


def test_default_effect_floor_flags_a_small_significant_shift_and_says_why(scorer: DriftScorer) -> None:
    rng = np.random.default_rng(14)
    window = _table(rng, 5_000, shift=0.15)  # 0.15 sd: far under PSI 0.2 / JS 0.1, over 0.05 sd
    report = scorer.score(window)
    x = report["x"]
    assert report.drifted_features == ["x"] and x.drifted_by == ("ks", "effect")
    assert x.effect == pytest.approx(0.15, abs=0.03)
    assert x.reason.startswith("ks p_adj ") and x.reason.endswith("sd >= 0.05")
    assert report["y"].reason.startswith("ks p_adj ") and ">= fdr_q 0.01" in report["y"].reason
    pipeline = DriftScorer(scorer.profile, drift=DriftSettings()).score(window)["x"]
    assert not pipeline.drifted and "but psi" in pipeline.reason and "effect" not in pipeline.reason
    assert "reason" in str(report).splitlines()[0] and "effect >= 0.05 sd" in str(report).splitlines()[-1]
    assert report.to_rows()[0]["reason"] == x.reason and "effect=" in repr(x)


def test_a_significant_shift_below_every_floor_is_not_drift() -> None:
    rng = np.random.default_rng(15)
    reference = {"x": rng.normal(0.0, 1.0, 200_000)}
    report = DriftScorer.from_reference(reference).score({"x": rng.normal(0.03, 1.0, 200_000)})
    x = report["x"]
    assert x.p_adj is not None and x.p_adj < 1e-6 and not x.drifted
    assert x.effect is not None and x.effect < 0.05 and "but effect" in x.reason
    small = DriftScorer.from_reference(reference).score({"x": rng.normal(3.0, 1.0, 20)})
    assert small["x"].reason == "not tested: 20 values < min_count 100"


def test_categorical_effect_is_cohens_w() -> None:
    reference = {"c": ["a"] * 500 + ["b"] * 500}
    window = {"c": ["a"] * 600 + ["b"] * 400}
    c = DriftScorer.from_reference(reference).score(window)["c"]
    # Two categories: w is the change of a share (0.1) in sd units of its indicator (0.5).
    assert c.effect == pytest.approx(0.2) and c.drifted and c.drifted_by == ("chi2", "effect")


# -- dtypes ----------------------------------------------------------------------------------------


def test_integer_codes_declared_categorical() -> None:
    rng = np.random.default_rng(16)
    codes = rng.choice([1, 2, 7], 4_000, p=[0.5, 0.3, 0.2])
    reference = {"x": rng.normal(0.0, 1.0, 4_000), "region": codes}
    with pytest.warns(UserWarning, match=r"column 'region' holds integers with 3 distinct values"):
        DriftScorer.from_reference(reference)
    scorer = DriftScorer.from_reference(reference, categorical=["region"])
    region = scorer.profile.features["region"]
    assert region.kind == "categorical" and region.categories == ["1", "2", "7"]
    window = {"x": rng.normal(0.0, 1.0, 2_000), "region": rng.choice([1, 2, 7], 2_000, p=[0.2, 0.3, 0.5])}
    report = scorer.score(window)
    assert report.drifted_features == ["region"] and report["region"].kind == "categorical"
    as_lists = scorer.score({k: v.tolist() for k, v in window.items()})
    as_floats = scorer.score({**window, "region": window["region"].astype(float)})
    assert as_lists.to_rows() == report.to_rows() == as_floats.to_rows()
    with pytest.raises(ValueError, match=r"pass categorical=\['color'\] if they are codes"):
        DriftScorer.from_reference({"color": ["a", "b"] * 100}).score({"color": np.arange(200)})
    with pytest.raises(ValueError, match="declared both categorical and numeric"):
        DriftScorer.from_reference(reference, categorical=["region"], numeric=["region"])
    with pytest.raises(ValueError, match="declared categorical/numeric but not features"):
        DriftScorer.from_reference(reference, categorical=["nope"])


def test_numeric_declaration_silences_the_warning_and_scores_bools_as_numbers() -> None:
    rng = np.random.default_rng(17)
    reference = {"k": rng.integers(0, 4, 3_000), "flag": rng.random(3_000) < 0.3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorer = DriftScorer.from_reference(reference, numeric=["k", "flag"])
    kinds = {name: f.kind for name, f in scorer.profile.features.items()}
    assert kinds == {"k": "numeric", "flag": "numeric"}
    assert scorer.profile.features["flag"].mean == pytest.approx(0.3, abs=0.03)
    report = scorer.score({"k": rng.integers(0, 4, 1_000), "flag": rng.random(1_000) < 0.6})
    assert report["flag"].kind == "numeric" and report.drifted_features == ["flag"]
    with pytest.raises(ValueError, match="declared numeric but holds strings"):
        DriftScorer.from_reference({"s": np.array(["a", "b"])}, numeric=["s"])


def test_pandas_dtypes_are_respected() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(18)
    n = 3_000
    frame = pd.DataFrame({
        "size": pd.Categorical(rng.choice([10, 20, 30], n)),  # integer categories: categorical
        "ok": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        "name": pd.array(rng.choice(["ann", "bob"], n), dtype="string"),
        "v": rng.normal(0.0, 1.0, n).astype(np.float32),
    })
    frame.loc[:4, "name"] = pd.NA
    frame.loc[:2, "ok"] = pd.NA
    scorer = DriftScorer.from_reference(frame)
    kinds = {name: f.kind for name, f in scorer.profile.features.items()}
    assert kinds == {"size": "categorical", "ok": "categorical", "name": "categorical", "v": "numeric"}
    assert sorted(scorer.profile.features["size"].categories) == ["10", "20", "30"]
    assert set(scorer.profile.features["ok"].categories) == {"true", "false"}
    report = scorer.score(frame)
    assert report.drifted_features == [] and (report["name"].missing, report["ok"].missing) == (5, 3)
    assert report["size"].effect == pytest.approx(0.0, abs=1e-9)


def test_pyarrow_dictionary_and_null_columns() -> None:
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(19)
    colors = rng.choice(COLORS, 2_000, p=SHARES).tolist()
    colors[:4] = [None] * 4
    x = rng.normal(0.0, 1.0, 2_000).tolist()
    x[:3] = [None] * 3
    table = pa.table({"color": pa.array(colors).dictionary_encode(), "x": pa.array(x)})
    scorer = DriftScorer.from_reference(table)
    report = scorer.score(table)
    assert (report["color"].missing, report["x"].missing) == (4, 3)
    assert report.to_rows() == DriftScorer.from_reference({"color": colors, "x": x}).score(
        {"color": colors, "x": x}).to_rows()


def test_score_stats_of_merged_partials_equals_score_of_the_table(scorer: DriftScorer) -> None:
    """Stage 2's path: statistics accumulated in parts and merged score as the whole table does."""
    window = _table(np.random.default_rng(20), 4_000, shift=0.3)
    halves = []
    for part in (slice(0, 1_500), slice(1_500, 4_000)):
        acc = WindowAccumulator()
        rows = [{k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in window.items()}
                for i in range(part.start, part.stop)]
        acc.add(rows, [Prediction(label="a")] * len(rows), [None] * len(rows))
        halves.append(acc.to_partial())
    merged = merge_partials(halves)
    from_stats = scorer.score_stats(merged.features)
    from_table = scorer.score(window)
    assert from_stats.to_rows() == from_table.to_rows() and from_stats.n_rows == 4_000
    assert scorer.score_stats({}).n_tested == 0


def test_feature_result_is_what_the_dataclass_makes() -> None:
    """``_result`` fills a FeatureResult's dict directly (the frozen dataclass's __init__ was most
    of scoring a small window): every field, in field order, equal to what the constructor makes,
    scored and under-filled, drifted and not."""
    import dataclasses

    from driftline.operators.scorer import FeatureResult

    rng = np.random.default_rng(3)
    reference = {"x": rng.normal(size=2_000).tolist(), "c": rng.choice(["a", "b", "c"], 2_000).tolist()}
    scorer = DriftScorer.from_reference(reference)
    names = [f.name for f in dataclasses.fields(FeatureResult)]
    for size, shift in ((2_000, 1.0), (2_000, 0.0), (30, 0.0)):
        window = {"x": (rng.normal(size=size) + shift).tolist(), "c": rng.choice(["a", "b"], size).tolist()}
        for report in (scorer.score(window), scorer.count_stats(
                {n: _stats(v) for n, v in window.items()}, n_rows=size)):
            for result in report:
                made = FeatureResult(**{n: getattr(result, n) for n in names})
                assert list(vars(result)) == list(vars(made)) == names
                assert result == made and hash(result) == hash(made) and repr(result) == repr(made)
                with pytest.raises(dataclasses.FrozenInstanceError):
                    result.n = 0  # type: ignore[misc]
    assert scorer.score({"x": (rng.normal(size=2_000) + 1.0).tolist(), "c": ["a"] * 2_000}).drifted_features


def _stats(values: list[Any]) -> FeatureStats:
    stats = FeatureStats()
    stats.add(values)
    return stats
