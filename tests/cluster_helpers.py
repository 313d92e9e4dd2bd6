"""Real processes for the scale-out tests: redis-server, callbot nodes, a round-robin proxy."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"



class RedisServer:
    """Debian's redis-server on a loopback port, data in a temp dir, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cb-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server)"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One callbot node (`python -m tests.cluster_node`: `callbot serve` with scripted
    engines) in its own process."""

    def __init__(self, redis_url: str, max_calls: int, config: Path | None = None,
                 log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        args = [sys.executable, "-m", "tests.cluster_node", "--port", str(self.port),
                "--max-calls", str(max_calls), "--cluster", redis_url,
                "--advertise-url", self.url, "--ice-host", LOOPBACK, "--log-level", "WARNING"]
        if config is not None:
            args += ["--config", str(config)]
        self.log = log or Path(tempfile.mktemp(prefix="cb-node-", suffix=".log"))
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.node_id: str | None = None

    async def ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                try:
                    async with http.get(self.url + "/healthz") as r:
                        body = await r.json()
                        if body.get("cluster"):
                            self.node_id = body["node"]
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, self.log.read_text()[-2000:]
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


async def get_json(url: str, method: str = "GET", **kw: Any) -> tuple[int, Any, dict[str, str]]:
    """One request on a fresh connection (so SO_REUSEPORT may pick any worker)."""
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as r:
        body = await r.json(content_type=None) if r.content_length != 0 else None
        return r.status, body, dict(r.headers)


def round_robin_proxy(targets: list[str]) -> web.Application:
    """A plain HTTP load balancer: each request goes to the next target in turn."""
    turn = itertools.cycle(targets)
    app = web.Application()

    async def forward(request: web.Request) -> web.Response:
        target = next(turn)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with aiohttp.ClientSession() as http, http.request(
                request.method, target + request.path_qs, data=await request.read(),
                headers=headers) as r:
            body = await r.read()
            kept = {k: v for k, v in r.headers.items()
                    if k.lower() in ("content-type", "retry-after", "x-callbot-node")}
            return web.Response(body=body, status=r.status, headers=kept)

    app.router.add_route("*", "/{tail:.*}", forward)
    return app
