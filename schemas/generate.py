"""JSON Schemas (draft 2020-12) of the wire events, for producers written in other languages.

One ``<name>.schema.json`` per :data:`~driftline.schemas.events.EVENT_MODELS` entry, generated
from the pydantic models (validation mode: what driftline accepts) and kept next to this module.
The text is stable (sorted keys, 2-space indent, trailing newline), so ``check`` can tell whether
the committed files still match the models.

>>> schema = event_schema("label_event")
>>> schema["$schema"], schema["$id"], schema["title"], schema["required"]
('https://json-schema.org/draft/2020-12/schema', 'label_event.schema.json', 'LabelEvent', \
['prediction_id', 'label', 'timestamp'])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from driftline.schemas.events import EVENT_MODELS

SCHEMAS_DIR = Path(__file__).resolve().parent
DRAFT = "https://json-schema.org/draft/2020-12/schema"
SUFFIX = ".schema.json"
COMMENT = "Generated from driftline.schemas.events by `driftline schemas generate`; do not edit."


def schema_path(out_dir: str | Path, name: str) -> Path:
    """Where the schema of EVENT_MODELS[name] lives in ``out_dir``."""
    return Path(out_dir) / f"{name}{SUFFIX}"


def event_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of EVENT_MODELS[name].

    ``$id`` is the file name, a relative reference: it resolves against wherever the file is
    served or stored (``infra/openapi.yaml`` refers to it as ``../schemas/<name>.schema.json``).
    """
    model = EVENT_MODELS[name]
    body = model.model_json_schema(mode="validation")
    if not body.get("description"):
        raise ValueError(f"{model.__name__} has no docstring; it becomes the schema's description")
    return {
        **body,
        "$schema": DRAFT,
        "$id": f"{name}{SUFFIX}",
        "$comment": COMMENT,
        "title": model.__name__,
    }


def render(name: str) -> str:
    """The exact file text of the schema of EVENT_MODELS[name]."""
    return json.dumps(event_schema(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(out_dir: str | Path = SCHEMAS_DIR) -> list[Path]:
    """Write ``<name>.schema.json`` for every event model into ``out_dir``; returns the paths.

    A file whose text is already current is left untouched.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in EVENT_MODELS:
        path = schema_path(out, name)
        text = render(name)
        if _read(path) != text:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        paths.append(path)
    return paths


def check(out_dir: str | Path = SCHEMAS_DIR) -> list[str]:
    """File names in ``out_dir`` that are missing or differ from what ``generate`` would write."""
    return [
        schema_path(out_dir, name).name
        for name in EVENT_MODELS
        if _read(schema_path(out_dir, name)) != render(name)
    ]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
