"""A Redis server and three callbot nodes on loopback (real processes, real aiortc callers).

The nodes run `callbot serve --cluster ... --advertise-url ...` with scripted engines
(tests/cluster_node.py): these tests are about the cluster, not the models.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from callbot.loadtest.caller import SyntheticCaller
from callbot.rtc.ice import claim_host_addresses, release_host_addresses
from tests.cluster_helpers import (
    LOOPBACK,
    ROOT,
    Node,
    RedisServer,
    get_json,
    round_robin_proxy,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")
# A killed node's calls are `node_lost` within node_ttl_s (3) + heartbeat_s (1) of its last
# heartbeat (docs/SCALING.md); the test allows one more heartbeat for a busy machine.
NODE_LOST_BOUND_S = 5.0


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float,
                     step: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(step)


@pytest.fixture(autouse=True, scope="module")
def loopback_candidates() -> Any:
    """The callers in this process offer 127.0.0.1 (aioice skips loopback by default)."""
    claim = claim_host_addresses([LOOPBACK])
    yield
    release_host_addresses(claim)


@pytest.fixture
def tmp_config(tmp_path: Path) -> Path:
    path = tmp_path / "callbot.toml"
    # Every node signs forwarded offers with the same configured key (never kept in Redis).
    path.write_text("[limits]\nmax_calls_per_client = 50\ncall_rate_per_minute = 10000\n"
                    '[cluster]\nforward_secret = "cluster-test-forward-secret-0123"\n')
    return path


@pytest.fixture
async def cluster(tmp_path: Path, tmp_config: Path) -> AsyncIterator[Callable[..., Any]]:
    """`make(caps)`: a fresh Redis and one node per cap; all stopped after the test."""
    started: list[Any] = []

    async def make(*caps: int) -> tuple[RedisServer, list[Node]]:
        redis = RedisServer()
        redis.start()
        started.append(redis)
        nodes = [Node(redis.url, cap, tmp_config, tmp_path / f"node{i}.log")
                 for i, cap in enumerate(caps)]
        started.extend(nodes)
        await asyncio.gather(*(n.ready() for n in nodes))
        return redis, nodes

    yield make
    for thing in reversed(started):
        if isinstance(thing, Node):
            thing.stop()
        else:
            thing.cleanup()


@pytest.fixture
async def callers() -> AsyncIterator[list[SyntheticCaller]]:
    made: list[SyntheticCaller] = []
    yield made
    for caller in made:
        await caller.hangup(delete=False)


async def call(base: str, made: list[SyntheticCaller]) -> tuple[SyntheticCaller, str]:
    caller = SyntheticCaller(base, keep_audio=False)
    made.append(caller)
    call_id = await caller.connect()
    return caller, call_id


async def record(base: str, call_id: str) -> dict[str, Any]:
    status, body, _ = await get_json(f"{base}/v1/calls/{call_id}")
    assert status == 200, body
    return dict(body)


async def answers_text(caller: SyntheticCaller) -> bool:
    """The call still talks: a typed question gets a spoken answer."""
    after = len(caller.events)
    caller.send({"type": "input.text", "text": "How many legs does a spider have?"})
    await caller.wait_event("response.audio.done", timeout=15, after=after)
    return True


async def test_three_nodes_share_calls_forward_offers_and_survive_a_killed_node(
        cluster: Callable[..., Any], callers: list[SyntheticCaller]) -> None:
    _, (a, b, c) = await cluster(1, 1, 2)

    # A call made through A is listed by B and ended through B.
    first, first_id = await call(a.url, callers)
    status, listed, _ = await get_json(f"{b.url}/v1/calls")
    assert status == 200
    assert [(x["call_id"], x["node"]) for x in listed["calls"]] == [(first_id, a.node_id)]
    status, _, _ = await get_json(f"{b.url}/v1/calls/{first_id}", "DELETE")
    assert status == 204
    ended = await record(c.url, first_id)
    assert (ended["state"], ended["reason"]) == ("ended", "hangup")
    await eventually(lambda: _closed(first), 5)

    # A is full with one call: the next offers through A go to the node with most free slots.
    _, on_a = await call(a.url, callers)
    assert (await record(b.url, on_a))["node"] == a.node_id
    owners = []
    for _ in range(3):
        _, call_id = await call(a.url, callers)
        owners.append((await record(a.url, call_id))["node"])
    assert owners[0] == c.node_id  # C had 2 free slots, B 1
    assert sorted(owners) == sorted([b.node_id, c.node_id, c.node_id])

    # The whole cluster is full (1 + 1 + 2): 503, whichever node is asked.
    for node in (a, b, c):
        status, body, headers = await get_json(
            f"{node.url}/v1/calls", "POST", json={"type": "offer", "sdp": "v=0"})
        assert status == 503, body
        assert body["error"]["code"] == "cluster_full"
        assert "Retry-After" in headers
    status, listed, _ = await get_json(f"{b.url}/v1/calls")
    assert len(listed["calls"]) == 4

    # kill -9 of C: its two calls are reported node_lost within the bound; the others talk on.
    on_c = [x["call_id"] for x in listed["calls"] if x["node"] == c.node_id]
    survivors = [cl for cl in callers if cl.call_id not in on_c and cl.call_id != first_id]
    assert len(on_c) == 2 and len(survivors) == 2
    c.kill()
    killed_at = time.monotonic()

    async def all_lost() -> bool:
        records = [await record(a.url, i) for i in on_c]
        return all(r.get("reason") == "node_lost" for r in records)

    await eventually(all_lost, NODE_LOST_BOUND_S + 2)
    lost_after = time.monotonic() - killed_at
    assert lost_after <= NODE_LOST_BOUND_S, lost_after
    for survivor in survivors:
        assert await answers_text(survivor)
    status, listed, _ = await get_json(f"{a.url}/v1/calls")
    assert sorted(x["call_id"] for x in listed["calls"]) == sorted(
        s.call_id for s in survivors if s.call_id)
    # /metrics on any node sums the live nodes (A and B: 2 calls)
    status, text, _ = await _text(f"{b.url}/metrics")
    assert "callbot_active_calls 2.0" in text

    # SIGTERM drains B: it takes no new call (A is full too: 503), finishes its own call,
    # then leaves the cluster.
    b_calls = [s for s in survivors if (await record(a.url, s.call_id or ""))["node"]
               == b.node_id]
    assert len(b_calls) == 1
    b_call = b_calls[0]
    b.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: _draining(a.url, b.node_id or ""), 3)
    status, body, headers = await get_json(
        f"{a.url}/v1/calls", "POST", json={"type": "offer", "sdp": "v=0"})
    assert status == 503 and body["error"]["code"] == "cluster_full"  # A full, B draining
    assert await answers_text(b_call)  # B's own call goes on while it drains
    status, _, _ = await get_json(f"{a.url}/v1/calls/{b_call.call_id}", "DELETE")
    assert status == 204
    assert await asyncio.to_thread(b.proc.wait, 15) == 0
    status, cluster_view, _ = await get_json(f"{a.url}/v1/cluster")
    assert [n["node"] for n in cluster_view["nodes"]] == [a.node_id]  # B left, C was reaped
    status, listed, _ = await get_json(f"{a.url}/v1/calls")
    assert [x["node"] for x in listed["calls"]] == [a.node_id]


async def _closed(caller: SyntheticCaller) -> bool:
    return caller.pc.connectionState in ("closed", "failed") or bool(
        caller.events_of("call.ended")) or caller.pc.iceConnectionState in ("closed", "failed")


async def _draining(url: str, node: str) -> bool:
    _, view, _ = await get_json(f"{url}/v1/cluster")
    return any(n["node"] == node and n["draining"] for n in view["nodes"])


async def _text(url: str) -> tuple[int, str, dict[str, str]]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.text(), dict(r.headers)


async def test_redis_stopped_and_restarted(cluster: Callable[..., Any],
                                           callers: list[SyntheticCaller]) -> None:
    redis, (a, b) = await cluster(2, 2)
    talking, talking_id = await call(a.url, callers)
    redis.stop()
    # New calls: a clear 503 from every node, as soon as the node notices (next heartbeat).

    async def refused() -> bool:
        status, body, _ = await get_json(f"{b.url}/v1/calls", "POST",
                                         json={"type": "offer", "sdp": "v=0"})
        return status == 503 and body["error"]["code"] == "cluster_unavailable"

    await eventually(refused, 5)

    async def a_noticed() -> bool:
        _, health, _ = await get_json(f"{a.url}/healthz")
        return health["cluster"] is False

    await eventually(a_noticed, 3)  # each node notices at its own next heartbeat
    assert await answers_text(talking)  # the call in progress goes on
    status, live, _ = await get_json(f"{a.url}/v1/calls/{talking_id}")
    assert status == 200 and live["state"] == "active"  # its owner still answers for it

    redis.start()  # empty: no persistence; the nodes write their state again

    async def recovered() -> bool:
        status, listed, _ = await get_json(f"{b.url}/v1/calls")
        return status == 200 and [x["call_id"] for x in listed["calls"]] == [talking_id]

    await eventually(recovered, 8)
    _, second_id = await call(b.url, callers)
    status, listed, _ = await get_json(f"{a.url}/v1/calls")
    assert sorted(x["call_id"] for x in listed["calls"]) == sorted([talking_id, second_id])


async def test_loadtest_through_round_robin_front_with_a_node_killed(
        cluster: Callable[..., Any], tmp_path: Path) -> None:
    redis, nodes = await cluster(3, 3, 3)
    proxy = web.AppRunner(round_robin_proxy([n.url for n in nodes]))
    await proxy.setup()
    site = web.TCPSite(proxy, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    report_path = tmp_path / "report.json"
    loadtest = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "loadtest", "--url", f"http://{LOOPBACK}:{port}",
        "--calls", "6", "--turns", "3", "--json", str(report_path), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    victim = nodes[2]
    try:
        # Once every call is up and talking, kill one node mid-test.
        owners: dict[str, str] = {}

        async def all_up() -> bool:
            owners.clear()
            for node in nodes:  # each node describes its own calls in full
                _, listed, _ = await get_json(f"{node.url}/v1/calls")
                owners.update({x["call_id"]: x["node"] for x in listed["calls"]
                               if x["node"] == node.node_id and x["state"] == "active"
                               and x.get("audio_frames_in", 0) > 50})
            return len(owners) == 6

        await eventually(all_up, 40, step=0.5)
        assert len(set(owners.values())) == 3  # round robin spread them over the nodes
        victim.kill()
        out, _ = await asyncio.wait_for(loadtest.communicate(), 120)
    finally:
        if loadtest.returncode is None:
            loadtest.kill()
        await proxy.cleanup()
    report = json.loads(report_path.read_text())
    results = {r["call_id"]: r for r in report["results"]}
    assert set(results) == set(owners), out.decode()[-2000:]
    for call_id, owner in owners.items():
        if owner == victim.node_id:
            assert not results[call_id]["ok"]
            assert (await record(nodes[0].url, call_id))["reason"] == "node_lost"
        else:
            assert results[call_id]["ok"], results[call_id]["reason"]
            assert len(results[call_id]["turns"]) == 3
