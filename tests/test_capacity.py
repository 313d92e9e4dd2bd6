"""Admission from measured capacity (signalling/server/capacity.py): the call beyond what the
node answers within its latency budget gets 503 `at_capacity` with Retry-After at every
entrance, and `/healthz` and `/metrics` report the capacity and the headroom left.

The end-to-end test runs real aiortc offers and a real WebSocket client against a real server
on loopback; the learning rules are checked with a fake clock (no call can be made slow on
purpose without making the test depend on this machine's speed).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from callbot.signalling.calls.registry import AtCapacity, CallLimitReached, CallRegistry
from callbot.signalling.config import CallbotConfig, CapacitySettings, ConfigError, from_mapping
from callbot.signalling.server.capacity import CapacityModel
from tests.conftest import TEST_CONFIG, ServerFactory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_configured_capacity_is_capped_by_max_calls() -> None:
    assert CapacityModel(CapacitySettings(), 8).capacity == 8  # unknown: the hard cap
    assert CapacityModel(CapacitySettings(calls=3), 8).capacity == 3
    assert CapacityModel(CapacitySettings(calls=30), 8).capacity == 8
    config = from_mapping({"capacity": {"calls": 4, "latency_budget_ms": 1500}})
    assert config.capacity == CapacitySettings(calls=4, latency_budget_ms=1500.0)
    with pytest.raises(ConfigError, match="capacity"):
        from_mapping({"capacity": {"calls": -1}})


def test_learned_capacity_drops_below_the_load_that_broke_the_budget_and_recovers() -> None:
    clock = Clock()
    model = CapacityModel(CapacitySettings(calls=6, latency_budget_ms=2000, learn=True,
                                           window_s=60, min_turns=5), 8, clock=clock)
    for _ in range(5):  # 2 calls, quick answers: nothing changes
        clock.now += 1
        model.observe(900, calls=2)
    assert model.capacity == 6
    clock.now += 61  # those turns leave the window
    for _ in range(5):  # a 4th call joined and replies went past the budget
        clock.now += 1
        model.observe(2600, calls=4)
    assert model.capacity == 3
    assert model.reply_p95_ms() is None  # a new window: the new capacity is judged afresh
    # One slow turn among quick ones is no reason to lower it, nor to raise it while it is
    # in the window
    for i in range(16):
        clock.now += 4
        model.observe(2600 if i == 0 else 1000, calls=3)
    assert model.capacity == 3
    # A whole window at capacity, well within the budget: one more call
    clock.now += 4
    model.observe(1000, calls=3)
    assert model.capacity == 4
    # Never above the configured ceiling, never below one call
    clock.now += 100
    for _ in range(5):
        clock.now += 1
        model.observe(9000, calls=1)
    assert model.capacity == 1


def test_without_learning_turns_only_report_latency() -> None:
    model = CapacityModel(CapacitySettings(calls=2, latency_budget_ms=1000), 8)
    for _ in range(10):
        model.observe(5000, calls=2)
    assert model.capacity == 2
    assert model.reply_p95_ms() == 5000


def test_registry_refuses_beyond_capacity_with_retry_after() -> None:
    capacity = [2]
    registry = CallRegistry(8, capacity=lambda: capacity[0], retry_after_s=7)
    registry.reserve()
    registry.reserve()
    with pytest.raises(AtCapacity) as info:
        registry.reserve()
    assert isinstance(info.value, CallLimitReached)  # a cluster node hands the offer on
    error = info.value.refusal()
    assert (error.status, error.code) == (503, "at_capacity")
    assert error.headers == {"Retry-After": "7"}
    assert registry.load == 2 and registry.full
    capacity[0] = 3  # learned one more
    registry.reserve()
    assert registry.load == 3


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _health(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/healthz") as resp:
        health: dict[str, Any] = await resp.json()
        return health


def _refused(status: int, headers: Any, body: str) -> None:
    assert status == 503, body
    assert int(headers["Retry-After"]) == 4
    error = json.loads(body)["error"]
    assert error["code"] == "at_capacity", error
    assert "latency budget" in error["message"]


async def test_a_call_beyond_capacity_is_refused_at_every_entrance(
    start_server: ServerFactory,
) -> None:
    config: CallbotConfig = TEST_CONFIG.replace(
        capacity=CapacitySettings(calls=1, retry_after_s=4))
    base = await start_server(config)
    async with aiohttp.ClientSession() as http:
        health = await _health(http, base)
        assert (health["calls"], health["capacity"], health["headroom"]) == (0, 1, 1)
        assert health["latency_budget_ms"] == 2500.0
        # The one call this node takes: a Realtime WebSocket session.
        ws = await http.ws_connect(f"{base}/v1/realtime?model=callbot", protocols=("realtime",))
        try:
            first = await ws.receive_json(timeout=30)
            assert first["type"] == "session.created", first
            health = await _health(http, base)
            assert (health["calls"], health["capacity"], health["headroom"]) == (1, 1, 0)
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert "callbot_capacity_calls 1.0" in text
            assert "callbot_capacity_headroom 0.0" in text

            pc, sdp = await _offer()
            try:
                async with http.post(f"{base}/v1/calls",
                                     json={"sdp": sdp, "type": "offer"}) as resp:
                    _refused(resp.status, resp.headers, await resp.text())
                form = aiohttp.FormData(default_to_multipart=True)
                form.add_field("sdp", sdp)
                form.add_field("session", json.dumps({"type": "realtime"}))
                async with http.post(f"{base}/v1/realtime/calls", data=form) as resp:
                    _refused(resp.status, resp.headers, await resp.text())
            finally:
                await pc.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
                await http.ws_connect(f"{base}/v1/realtime?model=callbot",
                                      protocols=("realtime",))
            assert handshake.value.status == 503
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert 'callbot_call_rejections_total{reason="at_capacity"} 3.0' in text
            # The call in progress goes on untouched.
            assert (await _health(http, base))["calls"] == 1
        finally:
            await ws.close()
        for _ in range(100):
            health = await _health(http, base)
            if health["calls"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (health["calls"], health["headroom"]) == (0, 1)


def _report(ok: int, failed: int, p95: float | None) -> dict[str, Any]:
    figures = {} if p95 is None else {"v2v_ms": {"n": 4, "p50": p95 / 2, "p95": p95,
                                                 "max": p95}}
    return {"summary": {"calls_ok": ok, "calls_failed": failed, "failures": {},
                        "figures": figures}}


def test_callbot_capacity_recommends_the_steps_held_before_the_first_broken_one() -> None:
    from callbot.signalling.cli import build_parser
    from callbot.signalling.cli.capacity import parse_steps, recommend, step_row

    rows = [step_row(1, _report(1, 0, 1200), 2500), step_row(2, _report(2, 0, 2400), 2500),
            step_row(4, _report(4, 0, 3100), 2500), step_row(6, _report(6, 0, 2000), 2500)]
    assert [r["held"] for r in rows] == [True, True, False, True]
    assert rows[2]["broken"] == "p95 over budget"
    assert recommend(rows) == 2  # 6 held by luck after 4 broke: not trusted
    assert recommend([step_row(1, _report(0, 1, None), 2500)]) == 0
    assert not step_row(3, _report(2, 1, 900), 2500)["held"]  # a failed call breaks a step
    assert parse_steps("4,1,2,2") == [1, 2, 4]
    with pytest.raises(ValueError):
        parse_steps("0,1")
    args = build_parser().parse_args(["capacity", "--steps", "1,3", "--budget-ms", "1500",
                                      "--url", "http://127.0.0.1:9"])
    assert (args.command, args.steps, args.budget_ms) == ("capacity", "1,3", 1500.0)
