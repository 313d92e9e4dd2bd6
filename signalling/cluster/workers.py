"""`callbot serve --workers N`: N processes behind one port, one supervisor.

Each worker is a full callbot process (its own aiohttp app, its own models, its own calls)
that binds the public port with SO_REUSEPORT: the kernel spreads new connections over the
workers. A call lives in the worker that answered its offer. What must agree across workers
(call registry, per-client limits, rate buckets, single-use token nonces, metrics) lives in
Redis (`signalling/cluster/redis_store.py`): the same code as a multi-node cluster, each
worker being a node. Without `--cluster`, the supervisor starts a private `redis-server` on a
Unix socket in a temporary folder (no TCP port, no persistence) and stops it at the end.

Each worker also listens on a private port (loopback, or the `--advertise-url` host) and
advertises it, so a full worker can hand an offer to a sibling. The supervisor restarts a
worker that dies (its calls end; the others go on) and passes SIGTERM/SIGINT on (drain).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


def worker_count(value: str) -> int:
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    count = int(value)
    if count < 1:
        raise ValueError("--workers must be >= 1 or 'auto'")
    return count


def split_capacity(total: int, workers: int) -> list[int]:
    """`max_calls` shared out: the workers' caps add up to the total (at least 1 each)."""
    base = total // workers
    return [max(1, base + (1 if i < total % workers else 0)) for i in range(workers)]


def start_private_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("--workers > 1 needs Redis for the state the workers share: install "
                           "redis-server (Debian: apt-get install redis-server) or pass "
                           "--cluster redis://HOST:6379/0")
    sock = folder / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, f"unix://{sock}"


def supervise(argv: list[str], workers: int, max_calls: int, cluster_url: str | None,
              *, forward_key: bool = False) -> int:
    """Run `workers` copies of `callbot serve <argv>`; restart the ones that die.

    `forward_key`: the configuration has one. Otherwise, with a private Redis, the
    supervisor makes a random one for its workers (passed in their environment, never
    stored in Redis); with a shared `--cluster`, every node must be configured with the
    same key, and without one offers are not forwarded."""
    folder = Path(tempfile.mkdtemp(prefix="callbot-workers-"))
    redis_proc: subprocess.Popen[bytes] | None = None
    env = dict(os.environ)
    if cluster_url is None:
        redis_proc, cluster_url = start_private_redis(folder)
        print(f"callbot: shared state in a private redis-server ({cluster_url})", flush=True)
        if not forward_key:
            env["CALLBOT_CLUSTER_FORWARD_SECRET"] = secrets.token_hex(32)
    caps = split_capacity(max_calls, workers)
    stopping = False

    def spawn(index: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "callbot", "serve", *argv, "--worker-index", str(index),
                "--cluster", cluster_url, "--max-calls", str(caps[index])]
        return subprocess.Popen(args, cwd=os.getcwd(), env=env)

    procs = [spawn(i) for i in range(workers)]
    restarts = [0] * workers

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"callbot: {workers} workers (pids {[p.pid for p in procs]}), caps {caps}", flush=True)
    try:
        while True:
            if stopping:
                for proc in procs:
                    proc.wait()
                return 0
            for i, proc in enumerate(procs):
                code = proc.poll()
                if code is None or stopping:
                    continue
                delay = RESTART_BACKOFF_S[min(restarts[i], len(RESTART_BACKOFF_S) - 1)]
                print(f"callbot: worker {i} (pid {proc.pid}) exited with {code}; restarting in "
                      f"{delay:.0f} s", flush=True)
                time.sleep(delay)
                restarts[i] += 1
                if not stopping:
                    procs[i] = spawn(i)
            time.sleep(0.2)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def private_advertise(advertise_url: str | None) -> str:
    """Host a worker's private listener binds (and advertises)."""
    if advertise_url:
        from urllib.parse import urlparse

        return urlparse(advertise_url).hostname or "127.0.0.1"
    return "127.0.0.1"


__all__ = ["private_advertise", "split_capacity", "supervise", "worker_count"]
