"""Helpers shared by the subcommands."""

from __future__ import annotations

import argparse

from driftline.config import Settings, load_settings_or_exit


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from env + the global --config file; exits 2 with one line on a bad value."""
    return load_settings_or_exit(getattr(args, "config", None))
