"""pyproject's package list matches the folders: a wheel must contain every subpackage."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = tool["package-dir"]
    listed = set(tool["packages"])
    found = set()
    for package, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            name = ".".join([package, *relative.parts]) if relative.parts else package
            # A folder nested in this one but mapped on its own belongs to that other mapping.
            remapped = any(len(p) > len(package) and (name == p or name.startswith(p + ".")) for p in mapping)
            if not remapped and "__pycache__" not in relative.parts:
                found.add(name)
    assert found - listed == set(), "package folders missing from pyproject"
    # Data-only folders (migrations, Grafana provisioning) are listed too, so setuptools ships them
    # as package data; each must exist and its package-data patterns must match files in it.
    data = tool["package-data"]
    for name in listed - found:
        folder = _folder(name, mapping)
        assert folder.is_dir(), f"pyproject lists {name}, which has no folder"
        assert name in data, f"{name} has no __init__.py and no package-data: nothing of it is shipped"
        assert all(any(folder.glob(pattern)) for pattern in data[name]), (name, data[name])


def _folder(name: str, mapping: dict[str, str]) -> Path:
    """The folder of package `name` under the longest package-dir mapping that holds it."""
    package = max((p for p in mapping if name == p or name.startswith(p + ".")), key=len)
    rest = name[len(package):].lstrip(".")
    return ROOT / mapping[package] / Path(*rest.split(".")) if rest else ROOT / mapping[package]


def test_version_is_pyprojects_and_the_package_declares_its_type_hints() -> None:
    import driftline

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert driftline.__version__ == pyproject["project"]["version"]
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["driftline"]
    assert (ROOT / "src" / "driftline" / "py.typed").is_file()
