"""`callbot serve` ends cleanly on SIGTERM with calls in flight: every call is closed, the
process exits 0, and nothing aborts on the way out (no `terminate called ...`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.rtc.ice import claim_host_addresses, release_host_addresses
from tests.conftest import LOOPBACK, free_port

pytestmark = pytest.mark.e2e



async def test_sigterm_with_calls_in_flight_exits_0() -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "serve", "--host", LOOPBACK, "--port", str(port),
        "--ice-host", LOOPBACK, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert server.stdout is not None
    output: list[str] = []
    claim = claim_host_addresses([LOOPBACK])  # this process's callers offer loopback
    try:
        async with asyncio.timeout(180):
            while not any("ready" in line for line in output):
                line = (await server.stdout.readline()).decode()
                assert line, "".join(output)
                output.append(line)
        callers = [SyntheticCaller(f"http://{LOOPBACK}:{port}") for _ in range(2)]
        for caller in callers:
            await caller.connect()
        callers[0].send({"type": "input.text", "text": "Tell me a long story about a ship."})
        await callers[0].wait_event("response.text.delta", timeout=120)  # a reply in flight
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            rest = (await server.stdout.read()).decode()
            code = await server.wait()
        output.append(rest)
        log = "".join(output)
        assert code == 0, log[-3000:]
        assert "terminate called" not in log and "Traceback" not in log, log[-3000:]
        assert log.count("closing: server_shutdown") == 2, log[-3000:]
        for caller in callers:
            await caller.hangup(delete=False)
    finally:
        release_host_addresses(claim)
        if server.returncode is None:
            server.kill()
            await server.wait()
