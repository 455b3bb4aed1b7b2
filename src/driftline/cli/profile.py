"""`driftline profile build|show`: reference profiles from training data.

``build`` reads a CSV or Parquet training table, builds the :class:`ReferenceProfile`, publishes
its JSON on ``topics.profiles`` (key = model_id; the pipeline reads that compacted topic) and
stores the ``reference_profiles`` row — directly when ClickHouse can be opened here, else through
the sink topic to the worker that owns the embedded engine. The profile id hashes the content, so
building again from the same data is idempotent on both. ``show`` prints the latest stored profile.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from rich.console import Console, JustifyMethod
from rich.table import Table

from driftline.cli.common import print_table, require_broker, settings_from_args
from driftline.config import Settings
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.model_watch import (
    MIN_ROWS,
    NEAR_CONSTANT_SHARE,
    constant_features,
    multivariate_section,
)
from driftline.operators.multivariate import numeric_features
from driftline.operators.profile import (
    FeatureProfile,
    ReferenceProfile,
    SeasonSection,
    build_profile,
    load_profile_table,
)
from driftline.operators.seasonal import (
    DAILY,
    Season,
    cycle_strengths,
    describe,
    fit_season,
    parse_season,
    period_name,
    season_of,
    seasonal_multivariate_section,
    slot_name,
    standardise_columns,
    strong_cycles,
)
from driftline.pipeline.records import episode_grid_ms
from driftline.schemas.events import MAX_NAME_LENGTH, EpochMillis
from driftline.store.client import StoreError, database_name
from driftline.store.guard import QueryRejected
from driftline.store.profiles import PublishError, publish_profile
from driftline.store.query import run_query

# The value types a feature can have on the wire (PredictionEvent.features).
WIRE_TYPES = (bool, int, float, str)
_EPOCH_MILLIS: TypeAdapter[int] = TypeAdapter(EpochMillis)


class InputError(Exception):
    """The training data or the options cannot make a profile (exit code 2)."""


def register(sub: Any) -> None:
    parser = sub.add_parser("profile", help="reference profiles: build one from training data, show one")
    actions = parser.add_subparsers(dest="profile_command", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        help="build a model version's reference profile from a CSV or Parquet training table",
        description="Profile the training table (quantile bins per numeric feature, top-k categories "
        "per categorical one, the prediction distribution and a baseline metric), publish it on the "
        "profiles topic and store it in ClickHouse (reference_profiles).",
    )
    build.add_argument("--model", required=True, metavar="MODEL_ID", help="model the profile describes")
    build.add_argument("--version", required=True, metavar="VERSION", help="model version it describes")
    build.add_argument("--data", required=True, type=Path, metavar="FILE",
                       help="training table (.csv or .parquet)")
    build.add_argument("--label-column", metavar="COLUMN", help="ground-truth column (not a feature)")
    build.add_argument("--prediction-column", metavar="COLUMN",
                       help="the model's predictions on the table: profiled as the prediction "
                       "distribution; with --label-column it gives the baseline metric")
    build.add_argument("--score-column", metavar="COLUMN",
                       help="the classifier's score (not a feature; see --score-kind): with "
                       "--label-column it calibrates the performance estimated before labels (CBPE)")
    build.add_argument("--score-kind", choices=("positive", "confidence"), default="positive",
                       help="what --score-column holds: a binary classifier's score of the positive "
                       "class (default), or the confidence of the predicted class, any number of "
                       "classes (needs --prediction-column; estimates accuracy only)")
    build.add_argument("--cbpe-calibration", choices=("score", "features", "auto"), default="score",
                       help="how --score-column is calibrated for CBPE: on the score alone (isotonic, "
                       "default), on the score and the numeric features (shallow gradient-boosted trees, "
                       "monotone in the score: unbiased when the model's error depends on a feature it "
                       "under-uses and the inputs shift along it), or auto: the features only if their "
                       "cross-validated Brier score on the table (contiguous blocks of rows) is lower; "
                       "the choice and both scores are recorded in the profile")
    build.add_argument("--no-multivariate", action="store_true",
                       help="leave out the multivariate section (reconstruction drift, outlier rate, "
                       "domain classifier, CBPE), otherwise added from 500 rows with 2 numeric features")
    build.add_argument("--feature", dest="features", action="extend", nargs="+", metavar="COLUMN",
                       help="feature column(s) to profile (default: every other column)")
    build.add_argument("--effective-from", type=_epoch_millis, default=0, metavar="TIME",
                       help="event time (RFC 3339 or epoch ms) from which windows use this profile "
                       "(default: always)")
    build.add_argument("--time-column", metavar="COLUMN",
                       help="each row's event time (epoch ms, RFC 3339 or a timestamp; not a feature): "
                       "a strong daily cycle in the training data is then reported (and recorded in the "
                       "profile); with --season the profile learns the cycle")
    build.add_argument("--season", type=_season, metavar="CYCLE",
                       help="daily, weekly or a period in seconds (needs --time-column): windows, the "
                       "per-event detectors and the multivariate monitor compare each event with its "
                       "time's slot of the cycle, so a stream that only repeats its training cycle is "
                       "not drift (default: one pooled reference)")
    build.add_argument("--season-slots", type=_int_in(1, 10_000), metavar="N",
                       help="slots the --season period is cut into (default: one an hour)")
    build.add_argument("--season-tz", type=_time_zone, default="UTC", metavar="ZONE",
                       help="IANA time zone whose local time the --season slots follow, e.g. Europe/Berlin "
                       "(default: UTC): traffic that follows local time keeps its hours across a "
                       "daylight-saving change, which in UTC reads as a 1 h phase shift twice a year")
    build.add_argument("--bins", type=_int_in(2, 1000), metavar="N",
                       help="quantile bins per numeric feature (default: drift.bins)")
    build.add_argument("--top-k", type=_int_in(1, 1_000_000), metavar="K",
                       help="categories kept per categorical feature (default: drift.top_k)")
    build.add_argument("--no-publish", action="store_true",
                       help="only build and print it (and write --out): nothing goes to Kafka or ClickHouse")
    build.add_argument("--out", type=Path, metavar="FILE",
                       help="also write the profile JSON to FILE (one line: usable as `replay --profiles`)")
    build.set_defaults(handler=cmd_build)

    show = actions.add_parser("show", help="print the latest stored reference profile of a model")
    show.add_argument("--model", required=True, metavar="MODEL_ID", help="model id")
    show.add_argument("--version", metavar="VERSION", help="model version (default: any)")
    show.add_argument("--json", action="store_true", help="print the profile JSON instead of a table")
    show.set_defaults(handler=cmd_show)


# -- argument types --------------------------------------------------------------------------------


def _epoch_millis(text: str) -> int:
    value = text.strip()
    try:
        return _EPOCH_MILLIS.validate_python(int(value) if value.isdigit() else value)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither epoch milliseconds nor an RFC 3339 time (1970..9999)"
        ) from None


def _season(text: str) -> Season:
    try:
        return parse_season(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _time_zone(text: str) -> str:
    try:
        return Season(period_s=DAILY.period_s, slots=DAILY.slots, timezone=text.strip()).timezone
    except ValidationError as error:
        raise argparse.ArgumentTypeError("; ".join(str(e["msg"]).removeprefix("Value error, ")
                                                   for e in error.errors())) from None


def _int_in(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]")
        return value

    return parse


# -- build -----------------------------------------------------------------------------------------


def select_columns(
    table: Mapping[str, list[Any]],
    *,
    label_column: str | None,
    prediction_column: str | None,
    features: Sequence[str] | None,
    source: str,
) -> tuple[dict[str, list[Any]], list[str]]:
    """The columns to profile, and the names of columns skipped for holding non-wire values.

    Raises InputError for an empty table, an unknown column, or a named column whose values are
    not numbers, strings or bools (as features are on the wire).

    >>> select_columns({"x": [1, 2], "y": ["a", "b"], "t": [None, b"?"]}, label_column="y",
    ...                prediction_column=None, features=None, source="f.csv")
    ({'x': [1, 2], 'y': ['a', 'b']}, ['t'])
    """
    if not table or not any(len(values) for values in table.values()):
        raise InputError(f"{source} has no rows")
    targets = [c for c in (label_column, prediction_column) if c is not None]
    named = [*targets, *(features or ())]
    unknown = [c for c in dict.fromkeys(named) if c not in table]
    if unknown:
        listed = ", ".join(list(table)[:30]) + (", ..." if len(table) > 30 else "")
        raise InputError(f"column(s) {', '.join(map(repr, unknown))} not in {source} (columns: {listed})")
    wanted = list(dict.fromkeys([*(features if features else table), *targets]))
    columns: dict[str, list[Any]] = {}
    skipped: list[str] = []
    for name in wanted:
        bad = _foreign_type(table[name])
        if bad is None:
            columns[name] = table[name]
        elif name in named:
            raise InputError(f"column {name!r} of {source} holds {bad} values; "
                             "features and outputs are numbers, strings or bools")
        else:
            skipped.append(name)
    if not any(name not in targets for name in columns):
        raise InputError(f"{source} has no feature column left to profile")
    return columns, skipped


LABEL_NAMES = frozenset({"label", "labels", "target", "y", "ground_truth", "truth", "actual"})
OUTPUT_NAMES = LABEL_NAMES | {"prediction", "predictions", "predicted", "pred", "y_pred", "score"}
"""Column names that usually hold a model's output or its ground truth, not an input."""


