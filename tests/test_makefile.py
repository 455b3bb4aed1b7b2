"""`make install` builds the C extensions in place: it must run again when any of their sources
changes, or `make test` runs a stale build of an edited one."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make_n(*args: str) -> str:
    done = subprocess.run(["make", "-n", *args, "install"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_an_edited_c_source_makes_install_run_again() -> None:
    if "pip install" in _make_n():
        pytest.skip("the install is not up to date here: every source would re-run it")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sources = [source for ext in config["tool"]["setuptools"]["ext-modules"] for source in ext["sources"]]
    assert len(sources) >= 4
    for source in sources:
        assert "pip install" in _make_n("-W", source), f"editing {source} does not re-run make install"
    assert "pip install" not in _make_n("-W", "README.md")
