"""A clickhouse-connect client from Settings: embedded chDB (``chdb://``) or a server (``http(s)://``)."""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    OperationalError,
    ProgrammingError,
)

from driftline.config import Settings
from driftline.store.owner import Owner, pid_alive, read_owner

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StoreError(Exception):
    """ClickHouse cannot be used as configured; the message says why and what to do."""


class EngineBusy(StoreError):
    """The embedded data directory is open in another process (chDB allows one per directory)."""

    def __init__(self, path: str, pid: int | None, owner: Owner | None) -> None:
        self.path = path
        self.pid = pid
        self.owner = owner
        who = f"process {pid}" if pid else "another process"
        via = f"; it serves read-only queries at {owner.query_url}" if owner else ""
        super().__init__(f"embedded ClickHouse at {path} is in use by {who}{via}")


class QueryError(StoreError):
    """ClickHouse refused or failed a query; the message is ClickHouse's first line."""


def database_name(settings: Settings) -> str:
    """The configured database, checked to be a plain identifier (it is spliced into DDL)."""
    name = settings.clickhouse.database
    if not _IDENTIFIER.match(name):
        raise StoreError(f"clickhouse.database {name!r} must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def embedded_path(settings: Settings) -> str | None:
    """Data directory of the embedded engine; None for in-memory chDB or a server."""
    url = settings.clickhouse_url()
    if not url.startswith("chdb://"):
        return None
    parts = urlsplit(url)
    # chdb://memory[/db] is in-memory; chdb:///abs/path is a directory.
    return None if parts.netloc else parts.path or None


def connect(settings: Settings, *, readonly: bool = False, limits: Mapping[str, str] | None = None) -> Client:
    """Open ClickHouse and select the configured database (created unless ``readonly``).

    ``readonly=True`` sets ``readonly=1`` for the whole session: on chDB a per-query readonly
    setting outlives a failed query, so read-only access gets a client of its own. ``limits``
    (e.g. ``max_result_rows``) are session settings applied before readonly, which then keeps any
    statement from changing them.
    Raises EngineBusy if another process holds the embedded directory, StoreError otherwise.
    """
    database = database_name(settings)
    client = _open(settings)
    try:
        if readonly:
            found = client.query("SELECT count() FROM system.databases WHERE name = {db:String}",
                                 parameters={"db": database}).result_rows[0][0]
            if not found:
                raise StoreError(
                    f"ClickHouse database {database!r} does not exist: run `driftline db migrate`"
                )
        else:
            client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        client.database = database
        for name, value in (limits or {}).items():
            client.set_client_setting(name, value)
        if readonly:
            client.set_client_setting("readonly", "1")
    except BaseException:
        client.close()
        raise
    return client


def _open(settings: Settings) -> Client:
    url = settings.clickhouse_url()
    if url.startswith("chdb://"):
        return _open_embedded(settings, url)
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    try:
        return clickhouse_connect.get_client(
            host=parts.hostname or "localhost",
            port=parts.port or (8443 if secure else 8123),
            username=settings.clickhouse.username,
            password=settings.clickhouse.password.get_secret_value(),
            secure=secure,
        )
    except OperationalError as err:  # network-level: not reachable
        raise StoreError(f"cannot reach ClickHouse at {url}: {_first_line(err)}") from err
    except DatabaseError as err:  # the server answered, e.g. bad credentials
        raise StoreError(f"ClickHouse at {url} refused the connection: {_first_line(err)}") from err
    except ClickHouseError as err:
        raise StoreError(f"cannot reach ClickHouse at {url}: {_first_line(err)}") from err


def _open_embedded(settings: Settings, url: str) -> Client:
    path = embedded_path(settings)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if _locked_elsewhere(path):
            holder = _holder_pid(path)
            owner = read_owner(settings.home)
            raise EngineBusy(path, holder, owner if owner and owner.pid == holder else None)
    try:
        return clickhouse_connect.get_client(dsn=url)
    except ProgrammingError as err:
        text = str(err)
        if "already initialized with path" in text:
            raise StoreError(
                f"this process already opened another embedded ClickHouse directory; chDB allows one per "
                f"process, so {url} cannot be opened here"
            ) from err
        holder = _holder_pid(path) if path else None
        if holder is not None:
            owner = read_owner(settings.home)
            raise EngineBusy(path or url, holder, owner if owner and owner.pid == holder else None) from err
        raise StoreError(f"cannot open embedded ClickHouse at {url}: {_first_line(err)}") from err


def _holder_pid(path: str) -> int | None:
    """PID of the live process holding `path`, from the status file ClickHouse keeps while open."""
    pid = _status_pid(path)
    return pid if pid is not None and pid != os.getpid() and pid_alive(pid) else None


def _status_pid(path: str) -> int | None:
    try:
        text = (Path(path) / "status").read_text()
    except OSError:
        return None
    match = re.search(r"^PID:\s*(\d+)", text, re.M)
    return int(match.group(1)) if match else None


def _locked_elsewhere(path: str) -> bool:
    """True if another process has `path` open, asked without opening it: ClickHouse holds an flock
    on its status file while open, and a second process's chDB writes its own "Cannot lock file"
    text to the process's stderr (from C++, past Python) before the error driftline explains."""
    if _status_pid(path) == os.getpid():
        return False  # this process opened it: chDB hands the same engine out again
    try:
        fd = os.open(Path(path) / "status", os.O_RDONLY)
    except OSError:
        return False  # no status file: nobody has it open
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the probe's lock at once
    return False


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
