"""`callbot serve --workers 2`: two real worker processes (real models each) behind one port.

Every request below opens a fresh connection, so SO_REUSEPORT may hand it to either worker:
the answers must not depend on which one it was.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callbot.loadtest.caller import CallFailed, SyntheticCaller
from callbot.rtc.ice import claim_host_addresses, release_host_addresses
from callbot.signalling.server.auth import mint_call_token
from tests.cluster_helpers import LOOPBACK, ROOT, free_port, get_json
from tests.test_cluster import NODE_LOST_BOUND_S, eventually

pytestmark = pytest.mark.e2e

SECRET = "workers-test-secret"
OP = {"Authorization": "Bearer op"}
CONFIG = f"""
[limits]
max_calls = 4
max_calls_per_client = 2
call_rate_per_minute = 10000
drain_s = 2
[auth]
mode = "token"
bearer_tokens = ["t1", "t2"]
admin_tokens = ["op"]  # lists and ends every call (calls are scoped to their owner)
signing_secret = "{SECRET}"
"""


@pytest.fixture(autouse=True, scope="module")
def loopback_candidates() -> Iterator[None]:
    claim = claim_host_addresses([LOOPBACK])
    yield
    release_host_addresses(claim)


def _start(port: int, config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callbot", "serve", "--workers", "2", "--port", str(port),
         "--ice-host", LOOPBACK, "--config", str(config), "--log-level", "WARNING"],
        cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes], Path]]:
    config = tmp_path / "callbot.toml"
    config.write_text(CONFIG)
    port, log = free_port(), tmp_path / "server.log"
    proc = _start(port, config, log)
    url = f"http://{LOOPBACK}:{port}"

    async def two_workers() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            status, view, _ = await get_json(f"{url}/v1/cluster", headers=OP)
        except OSError:
            return False
        return status == 200 and len(view["nodes"]) == 2

    await eventually(two_workers, 240, step=0.5)
    yield url, proc, log
    if proc.poll() is None:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


@pytest.fixture
async def callers() -> AsyncIterator[list[SyntheticCaller]]:
    made: list[SyntheticCaller] = []
    yield made
    for caller in made:
        await caller.hangup(delete=False)


async def call(url: str, token: str, made: list[SyntheticCaller]) -> str:
    caller = SyntheticCaller(url, keep_audio=False, headers={"Authorization": f"Bearer {token}"})
    made.append(caller)
    return await caller.connect()


async def listing(url: str) -> dict[str, str]:
    status, body, _ = await get_json(f"{url}/v1/calls", headers=OP)
    assert status == 200, body
    return {c["call_id"]: c["node"] for c in body["calls"]}


async def offer_status(url: str, token: str) -> tuple[int, str]:
    """POST an offer from a real peer; (status, error code or 'created')."""
    caller = SyntheticCaller(url, keep_audio=False, headers={"Authorization": f"Bearer {token}"})
    try:
        await caller.connect(timeout=10)
        return 201, "created"
    except CallFailed as exc:
        text = str(exc)
        status = int(text.split("answered ")[1].split(":")[0])
        return status, text.split("'code': '")[1].split("'")[0]
    finally:
        await caller.hangup()


async def test_two_workers_one_port(server: tuple[str, subprocess.Popen[bytes], Path],
                                    callers: list[SyntheticCaller]) -> None:
    url, supervisor, log = server
    ids = [await call(url, token, callers) for token in ("t1", "t1", "t2", "t2")]
    # 4 calls, cap 4 = 2 per worker: a full worker hands offers to its sibling.
    for _ in range(6):
        owners = await listing(url)
        assert sorted(owners) == sorted(ids)
        assert sorted(list(owners.values()).count(n) for n in set(owners.values())) == [2, 2]
    assert await offer_status(url, "op") == (503, "cluster_full")

    status, _, _ = await get_json(f"{url}/v1/calls/{ids[0]}", "DELETE", headers=OP)
    assert status == 204
    for _ in range(4):
        assert sorted(await listing(url)) == sorted(ids[1:])
    # t2 has 2 calls (one on each worker): a third is refused whichever worker is asked.
    for _ in range(3):
        assert await offer_status(url, "t2") == (429, "rate_limited")

    # A call token works once, on whichever worker it is shown.
    token = mint_call_token(SECRET, ttl_s=60, subject="ada")
    token_call = await call(url, token, callers)
    status, _, _ = await get_json(f"{url}/v1/calls/{token_call}", "DELETE", headers=OP)
    assert status == 204
    for _ in range(3):
        assert await offer_status(url, token) == (401, "unauthorized")

    async def metrics_agree() -> bool:
        for _ in range(4):
            status, _, _ = await get_json(f"{url}/healthz")
            async with __import__("aiohttp").ClientSession() as http, \
                    http.get(f"{url}/metrics") as r:
                text = await r.text()
            if "callbot_active_calls 3.0" not in text or "callbot_call_setups_total 5.0" \
                    not in text:
                return False
        return True

    await eventually(metrics_agree, 5)

    # kill -9 of one worker: only its calls end (node_lost); the supervisor restarts it.
    owners = await listing(url)
    victim = sorted(set(owners.values()))[0]
    victim_calls = [c for c, n in owners.items() if n == victim]
    others = [c for c, n in owners.items() if n != victim]
    os.kill(int(victim.split("-")[-2]), signal.SIGKILL)
    killed = time.monotonic()

    async def lost() -> bool:
        for call_id in victim_calls:
            _, entry, _ = await get_json(f"{url}/v1/calls/{call_id}", headers=OP)
            if entry.get("reason") != "node_lost":
                return False
        return True

    await eventually(lost, NODE_LOST_BOUND_S + 2)
    assert time.monotonic() - killed <= NODE_LOST_BOUND_S + 1
    assert sorted(await listing(url)) == sorted(others)

    async def restarted() -> bool:
        _, view, _ = await get_json(f"{url}/v1/cluster", headers=OP)
        nodes = [n["node"] for n in view["nodes"]]
        return len(nodes) == 2 and victim not in nodes

    await eventually(restarted, 60, step=0.5)
    assert "restarting" in log.read_text()
    assert sorted(await listing(url)) == sorted(others)  # the survivor's calls went on

    supervisor.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.wait, 30) == 0

