"""The in-process pipeline of another revision, its C extensions included, beside this one's.

bench_stages' workload (20 numeric + 5 categorical features, every prediction labelled, a training
profile with a multivariate section; the columnar stage 1, stage 2 and the sink's rows in one
process, batches of ``worker.batch_max_records``) runs in child processes that alternate between
REV's tree and this one: CPU-us a prediction (``time.process_time``), the best of ``--runs`` runs in
each child and the best child of each side, and their ratio.

An A/B of Python modules loads the other revision's file beside today's in one process (the
``--baseline``/``--ab`` options of the other benches); a C extension cannot be loaded twice under one
name, so a change to one is timed this way. REV is checked out with ``git worktree add --detach``
into a temporary directory and the extensions its ``pyproject.toml`` lists are compiled there in
place (the compiler Python was built with, the extension's own ``extra-compile-args``). Its
children import ``driftline`` from that tree (``PYTHONPATH``); the packages this install maps from
outside ``src`` (schemas, streams, jobs, infra) and the workload's own code (bench_stages) are this
tree's, so REV must be close enough to run them. "This tree" is the installed working tree,
uncommitted changes included: ``bench_revisions.py HEAD`` times them against the last commit.
``--full-precision``: the workload's float features and scores written with 16-17 digits, as a
model server sends computed floats (``bench_decode.with_full_precision``; the simulator rounds them
to 4 decimals).

    .venv/bin/python bench/bench_revisions.py REV [--n 50000] [--children 3] [--runs 5] [--full-precision]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@contextmanager
def revision_tree(revision: str, extensions: Collection[str] | None = None) -> Iterator[Path]:
    """REV checked out (``git worktree add --detach``) in a temporary directory, its C extensions
    (``extensions``: those of these module names) compiled there in place; removed after."""
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as scratch:
        tree = Path(scratch) / "tree"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", "--quiet", str(tree), revision], check=True,
                       capture_output=True)
        try:
            build_extensions(tree, extensions)
            yield tree
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], capture_output=True)


def build_extensions(tree: Path, only: Collection[str] | None = None) -> list[str]:
    """Compile the C extensions ``tree``'s pyproject.toml lists (``only``: those of these module
    names) into its source tree (as an editable install places them); their module names."""
    config = tomllib.loads((tree / "pyproject.toml").read_text())
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = []
    for ext in config.get("tool", {}).get("setuptools", {}).get("ext-modules", []):
        name = ext["name"]
        if only is not None and name not in only:
            continue
        target = tree / "src" / Path(*name.split("."))
        command = [*compiler, "-shared", "-fPIC", *ext.get("extra-compile-args", []), f"-I{include}",
                   *[str(tree / source) for source in ext["sources"]], "-o", f"{target}{suffix}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {name} of {tree} failed:\n{done.stderr}")
        built.append(name)
    return built


def child(n: int, runs: int, full_precision: bool = False) -> dict[str, object]:
    """One side's best CPU-us a prediction over ``runs`` runs of the workload (after a warm-up)."""
    sys.path.insert(0, str(BENCH))
    from bench_decode import with_full_precision
    from bench_stages import _run, _workload
    from common import bench_settings

    import driftline
    from driftline.runtime import tune_gc

    tune_gc()
    settings = bench_settings("127.0.0.1:9", "br")
    raw, profiles, predictions = _workload(settings, n, 0)
    if full_precision:
        raw = [with_full_precision(r) if r.topic == settings.topics.predictions else r for r in raw]
    _run(settings, raw[: min(len(raw), 20_000)], profiles, True)
    best = min(_run(settings, raw, profiles, True) for _ in range(runs))
    return {"us": best / predictions * 1e6, "package": str(Path(driftline.__file__).parent)}


def _side(tree: Path | None, n: int, runs: int, full_precision: bool) -> dict[str, object]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(n), "--runs", str(runs),
               *(["--full-precision"] if full_precision else [])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"a child failed:\n{done.stderr[-4000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(revision: str, n: int, children: int, runs: int,
            full_precision: bool = False) -> tuple[float, float, str]:
    """(REV's best, this tree's best, the line to print): children alternating, REV's first in
    even rounds and this tree's first in odd ones."""
    with revision_tree(revision) as tree:
        seen: dict[str, list[float]] = {"rev": [], "this": []}
        for r in range(children):
            for side in ("rev", "this") if r % 2 == 0 else ("this", "rev"):
                got = _side(tree if side == "rev" else None, n, runs, full_precision)
                expected = tree / "src" / "driftline" if side == "rev" else None
                if expected is not None and Path(str(got["package"])) != expected:
                    raise RuntimeError(f"the child imported {got['package']}, not {expected}")
                seen[side].append(float(str(got["us"])))
    old, new = min(seen["rev"]), min(seen["this"])
    line = (f"in-process pipeline, {revision} against this tree: {old:.2f} vs {new:.2f} CPU-us a prediction "
            f"({new / old:.3f}x); children {', '.join(f'{v:.2f}' for v in seen['rev'])} vs "
            f"{', '.join(f'{v:.2f}' for v in seen['this'])}; {n:,} predictions + labels, best of {runs} "
            f"runs a child, {children} children a side, alternating"
            f"{'; floats of 16-17 digits' if full_precision else ''}")
    return old, new, line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("revision", nargs="?", help="the commit (or any git revision) to compare with")
    parser.add_argument("--n", type=int, default=50_000, help="prediction events (each with a label)")
    parser.add_argument("--children", type=int, default=3, help="child processes a side")
    parser.add_argument("--runs", type=int, default=5, help="timed runs a child")
    parser.add_argument("--full-precision", action="store_true",
                        help="floats written with 16-17 digits, as a computed float prints")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.n, args.runs, args.full_precision)))
        return 0
    if args.revision is None:
        parser.error("a revision is required")
    started = time.monotonic()
    print(measure(args.revision, args.n, args.children, args.runs, args.full_precision)[2])
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
