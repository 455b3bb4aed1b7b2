"""CPU of one ``driftline worker`` from exec to ready, and of its start-up imports; this tree vs another one.

    .venv/bin/python bench/bench_worker_startup.py [--rounds 5] [--base a0d7bcd]

Ready = ``/metrics`` reports every shard of both stages owned (the worker joined its groups, restored
and polls). The figure is the worker's own user + system CPU at that moment (``/proc``), so the
machine's load changes the wall time but not the figure much. Both trees' bytecode caches are written
first (``compileall``). ``--base`` also runs each round on the
package as of that commit (``git archive`` into a temporary folder put first on ``PYTHONPATH``, ahead
of the editable install), alternating old and new, and prints best-of-rounds and the new/old ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0] already
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, WorkerProcess, bench_settings

from driftline.kafka.admin import ensure_topics
from driftline.local.broker import running_broker

SUBPACKAGES = ("streams", "jobs", "schemas", "infra")
"""Top-level folders pyproject maps into the ``driftline`` package (``package-dir``)."""

ENTRY_IMPORT = ("import driftline.cli.main, driftline.cli.worker, driftline.streams.app, "
                "driftline.pipeline.model")
"""What ``driftline worker`` imports before its first poll (the stages' factories too)."""


@contextlib.contextmanager
def package_at(commit: str) -> Iterator[Path]:
    """A folder with the ``driftline`` package as of ``commit``, laid out as the editable install maps it."""
    with tempfile.TemporaryDirectory(prefix="startup-base-") as tmp:
        root = Path(tmp)
        archive = subprocess.run(["git", "archive", commit, "src/driftline", *SUBPACKAGES], cwd=REPO,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        package = root / "path" / "driftline"
        shutil.move(str(root / "src" / "driftline"), package)
        for name in SUBPACKAGES:
            shutil.move(str(root / name), package / name)
        compile_tree(package)
        yield package.parent


def compile_tree(folder: Path) -> None:
    """Write the folder's bytecode caches: under PYTHONDONTWRITEBYTECODE (this image sets it) a tree
    without them is compiled again by every process, which would be measured as start-up."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder)], check=True,
                   stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def python_path(folder: Path | None) -> Iterator[None]:
    """Children started inside import ``driftline`` from ``folder`` (None: the installed tree)."""
    before = os.environ.get("PYTHONPATH")
    if folder is not None:
        os.environ["PYTHONPATH"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def import_cpu(code: str = ENTRY_IMPORT) -> float:
    """User + system CPU seconds of a fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ready_cpu(bootstrap: str, home: Path, tag: str) -> float:
    """CPU seconds of one worker (fresh topics and store) from exec until it owns every shard."""
    settings = bench_settings(bootstrap, f"startup.{tag}", home=home)
    ensure_topics(settings)
    topics = settings.topics
    wanted = {"shard": float(topics.partitions), "model": float(topics.model_events_partitions)}
    with WorkerProcess(settings) as worker:
        def ready() -> bool:
            owned = {labels.get("stage"): v for name, labels, v in worker.metrics()
                     if name == "driftline_shards_owned"}
            return all(owned.get(stage) == n for stage, n in wanted.items())

        worker.wait_until(ready, 120, "every shard owned", every=0.25)
        return worker.cpu_seconds()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", default=None, help="also measure the package as of this commit")
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    for folder in (REPO / "src" / "driftline", *(REPO / name for name in SUBPACKAGES)):
        compile_tree(folder)
    with contextlib.ExitStack() as stack:
        variants: dict[str, Path | None] = {"new": None}
        if args.base:
            variants = {"old": stack.enter_context(package_at(args.base)), "new": None}
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="startup-")))
        broker = stack.enter_context(running_broker(log_path=work / "broker.log"))
        imports: dict[str, list[float]] = {name: [] for name in variants}
        ready: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(rounds):
            for name, folder in variants.items():
                with python_path(folder):
                    imports[name].append(import_cpu())
                    tag = f"{name}{i}"
                    ready[name].append(ready_cpu(broker.bootstrap_servers, work / tag, tag))
        print(f"load average {os.getloadavg()[0]:.1f}; {rounds} rounds, alternating; "
              "CPU seconds, best (median)")
        for name in variants:
            for label, values in (("entry import", imports[name]), ("exec to ready", ready[name])):
                print(f"  {name:3s} {label:14s} {min(values):6.3f} ({sorted(values)[len(values) // 2]:6.3f})")
        if args.base:
            for label, table in (("entry import", imports), ("exec to ready", ready)):
                print(f"  new/old {label:14s} {min(table['new']) / min(table['old']):.3f}x")


if __name__ == "__main__":
    main()
