"""`--help` of every command: each option and argument says what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from driftline.cli.main import build_parser


def _undocumented(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _undocumented(sub, f"{path} {name}")
        elif not action.help and action.help is not argparse.SUPPRESS and not isinstance(
                action, argparse._HelpAction):
            yield f"{path} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_of_every_command_has_a_help_text() -> None:
    assert list(_undocumented(build_parser(), "driftline")) == []


def test_db_status_cluster_help_does_not_say_it_creates_the_schema() -> None:
    """`db status` lists migrations; its --cluster help had been copied from `db migrate`'s."""
    parser = build_parser("db")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    db = sub.choices["db"]
    actions = next(a for a in db._actions if isinstance(a, argparse._SubParsersAction)).choices
    status_cluster = next(a for a in actions["status"]._actions if "--cluster" in a.option_strings)
    assert status_cluster.help is not None and "to create the schema on" not in status_cluster.help
