"""Decode + validate alone: ``BatchDecoder.predictions/labels`` on the bench workload's batches, in
CPU microseconds per prediction event (its label's decode included), optionally A/B against another
revision's ``columns.py``.

The workload is bench_stages' (20 numeric + 5 categorical features, every prediction labelled), cut
as the in-process pipeline cuts it: micro-batches of ``worker.batch_max_records`` records, split by
partition and topic (about 625 records a call at 4 partitions). Each round decodes every batch once
and keeps no result (the next batch frees the last, as the shard does); the figure is the best round.

``--baseline FILE`` (e.g. ``git show REV:src/driftline/operators/columns.py > /tmp/columns_rev.py``)
decodes the same batches with that module too, batch by batch in turns (so a change of the box's
load weighs on both alike: whole rounds in turns moved the ratio by +-15 % at a load of 10), checks
that both give the same events and dead letters, and reports the ratio.

``--without-c`` decodes the same batches with the C pass off too (``decode_native.NATIVE`` None for
the call: msgspec reads every batch of the common shape), batch by batch in turns as above, checks
that both give the same events and dead letters, and reports the ratio.

``--full-precision`` writes the workload's float features and scores with the 16-17 digits a
computed float prints with (each value ``x`` as ``x * 1.0000000123456789``: 94 % of them then print
16 or 17 significant digits), where the simulator rounds them to 4 decimals: the texts a model
server that sends its float64 features sends, past the C pass's exact path for short decimals.

``--c-revision REV`` decodes the same batches with REV's C pass too (``_decode.c`` compiled in a
worktree of REV and loaded beside this tree's), batch by batch in turns, checks that both give the
same events and dead letters, and reports the ratio: an A/B of a change to the C pass.

``--steps`` also splits the tree's prediction decode into its steps (the compiled pass of a batch of
the common shape, ``struct_decode``, parsing and checking the fields into columns; for a batch it
does not take, the one orjson parse and the field checks and columns with the outputs; then the
feature checks, the time checks and gathering, and freeing what the call built once it is
dropped), each the best of the rounds.

    .venv/bin/python bench/bench_decode.py [--n 50000] [--rounds 7] [--baseline FILE] [--without-c] [--steps]
        [--full-precision] [--c-revision REV] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import sysconfig
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from bench_revisions import revision_tree
from common import bench_scenario, bench_settings, module_from_file, raw_records

from driftline.operators import columns, decode_native, struct_decode
from driftline.operators.validate import Decoder, RawRecord
from driftline.runtime import tune_gc

CLOCK = time.process_time  # CPU time: steadier than wall time on a shared box
Batch = tuple[str, list[RawRecord]]  # ("predictions" or "labels", the records of one call)


def workload_batches(n: int, seed: int = 0, full_precision: bool = False) -> tuple[Decoder, list[Batch], int]:
    """The shard's decoder, the decode calls of the bench workload and its count of predictions
    (``full_precision``: its floats written with all their digits, see the module docstring)."""
    settings = bench_settings("127.0.0.1:9", "bd")
    raw = raw_records(settings, bench_scenario(n, seed))
    if full_precision:
        raw = [with_full_precision(r) if r.topic == settings.topics.predictions else r for r in raw]
    decoder = Decoder(settings.kafka.max_message_bytes, settings.windows.max_timestamp_skew_s * 1000,
                      settings.windows.max_future_skew_s * 1000)
    kinds = {settings.topics.predictions: "predictions", settings.topics.labels: "labels"}
    batches: list[Batch] = []
    step = settings.worker.batch_max_records
    for start in range(0, len(raw), step):
        calls: dict[tuple[int, str], list[RawRecord]] = defaultdict(list)
        for record in raw[start : start + step]:
            calls[(record.partition, kinds[record.topic])].append(record)
        batches.extend((kind, records) for (_, kind), records in sorted(calls.items()))
    return decoder, batches, sum(1 for r in raw if r.topic == settings.topics.predictions)


def with_full_precision(record: RawRecord) -> RawRecord:
    """A prediction record with its float features and score written with 16-17 digits."""
    assert record.value is not None
    event = orjson.loads(record.value)
    event["features"] = {name: _longer(v) for name, v in event["features"].items()}
    event["prediction"] = {name: _longer(v) for name, v in event["prediction"].items()}
    return RawRecord(record.topic, record.partition, record.offset, record.timestamp_ms, record.key,
                     orjson.dumps(event))


def _longer(value: Any) -> Any:
    # a product with a constant of many digits: its double prints 16-17 digits (a sum with small
    # round constants printed 12-13 digits for most values, within the exact path)
    return value * 1.0000000123456789 if type(value) is float else value


def with_c_pass(native: Any) -> Any:
    """A stand-in for ``columns`` whose batch decoder runs with ``native`` as the C decode pass
    during each of its calls (None: the pass off, msgspec reads every batch of the common shape)."""

    class BatchDecoder:
        def __init__(self, decoder: Decoder) -> None:
            self._decoder = columns.BatchDecoder(decoder)

        def _with(self, kind: str, records: list[RawRecord]) -> Any:
            before, decode_native.NATIVE = decode_native.NATIVE, native
            try:
                return getattr(self._decoder, kind)(records)
            finally:
                decode_native.NATIVE = before

        def predictions(self, records: list[RawRecord]) -> Any:
            return self._with("predictions", records)

        def labels(self, records: list[RawRecord]) -> Any:
            return self._with("labels", records)

    return SimpleNamespace(BatchDecoder=BatchDecoder)


@contextmanager
def c_pass_of(revision: str) -> Iterator[Any]:
    """REV's C decode pass (``_decode.c``), compiled in a worktree of REV and loaded beside this
    tree's (a module of its own file: its shared-string table and its code apart)."""
    with revision_tree(revision, {"driftline.operators._decode"}) as tree:
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        spec = importlib.util.spec_from_file_location(
            "_decode", tree / "src" / "driftline" / "operators" / f"_decode{suffix}")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def decode_round(modules: dict[str, Any], decoder: Decoder,
                 batches: Sequence[Batch]) -> dict[str, dict[str, float]]:
    """CPU seconds of one pass over the batches, per module and kind. Every batch is decoded by each
    module in turn, the order swapped from one batch of a kind to the next: a change of the box's load, or
    the cache warmed by the previous call, weighs on all alike. The results are dropped as they come."""
    decoders = {name: module.BatchDecoder(decoder) for name, module in modules.items()}
    seconds = {name: {"predictions": 0.0, "labels": 0.0} for name in modules}
    names = list(modules)
    turns = {"predictions": 0, "labels": 0}
    for kind, records in batches:
        turns[kind] += 1  # (per kind: batches of the two kinds alternate)
        for name in names if turns[kind] % 2 == 0 else reversed(names):
            decode = getattr(decoders[name], kind)
            t0 = CLOCK()
            decode(records)
            seconds[name][kind] += CLOCK() - t0
    return seconds


