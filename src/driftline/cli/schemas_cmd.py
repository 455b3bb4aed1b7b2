"""`driftline schemas generate|check`: the JSON Schema files of the wire events."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from driftline.schemas.generate import SCHEMAS_DIR, check, generate


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "schemas",
        help="JSON Schemas of the wire events (for producers in other languages)",
        description="Generate or check <name>.schema.json (JSON Schema draft 2020-12) for every wire "
        "event, from the pydantic models in driftline.schemas.events.",
    )
    actions = parser.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="write the schema files (unchanged files are left alone)")
    gen.add_argument("--out", type=Path, default=SCHEMAS_DIR, metavar="DIR",
                     help=f"directory to write to (default: {SCHEMAS_DIR})")
    gen.set_defaults(handler=_generate)
    chk = actions.add_parser("check", help="exit 1 if a schema file is missing or out of date")
    chk.add_argument("--dir", type=Path, default=SCHEMAS_DIR, metavar="DIR",
                     help=f"directory holding the files (default: {SCHEMAS_DIR})")
    chk.set_defaults(handler=_check)


def _generate(args: argparse.Namespace) -> int:
    stale = set(check(args.out))
    try:
        paths = generate(args.out)
    except OSError as err:
        print(f"driftline: cannot write the schemas to {args.out}: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{'updated' if path.name in stale else 'current'}  {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    stale = check(args.dir)
    if not stale:
        print(f"{args.dir}: all schema files are up to date")
        return 0
    for name in stale:
        print(f"out of date: {args.dir / name}", file=sys.stderr)
    print("driftline: run `driftline schemas generate` and commit the result", file=sys.stderr)
    return 1