def output_like_features(columns: Sequence[str], label_column: str | None,
                         prediction_column: str | None) -> list[str]:
    """The columns profiled as features whose names say output or ground truth, while the
    matching option is not given: a label profiled as a feature never arrives with the events
    (every window shows it missing) and is not the label the accuracy baseline reads.

    >>> output_like_features(["x", "label", "Prediction"], None, None)
    ['label', 'Prediction']
    >>> output_like_features(["x", "label", "pred"], "label", "pred")
    []
    """
    given = {label_column, prediction_column}
    return [c for c in columns if c not in given and c.lower() in OUTPUT_NAMES]


def _foreign_type(values: list[Any]) -> str | None:
    """Name of the first value type that cannot be a wire feature value, if any."""
    for kind in {type(v) for v in values}:
        if kind is not type(None) and kind not in WIRE_TYPES:
            return kind.__name__
    return None


def load_and_build(args: argparse.Namespace, settings: Settings, err: Console) -> ReferenceProfile:
    """Read ``args.data`` and build the profile the options describe; raises InputError."""
    path: Path = args.data
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        table = load_profile_table(path)
    except (ValueError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"cannot read {path}: {_first_line(error)}") from None
    times = _times(table, args, str(path))
    not_features = {args.label_column, args.prediction_column, args.score_column}
    unnamed = [name for name in table if not 0 < len(name) <= MAX_NAME_LENGTH and name not in not_features]
    if unnamed:
        # an event cannot carry such a feature (the schema's names), so every window would find it
        # missing: most often the unnamed index column a table was written with
        table = {name: values for name, values in table.items() if name not in unnamed}
        err.print(f"skipped column(s) {', '.join(map(repr, unnamed))}: a feature name has 1 to "
                  f"{MAX_NAME_LENGTH} characters (an unnamed first column is often the index the table "
                  "was written with)", markup=False, soft_wrap=True)
    columns, skipped = select_columns(table, label_column=args.label_column,
                                      prediction_column=args.prediction_column,
                                      features=args.features, source=str(path))
    if skipped:
        err.print(f"skipped column(s) {', '.join(skipped)}: not numbers, strings or bools", markup=False)
    if args.features is None:
        for name in output_like_features(list(columns), args.label_column, args.prediction_column):
            option = "--label-column" if name.lower() in LABEL_NAMES else "--prediction-column"
            err.print(f"note: column {name!r} is profiled as a feature; if it is the model's "
                      f"{'ground truth' if option == '--label-column' else 'output'}, pass {option} {name} "
                      "(or --features to list the inputs)", markup=False, soft_wrap=True)
    scores = None
    if args.score_column is not None:
        if args.score_column not in table:
            raise InputError(f"column {args.score_column!r} not in {path}")
        if args.label_column is None:
            raise InputError("--score-column needs --label-column (the calibration needs the true classes)")
        if args.score_kind == "confidence" and args.prediction_column is None:
            raise InputError("--score-kind confidence needs --prediction-column (P(prediction correct))")
        scores = table[args.score_column]
        columns.pop(args.score_column, None)
    elif args.cbpe_calibration != "score":
        raise InputError("--cbpe-calibration needs --score-column and --label-column (what it calibrates)")
    outputs = {args.label_column, args.prediction_column}
    season, detected = _season_section(args, {n: v for n, v in columns.items() if n not in outputs}, times)
    multivariate = None
    if not args.no_multivariate:
        raw_columns = feature_columns = {n: v for n, v in columns.items() if n not in outputs}
        if season is not None and times is not None:  # the section learns the standardised features
            feature_columns = standardise_columns(season, feature_columns, times)
        numeric = numeric_features(feature_columns)
        rows = max((len(v) for v in feature_columns.values()), default=0)
        # a table too short for a section gets none whatever its columns: nothing to say then
        constant = constant_features(feature_columns, numeric) if rows >= MIN_ROWS else []
        if constant:
            varying = len(numeric) - len(constant)
            left = ("" if varying >= 2 else
                    f"; {varying} numeric feature(s) left, fewer than 2: no multivariate section")
            err.print(f"multivariate section: left out constant feature(s) {', '.join(constant)} (one value "
                      f"in at least {NEAR_CONSTANT_SHARE:.0%} of the rows){left}", markup=False)
        options: dict[str, Any] = dict(
            scores=scores,
            labels=columns[args.label_column] if args.label_column is not None else None,
            predictions=columns[args.prediction_column] if args.prediction_column is not None else None,
            score_kind=args.score_kind, calibration=args.cbpe_calibration,
            bins=args.bins or settings.drift.bins)
        multivariate = (seasonal_multivariate_section(season, raw_columns, times, **options)
                        if season is not None and times is not None
                        else multivariate_section(feature_columns, **options))
    profile = build_profile(
        args.model, args.version, columns,
        label_column=args.label_column, prediction_column=args.prediction_column,
        bins=args.bins or settings.drift.bins, top_k=args.top_k or settings.drift.top_k,
        effective_from_ms=args.effective_from, multivariate=multivariate,
        season=season, detected_cycle=detected,
    )
    if not profile.features:
        raise InputError(f"{path}: the feature columns hold no usable values (all null)")
    if settings.sequential.enabled:
        cfg = settings.sequential
        watch = FeatureWatch(cfg.false_alarms_per_million, status_grid_ms=episode_grid_ms(settings),
                             min_effect_sd=cfg.min_effect_sd, learning=cfg.learning)
        for name, why in watch.unmonitored(profile).items():
            err.print(f"note: feature {name!r} gets no sequential monitor ({why}); its windows still get "
                      "drift scores", markup=False, soft_wrap=True)
    return profile


