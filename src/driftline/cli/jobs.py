"""`driftline jobs retrain-listener | example-retrain`: the retrain side of driftline."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from driftline.cli.common import settings_from_args


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "jobs", help="retrain jobs: the trigger listener and the example retrain job",
        description="Run the retrain listener, which executes one retrain job per trigger, or the "
        "example retrain job by hand.",
    )
    parser.set_defaults(handler=lambda _args: _usage(parser))
    sub = parser.add_subparsers(dest="jobs_command", metavar="JOB")

    listener = sub.add_parser(
        "retrain-listener", help="run retrain.command / retrain.entrypoint once per retrain trigger",
        description="Consume retrain triggers (consumer group) and run a retrain job per trigger: "
        "at most --max-concurrent at once, failed jobs retried with exponential backoff up to "
        "retrain.max_attempts, statuses published to the retrain-status topic and the retrain_jobs "
        "table. A trigger whose job already succeeded (or used up its attempts) is skipped, also "
        "across restarts. SIGTERM/Ctrl-C: take no new triggers, let running jobs finish for up to "
        "--grace seconds (Ctrl-C again to stop at once), exit 0.",
    )
    listener.add_argument("--max-concurrent", type=int, metavar="N",
                          help="jobs at once (default: retrain.max_concurrent)")
    listener.add_argument("--max-triggers", type=int, metavar="N",
                          help="exit after handling N triggers (skipped ones included)")
    listener.add_argument("--once", action="store_true",
                          help="exit once every pending trigger is handled (caught up with the topic)")
    listener.add_argument("--idle-exit", type=float, metavar="SECONDS",
                          help="exit after SECONDS without a trigger or a running job")
    listener.add_argument("--group", default=None, metavar="GROUP_ID",
                          help="consumer group id (default: <kafka.group_prefix>-retrain-listener)")
    listener.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                          help="on SIGTERM/Ctrl-C, wait this long for running jobs (default: %(default)s)")
    listener.add_argument("--example-job", action="store_true",
                          help="with no retrain.command/entrypoint configured, run the example job (a toy "
                          "River model; for the demo and local trials). Without a job every trigger is "
                          "recorded as skipped")
    listener.set_defaults(handler=cmd_retrain_listener)

    example = sub.add_parser(
        "example-retrain", help="run the example retrain job for one trigger (JSON on stdin)",
        description="Train a new model version on the model's recent labeled outcomes, write it "
        "under retrain.artifacts_dir and publish its reference profile. Reads the trigger from "
        "DRIFTLINE_TRIGGER_JSON or stdin.",
    )
    example.set_defaults(handler=cmd_example_retrain)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _export_config(args: argparse.Namespace) -> None:
    # Jobs load their settings from the environment: hand them the same config file.
    if getattr(args, "config", None):
        os.environ["DRIFTLINE_CONFIG"] = str(Path(args.config).resolve())


def cmd_retrain_listener(args: argparse.Namespace) -> int:
    from driftline.jobs.retrain_listener import run_listener

    settings = settings_from_args(args)
    _export_config(args)
    if not logging.getLogger().handlers:
        # driftline's own lines from INFO on; Kafka client chatter only from WARNING on
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("driftline").setLevel(logging.INFO)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        print("driftline: --max-concurrent must be at least 1", file=sys.stderr)
        return 2
    return run_listener(settings, group_id=args.group, max_concurrent=args.max_concurrent,
                        max_triggers=args.max_triggers, idle_exit_s=args.idle_exit, once=args.once,
                        shutdown_grace_s=args.grace, example_job=args.example_job)


def cmd_example_retrain(args: argparse.Namespace) -> int:
    from driftline.jobs.example_retrain import main

    _export_config(args)
    return main()
