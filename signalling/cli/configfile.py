"""`callbot config --example` (every setting, its default and its note, as a commented
`callbot.toml`) and `callbot serve --print-config` (the effective settings, secrets masked).

Both are written from the settings schema (the dataclasses in `callbot.signalling.config`), so
a new setting shows up here, and in docs/config-reference.md, without anyone listing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import textwrap
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from callbot.rtc.ice import IceServer
from callbot.signalling.config import CallbotConfig

MASK = "***"
# Settings whose values are secrets (by name): shown as MASK when set. Not every "*_tokens"
# (`max_tokens` is a count): a new token setting is named here.
_SECRET = re.compile(r"(secret|api_key|password|credential|bearer_tokens|admin_tokens)$")


def field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # note` lines of a dataclass's source (and the comment lines
    right above them) -> note."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# "))
            continue
        match = re.match(r"\s+(\w+): [^=]+(?:=.*?)?(?:#\s*(.*))?$", line)
        if match and not stripped.startswith(("def ", "@")):
            found[match.group(1)] = " ".join([*pending, match.group(2) or ""]).strip()
        pending = []
    return found


def _toml(value: Any) -> str:
    """A TOML value (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, IceServer):
        parts = [f"urls = {_toml(list(value.urls))}"]
        if value.username is not None:
            parts.append(f"username = {_toml(value.username)}")
        if value.credential is not None:
            parts.append(f"credential = {_toml(value.credential)}")
        return "{ " + ", ".join(parts) + " }"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _masked(name: str, value: Any) -> Any:
    if value is None:
        return None
    if _SECRET.search(name):
        return [MASK for _ in value] if isinstance(value, tuple | list) else MASK
    if isinstance(value, str) and name.endswith("url"):
        parts = urlsplit(value)  # redis://user:password@host: the password is a secret
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@")
            return urlunsplit(parts._replace(netloc=netloc))
    if name == "ice_servers":
        return tuple(dataclasses.replace(s, credential=MASK) if s.credential else s
                     for s in value)
    return value


def _section(settings: Any, prefix: str, out: list[str], *, notes: bool, mask: bool) -> None:
    comments = field_comments(type(settings)) if notes else {}
    nested = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if dataclasses.is_dataclass(value):
            nested.append((field.name, value))
            continue
        if mask:
            value = _masked(field.name, value)
        note = comments.get(field.name)
        if note:
            out += textwrap.wrap(note, 95, initial_indent="# ", subsequent_indent="# ")
        if value is None:  # TOML has no null: left out, the default stays
            out.append(f"# {field.name} = (unset)")
        else:
            out.append(f"{field.name} = {_toml(value)}")
    for name, sub in nested:
        table = f"{prefix}.{name}" if prefix else name
        out += ["", f"[{table}]"]
        _section(sub, table, out, notes=notes, mask=mask)


def example_toml() -> str:
    """Every setting at its default, with the note beside it in the source: a commented
    `callbot.toml` that loads back into the defaults."""
    out = ["# callbot.toml: every setting, at its default (`callbot config --example`).",
           "# Keep only what you change. CALLBOT_* environment variables and `callbot serve`",
           "# flags override the file; docs/config-reference.md has the same list.", ""]
    _section(CallbotConfig(), "", out, notes=True, mask=False)
    return "\n".join(out) + "\n"


def effective_toml(config: CallbotConfig) -> str:
    """The settings a server would run with (file, environment, flags), secrets masked."""
    out = ["# callbot: the effective configuration (`callbot serve --print-config`); "
           f"secrets shown as {MASK}.", ""]
    _section(config, "", out, notes=False, mask=True)
    return "\n".join(out) + "\n"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="print a sample configuration file")
    p.add_argument("--example", action="store_true",
                   help="print every setting with its default and note, as commented TOML")


def main(args: argparse.Namespace) -> int:
    if not args.example:
        print("callbot config: say what to print (--example); the effective configuration "
              "of a server: callbot serve [flags] --print-config", file=sys.stderr)
        return 2
    sys.stdout.write(example_toml())
    return 0
