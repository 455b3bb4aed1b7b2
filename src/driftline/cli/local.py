"""`driftline local up|status|down`: the embedded broker as a background service for the demo.

`up` records the broker in HOME/local-broker.json; every other command then finds it through
`Settings.bootstrap_servers()` when no bootstrap servers are configured.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from driftline.cli.common import settings_from_args
from driftline.config import Settings
from driftline.kafka.admin import CopartitioningError, ensure_topics, partition_counts, verify_copartitioned
from driftline.local.broker import log_tail, start_broker, terminate_pid
from driftline.local.state import (
    LocalBrokerState,
    broker_alive,
    clear_local_state,
    read_state_file,
    state_lock,
    write_local_state,
)

LOG_FILE = "broker.log"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "local",
        help="run the embedded Kafka-compatible broker (Tansu) in the background",
        description="Manage the embedded, memory-only broker used by the demo and local runs. "
        "Its address is recorded under the driftline home (DRIFTLINE_HOME, default .driftline) "
        "and used by every other command unless DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS is set.",
    )
    parser.set_defaults(handler=lambda _args: _usage(parser))
    sub = parser.add_subparsers(dest="local_command", metavar="ACTION")

    up = sub.add_parser(
        "up", help="start the broker detached and create the configured topics",
        description="Start the embedded broker in the background on a free loopback port, wait "
        "until it serves metadata and create every configured topic. Exits 0 without starting a "
        "second one if a broker is already recorded and running. Memory-only: `down` loses all data.",
    )
    up.add_argument("--port", type=int, default=None, help="listen on this port (default: a free one)")
    up.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    up.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                    help="how long to wait for the broker to serve metadata (default: %(default)s)")
    up.set_defaults(handler=cmd_up)

    status = sub.add_parser(
        "status", help="show address, pid, uptime and topics of the running broker",
        description="Print the recorded broker's address, pid, uptime and its topics with "
        "partition counts. Exit code 0 if it is up and answering, 1 otherwise.",
    )
    status.set_defaults(handler=cmd_status)

    down = sub.add_parser(
        "down", help="stop the broker and forget it (idempotent)",
        description="Send SIGTERM to the recorded broker, SIGKILL if it has not exited after "
        "--timeout, and remove the state file. Succeeds (exit 0) when nothing is running.",
    )
    down.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                      help="grace period per signal (default: %(default)s)")
    down.set_defaults(handler=cmd_down)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _with_bootstrap(settings: Settings, bootstrap: str) -> Settings:
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    return settings.model_copy(update={"kafka": kafka})


def _running(settings: Settings) -> LocalBrokerState | None:
    state = read_state_file(settings.home)
    return state if state is not None and broker_alive(state) else None


def _warn_if_overridden(settings: Settings) -> None:
    if settings.kafka.bootstrap_servers:
        print(f"note: kafka.bootstrap_servers is set ({settings.kafka.bootstrap_servers}); other "
              "commands will use that, not the embedded broker", file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    home = settings.home
    with state_lock(home):
        state = _running(settings)
        if state is not None:
            print(f"embedded broker already running at {state.bootstrap_servers} (pid {state.pid})")
            return _create_topics(_with_bootstrap(settings, state.bootstrap_servers))
        log_path = (home / LOG_FILE).resolve()
        try:
            broker = start_broker(args.host, args.port, log_path, detach=True, timeout=args.timeout)
        except (OSError, RuntimeError, TimeoutError) as err:
            print(f"driftline: cannot start the embedded broker: {err}", file=sys.stderr)
            tail = log_tail(log_path)
            if tail:
                print(f"broker log ({log_path}):\n{tail}", file=sys.stderr)
            return 1
        state = LocalBrokerState(pid=broker.pid, bootstrap_servers=broker.bootstrap_servers,
                                 started_at=time.time(), log_path=str(log_path), binary=broker.binary)
        try:
            write_local_state(home, state)
            code = _create_topics(_with_bootstrap(settings, broker.bootstrap_servers))
        except BaseException:
            _stop(state, timeout=5.0)
            raise
        if code != 0:
            _stop(state, timeout=5.0)
            return code
    print(f"embedded broker up at {state.bootstrap_servers} (pid {state.pid}); log: {log_path}")
    _warn_if_overridden(settings)
    return 0


def _create_topics(settings: Settings) -> int:
    try:
        created = ensure_topics(settings)
    except Exception as err:  # any admin failure is reported as one line
        print(f"driftline: cannot create topics on {settings.bootstrap_servers()}: {err}", file=sys.stderr)
        return 1
    if created:
        print(f"created {len(created)} topic(s): {', '.join(created)}")
    return 0


def _stop(state: LocalBrokerState, timeout: float) -> bool:
    """Stop the recorded broker if it still runs; True once no such process is left."""
    return not broker_alive(state) or terminate_pid(state.pid, timeout)


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    recorded = read_state_file(settings.home)
    state = recorded if recorded is not None and broker_alive(recorded) else None
    if state is None:
        stale = " (stale state file; `driftline local down` removes it)" if recorded else ""
        print(f"embedded broker: not running{stale}  [home: {settings.home.resolve()}]")
        return 1
    started = datetime.fromtimestamp(state.started_at, UTC)
    print(f"embedded broker: up at {state.bootstrap_servers}")
    print(f"  pid:     {state.pid}")
    print(f"  uptime:  {_duration(time.time() - state.started_at)} (since {started:%Y-%m-%d %H:%M:%S} UTC)")
    print(f"  log:     {state.log_path}")
    local = _with_bootstrap(settings, state.bootstrap_servers)
    try:
        counts = partition_counts(local)
    except Exception as err:  # a live pid that does not answer is "not up"
        print(f"  not answering metadata requests: {err}")
        return 1
    print(f"  topics:  {len(counts)}")
    for name in sorted(counts):
        print(f"    {name}  partitions={counts[name]}")
    try:
        verify_copartitioned(local)
    except CopartitioningError as err:
        print(f"  warning: {err}")
    _warn_if_overridden(settings)
    return 0


def _duration(seconds: float) -> str:
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def cmd_down(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with state_lock(settings.home):
        state = read_state_file(settings.home)
        if state is None:
            clear_local_state(settings.home)  # a malformed file is as good as none
            print("embedded broker: not running")
            return 0
        if not _stop(state, args.timeout):
            print(f"driftline: broker pid {state.pid} is still running after SIGKILL", file=sys.stderr)
            return 1
        clear_local_state(settings.home)
    print(f"embedded broker stopped (pid {state.pid}, {state.bootstrap_servers})")
    return 0
