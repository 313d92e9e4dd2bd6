"""One vocabulary: every event the server can emit is documented in the protocol page's
table (docs/protocol.md) and the
JSON schema, and handled by the demo page; every emitted event is one of the defined types."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from callbot.pipeline import events as ev
from callbot.signalling.server.openapi import SPEC

ROOT = Path(__file__).resolve().parents[1]


def readme_rows() -> dict[str, set[str]]:
    """`| `type` | `a, b` | ... |` rows of the protocol page's event tables -> field names."""
    rows: dict[str, set[str]] = {}
    for line in (ROOT / "docs" / "protocol.md").read_text().splitlines():
        match = re.match(r"\|\s*`([a-z_.]+)`\s*\|\s*`?([a-z_, ]*)`?\s*\|", line)
        if match:
            fields = {f.strip() for f in match.group(2).split(",") if f.strip()}
            rows[match.group(1)] = fields
    return rows


def declared_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", [*ev.SERVER_EVENTS, *ev.CLIENT_MESSAGES],
                         ids=lambda c: c.type)
def test_every_event_is_in_the_readme_with_its_fields(cls: type) -> None:
    rows = readme_rows()
    assert cls.type in rows, f"docs/protocol.md has no table row for {cls.type}"
    assert rows[cls.type] == declared_fields(cls)


def test_the_readme_documents_no_event_that_does_not_exist() -> None:
    known = {c.type for c in (*ev.SERVER_EVENTS, *ev.CLIENT_MESSAGES)}
    assert set(readme_rows()) <= known


def test_the_json_schema_lists_every_event() -> None:
    schemas = SPEC["components"]["schemas"]
    server = {s["properties"]["type"]["const"]: s for s in schemas["ServerEvent"]["oneOf"]}
    assert set(server) == {c.type for c in ev.SERVER_EVENTS}
    for cls in ev.SERVER_EVENTS:
        schema = server[cls.type]
        assert set(schema["properties"]) == {"type", "t_ms"} | declared_fields(cls)
    client = {s["properties"]["type"]["const"] for s in schemas["ClientMessage"]["oneOf"]}
    assert client == {c.type for c in ev.CLIENT_MESSAGES}


def test_the_demo_page_handles_every_server_event() -> None:
    script = (ROOT / "web_demo" / "app.js").read_text()
    handled = set(re.findall(r'case "([a-z_.]+)":', script))
    missing = {c.type for c in ev.SERVER_EVENTS} - handled
    assert not missing, f"web_demo/app.js does not handle {sorted(missing)}"


def test_the_server_emits_only_typed_events() -> None:
    """No event is built from a bare string: send_event/_send take Event objects only."""
    for path in [*(ROOT / "signalling").glob("*.py"), *(ROOT / "pipeline").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("send_event", "_send", "_turn_event")):
                for arg in node.args:
                    assert not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)), (
                        f"{path.name}:{node.lineno} emits an event by name")


def test_wire_form_omits_unset_fields_and_carries_time() -> None:
    wire = ev.TurnMetrics(turn_id=3, asr_ms=12.5).to_wire(1234.56)
    assert wire == {"type": "metrics", "t_ms": 1234.6, "turn_id": 3, "asr_ms": 12.5}
    assert ev.BotState(state="speaking").to_wire(0) == {"type": "bot.state", "t_ms": 0,
                                                        "state": "speaking"}
