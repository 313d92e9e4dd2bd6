"""A call node whose models are all remote: what the node and the model servers spend per call.

Starts, each in its own process on loopback: `callbot engines serve` (Whisper tiny.en +
Piper), `python -m llama_cpp.server` (SmolLM2-135M, OpenAI-compatible) and a call node
`callbot serve --asr-url --tts-url --llm-base-url` pointing at both; then runs `callbot
loadtest` with N talking calls and reads /proc (CPU seconds, RSS) of each process and the
engine server's own counters (`/healthz`: busy seconds of ASR and TTS).

    python3 -m bench.scale_remote --calls 8 --turns 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from callbot import loadtest
from callbot.pipeline.llm.llama_local import smollm2_gguf_path

from .common import LOOPBACK, ROOT, free_port, proc_stats, save, table


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


def _json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return dict(json.load(r))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--ramp", type=float, default=4.0)
    args = ap.parse_args()
    e_port, l_port, n_port = free_port(), free_port(), free_port()
    engines = _spawn([sys.executable, "-m", "callbot", "engines", "serve", "--host", LOOPBACK,
                      "--port", str(e_port), "--log-level", "WARNING"])
    llm = _spawn([sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
                  "--host", LOOPBACK, "--port", str(l_port), "--n_threads", "2"])
    e_url, l_url = f"http://{LOOPBACK}:{e_port}/v1", f"http://{LOOPBACK}:{l_port}/v1"
    procs = [engines, llm]
    try:
        _wait(f"{e_url.removesuffix('/v1')}/healthz", engines)
        _wait(f"{l_url}/models", llm)
        limits = Path(tempfile.mkdtemp()) / "limits.toml"  # every caller is 127.0.0.1
        limits.write_text("[limits]\nmax_calls_per_client = 1000\n"
                          "call_rate_per_minute = 100000\n")
        node = _spawn([sys.executable, "-m", "callbot", "serve", "--port", str(n_port),
                       "--config", str(limits),
                       "--ice-host", LOOPBACK, "--max-calls", "64", "--log-level", "WARNING",
                       "--asr-url", e_url, "--tts-url", e_url, "--llm-base-url", l_url])
        procs.append(node)
        n_url = f"http://{LOOPBACK}:{n_port}"
        _wait(f"{n_url}/healthz", node)
        idle_rss = proc_stats(node.pid)["rss_mb"]
        before = {p.pid: proc_stats(p.pid) for p in procs}
        e_before = _json(f"{e_url.removesuffix('/v1')}/healthz")
        options = loadtest.LoadOptions(url=n_url, calls=args.calls, procs=min(2, args.calls),
                                       ramp_s=args.ramp, turns=args.turns,
                                       ice_hosts=(LOOPBACK,))
        report = asyncio.run(loadtest.run_loadtest(options))
        after = {p.pid: proc_stats(p.pid) for p in procs}
        e_after = _json(f"{e_url.removesuffix('/v1')}/healthz")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
    s = report["summary"]
    f = s["figures"]
    call_s = sum(r.get("duration_s", 0) for r in report["results"])
    turns = f.get("v2v_ms", {}).get("n", 0) or 1

    def cpu(p: subprocess.Popen[bytes]) -> float:
        return after[p.pid]["cpu_s"] - before[p.pid]["cpu_s"]

    wall = after[node.pid]["t"] - before[node.pid]["t"]
    node_cpu = cpu(node)
    figures = {
        "calls": args.calls, "turns_per_call": args.turns, "calls_ok": s["calls_ok"],
        "wall_s": round(wall, 1), "call_seconds": round(call_s, 1), "turns": turns,
        "node_cpu_s": round(node_cpu, 2),
        "node_cores_per_call": round(node_cpu / max(1e-6, call_s), 4),
        "node_rss_idle_mb": round(idle_rss, 1),
        "node_rss_mb": round(after[node.pid]["rss_mb"], 1),
        "engine_cpu_s_per_turn": round(cpu(engines) / turns, 3),
        "llm_cpu_s_per_turn": round(cpu(llm) / turns, 3),
        "asr_busy_s_per_turn": round((e_after["asr_busy_s"] - e_before["asr_busy_s"]) / turns,
                                     3),
        "tts_busy_s_per_turn": round((e_after["tts_busy_s"] - e_before["tts_busy_s"]) / turns,
                                     3),
        "asr_requests_per_turn": round((e_after["transcriptions"] - e_before["transcriptions"])
                                       / turns, 2),
        "tts_requests_per_turn": round((e_after["syntheses"] - e_before["syntheses"]) / turns, 2),
        "engine_rss_mb": round(after[engines.pid]["rss_mb"], 1),
        "llm_rss_mb": round(after[llm.pid]["rss_mb"], 1),
        "v2v_p50_ms": f.get("v2v_ms", {}).get("p50"), "v2v_p95_ms": f.get("v2v_ms", {}).get("p95"),
        "gaps_p95": f.get("gaps", {}).get("p95"), "load_avg": os.getloadavg(),
    }
    print(table(list(figures)[:8], [list(figures.values())[:8]]))
    print(json.dumps(figures, indent=1, default=str))
    save("scale_remote", {"figures": figures, "summary": s})


if __name__ == "__main__":
    main()
