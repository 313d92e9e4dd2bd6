"""Realtime client secrets in the shared store (issue 28): minted on one worker or node,
honoured once by any; mint rate and counts limited per credential (429 + Retry-After), a
flood never evicts another credential's secret; Redis holds digests, not secrets, and not
the key that signs forwarded offers.

Tiers: the store itself (in process, and two `RedisStore`s on a real redis-server as two
nodes); a real server's HTTP answers; two real callbot nodes (tests/cluster_node.py) behind
one Redis with a real aiortc Realtime call that uses a secret minted on the other node and
is hung up through it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from callbot.rtc.ice import claim_host_addresses, release_host_addresses
from callbot.signalling.cluster.redis_store import RedisStore
from callbot.signalling.cluster.shared import LocalStore, SharedStore, TicketLimits
from callbot.signalling.config import ClusterSettings, ConfigError, Limits
from callbot.signalling.protocols.openai_realtime.secrets import ClientSecretStore
from callbot.signalling.ratelimit import ClientLimiter, RateLimited
from tests.cluster_helpers import LOOPBACK, Node, RedisServer
from tests.conftest import TEST_CONFIG, ServerFactory

FORWARD_SECRET = "test-forward-secret-0123456789abcdef"
SESSION = {"type": "realtime", "output_modalities": ["text"]}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


def _redis_store(url: str, key: bytes | None = FORWARD_SECRET.encode()) -> RedisStore:
    async def hang_up(call_id: str) -> None: ...

    return RedisStore(url, advertise_url="http://127.0.0.1:9", capacity=4,
                      limiter=ClientLimiter(4, 30), load=lambda: 0, draining=lambda: False,
                      hang_up=hang_up, live_calls=lambda: [], forward_key=key)


@pytest.fixture
async def two_nodes(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a, b = _redis_store(redis_server.url), _redis_store(redis_server.url)
    await a.redis.flushdb()  # each test starts from an empty Redis
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture(params=["local", "redis"])
async def pair(request: pytest.FixtureRequest, redis_server: RedisServer
               ) -> AsyncIterator[tuple[SharedStore, SharedStore]]:
    """Two nodes' stores: one process (the same LocalStore), or two RedisStores."""
    if request.param == "local":
        store = LocalStore(ClientLimiter(4, 30))
        yield store, store
        return
    a, b = _redis_store(redis_server.url), _redis_store(redis_server.url)
    await a.redis.flushdb()
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


# ---- the store ------------------------------------------------------------------------------


async def test_a_secret_minted_on_one_node_is_honoured_once_by_another(
        pair: tuple[SharedStore, SharedStore]) -> None:
    a, b = pair
    limits = TicketLimits()
    minted = await ClientSecretStore(a, limits).mint("token:alice", SESSION, 60)
    on_b = ClientSecretStore(b, limits)
    used = await on_b.use(minted.value)
    assert used is not None and used.client_id == "token:alice" and used.session == SESSION
    assert await on_b.use(minted.value) is None  # single use, on every node
    assert await ClientSecretStore(a, limits).use(minted.value) is None
    assert await on_b.use("ek_" + "0" * 48) is None and await on_b.use("sk_nope") is None
    short = await ClientSecretStore(a, limits).mint("token:alice", SESSION, 0.2)
    await asyncio.sleep(0.3)
    assert await on_b.use(short.value) is None  # expired


async def test_a_flood_is_rate_limited_and_never_evicts_another_credentials_secret(
        pair: tuple[SharedStore, SharedStore]) -> None:
    a, b = pair
    victim = await ClientSecretStore(a, TicketLimits()).mint("token:victim", SESSION, 60)
    # The attacker mints as fast as it may: a minute's worth at once, then 429s.
    limits = TicketLimits(per_minute=30, per_client=5, total=8)
    flood = ClientSecretStore(b, limits)
    kept = [await flood.mint("token:mallory", SESSION, 60) for _ in range(30)]
    with pytest.raises(RateLimited) as limited:
        await flood.mint("token:mallory", SESSION, 60)
    assert 0 < limited.value.retry_after_s <= 2.5  # one token comes back every 2 s
    # Only its own 5 newest are live: its older ones went, the victim's did not.
    live = [s for s in kept if await ClientSecretStore(a, limits).use(s.value) is not None]
    assert live == kept[-5:]
    assert await ClientSecretStore(a, limits).use(victim.value) is not None
    # The whole store is bounded: past `total` live secrets, others get 429 too.
    others = ClientSecretStore(a, limits)
    for i in range(8):
        await others.mint(f"token:c{i}", SESSION, 60)
    with pytest.raises(RateLimited):
        await others.mint("token:one-more", SESSION, 60)


