"""What one call node costs per call when its models are elsewhere.

Starts `bench.stub_engines` (ASR, TTS and LLM servers that answer instantly, so no model
runs anywhere) and a call node `callbot serve --asr-url --tts-url --llm-base-url` pointing at
it, then holds N talking calls (`callbot loadtest` callers in `--procs` processes: audio both
ways, a question, the bot's spoken answer, again for `--turns` turns). While all N calls are up
it samples the node's /proc every 2 s: CPU (% of one core, and per call), RSS (first and last
sample of the full window: flat or growing), and reads the node's `/metrics`: outgoing audio
frames and frames sent late (`PacedAudioTrack.frames_late`, `callbot_frames_late_total`).

Smart Turn (the end-of-turn audio model, ONNX) and webrtcvad still run on the node: they are
the node's own turn logic. The callers run on the same machine: their Opus encode/decode
competes with the node for the cores, so on a small machine the figures are a ceiling of the
node's cost; run the load from another machine (`--url` of `callbot loadtest`) for clean ones.

    python3 -m bench.node_cost --calls 10,20,40 --turns 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from callbot import loadtest

from .common import LOOPBACK, ROOT, free_port, proc_stats, save, table


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL)


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def frame_counts(node_url: str) -> tuple[float, float]:
    """(frames sent, frames sent late) so far, every call of the node together."""
    text = _get(f"{node_url}/metrics")

    def value(name: str) -> float:
        match = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    return value("callbot_frames_sent"), value("callbot_frames_late")


class Sampler:
    """The node's CPU and RSS every `period_s`, with the calls it holds (`/healthz`)."""

    def __init__(self, pid: int, url: str, period_s: float = 2.0) -> None:
        self.pid, self.url, self.period_s = pid, url, period_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                calls = int(json.loads(_get(f"{self.url}/healthz"))["calls"])
            except (OSError, ValueError, KeyError):
                calls = -1
            stats = proc_stats(self.pid, with_children=True)
            self.samples.append({"t": stats["t"], "cpu_s": stats["cpu_s"],
                                 "rss_mb": stats["rss_mb"], "calls": calls})

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def full_window(self, n: int) -> list[dict[str, float]]:
        """The samples taken while all `n` calls were up (the longest such run)."""
        best: list[dict[str, float]] = []
        run: list[dict[str, float]] = []
        for s in self.samples:
            if s["calls"] >= n:
                run.append(s)
                if len(run) > len(best):
                    best = list(run)
            else:
                run = []
        return best


def run_step(n: int, node: subprocess.Popen[bytes], node_url: str,
             args: argparse.Namespace) -> dict[str, Any]:
    # Questions and answers, no barge-in step: the stub's reply is a tone, and what is
    # measured is holding calls, not interrupting them.
    scenario = [s for s in loadtest.default_scenario() if s.kind != "barge_in"]
    options = loadtest.LoadOptions(url=node_url, calls=n, procs=min(n, args.procs),
                                   ramp_s=args.ramp_per_call * n, turns=args.turns,
                                   scenario=scenario, ice_hosts=(LOOPBACK,))
    sent0, late0 = frame_counts(node_url)
    with Sampler(node.pid, node_url) as sampler:
        report = asyncio.run(loadtest.run_loadtest(options))
    sent1, late1 = frame_counts(node_url)
    window = sampler.full_window(n)
    s = report["summary"]
    f = s["figures"]
    row: dict[str, Any] = {"calls": n, "ok": s["calls_ok"], "failed": s["calls_failed"]}
    if len(window) >= 2:
        first, last = window[0], window[-1]
        wall = last["t"] - first["t"]
        cpu_pct = 100 * (last["cpu_s"] - first["cpu_s"]) / wall
        row.update({
            "held_s": round(wall, 1), "node_cpu_pct": round(cpu_pct, 1),
            "cpu_pct_per_call": round(cpu_pct / n, 2),
            "rss_first_mb": round(first["rss_mb"], 1), "rss_last_mb": round(last["rss_mb"], 1),
            "rss_mb_per_min": round(60 * (last["rss_mb"] - first["rss_mb"]) / wall, 2),
        })
    else:
        row.update({"held_s": 0.0, "node_cpu_pct": None, "cpu_pct_per_call": None,
                    "rss_first_mb": None, "rss_last_mb": None, "rss_mb_per_min": None})
    frames = sent1 - sent0
    row.update({
        "frames_sent": int(frames), "frames_late": int(late1 - late0),
        "late_pct": round(100 * (late1 - late0) / frames, 3) if frames else None,
        "v2v_p50_ms": f.get("v2v_ms", {}).get("p50"), "v2v_p95_ms": f.get("v2v_ms", {}).get("p95"),
        "caller_gaps_p95": f.get("gaps", {}).get("p95"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "failures": s["failures"],
    })
    return {"row": row, "samples": sampler.samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="10,20,40", help="calls held per step")
    parser.add_argument("--turns", type=int, default=6,
                        help="turns per call (the built-in two questions, repeated)")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--ramp-per-call", type=float, default=0.25,
                        help="seconds between call set-ups")
    args = parser.parse_args()
    steps = [int(x) for x in args.calls.split(",")]
    s_port, n_port = free_port(), free_port()
    stub = _spawn([sys.executable, "-m", "bench.stub_engines", "--port", str(s_port)])
    s_url = f"http://{LOOPBACK}:{s_port}/v1"
    procs = [stub]
    rows: list[dict[str, Any]] = []
    samples: dict[int, list[dict[str, float]]] = {}
    try:
        _wait(f"http://{LOOPBACK}:{s_port}/healthz", stub)
        config = Path(tempfile.mkdtemp()) / "node.toml"  # every caller is 127.0.0.1
        config.write_text("[limits]\nmax_calls = 200\nmax_calls_per_client = 1000\n"
                          "call_rate_per_minute = 100000\n")
        node = _spawn([sys.executable, "-m", "callbot", "serve", "--port", str(n_port),
                       "--config", str(config), "--ice-host", LOOPBACK, "--log-level",
                       "WARNING", "--asr-url", s_url, "--tts-url", s_url,
                       "--llm-base-url", s_url, "--llm-model", "stub"])
        procs.append(node)
        n_url = f"http://{LOOPBACK}:{n_port}"
        _wait(f"{n_url}/healthz", node)
        idle = proc_stats(node.pid, with_children=True)
        for n in steps:
            result = run_step(n, node, n_url, args)
            rows.append(result["row"])
            samples[n] = result["samples"]
            print(f"{n} calls: {json.dumps(result['row'])}", flush=True)
            time.sleep(3)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(30)
    keys = ["calls", "ok", "failed", "held_s", "node_cpu_pct", "cpu_pct_per_call",
            "rss_first_mb", "rss_last_mb", "rss_mb_per_min", "frames_sent", "late_pct",
            "v2v_p50_ms", "caller_gaps_p95", "load_avg_1m"]
    print(f"\nnode idle RSS {idle['rss_mb']:.0f} MB; CPU % of one core while all calls were up")
    print(table(keys, [[r.get(k) for k in keys] for r in rows]))
    save("node_cost", {"args": vars(args), "idle_rss_mb": idle["rss_mb"], "steps": rows,
                       "samples": samples})


if __name__ == "__main__":
    main()
