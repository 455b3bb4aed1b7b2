"""Type-check driftline as installed: `mypy -p driftline` over pyproject's package-dir mapping.

pyproject maps the top-level streams/, jobs/, schemas/ and infra/ folders onto `driftline.*`
subpackages. mypy cannot follow setuptools' editable import hook, and run on the folders it would
name them `streams.*`, `schemas.*`, ... so every `driftline.schemas` import would be unresolved.
This script lays the mapping out as a tree of symlinks under build/typecheck (new files inside a
folder appear by themselves; the tree is rebuilt on every run), runs mypy on the package there and
prints each reported path as the real file in the checkout.

Usage: python .ci/typecheck.py [extra mypy arguments]
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"
PACKAGE = "driftline"


def package_dirs() -> dict[str, Path]:
    """pyproject's package-dir: package name -> folder in the checkout."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}


def build_tree(mapping: dict[str, Path]) -> dict[Path, Path]:
    """Link every mapped folder into TREE at its package path; return link -> real folder."""
    shutil.rmtree(TREE, ignore_errors=True)
    links: dict[Path, Path] = {}
    root_package = TREE / PACKAGE
    root_package.mkdir(parents=True)
    nested = {name for name in mapping if name != PACKAGE}
    # The root package's own entries are linked one by one, so that the nested mapped folders
    # can sit beside them in the same directory.
    for entry in mapping[PACKAGE].iterdir():
        if entry.name != "__pycache__" and f"{PACKAGE}.{entry.name}" not in nested:
            (root_package / entry.name).symlink_to(entry)
    links[root_package] = mapping[PACKAGE]
    for name in sorted(nested):
        link = TREE.joinpath(*name.split("."))
        link.symlink_to(mapping[name], target_is_directory=True)
        links[link] = mapping[name]
    return links


def real_paths(text: str, links: dict[Path, Path]) -> str:
    """Rewrite paths inside the link tree to the files they point at, relative to the checkout."""
    # Longest link first: driftline/streams/ must win over driftline/.
    for link, folder in sorted(links.items(), key=lambda item: -len(str(item[0]))):
        real = os.path.relpath(folder, ROOT)
        for spelled in (str(link), os.path.relpath(link, ROOT)):
            text = text.replace(spelled + os.sep, real + os.sep)
    return text


def main(argv: list[str]) -> int:
    links = build_tree(package_dirs())
    env_path = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = os.pathsep.join(p for p in (str(TREE), env_path) if p)
    os.chdir(ROOT)
    stdout, stderr, status = api.run(["-p", PACKAGE, *argv])
    sys.stdout.write(real_paths(stdout, links))
    sys.stderr.write(real_paths(stderr, links))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
