"""How many talking calls one server holds in real time.

Ramps the number of concurrent calls (each asks three questions in different voices) until real
time breaks: a failed call, received-audio gaps over the limit, or voice-to-voice p95 over the
budget. Reports the most calls held and, per step, the server's CPU% and RSS per call (from
/proc of the server process). `--transport-only` runs the same against `bench.echo_server`
(the call API and media path with the pipeline replaced by an echo of the same size), which
separates the WebRTC media cost from the speech pipeline's.

    python3 -m bench.capacity [--steps 1,2,4,6] [--budget-ms 3000] [--transport-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import urllib.request
from typing import Any

from callbot import loadtest

from .common import ServerProcess, cpu_percent, proc_stats, refusals, save, table, voice_scenario


class Sampler:
    """Peak RSS of the server while a step runs, and its CPU% while all `n` calls are up."""

    def __init__(self, pid: int, url: str, n: int) -> None:
        self.pid = pid
        self.url = url
        self.n = n
        self.peak_rss = 0.0
        self.full_cpu_s = self.full_wall_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _active_calls(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                return int(json.load(resp).get("calls", 0))
        except (OSError, ValueError):
            return -1

    def _run(self) -> None:
        prev = proc_stats(self.pid, with_children=True)
        prev_full = False
        while not self._stop.wait(0.5):
            now = proc_stats(self.pid, with_children=True)
            full = self._active_calls() >= self.n
            if full and prev_full:
                self.full_cpu_s += now["cpu_s"] - prev["cpu_s"]
                self.full_wall_s += now["t"] - prev["t"]
            prev, prev_full = now, full
            self.peak_rss = max(self.peak_rss, now["rss_mb"])

    @property
    def full_cpu_pct(self) -> float | None:
        return 100 * self.full_cpu_s / self.full_wall_s if self.full_wall_s > 1 else None

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def scenario(echo: bool, voices: int) -> list[loadtest.Step]:
    if echo or not voices:
        steps = [s for s in loadtest.default_scenario() if s.kind != "barge_in"]
        return steps if not echo else [steps[0], loadtest.Step("pause", seconds=0.5), steps[2]]
    return voice_scenario(voices)


def run_step(server: ServerProcess, n: int, args: argparse.Namespace,
             steps: list[loadtest.Step]) -> dict[str, Any]:
    options = loadtest.LoadOptions(
        url=server.url, calls=n, procs=min(n, args.procs), ramp_s=args.ramp, turns=args.turns,
        scenario=steps, ice_hosts=("127.0.0.1",), echo=args.transport_only,
    )
    idle = proc_stats(server.pid, with_children=True)
    with Sampler(server.pid, server.url, n) as sampler:
        report = asyncio.run(loadtest.run_loadtest(options))
    after = proc_stats(server.pid, with_children=True)
    s = report["summary"]
    f = s["figures"]
    call_min = sum(r.get("duration_s", 0) for r in report["results"]) / 60
    gaps_per_min = sum(r.get("gaps", 0) for r in report["results"]) / max(call_min, 1e-6)
    latency = f.get("echo_ms" if args.transport_only else "v2v_ms", {})
    cpu = sampler.full_cpu_pct
    if cpu is None:  # the calls never overlapped long enough: the whole step's average
        cpu = cpu_percent(idle, after)
    row = {
        "calls": n, "ok": s["calls_ok"], "failed": s["calls_failed"],
        "refused": refusals(report),
        "latency_p50_ms": latency.get("p50"), "latency_p95_ms": latency.get("p95"),
        "gaps_per_call_min": round(gaps_per_min, 1),
        "server_cpu_pct": round(cpu, 1), "cpu_pct_per_call": round(cpu / n, 1),
        "peak_rss_mb": round(max(sampler.peak_rss, after["rss_mb"]), 1),
        "rss_mb_per_call": round((max(sampler.peak_rss, after["rss_mb"]) - idle["rss_mb"]) / n, 1),
        "failures": s["failures"],
    }
    broken = []
    if s["calls_failed"]:
        broken.append("failed calls")
    if gaps_per_min > args.max_gaps_per_min:
        broken.append("gaps")
    if latency.get("p95") is not None and latency["p95"] > args.budget_ms:
        broken.append("latency p95")
    row["broken"] = ", ".join(broken)
    return {"row": row, "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=None,
                        help="concurrent calls per step (default 1,2,3,4 or 1,2,4,8,12,16 echo)")
    parser.add_argument("--budget-ms", type=float, default=None,
                        help="v2v p95 budget (default 3000; echo round trip 400)")
    parser.add_argument("--max-gaps-per-min", type=float, default=20.0,
                        help="received-audio gaps (>60 ms) per call-minute that break real time")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--procs", type=int, default=3, help="load-generator processes")
    parser.add_argument("--voices", type=int, default=2,
                        help="voices per question (Piper + espeak-ng); 0: built-in Piper clips")
    parser.add_argument("--per-client", type=int, default=64,
                        help="server's max_calls_per_client (all callers share 127.0.0.1); "
                             "refusals are reported")
    parser.add_argument("--ramp", type=float, default=1.0)
    parser.add_argument("--transport-only", action="store_true",
                        help="echo server: media cost only, no speech pipeline")
    parser.add_argument("--keep-going", action="store_true", help="run every step")
    args = parser.parse_args()
    echo = args.transport_only
    steps_n = [int(x) for x in (args.steps or ("1,2,4,8,12,16" if echo else "1,2,3,4")).split(",")]
    if args.budget_ms is None:
        args.budget_ms = 400.0 if echo else 3000.0
    steps = scenario(echo, args.voices)
    rows, reports = [], []
    held = 0
    with ServerProcess(echo=echo, limits={"max_calls_per_client": args.per_client}) as server:
        baseline = proc_stats(server.pid, with_children=True)
        for n in steps_n:
            result = run_step(server, n, args, steps)
            rows.append(result["row"])
            reports.append(result["report"])
            print(f"{n} calls: {result['row']}", flush=True)
            if result["row"]["broken"]:
                if not args.keep_going:
                    break
            else:
                held = max(held, n)
            time.sleep(2)
    keys = ["calls", "ok", "failed", "refused", "latency_p50_ms", "latency_p95_ms",
            "gaps_per_call_min", "server_cpu_pct", "cpu_pct_per_call", "peak_rss_mb",
            "rss_mb_per_call", "broken"]
    print(f"\n{'transport only (echo)' if echo else 'full pipeline'}: latency = "
          f"{'echo round trip' if echo else 'voice-to-voice'}; server idle RSS "
          f"{baseline['rss_mb']:.0f} MB")
    print(table(keys, [[r[k] for k in keys] for r in rows]))
    print(f"most calls held in real time: {held}")
    save("capacity-echo" if echo else "capacity", {
        "mode": "transport_only" if echo else "full", "budget_ms": args.budget_ms,
        "max_gaps_per_min": args.max_gaps_per_min, "idle_rss_mb": baseline["rss_mb"],
        "most_calls_held": held, "steps": rows, "reports": reports,
    })


if __name__ == "__main__":
    main()
