"""Doctests of the folders pyproject maps onto driftline subpackages (streams/, jobs/, schemas/, infra/).

pytest's own doctest collection (``--doctest-modules`` over ``testpaths``) would import those
folders as top-level ``streams``/``schemas``/... modules, a second copy beside the installed
``driftline.*`` one; this runs their doctests on the modules as the package imports them.
"""

from __future__ import annotations

import doctest
import importlib
import io
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mapped_modules() -> list[str]:
    """Every module in a folder mapped onto a driftline subpackage, by its installed name."""
    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    names = []
    for package, folder in mapping.items():
        if package == "driftline":  # src/driftline is in testpaths: pytest collects its doctests
            continue
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join([package, *parts]))
    return names


MODULES = _mapped_modules()


def _run_doctests(name: str) -> doctest.TestResults:
    """Run a module's doctests as pytest would (ELLIPSIS is its default option); raise with the report."""
    module = importlib.import_module(name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
    return runner.summarize(verbose=False)


def test_each_mapped_folder_is_found_with_its_examples() -> None:
    for name in ("driftline.schemas.events", "driftline.streams.delivery", "driftline.jobs.retrain_listener"):
        assert name in MODULES
        assert _run_doctests(name).attempted > 0, name


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    _run_doctests(name)
