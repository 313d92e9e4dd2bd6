"""`callbot capacity`: how many talking calls this machine answers within a latency budget.

Synthetic callers (`callbot loadtest`'s real aiortc peers, speaking the built-in questions or a
`--scenario`) call a server at increasing concurrency; all the calls of a step start together,
so their questions end at the same moment: the worst case for shared models. A step holds
when no call failed and the voice-to-voice p95 (the caller's end of speech -> the bot's first
audio, at the caller) is within `--budget-ms`. The recommended `max_calls` is the most calls
of the steps held before the first that broke; put it in the config as

    [capacity]
    calls = N                  # or `callbot serve --capacity N` / CALLBOT_CAPACITY=N

and the server refuses the call beyond it (503 `at_capacity`, Retry-After) instead of letting
it slow every answer. Without `--url` it starts `callbot serve` on a free loopback port with
the given `--config` (per-client limits lifted: every synthetic caller is 127.0.0.1). The load
runs on the same machine: its own CPU use (Opus, one process per `--procs`) is counted against
the server, so the figure is a floor; run it from another machine with `--url` for the real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_STEPS = "1,2,3,4,6"
LOOPBACK = "127.0.0.1"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("capacity", help="measure the talking calls this machine answers within "
                                        "a latency budget; prints the recommended max_calls")
    p.add_argument("--url", help="a running server (default: start `callbot serve` here)")
    p.add_argument("--config", help="TOML or YAML settings of the server it starts")
    p.add_argument("--budget-ms", type=float, default=None,
                   help="voice-to-voice p95 budget (default: [capacity] latency_budget_ms of "
                        "--config, 2500)")
    p.add_argument("--steps", default=DEFAULT_STEPS,
                   help=f"concurrent calls per step (default {DEFAULT_STEPS})")
    p.add_argument("--turns", type=int, default=2, help="questions per call (default 2)")
    p.add_argument("--procs", type=int, default=2,
                   help="load-generator processes (default 2)")
    p.add_argument("--scenario", metavar="FILE", help="loadtest scenario (JSON or YAML)")
    p.add_argument("--keep-going", action="store_true",
                   help="run every step, even after one broke the budget")
    p.add_argument("--json", metavar="OUT", help="write the steps' figures to this file")
    p.add_argument("--header", action="append", dest="headers", metavar="'NAME: VALUE'",
                   help="HTTP header for each offer, e.g. 'Authorization: Bearer TOKEN'")


def parse_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--steps {text!r}: expected numbers like 1,2,4") from None
    if not steps or steps[0] < 1:
        raise ValueError("--steps: every step needs at least 1 call")
    return steps


def step_row(n: int, report: dict[str, Any], budget_ms: float) -> dict[str, Any]:
    """One step's figures from a loadtest report, and whether it held."""
    summary = report["summary"]
    v2v = summary["figures"].get("v2v_ms") or {}
    broken = []
    if summary["calls_failed"]:
        broken.append(f"{summary['calls_failed']} failed")
    if not v2v:
        broken.append("no answer")
    elif v2v["p95"] > budget_ms:
        broken.append("p95 over budget")
    return {"calls": n, "ok": summary["calls_ok"], "failed": summary["calls_failed"],
            "v2v_p50_ms": v2v.get("p50"), "v2v_p95_ms": v2v.get("p95"),
            "v2v_max_ms": v2v.get("max"), "held": not broken, "broken": ", ".join(broken),
            "failures": summary["failures"]}


def recommend(rows: Sequence[dict[str, Any]]) -> int:
    """The most calls of the steps that held before the first one that broke (0: none)."""
    held = 0
    for row in sorted(rows, key=lambda r: r["calls"]):
        if not row["held"]:
            break
        held = row["calls"]
    return held


