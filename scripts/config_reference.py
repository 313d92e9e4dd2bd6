"""Writes docs/config-reference.md from the settings dataclasses (the schema `callbot.toml`,
YAML and CALLBOT_* are read into): every key, its default and the comment beside it in the
source. `python3 scripts/config_reference.py` regenerates it; tests/test_docs.py fails when
the committed page is stale."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "config-reference.md"


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if "\n" not in value else '"…" (long text)'
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _section(cls: type, prefix: str, out: list[str]) -> None:
    from callbot.signalling.cli.configfile import field_comments

    comments = field_comments(cls)
    rows, nested = [], []
    for field in dataclasses.fields(cls):
        value = _default(field)
        if dataclasses.is_dataclass(value):
            nested.append((field.name, type(value)))
            continue
        note = comments.get(field.name, "").replace("|", "\\|")
        rows.append(f"| `{field.name}` | `{_show(value)}` | {note} |")
    if rows:
        out += [f"## `[{prefix}]`" if prefix else "## Top level", "",
                "| Key | Default | Notes |", "|---|---|---|", *rows, ""]
    for name, sub in nested:
        _section(sub, f"{prefix}.{name}" if prefix else name, out)


def render() -> str:
    from callbot.signalling.config import CallbotConfig

    out = ["# Configuration reference", "",
           "Generated from the settings schema by `scripts/config_reference.py`: every key "
           "of `callbot.toml` (or YAML), its default and the note beside it in the source. "
           "How to set them, with examples: [Configuration](configuration.md).", ""]
    _section(CallbotConfig, "", out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
