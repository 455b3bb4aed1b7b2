"""notebooks/drift_report.ipynb executes end to end: it seeds an empty database and draws its figures.

The kernel is a separate process (launched with this interpreter) and chDB allows one process per
data directory, so the kernel gets its own ClickHouse: a fresh embedded path, or the test server
under a database of its own.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from driftline.config import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "drift_report.ipynb"
KERNEL = "driftline-test-kernel"


def _kernel_spec(root: Path) -> Path:
    """A kernelspec that runs ipykernel with the interpreter running the tests."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "driftline tests",
        "language": "python",
    }))
    return root


def test_drift_report_executes_and_draws_its_figures(
    settings: Settings, worker_clickhouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_spec(tmp_path / "jupyter")))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", worker_clickhouse_url)
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_DATABASE", settings.clickhouse.database)
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_USERNAME", settings.clickhouse.username)
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_PASSWORD", settings.clickhouse.password.get_secret_value())
    monkeypatch.setenv("DRIFTLINE_NOTEBOOK_SEED", "1")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, kernel_name=KERNEL, timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "seeding a simulated run" in text
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # PSI heat map, accuracy over time
    assert all(len(f["data"]["image/png"]) > 10_000 for f in figures)
    summary = outputs[-1]["data"]["text/plain"]
    assert "'features drifted in the latest window': ['x1']" in summary
    assert "'detector alarms': 0" not in summary and "'retrain triggers': 0" not in summary
