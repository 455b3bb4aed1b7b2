"""Every driftline import points down the layers (schemas -> operators -> pipeline -> streams/replay ->
cli/demo), so a reader can take each layer without the ones above it and the pure core never pulls
in Kafka, ClickHouse or the worker.

An AST scan of every module (imports inside functions and under TYPE_CHECKING count too): a module
may import its own package and packages of lower layers; packages of one layer do not import each
other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "driftline": ROOT / "src" / "driftline",
    "driftline.streams": ROOT / "streams",
    "driftline.jobs": ROOT / "jobs",
    "driftline.schemas": ROOT / "schemas",
}

# Bottom to top. Beside the brief's line: kafka (clients, the partitioner) sits under the pipeline
# (which partitions with it), client (the SDK) and store under the runtimes that use them; local
# (the embedded stack) over runtime, whose process plumbing ties its broker to the caller.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"", "schemas", "extras", "runtime", "infra"},  # "" = driftline/__init__.py
    {"local"},
    {"config"},
    {"operators"},
    {"detect"},  # the library's public face over operators
    {"kafka"},
    {"pipeline"},
    {"client"},
    {"store"},
    {"streams", "replay", "jobs", "simulate"},
    {"report"},
    {"demo"},
    {"cli"},
))
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def top_package(module: str) -> str:
    """``driftline.pipeline.shard`` -> ``pipeline``; ``driftline`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "driftline" and parts[0] in ("streams", "jobs", "schemas"):
                continue  # mapped folders are scanned under their own package
            found[".".join((package, *[p for p in parts if p != "__init__"]))] = path
    return found


def driftline_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a driftline module, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "driftline"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "driftline":
                out.append((node.lineno, target))
    return out


def test_every_package_has_a_layer() -> None:
    unplaced = {top_package(m) for m in modules()} - set(RANK)
    assert not unplaced, f"packages without a layer in {__name__}.LAYERS: {sorted(unplaced)}"


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for module, path in modules().items():
        source = top_package(module)
        for line, target in driftline_imports(path, module):
            imported = top_package(target)
            if imported == source or imported not in RANK or source not in RANK:
                continue
            if RANK[imported] >= RANK[source]:
                how = "up" if RANK[imported] > RANK[source] else "sideways"
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {source} -> {target} ({how})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


TRANSPORTS = {"kafka", "aiokafka", "faust", "mode", "clickhouse_connect", "chdb", "aiohttp"}
PURE = ("driftline.operators", "driftline.pipeline", "driftline.detect", "driftline.kafka.partitioner")


def test_the_pure_core_imports_no_transport() -> None:
    """Operators and stage processors run the same in the worker and in replays: no Kafka, Faust,
    ClickHouse or HTTP library in them (the Kafka partitioner is plain numpy)."""
    wrong = []
    for module, path in modules().items():
        if not any(module == p or module.startswith(p + ".") for p in PURE):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            wrong += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                      if n.split(".")[0] in TRANSPORTS]
    assert not wrong, "transport imports in the pure core:\n" + "\n".join(wrong)
