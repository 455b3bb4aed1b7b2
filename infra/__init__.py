"""Deployment assets shipped with the package: ClickHouse SQL, Grafana, docker-compose."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def clickhouse_sql_dir() -> Path:
    """Directory holding the ordered ClickHouse migrations (`NNN_name.sql`)."""
    resource = files(__name__).joinpath("clickhouse")
    if not isinstance(resource, Path):  # zipped installs have no real directory to list
        raise RuntimeError(f"driftline.infra is not installed as a directory: {resource}")
    return resource