def _times(table: dict[str, list[Any]], args: argparse.Namespace, source: str) -> list[int] | None:
    """The rows' event times in epoch ms (the column taken out of ``table``), None without one."""
    if args.time_column is None:
        if args.season is not None:
            raise InputError("--season needs --time-column (the cycle is read from each row's event time)")
        return None
    if args.time_column not in table:
        raise InputError(f"column {args.time_column!r} not in {source}")
    times = []
    for row, value in enumerate(table.pop(args.time_column)):
        if isinstance(value, datetime):
            value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            times.append(int(value.timestamp() * 1000))
            continue
        try:
            times.append(_EPOCH_MILLIS.validate_python(int(value) if isinstance(value, float) else value))
        except (ValidationError, TypeError, ValueError):
            raise InputError(f"{source}: row {row + 1} of {args.time_column!r} is not a time: "
                             f"{value!r}") from None
    return times


def _season_section(args: argparse.Namespace, features: dict[str, list[Any]], times: list[int] | None,
                    ) -> tuple[SeasonSection | None, dict[str, float] | None]:
    """The season asked for, or (no --season) the strong daily cycles found; both said on stdout."""
    if args.season is None and args.season_tz != "UTC":
        raise InputError("--season-tz needs --season (the zone whose local time the season's slots follow)")
    if times is None:
        return None, None
    if args.season is None:
        strong = strong_cycles(cycle_strengths(features, times, DAILY))
        if not strong:
            return None, None
        print(f"training data: {describe(strong, DAILY.period_s)}; the profile compares every window and "
              "event with the whole day: pass --season daily to compare each with its hour")
        return None, strong
    season = Season(period_s=args.season.period_s, timezone=args.season_tz,
                    slots=args.season.slots if args.season_slots is None else args.season_slots)
    span_s = (max(times) - min(times)) / 1000 if times else 0.0
    if span_s < season.period_s:
        raise InputError(f"--season: the rows' times ({args.time_column}) span {span_s:.0f} s, less than "
                         f"one period ({season.period_s} s): train on whole cycles, two or more")
    try:
        section = fit_season(features, times, season, bins=args.bins or settings_from_args(args).drift.bins)
    except ValueError as error:
        raise InputError(f"--season: {error}") from None
    followed = {name: f.strength for name, f in section.features.items()}
    left = sorted(set(features) - set(followed))
    zone = "" if season.timezone == "UTC" else f" of {season.timezone} local time"
    print(f"season: {season.period_s} s in {season.slots} slots{zone}; following it: "
          + (", ".join(f"{n} ({s:.0%} of its variance)" for n, s in sorted(followed.items())) or "no feature")
          + (f"; pooled (categorical, or too few values in a slot): {', '.join(left)}" if left else ""))
    return section, None


