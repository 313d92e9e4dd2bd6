"""Shared pieces of the benchmarks: servers in subprocesses, /proc figures, tables, results."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# Every benchmark caller comes from 127.0.0.1, one "client" to the per-client limits: the
# benchmark sets them (and reports refusals) rather than being cut short by them silently.
BENCH_LIMITS = {"max_calls": 64, "max_calls_per_client": 64, "call_rate_per_minute": 600.0}


def bench_config(limits: dict[str, Any] | None = None, toml: str = "") -> Path:
    """A TOML config file with the benchmark's limits (`[limits]`), then `toml` (more
    tables, e.g. a baseline's `[engines]` for an A/B run)."""
    values = {**BENCH_LIMITS, **(limits or {})}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-config-{os.getpid()}-{abs(hash(toml)) % 10**6}.toml"
    path.write_text("[limits]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                    + toml)
    return path


def refusals(report: dict[str, Any]) -> int:
    """Calls the server refused at set-up (429 per-client limit/rate, 503 too many calls)."""
    return sum(1 for r in report.get("results", [])
               if not r.get("ok") and any(f"answered {code}" in str(r.get("reason", ""))
                                          for code in (429, 503)))


VOICE_QUESTIONS = (
    "How many legs does a spider have?",
    "What is the capital of France?",
    "What colour is the sky on a clear day?",
)
VOICES = (("piper", "joe", 1.0), ("espeak", "en-us", 165), ("espeak", "en-gb+f3", 150),
          ("piper", "joe", 0.85), ("espeak", "en-gb-scotland", 175))


def voice_scenario(n_voices: int = 3) -> list[Any]:
    """The questions above, each in a different voice (Piper and espeak-ng), as load-test
    steps with a pause between; WAVs cached in $TMPDIR/callbot-loadtest."""
    import tempfile

    import numpy as np

    from callbot import loadtest

    from .turnset.make import RATE, Piper, espeak, trim

    folder = Path(tempfile.gettempdir()) / "callbot-loadtest"
    folder.mkdir(parents=True, exist_ok=True)
    steps: list[Any] = []
    piper = None
    for r in range(n_voices):
        for q, text in enumerate(VOICE_QUESTIONS):
            engine, voice, speed = VOICES[(q + r) % len(VOICES)]
            key = hashlib.sha1(f"{engine}|{voice}|{speed}|{text}".encode()).hexdigest()[:12]
            path = folder / f"q-{engine}-{key}.wav"
            if not path.exists():
                if engine == "espeak":
                    pcm = espeak(text, voice, speed)
                else:
                    piper = piper or Piper()
                    pcm = piper(text, speed)
                pcm = np.concatenate([np.zeros(int(0.3 * RATE), dtype=np.int16), trim(pcm)])
                loadtest.write_wav(path, pcm, RATE)
            if steps:
                steps.append(loadtest.Step("pause", seconds=0.5))
            steps.append(loadtest.Step("say", path=str(path), text=text))
    return steps


class ServerProcess:
    """`callbot serve` (or the echo server) in a subprocess on loopback."""

    def __init__(self, *, echo: bool = False, extra: list[str] | None = None,
                 limits: dict[str, Any] | None = None, toml: str = "") -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        module = "bench.echo_server" if echo else "callbot"
        cmd = [sys.executable, "-m", module]
        if not echo:
            cmd += ["serve", "--log-level", "WARNING", "--config",
                    str(bench_config(limits, toml))]
        cmd += ["--port", str(self.port), "--ice-host", LOOPBACK, *(extra or [])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        self.wait_healthy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def proc_stats(pid: int, *, with_children: bool = False) -> dict[str, float]:
    """CPU seconds, RSS (MB), threads and open fds of a process, from /proc; with_children:
    summed over its descendants too (the server's LLM runs in a child process)."""
    pids = [pid, *descendants(pid)] if with_children else [pid]
    total: dict[str, float] = {"cpu_s": 0.0, "rss_mb": 0.0, "threads": 0, "fds": 0}
    for one in pids:
        try:
            stats = _one_proc_stats(one)
        except (FileNotFoundError, ProcessLookupError):
            if one == pid:
                raise
            continue  # a child that just exited
        for key in total:
            total[key] += stats[key]
    total["t"] = time.monotonic()
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def _one_proc_stats(pid: int) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return {
        "cpu_s": cpu_s,
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def cpu_percent(before: dict[str, float], after: dict[str, float]) -> float:
    return 100 * (after["cpu_s"] - before["cpu_s"]) / max(1e-6, after["t"] - before["t"])


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg": os.getloadavg()}


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1, default=str))
    print(f"wrote {path.relative_to(ROOT)}")
    return path
