"""Caller memory: the SQLite store (retention, erasure, transcripts only when configured), the
HTTP API's auth and bad input, and two real calls of the same signed caller (the second starts
with what the first left) against an anonymous caller, who gets nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.engines import Engines
from callbot.pipeline.memory import CallerMemory, last_turns
from callbot.signalling.app import create_app
from callbot.signalling.config import AuthSettings, ConfigError, Limits, MemorySettings
from callbot.signalling.server.auth import mint_call_token
from callbot.signalling.server.state import STATE
from tests.conftest import TEST_CONFIG, ServerFactory

ADMIN = "admin-token-for-tests"
SECRET = "signing-secret-for-tests"


def test_store_retention_erasure_and_transcripts(tmp_path: Path) -> None:
    store = CallerMemory(tmp_path / "m.sqlite", retention_days=1, max_chars=200)
    now = time.time()
    turns = [{"role": "user", "content": "I am Ada and I want a blue bike."},
             {"role": "assistant", "content": "Noted, Ada."}]
    store.save("ada", "call-1", "Ada wants a blue bike.", turns, now=now - 2 * 86400)
    store.save("ada", "call-2", "Ada asked about lights.", turns, now=now)
    notes = store.notes("ada")  # the 2-day-old note is past the 1-day retention
    assert [n.call_id for n in notes] == ["call-2"] and notes[0].transcript is None
    context = store.context("ada")
    assert context is not None and "Ada asked about lights." in context
    assert store.context("somebody-else") is None
    assert store.forget("ada") == 1 and store.notes("ada") == []
    kept = CallerMemory(tmp_path / "k.sqlite", keep_transcripts=True)
    kept.save("bob", "call-3", "Bob called.", turns)
    assert kept.notes("bob")[0].transcript == turns


def test_last_turns_keeps_the_newest_within_the_limit() -> None:
    history = [{"role": "system", "content": "prompt"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
        for i in range(20)]
    text = last_turns(history, 120)
    assert "message number 19" in text and "message number 0" not in text
    assert len(text) <= 120 and "prompt" not in text


def test_memory_settings_are_checked(tmp_path: Path) -> None:
    from callbot.signalling.config import CallbotConfig

    config = CallbotConfig.load(None, env={"CALLBOT_MEMORY": "true",
                                           "CALLBOT_MEMORY_RETENTION_DAYS": "7"})
    assert config.memory.enabled and config.memory.retention_days == 7
    assert not CallbotConfig().memory.enabled  # off by default
    for bad in ('summarizer = "magic"', "retention_days = 0", "max_chars = 5"):
        path = tmp_path / "c.toml"
        path.write_text(f"[memory]\n{bad}\n")
        with pytest.raises(ConfigError, match="memory"):
            CallbotConfig.load(path, env={})


def memory_config(path: Path, **auth: Any) -> Any:
    return TEST_CONFIG.replace(
        memory=MemorySettings(enabled=True, db=str(path)),
        auth=AuthSettings(**({"mode": "token", "bearer_tokens": (ADMIN,),
                              "signing_secret": SECRET} | auth)),
        limits=Limits(call_rate_per_minute=100_000, max_calls_per_client=100))


async def request(method: str, url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url,
                                                             headers=headers) as resp:
        return resp.status, await resp.json()


async def test_memory_api_auth_and_bad_input(start_server: ServerFactory, engines: Engines,
                                             tmp_path: Path) -> None:
    base = await start_server(app=create_app(memory_config(tmp_path / "m.sqlite"),
                                             engines=engines))
    url = f"{base}/v1/callers/user-1/memory"
    assert (await request("GET", url))[0] == 401
    assert (await request("GET", url, "wrong"))[0] == 401
    assert (await request("DELETE", url, "wrong"))[0] == 401
    call_token = mint_call_token(SECRET, subject="user-1")  # a caller's own token: refused
    status, body = await request("GET", url, call_token)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await request("GET", url, ADMIN)
    assert status == 200 and body == {"caller_id": "user-1", "memories": []}
    long_id = "x" * 129
    for bad in (long_id, "%20padded", "tab%09id"):
        status, body = await request("GET", f"{base}/v1/callers/{bad}/memory", ADMIN)
        assert status == 400 and body["error"]["code"] == "invalid_caller_id", bad
    # No static tokens configured: the API is closed, even on loopback with auth "none".
    closed = await start_server(app=create_app(
        memory_config(tmp_path / "n.sqlite", bearer_tokens=(), mode="none"), engines=engines))
    status, body = await request("GET", f"{closed}/v1/callers/user-1/memory", ADMIN)
    assert status == 403 and "bearer_tokens" in body["error"]["message"]
    # Memory off: 404 with a clear code.
    off = await start_server(app=create_app(TEST_CONFIG.replace(
        auth=AuthSettings(bearer_tokens=(ADMIN,))), engines=engines))
    status, body = await request("GET", f"{off}/v1/callers/user-1/memory", ADMIN)
    assert status == 404 and body["error"]["code"] == "memory_disabled"


async def one_call(base: str, token: str, text: str) -> str:
    caller = SyntheticCaller(base, headers={"Authorization": f"Bearer {token}"})
    call_id = await caller.connect()
    try:
        mark = len(caller.events)
        caller.send({"type": "input.text", "text": text})
        await caller.wait_event("metrics", timeout=120, after=mark)
    finally:
        await caller.hangup()
    return call_id


@pytest.mark.e2e
async def test_signed_caller_is_remembered_and_anonymous_is_not(
        start_server: ServerFactory, engines: Engines, tmp_path: Path) -> None:
    app = create_app(memory_config(tmp_path / "m.sqlite"), engines=engines)
    base = await start_server(app=app)
    state = app[STATE]
    assert state.memory is not None

    first = await one_call(base, mint_call_token(SECRET, subject="caller-42"),
                           "Hello, my name is Priya and I want to rent an electric bike.")
    await state.memory.wait_idle()
    status, body = await request("GET", f"{base}/v1/callers/caller-42/memory", ADMIN)
    assert status == 200 and len(body["memories"]) == 1
    note = body["memories"][0]
    assert note["call_id"] == first and "Priya" in note["summary"]
    assert "transcript" not in note  # transcripts are not kept unless configured

    # The same caller calls again: the call starts with the note in its context.
    caller = SyntheticCaller(base, headers={
        "Authorization": f"Bearer {mint_call_token(SECRET, subject='caller-42')}"})
    call_id = await caller.connect()
    try:
        session = state.registry.get(call_id).session  # type: ignore[union-attr]
        assert any("Priya" in note for note in session._context)
    finally:
        await caller.hangup()

    # An anonymous caller (a static API token, no identity): no memory given or kept.
    anonymous = SyntheticCaller(base, headers={"Authorization": f"Bearer {ADMIN}"})
    anon_id = await anonymous.connect()
    try:
        session = state.registry.get(anon_id).session  # type: ignore[union-attr]
        assert session._context == []
        mark = len(anonymous.events)
        anonymous.send({"type": "input.text", "text": "My name is Tom."})
        await anonymous.wait_event("metrics", timeout=120, after=mark)
    finally:
        await anonymous.hangup()
    await asyncio.sleep(0.2)
    await state.memory.wait_idle()
    notes = state.memory.store._db.execute("SELECT caller_id FROM memories").fetchall()
    assert {row[0] for row in notes} == {"caller-42"}

    status, body = await request("DELETE", f"{base}/v1/callers/caller-42/memory", ADMIN)
    assert status == 200 and body["deleted"] >= 1
    status, body = await request("GET", f"{base}/v1/callers/caller-42/memory", ADMIN)
    assert body["memories"] == []
