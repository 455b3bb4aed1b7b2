"""``/healthz`` of a worker that has not started its runners yet (its web server answers while it
still creates its topics): not ok, not ready. It said ok then (no part was not running), so a probe
or a test that waited for it could act before any runner existed."""

from __future__ import annotations

from driftline.config import Settings
from driftline.streams.worker import WorkerRuntime


def test_a_worker_running_nothing_yet_is_not_healthy() -> None:
    for role in ("all", "processor", "sink"):
        health = WorkerRuntime(Settings(), role=role).health()
        assert (health["ok"], health["ready"], health["runners"]) == (False, False, {}), role
