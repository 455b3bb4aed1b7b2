"""The README's configuration reference lists every setting (so it cannot silently go stale)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from driftline.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def env_names() -> list[str]:
    names = []
    for section, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names += [f"DRIFTLINE_{section.upper()}_{sub.upper()}" for sub in ann.model_fields]
        else:
            names.append(f"DRIFTLINE_{section.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    missing = [name for name in env_names() if f"`{name}`" not in text]
    assert missing == []


def test_readme_gives_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
