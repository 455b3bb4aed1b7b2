"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import errno
import socket

from rich.console import Console
from rich.table import Table

from driftline.config import Settings, load_settings_or_exit

CONNECT_TIMEOUT_S = 3.0


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from env + the global --config file; exits 2 with one line on a bad value."""
    return load_settings_or_exit(getattr(args, "config", None))


def unreachable_broker(settings: Settings) -> str:
    """The one line a command prints when no broker answers: where the address came from and
    what to do about it."""
    address = settings.bootstrap_servers()
    if settings.kafka.bootstrap_servers:
        return (f"no Kafka broker reachable at {address} (set by DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS or "
                "kafka.bootstrap_servers in the config file): check that address, or unset it and run "
                "`driftline local up` for the embedded broker")
    from driftline.local.state import read_local_bootstrap, read_state_file

    if read_local_bootstrap(settings.home):
        return (f"no Kafka broker reachable at {address} (the embedded broker recorded in "
                f"{settings.home} runs but does not answer): restart it with `driftline local down` "
                "and `driftline local up`")
    stopped = (f"; the embedded broker `driftline local up` started in {settings.home} has stopped"
               if read_state_file(settings.home) is not None else "")
    return (f"no Kafka broker reachable at {address} (the default address{stopped}): start the embedded "
            "broker with `driftline local up`, or set DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS=host:port")


def broker_reachable(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """True if a TCP connection to any bootstrap server opens (TLS and SASL are the clients' job)."""
    for server in settings.bootstrap_servers().split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def _in_use(host: str, port: int) -> bool:
    """True if a server could not listen on ``host:port`` because something else does. Binds as
    aiohttp does (SO_REUSEADDR), so a port with only closed connections left counts as free."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:  # an unknown host: the server's own start says so
        return False
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return True
    return False


def port_taken(host: str, port: int, option: str) -> str | None:
    """The one line for a web port something else listens on (else None): checked before a server
    starts, as the bind error surfaces late, in a traceback (the worker's after Faust started)."""
    if not _in_use(host, port):
        return None
    return (f"port {port} on {host} is in use (another driftline worker or serve?): stop it, or "
            f"choose a free port with {option}")


def one_line(err: Exception) -> str:
    """An error as one line: a pydantic validation error as its first problem, not its dump.

    >>> from pydantic import BaseModel, Field, ValidationError
    >>> class Rate(BaseModel):
    ...     rate: float = Field(gt=0)
    >>> try:
    ...     Rate(rate=0)
    ... except ValidationError as err:
    ...     print(one_line(err))
    rate: Input should be greater than 0
    """
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        problems = err.errors()
        first = problems[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class BrokerUnreachableError(RuntimeError):
    """No Kafka broker answers; ``driftline.cli.main`` prints the message as one line, exit 1."""


def require_broker(settings: Settings) -> None:
    """Raise :class:`BrokerUnreachableError` if no broker is reachable, before a client library
    retries for a while and ends in a traceback."""
    if not broker_reachable(settings):
        raise BrokerUnreachableError(unreachable_broker(settings))


def fit_annotations(table: Table, console: Console) -> None:
    """Widen ``table`` to its title and caption, up to the console's width: rich wraps them at the
    table's own width ("dead letters by" / "kind" over a two-column table)."""
    widest = max((console.measure(text).maximum for text in (table.title, table.caption) if text), default=0)
    table.min_width = max(table.min_width or 0, min(widest, console.width))


def print_table(table: Table, *, stderr: bool = False) -> None:
    """Print ``table`` with every value whole. On a terminal it fits the width, folding a long value
    over lines; elsewhere (a pipe, a file, a CI log: 80 columns to rich) nothing wraps: the table
    takes the width it needs, one line a row, as rich would otherwise cut values short ("ele…") to
    fit 80 columns, and its title and caption are lines of their own, as rich wraps them at the
    table's width ("1 row(s)" under a one-column result read "row(s" then ")")."""
    for column in table.columns:
        column.overflow = "fold"
    console = Console(stderr=stderr)
    title, caption = table.title, table.caption
    if console.is_terminal:
        fit_annotations(table, console)
        console.print(table)
        return
    table.title = table.caption = None
    natural = Console(width=100_000, stderr=stderr).measure(table).maximum
    console = Console(stderr=stderr, width=max(console.width, natural))
    if title:
        console.print(title, soft_wrap=True)
    console.print(table)
    if caption:
        console.print(caption, soft_wrap=True)
