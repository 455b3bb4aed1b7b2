"""`driftline trigger`: an operator asks for a model to be retrained now.

Publishes a ``RetrainTrigger`` with reason ``manual`` (key = model_id) to
``topics.retrain_triggers`` and writes its audit row to ``retrain_triggers``. Its evidence window
is the current UTC minute and its ``trigger_id`` hashes model, version, ``manual``, that minute and
the reason text: repeating the same command within the minute (a double Enter, a retried
script) yields the same id, which the retrain listener runs once; the same request in a later
minute, or with a different text, is a new trigger.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

import orjson

from driftline.cli.common import settings_from_args
from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import kafka_python_producer
from driftline.operators.triggers import trigger_id
from driftline.schemas.events import RetrainTrigger, TriggerReason
from driftline.store.client import StoreError, database_name
from driftline.store.query import run_query
from driftline.store.writer import open_row_writer

MINUTE_MS = 60_000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "trigger",
        help="request a retrain of a model now (manual retrain trigger)",
        description="Publish a manual retrain trigger for the retrain listener and record it in "
        "ClickHouse. The same model, version and reason within one UTC minute give the same "
        "trigger id, so an accidental repeat is run once.",
    )
    parser.add_argument("--model", required=True, metavar="MODEL_ID", help="model to retrain")
    parser.add_argument("--version", metavar="VERSION",
                        help="model version to retrain (default: the version with the newest drift window)")
    parser.add_argument("--reason", required=True, metavar="TEXT", help="why (free text, the message)")
    parser.add_argument("--json", action="store_true", help="print the published trigger as JSON")
    parser.set_defaults(handler=cmd_trigger)


def manual_trigger(settings: Settings, model_id: str, model_version: str, reason: str, now_ms: int,
                   requested_by: str = "") -> RetrainTrigger:
    """The manual trigger for a request made at ``now_ms`` (epoch ms).

    >>> from driftline.config import Settings
    >>> a = manual_trigger(Settings(), "m", "1", "new data", 1_700_000_012_000)
    >>> b = manual_trigger(Settings(), "m", "1", "new data", 1_700_000_039_999)
    >>> c = manual_trigger(Settings(), "m", "1", "new data", 1_700_000_040_000)
    >>> a.trigger_id == b.trigger_id != c.trigger_id, a.window_start, a.window_end
    (True, 1699999980000, 1700000040000)
    """
    start = now_ms - now_ms % MINUTE_MS
    end = start + MINUTE_MS
    return RetrainTrigger(
        trigger_id=trigger_id(model_id, model_version, TriggerReason.MANUAL, start, end, note=reason),
        model_id=model_id, model_version=model_version, reason=TriggerReason.MANUAL, message=reason,
        window_start=start, window_end=end, triggered_at=now_ms,
        evidence={"requested_by": requested_by, "config_hash": settings.config_hash()},
        config_hash=settings.config_hash(),
    )


def latest_version(settings: Settings, model_id: str) -> str | None:
    """The live version of ``model_id`` whose newest drift window is the latest, if any."""
    sql = (f"SELECT model_version FROM {database_name(settings)}.model_drift "
           "WHERE run_id = '' AND model_id = {model_id:String} "
           "GROUP BY model_version ORDER BY max(window_end) DESC, model_version DESC LIMIT 1")
    rows = orjson.loads(run_query(settings, sql, "json", parameters={"model_id": model_id}))["data"]
    return str(rows[0]["model_version"]) if rows else None


def publish_trigger(settings: Settings, trigger: RetrainTrigger) -> None:
    """Produce the trigger (key = model_id), then write its ``retrain_triggers`` row."""
    producer = kafka_python_producer(settings, acks="all")
    try:
        producer.send(settings.topics.retrain_triggers, key=trigger.model_id.encode(),
                      value=trigger.model_dump_json().encode()).get(timeout=30)
    finally:
        producer.close()
    writer = open_row_writer(settings)
    try:
        writer.write("retrain_triggers", [{
            "run_id": trigger.run_id, "model_id": trigger.model_id, "model_version": trigger.model_version,
            "trigger_id": trigger.trigger_id, "reason": str(trigger.reason), "message": trigger.message,
            "window_start": trigger.window_start, "window_end": trigger.window_end,
            "triggered_at": trigger.triggered_at, "evidence": orjson.dumps(trigger.evidence).decode(),
            "config_hash": trigger.config_hash,
        }])
    finally:
        writer.close()


def cmd_trigger(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    version = args.version
    if not version:
        try:
            version = latest_version(settings, args.model)
        except StoreError as err:
            print(f"driftline: cannot look up the version of {args.model!r} ({err}); pass --version",
                  file=sys.stderr)
            return 1
        if version is None:
            print(f"driftline: no drift windows of model {args.model!r} in ClickHouse; pass --version",
                  file=sys.stderr)
            return 1
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    trigger = manual_trigger(settings, args.model, version, args.reason, int(time.time() * 1000), user)
    ensure_topics(settings)
    publish_trigger(settings, trigger)
    if args.json:
        print(trigger.model_dump_json())
    else:
        print(f"trigger {trigger.trigger_id}: retrain {trigger.model_id} version {trigger.model_version} "
              f"({args.reason}) -> {settings.topics.retrain_triggers}")
    return 0
