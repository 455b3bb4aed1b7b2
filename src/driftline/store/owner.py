"""The record of the process that owns the embedded engine.

chDB lets one process open a data directory. That process (the worker, or `driftline serve
--clickhouse-http`) records itself in ``<home>/clickhouse-owner.json`` with the URL of its
``POST /query``; its ClickHouse HTTP interface is the root of the same host and port
(``Owner.clickhouse_url``), which is how other processes still read.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

OWNER_FILE = "clickhouse-owner.json"


@dataclass(frozen=True)
class Owner:
    """A live process holding the embedded engine; ``query_url`` is its ``POST /query`` endpoint."""

    pid: int
    query_url: str

    @property
    def clickhouse_url(self) -> str:
        """Root of the owner's ClickHouse HTTP interface (same scheme, host and port as /query).

        >>> Owner(7, "https://127.0.0.1:6066/query").clickhouse_url
        'https://127.0.0.1:6066/'
        """
        parts = urlsplit(self.query_url)
        return f"{parts.scheme}://{parts.netloc}/"


def owner_path(home: Path) -> Path:
    return Path(home) / OWNER_FILE


def claim_owner(home: Path, query_url: str) -> Path:
    """Record this process as the engine owner (call after opening the engine); returns the file."""
    path = owner_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(orjson.dumps({"pid": os.getpid(), "query_url": query_url}))
    tmp.replace(path)  # atomic: readers never see a half-written file
    return path


def release_owner(home: Path) -> None:
    """Remove the record if it names this process (another owner's record is left alone)."""
    path = owner_path(home)
    owner = _read(path)
    if owner is not None and owner.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_owner(home: Path) -> Owner | None:
    """The recorded owner if its process is still alive, else None."""
    owner = _read(owner_path(home))
    if owner is None or not pid_alive(owner.pid):
        return None
    return owner


def _read(path: Path) -> Owner | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    pid, url = (data.get("pid"), data.get("query_url")) if isinstance(data, dict) else (None, None)
    if not isinstance(pid, int) or not isinstance(url, str):
        return None
    return Owner(pid=pid, query_url=url)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