async def test_redis_holds_digests_not_secrets_nor_the_forwarding_key(
        two_nodes: tuple[RedisStore, RedisStore]) -> None:
    a, b = two_nodes
    minted = await ClientSecretStore(a, TicketLimits()).mint("token:alice", SESSION, 60)
    dump: list[str] = []
    for key in await a.redis.keys("*"):
        dump.append(key)
        kind = await a.redis.type(key)
        if kind == "string":
            dump.append(str(await a.redis.get(key)))
        elif kind == "zset":
            dump.extend(await a.redis.zrange(key, 0, -1))
        elif kind == "hash":
            dump.extend(f"{k}={v}" for k, v in (await a.redis.hgetall(key)).items())
        elif kind == "set":
            dump.extend(await a.redis.smembers(key))
    text = "\n".join(dump)
    assert minted.value not in text and minted.value[3:] not in text
    assert FORWARD_SECRET not in text and "cb:secret" not in text
    # Both nodes sign with the configured key; a node with another key (or none) refuses.
    signed = a.sign_forward("203.0.113.7")
    assert b.verify_forward(signed) == "203.0.113.7"
    other = _redis_store(a.url, b"another-key-0123456789abcdef")
    assert other.verify_forward(signed) is None
    assert _redis_store(a.url, None).verify_forward(signed) is None
    forged = "203.0.113.7;" + signed.split(";")[1] + ";" + "0" * 32
    assert b.verify_forward(forged) is None


def test_the_forwarding_key_comes_from_configuration(tmp_path: Path) -> None:
    assert ClusterSettings(forward_secret=FORWARD_SECRET).forward_key() == FORWARD_SECRET.encode()
    key_file = tmp_path / "forward.key"
    key_file.write_text(FORWARD_SECRET + "\n")
    assert ClusterSettings(forward_secret_file=str(key_file)).forward_key() == \
        FORWARD_SECRET.encode()
    assert ClusterSettings().forward_key() is None
    with pytest.raises(ConfigError):
        ClusterSettings(forward_secret="short")
    with pytest.raises(ConfigError):
        ClusterSettings(forward_secret_file=str(tmp_path / "missing")).forward_key()


# ---- a server's answers ----------------------------------------------------------------------


@pytest.mark.e2e
async def test_minting_past_the_rate_gets_429_json_with_retry_after(
        start_server: ServerFactory) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=Limits(client_secrets_per_minute=3)))
    url = f"{base}/v1/realtime/client_secrets"
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(url, json={"session": SESSION}) as resp:
                assert resp.status == 200, await resp.text()
        async with http.post(url, json={"session": SESSION}) as resp:
            assert resp.status == 429
            body = await resp.json()
            assert body["error"]["code"] == "rate_limited"
            assert 1 <= int(resp.headers["Retry-After"]) <= 20


# ---- two real nodes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback_candidates() -> Iterator[None]:
    claim = claim_host_addresses([LOOPBACK])
    yield
    release_host_addresses(claim)


async def _offer() -> tuple[RTCPeerConnection, asyncio.Queue[dict[str, Any]]]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    channel = pc.createDataChannel("oai-events")
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    channel.on("message", lambda m: received.put_nowait(json.loads(m)))
    await pc.setLocalDescription(await pc.createOffer())
    return pc, received


@pytest.mark.e2e
async def test_a_secret_from_node_a_starts_a_call_on_node_b_hung_up_through_a(
        tmp_path: Path, redis_server: RedisServer, loopback_candidates: None) -> None:
    config = tmp_path / "callbot.toml"
    config.write_text(f'[cluster]\nforward_secret = "{FORWARD_SECRET}"\n')
    nodes = [Node(redis_server.url, 2, config, tmp_path / f"node{i}.log") for i in range(2)]
    pc: RTCPeerConnection | None = None
    try:
        await asyncio.gather(*(n.ready() for n in nodes))
        a, b = nodes
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{a.url}/v1/realtime/client_secrets",
                                 json={"session": SESSION}) as resp:
                assert resp.status == 200, await resp.text()
                secret = (await resp.json())["value"]
            pc, received = await _offer()
            headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/sdp"}
            async with http.post(f"{b.url}/v1/realtime/calls", data=pc.localDescription.sdp,
                                 headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                call_id = resp.headers["Location"].rsplit("/", 1)[1]
                answer = await resp.text()
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            async with asyncio.timeout(20):
                assert (await received.get())["type"] == "session.created"
            # used once: neither node takes it again
            for node in nodes:
                async with http.post(f"{node.url}/v1/realtime/calls", data="v=0\r\n",
                                     headers=headers) as resp:
                    assert resp.status == 401
                    assert (await resp.json())["error"]["code"] == "invalid_client_secret"
            # the hang-up reaches node B's call through node A
            async with http.post(f"{a.url}/v1/realtime/calls/{call_id}/hangup") as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"{b.url}/v1/calls/{call_id}") as resp:
                entry = await resp.json()
            assert entry["state"] == "ended" and entry["reason"] == "hangup", entry
            # an offer with a forged forwarding header is refused, not believed
            async with http.post(f"{b.url}/v1/calls", json={"type": "offer", "sdp": "v=0"},
                                 headers={"X-Callbot-Forwarded": "198.51.100.1;1;00"}) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"]["code"] == "forward_rejected"
    finally:
        if pc is not None:
            await pc.close()
        for node in nodes:
            node.stop()
