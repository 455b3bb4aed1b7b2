"""The `driftline` command. Each subcommand lives in its own module under driftline.cli."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that define `register(subparsers)`; the order is the order shown in --help.
COMMAND_MODULES = (
    "local", "db", "query", "schemas_cmd", "profile", "worker", "simulate", "serve", "trigger",
    "jobs", "replay", "backtest", "calibrate", "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Streaming drift monitoring for ML models: Kafka in, ClickHouse out.",
        epilog="Configuration: DRIFTLINE_* environment variables or --config FILE (TOML).",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file (also DRIFTLINE_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"driftline.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"driftline.cli.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("driftline: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