def _comparable(result: tuple[Any, list[Any]]) -> tuple[list[Any], list[Any], list[Any]]:
    batch, dead = result
    return ([(r.topic, r.partition, r.offset) for r in batch.records],
            [repr(e.model_dump()) for e in batch.events], [d.model_dump() for d in dead])


def same_results(a: Any, b: Any, decoder: Decoder, batches: Sequence[Batch]) -> bool:
    """Whether both modules' decoders accept the same events (values and types) and dead letters."""
    first, second = a.BatchDecoder(decoder), b.BatchDecoder(decoder)
    return all(_comparable(getattr(first, kind)(records)) == _comparable(getattr(second, kind)(records))
               for kind, records in batches)


def prediction_steps(decoder: Decoder, batches: Sequence[Batch]) -> dict[str, float]:
    """CPU seconds of one pass over the prediction batches, per step of ``BatchDecoder.predictions``
    (its private steps called in its order: a bench may lean on them, a test may not)."""
    batch_decoder = columns.BatchDecoder(decoder)
    seconds = dict.fromkeys(("compiled pass", "orjson parse", "fields and outputs", "features",
                             "times and gather", "free"), 0.0)
    for kind, records in batches:
        if kind != "predictions":
            continue
        t0 = CLOCK()
        decoded = struct_decode.prediction_columns([r.value for r in records], decoder.max_message_bytes)
        groups = columns._struct_prediction_groups(*decoded) if decoded is not None else None
        t1 = CLOCK()
        parsed = None if groups is not None else batch_decoder._parsed(records)
        t2 = CLOCK()
        if groups is None:
            groups = [g for g in columns._prediction_groups(parsed) if g.rows]
        t3 = CLOCK()
        groups = columns._without_unusual_features(groups, [])
        t4 = CLOCK()
        settled = batch_decoder._settle(records, groups, decoder.predictions, columns._PREDICTION_COLUMNS)
        t5 = CLOCK()
        del decoded, parsed, groups, settled
        t6 = CLOCK()
        spent = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
        for step, part in zip(seconds, spent, strict=True):
            seconds[step] += part
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="prediction events (each with a label)")
    parser.add_argument("--rounds", type=int, default=7, help="passes over the batches (best of)")
    parser.add_argument("--baseline", type=Path, default=None, help="another revision's columns.py")
    parser.add_argument("--without-c", action="store_true", help="also the tree with the C decode pass off")
    parser.add_argument("--steps", action="store_true", help="where the tree's prediction decode goes")
    parser.add_argument("--full-precision", action="store_true",
                        help="floats written with 16-17 digits, as a computed float prints")
    parser.add_argument("--c-revision", metavar="REV", default=None,
                        help="also REV's C decode pass, built in a worktree, beside this tree's")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        return measure(args, stack)