def format_rows(rows: Sequence[dict[str, Any]], budget_ms: float) -> str:
    lines = [f"{'calls':>5} {'ok':>4} {'failed':>6} {'v2v p50':>9} {'v2v p95':>9} "
             f"{'max':>9}  within {budget_ms:.0f} ms"]

    def ms(v: float | None) -> str:
        return f"{v:9.0f}" if v is not None else f"{'-':>9}"

    for r in rows:
        lines.append(f"{r['calls']:>5} {r['ok']:>4} {r['failed']:>6} {ms(r['v2v_p50_ms'])} "
                     f"{ms(r['v2v_p95_ms'])} {ms(r['v2v_max_ms'])}  "
                     f"{'yes' if r['held'] else 'no: ' + r['broken']}")
    return "\n".join(lines)


class _Server:
    """`callbot serve` in a subprocess on a free loopback port, for the measurement."""

    def __init__(self, config: str | None) -> None:
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        # Every synthetic caller is 127.0.0.1: one client to the per-client limits, so they are
        # lifted; the call cap and any measured capacity too (this is what measures it). The
        # environment overrides the config file.
        env = {**os.environ, "CALLBOT_MAX_CALLS": "64", "CALLBOT_CAPACITY": "0",
               "CALLBOT_MAX_CALLS_PER_CLIENT": "64", "CALLBOT_CALL_RATE_PER_MINUTE": "6000"}
        cmd = [sys.executable, "-m", "callbot", "serve", "--port", str(self.port),
               "--host", LOOPBACK, "--ice-host", LOOPBACK, "--log-level", "WARNING"]
        if config is not None:
            cmd += ["--config", config]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"callbot serve exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("callbot serve did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(url: str, steps: Sequence[int], budget_ms: float, args: argparse.Namespace
            ) -> list[dict[str, Any]]:
    from callbot import loadtest
    from callbot.loadtest.cli import default_ice_hosts, parse_headers

    scenario = loadtest.load_scenario(args.scenario) if args.scenario else []
    rows: list[dict[str, Any]] = []
    for n in steps:
        options = loadtest.LoadOptions(
            url=url, calls=n, procs=min(n, args.procs), ramp_s=0.0, turns=args.turns,
            scenario=list(scenario), ice_hosts=default_ice_hosts(url),
            headers=parse_headers(args.headers))
        report = asyncio.run(loadtest.run_loadtest(options))
        scenario = options.scenario  # the built-in clips, synthesized once
        row = step_row(n, report, budget_ms)
        rows.append(row)
        print(f"  {n} call(s): v2v p95 {row['v2v_p95_ms']} ms, "
              f"{'held' if row['held'] else 'broke (' + row['broken'] + ')'}", flush=True)
        if not row["held"] and not args.keep_going:
            break
        time.sleep(1.0)  # the last hang-ups leave before the next step
    return rows


def main(args: argparse.Namespace) -> int:
    from callbot.signalling.config import CallbotConfig, ConfigError

    try:
        steps = parse_steps(args.steps)
        budget_ms = args.budget_ms
        if budget_ms is None:
            budget_ms = CallbotConfig.load(args.config).capacity.latency_budget_ms
        if budget_ms <= 0 or args.turns < 1 or args.procs < 1:
            raise ValueError("--budget-ms, --turns and --procs must be > 0")
    except (ValueError, ConfigError) as exc:
        print(f"callbot capacity: {exc}", file=sys.stderr)
        return 2
    server = None
    url = args.url
    if url is None:
        print("callbot capacity: starting callbot serve (loading models)...", flush=True)
        server = _Server(args.config)
        url = server.url
    try:
        if server is not None:
            server.wait_ready()
        print(f"callbot capacity: {url}, steps {steps}, v2v p95 budget {budget_ms:.0f} ms, "
              f"all calls of a step speaking at once", flush=True)
        rows = measure(url, steps, budget_ms, args)
    finally:
        if server is not None:
            server.stop()
    best = recommend(rows)
    print(format_rows(rows, budget_ms))
    if best:
        print(f"recommended max_calls: {best}\n  [capacity]\n  calls = {best}\n"
              f"  latency_budget_ms = {budget_ms:g}\n(or `callbot serve --capacity {best}`)")
    else:
        print("recommended max_calls: none — even one call breaks the budget on this machine")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "url": url, "budget_ms": budget_ms, "recommended_max_calls": best,
            "steps": rows, "load_avg": os.getloadavg(), "cpus": os.cpu_count()}, indent=1))
    return 0 if best else 1
