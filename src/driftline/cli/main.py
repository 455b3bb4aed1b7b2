"""The `driftline` command. Each subcommand lives in its own module under driftline.cli."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from driftline.cli.common import (
    BrokerUnreachableError,
    require_broker,
    settings_from_args,
    unreachable_broker,
)

# Modules that define `register(subparsers)`; the order is the order shown in --help.
COMMAND_MODULES = (
    "local", "db", "query", "schemas_cmd", "profile", "worker", "simulate", "serve", "trigger",
    "jobs", "replay", "backtest", "calibrate", "report", "demo",
)


def _command_module(argv: Sequence[str]) -> str | None:
    """The module of the command ``argv`` names, if it names one: only that module is imported
    (importing all of them costs seconds per run: replay and profile pull in the pipeline).

    >>> _command_module(["--config", "x.toml", "schemas", "--help"]), _command_module(["-h"])
    ('schemas_cmd', None)
    """
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            module = "schemas_cmd" if word == "schemas" else word
            return module if module in COMMAND_MODULES else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the command of module ``only``."""
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Streaming drift monitoring for ML models: Kafka in, ClickHouse out.",
        epilog="Configuration: DRIFTLINE_* environment variables or --config FILE (TOML).",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file (also DRIFTLINE_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES if only is None else (only,):
        try:
            module = importlib.import_module(f"driftline.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"driftline.cli.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def needs_kafka(args: argparse.Namespace) -> bool:
    """Whether the command talks to Kafka as it starts: it is checked for a reachable broker first
    (``simulate`` and ``profile build`` check after validating their input, with ``require_broker``)."""
    command = args.command
    if command in ("worker", "trigger"):
        return True
    if command == "serve":
        return not getattr(args, "no_ingest", False)
    if command == "replay":
        return getattr(args, "predictions", None) is None
    if command == "jobs":
        return getattr(args, "jobs_command", None) == "retrain-listener"
    return False


def _broker_unreachable(err: BaseException) -> bool:
    """A client library's way of saying that no broker answered at all."""
    import kafka.errors
    from aiokafka.errors import KafkaConnectionError

    from driftline.kafka.clients import KafkaStartError

    if isinstance(err, KafkaStartError):
        return isinstance(err.__cause__, KafkaConnectionError)
    if isinstance(err, kafka.errors.KafkaTimeoutError):
        return "bootstrap" in str(err)
    # kafka-python 2.x raises NoBrokersAvailable; 3.x dropped the class (its errors time out instead)
    no_brokers = getattr(kafka.errors, "NoBrokersAvailable", KafkaConnectionError)
    return isinstance(err, (KafkaConnectionError, no_brokers))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_command_module(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        if needs_kafka(args):
            require_broker(settings_from_args(args))
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("driftline: interrupted", file=sys.stderr)
        return 130
    except BrokerUnreachableError as err:
        print(f"driftline {args.command}: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if not _broker_unreachable(err):
            raise
        # The broker went away after the check (or the command met it late).
        print(f"driftline {args.command}: {unreachable_broker(settings_from_args(args))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