def measure(args: argparse.Namespace, stack: ExitStack) -> int:
    """The figures ``main``'s options ask for (``stack`` keeps another revision's C pass built)."""
    n, rounds = (2_000, 2) if args.quick else (args.n, args.rounds)
    tune_gc()
    decoder, batches, n_pred = workload_batches(n, full_precision=args.full_precision)
    modules: dict[str, Any] = {"tree": columns}
    if args.without_c:
        if decode_native.NATIVE is None:
            print("the C decode pass is not built in this install")
            return 1
        modules["without C"] = with_c_pass(None)
        if not same_results(modules["without C"], columns, decoder, batches):
            print("the tree decodes the batches differently with the C pass off")
            return 1
    if args.c_revision is not None:
        other = f"{args.c_revision}'s C pass"
        modules[other] = with_c_pass(stack.enter_context(c_pass_of(args.c_revision)))
        if not same_results(modules[other], columns, decoder, batches):
            print(f"{other} decodes the batches differently")
            return 1
    if args.baseline is not None:
        modules["baseline"] = module_from_file(args.baseline, "columns_baseline")
        if not same_results(modules["baseline"], columns, decoder, batches):
            print("the baseline and the tree decode the batches differently")
            return 1
    best: dict[str, dict[str, float]] = {name: {} for name in modules}
    for _ in range(rounds):
        for name, kinds in decode_round(modules, decoder, batches).items():
            for kind, seconds in kinds.items():
                best[name][kind] = min(best[name].get(kind, seconds), seconds)
    precision = "floats of 16-17 digits" if args.full_precision else "floats of 4 decimals"
    print(f"decode + validate, CPU us per prediction event (best of {rounds}; {n_pred:,} predictions "
          f"+ labels, {len(batches)} calls, {precision}):")
    for name, kinds in best.items():
        us = {kind: seconds / n_pred * 1e6 for kind, seconds in kinds.items()}
        print(f"  {name}: predictions {us['predictions']:.2f} + labels {us['labels']:.2f} "
              f"= {sum(us.values()):.2f}")
    if "baseline" in best:
        ratio = sum(best["tree"].values()) / sum(best["baseline"].values())
        print(f"  tree / baseline: {ratio:.3f}")
    for name in best:
        if name not in ("tree", "baseline"):  # the C pass off, or another revision's
            print(f"  tree / {name}: {sum(best['tree'].values()) / sum(best[name].values()):.3f}")
    if args.steps:
        steps: dict[str, float] = {}
        for _ in range(rounds):
            for step, seconds in prediction_steps(decoder, batches).items():
                steps[step] = min(steps.get(step, seconds), seconds)
        print(f"  the tree's predictions by step (best of {rounds} each): " + ", ".join(
            f"{step} {seconds / n_pred * 1e6:.2f}" for step, seconds in steps.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
