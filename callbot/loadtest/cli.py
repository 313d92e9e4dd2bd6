"""`callbot loadtest` command line: flags -> LoadOptions -> report table (+ JSON)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .scenario import LoadOptions, ScenarioError, load_scenario


def add_parser(sub: Any) -> None:
    p = sub.add_parser("loadtest", help="call a server with many synthetic callers and time them")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--calls", type=int, default=1, help="number of synthetic callers")
    p.add_argument("--procs", type=int, default=1, help="load processes the callers share")
    p.add_argument("--ramp", type=float, default=0.0, metavar="SECONDS",
                   help="start the calls evenly over this many seconds")
    p.add_argument("--scenario", metavar="FILE", help="JSON or YAML steps (default: built-in "
                   "questions synthesized with the packaged Piper voice)")
    p.add_argument("--turns", type=int, metavar="K",
                   help="turns per call, repeating the scenario (default: the scenario once)")
    p.add_argument("--json", metavar="OUT", help="write the raw figures to this file")
    p.add_argument("--max-p95-ms", type=float, metavar="MS",
                   help="exit 1 when the voice-to-voice p95 is above this")
    p.add_argument("--ice-host", action="append", dest="ice_hosts", metavar="ADDRESS",
                   help="local address the callers offer as ICE candidate (default: 127.0.0.1 "
                        "for a loopback URL, otherwise every local address)")
    p.add_argument("--header", action="append", dest="headers", metavar="'NAME: VALUE'",
                   help="HTTP header sent with each offer and hang-up, e.g. "
                        "'Authorization: Bearer TOKEN' (repeatable)")
    p.add_argument("--echo-db", type=float, metavar="DB",
                   help="speakerphone caller: the bot's voice back into the microphone this "
                        "many dB down (e.g. -10)")
    p.add_argument("--echo-delay-ms", type=float, default=120.0, metavar="MS",
                   help="... this late (default 120)")


def parse_headers(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    headers = []
    for value in values or ():
        name, sep, content = value.partition(":")
        if not sep or not name.strip() or any(c in value for c in "\r\n"):
            raise ScenarioError(f"--header {value!r}: expected 'Name: value'")
        headers.append((name.strip(), content.strip()))
    return tuple(headers)


def options_from_args(args: argparse.Namespace) -> LoadOptions:
    if args.calls < 1 or args.procs < 1 or args.ramp < 0 or (args.turns is not None
                                                             and args.turns < 1):
        raise ScenarioError("--calls, --procs and --turns must be >= 1, --ramp >= 0")
    scenario = load_scenario(args.scenario) if args.scenario else []
    return LoadOptions(url=args.url, calls=args.calls, procs=args.procs, ramp_s=args.ramp,
                       turns=args.turns, scenario=scenario, max_p95_ms=args.max_p95_ms,
                       headers=parse_headers(getattr(args, "headers", None)),
                       ice_hosts=tuple(args.ice_hosts) if args.ice_hosts
                       else default_ice_hosts(args.url),
                       echo_db=args.echo_db, echo_delay_ms=args.echo_delay_ms)


def default_ice_hosts(url: str) -> tuple[str, ...] | None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return ("127.0.0.1",)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (str(address),) if address.is_loopback else None


def main(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except ScenarioError as exc:
        print(f"callbot loadtest: {exc}", file=sys.stderr)
        return 2
    from .report import Progress, exit_code, format_summary  # the callers load only here
    from .run import run_loadtest

    report = asyncio.run(run_loadtest(options, Progress(options.calls)))
    print(format_summary(report, options.max_p95_ms))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return exit_code(report, options.max_p95_ms)
