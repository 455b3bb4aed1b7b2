"""The worker keeps glibc to a few heaps (issue 19): threads that checkpoint, write bases and
restore would otherwise each keep a heap of freed blocks (a live 4-shard worker at 1.5M pending:
409 MB of glibc heaps for 141 MB in use; with 2, 211 MB)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pytest

import driftline.streams.app as app
from driftline.cli import worker as worker_cli
from driftline.pipeline import state
from driftline.pipeline.state import MALLOC_ARENAS, limit_malloc_arenas


def test_the_worker_command_limits_the_heaps_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    def limit(count: int = MALLOC_ARENAS) -> bool:
        calls.append("limit")
        return True

    monkeypatch.setattr(state, "limit_malloc_arenas", limit)

    def run_worker(runtime: Any, **kwargs: Any) -> int:
        calls.append("run")
        return 0

    monkeypatch.setattr(app, "run_worker", run_worker)
    parser = argparse.ArgumentParser()
    worker_cli.register(parser.add_subparsers())
    args = parser.parse_args(["worker"])
    assert args.handler(args) == 0
    assert calls == ["limit", "run"]


def test_an_operators_malloc_arena_max_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True