def cmd_build(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    err = Console(stderr=True)
    try:
        profile = load_and_build(args, settings, err)
    except InputError as error:
        print(f"driftline: {error}", file=sys.stderr)
        return 2
    print_table(summary_table(profile))
    if args.out is not None:
        try:
            args.out.write_text(profile.model_dump_json() + "\n", encoding="utf-8")
        except OSError as error:
            print(f"driftline: cannot write {args.out}: {error}", file=sys.stderr)
            return 1
        print(f"wrote {args.out}")
    if args.no_publish:
        print("not published (--no-publish)")
        return 0
    require_broker(settings)  # after the input checks: a bad column is reported even with no broker
    try:
        record, direct = publish_profile(settings, profile)
    except PublishError as error:
        print(f"driftline: {error}", file=sys.stderr)
        return 1
    via = "directly" if direct else f"through {settings.topics.sink} (the worker stores it)"
    print(f"profile {profile.profile_id}: published to {record}; reference_profiles row written {via}")
    return 0


# -- show ------------------------------------------------------------------------------------------


def latest_profile(settings: Settings, model_id: str, model_version: str | None) -> ReferenceProfile | None:
    """The newest live (run_id '') stored profile of the model (version), by created_at."""
    version_filter = "" if model_version is None else " AND model_version = {model_version:String}"
    sql = (f"SELECT profile FROM {database_name(settings)}.reference_profiles FINAL "
           "WHERE run_id = '' AND model_id = {model_id:String}" + version_filter +
           " ORDER BY created_at DESC, effective_from DESC, profile_id DESC LIMIT 1")
    parameters = {"model_id": model_id, "model_version": model_version or ""}
    rows = orjson.loads(run_query(settings, sql, "json", parameters=parameters))["data"]
    return ReferenceProfile.model_validate_json(rows[0]["profile"]) if rows else None


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        profile = latest_profile(settings, args.model, args.version)
    except (StoreError, QueryRejected) as error:
        print(f"driftline: {error}", file=sys.stderr)
        return 1
    except ValidationError as error:
        print(f"driftline: the stored profile is not a valid reference profile: {error.errors()[0]['msg']}",
              file=sys.stderr)
        return 1
    if profile is None:
        version = f" version {args.version!r}" if args.version is not None else ""
        print(f"driftline: no reference profile of model {args.model!r}{version} in ClickHouse: build one "
              f"with `driftline profile build --model {args.model} --version VERSION --data FILE`, or "
              "let a worker take the model's first full window", file=sys.stderr)
        return 1
    if args.json:
        print(profile.model_dump_json())
    else:
        print_table(summary_table(profile))
    return 0


# -- rendering -------------------------------------------------------------------------------------


def summary_table(profile: ReferenceProfile) -> Table:
    """Features (and the prediction) with kind, bins and a one-line description; ids in the caption."""
    baseline = ", ".join(f"{k}={v:.4g}" for k, v in sorted(profile.baseline.items())) or "none"
    table = Table(
        title=f"reference profile of {profile.model_id} version {profile.model_version}",
        caption=f"profile id {profile.profile_id} · {profile.task} · source {profile.source} · "
        f"baseline {baseline} · effective from {_time(profile.effective_from_ms)} · "
        f"created {_time(profile.created_at_ms)}" + _multivariate_caption(profile) + _season_caption(profile),
    )
    columns: list[tuple[str, JustifyMethod]] = [
        ("feature", "left"), ("kind", "left"), ("bins", "right"), ("n", "right"), ("distribution", "left")
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    rows = sorted(profile.features.items())
    if profile.prediction is not None:
        rows.append(("(prediction)", profile.prediction))
    section = profile.season
    for name, feature in rows:
        kind: str = feature.kind
        described = _describe(feature)
        if section is not None and name in section.features:  # its bins are the pooled day's, not a window's
            kind = f"{kind}, seasonal"
            described = (f"pooled {described}; a window is compared with its "
                         f"{slot_name(season_of(section))}'s reference")
        table.add_row(name, kind, str(len(feature.ref_counts)), str(feature.n), described)
    return table


def _multivariate_caption(profile: ReferenceProfile) -> str:
    section = profile.multivariate
    if not section:
        return ""
    performance = section.get("performance")
    cbpe = ""
    if performance:
        on_features = " on the score and the features" if performance.get("by_features") else ""
        cbpe = f" + CBPE calibration{on_features}"
        selection = performance.get("selection")
        if selection:
            brier = selection["brier"]
            cbpe += (f" (auto: cross-validated Brier {brier['score']:.4f} score-only, "
                     f"{brier['features']:.4f} with the features)")
    return f" · multivariate over {len(section['features'])} numeric features{cbpe}"


def _season_caption(profile: ReferenceProfile) -> str:
    """The season and what follows it (the rows show pooled bins: a reader must know windows are
    compared with their slot's), or the strong cycles a profile without one was built over."""
    caption = ""
    section = profile.season
    if section is not None:
        followed = ", ".join(f"{name} ({feature.strength:.0%} of its variance)"
                             for name, feature in sorted(section.features.items())) or "no feature"
        zone = "" if section.timezone == "UTC" else f" of {section.timezone} local time"
        caption += (f" · season {period_name(section.period_s)} ({section.period_s} s) in {section.slots} "
                    f"slots of {season_of(section).slot_ms / 1000:g} s{zone}; the cycle of {followed}: their "
                    "windows and events are compared with their slot's reference, not the pooled bins shown")
    if profile.detected_cycle:
        cycles = ", ".join(f"{name} ({strength:.0%} of its variance)"
                           for name, strength in sorted(profile.detected_cycle.items()))
        hint = "" if section is not None else (", yet no season: every window is compared with the whole day "
                                               "(profile build --season daily compares each with its hour)")
        caption += f" · training showed a strong daily cycle in {cycles}{hint}"
    return caption


def _describe(feature: FeatureProfile) -> str:
    if feature.kind == "numeric":
        std = f" ± {feature.std:.4g}" if feature.std is not None else ""
        return f"mean {feature.mean:.4g}{std}, range [{feature.min:.4g}, {feature.max:.4g}]"
    total = sum(feature.ref_counts) or 1
    shares = [f"{label} {count / total:.0%}" for label, count in zip(feature.bin_labels, feature.ref_counts,
                                                                      strict=True)]
    return ", ".join(shares[:4]) + (", ..." if len(shares) > 4 else "")


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
