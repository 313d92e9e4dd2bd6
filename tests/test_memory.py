"""Caller memory: the SQLite store (retention, erasure, transcripts only when configured), the
HTTP API's auth (admin tokens and the caller's own identity only, every access logged) and
bad input, personal data redacted before a note is stored, and two real calls of the same
signed caller (the second starts with what the first left) against an anonymous caller, who
gets nothing."""

from __future__ import annotations

import asyncio
import json
import logging
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
OPERATOR = "operator-token-for-tests"  # a plain API token: starts calls, reads no memory
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
        auth=AuthSettings(**({"mode": "token", "bearer_tokens": (OPERATOR,),
                              "admin_tokens": (ADMIN,), "signing_secret": SECRET} | auth)),
        limits=Limits(call_rate_per_minute=100_000, max_calls_per_client=100))


async def request(method: str, url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url,
                                                             headers=headers) as resp:
        return resp.status, await resp.json()


def expired_call_token(subject: str) -> str:
    from callbot.signalling.server.auth import _b64, _sign

    part = _b64(json.dumps({"exp": int(time.time()) - 10, "nonce": "n" * 32,
                            "sub": subject}).encode())
    return f"{part}.{_sign(SECRET, part)}"


async def test_memory_api_auth_and_bad_input(start_server: ServerFactory, engines: Engines,
                                             tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(memory_config(tmp_path / "m.sqlite"), engines=engines)
    base = await start_server(app=app)
    store = app[STATE].memory.store  # type: ignore[union-attr]
    store.save("user-1", "call-1", "User one likes blue bikes.", [])
    store.save("user-2", "call-2", "User two likes red bikes.", [])
    url = f"{base}/v1/callers/user-1/memory"
    caplog.set_level(logging.INFO, logger="callbot.audit.memory")
    assert (await request("GET", url))[0] == 401
    assert (await request("GET", url, "wrong"))[0] == 401
    assert (await request("DELETE", url, "wrong"))[0] == 401
    # A plain API token reads and erases nobody's notes (it used to read everyone's).
    for method in ("GET", "DELETE"):
        status, body = await request(method, url, OPERATOR)
        assert status == 403 and body["error"]["code"] == "forbidden", (method, body)
    # The caller's own identity: a signed call token whose subject is this caller id.
    own = mint_call_token(SECRET, subject="user-1")
    status, body = await request("GET", url, own)
    assert status == 200 and [m["call_id"] for m in body["memories"]] == ["call-1"]
    status, _ = await request("GET", url, own)  # checked, not spent: it still works
    assert status == 200
    status, _ = await request("GET", f"{base}/v1/callers/user-2/memory", own)
    assert status == 403  # not someone else's
    status, _ = await request("DELETE", f"{base}/v1/callers/user-2/memory", own)
    assert status == 403 and len(store.notes("user-2")) == 1
    assert (await request("GET", url, expired_call_token("user-1")))[0] == 401
    assert (await request("GET", url, mint_call_token(SECRET)))[0] == 403  # no subject
    # The admin token (it used to get 401).
    status, body = await request("GET", f"{base}/v1/callers/user-2/memory", ADMIN)
    assert status == 200 and body["memories"][0]["summary"] == "User two likes red bikes."
    status, body = await request("DELETE", url, own)  # the caller erases their own notes
    assert status == 200 and body["deleted"] == 1 and store.notes("user-1") == []
    status, body = await request("DELETE", f"{base}/v1/callers/user-2/memory", ADMIN)
    assert status == 200 and body["deleted"] == 1
    # Every access is logged, allowed or not, without the caller id or the token in clear.
    audit = [r.getMessage() for r in caplog.records if r.name == "callbot.audit.memory"]
    assert sum("memory GET caller=" in m and "refused" in m for m in audit) >= 6, audit
    assert sum("memory read caller=" in m for m in audit) == 3, audit
    assert sum("memory erase caller=" in m for m in audit) == 2, audit
    assert not any("user-1" in m or "user-2" in m or OPERATOR in m or ADMIN in m
                   for m in audit), audit
    long_id = "x" * 129
    for bad in (long_id, "%20padded", "tab%09id"):
        status, body = await request("GET", f"{base}/v1/callers/{bad}/memory", ADMIN)
        assert status == 400 and body["error"]["code"] == "invalid_caller_id", bad
    # No credentials configured: the API is closed, even on loopback with auth "none".
    closed = await start_server(app=create_app(
        memory_config(tmp_path / "n.sqlite", bearer_tokens=(), admin_tokens=(),
                      signing_secret=None, mode="none"), engines=engines))
    status, body = await request("GET", f"{closed}/v1/callers/user-1/memory", ADMIN)
    assert status == 403 and "admin_tokens" in body["error"]["message"]
    # Auth mode "none" with an admin token configured: the memory API still wants it.
    open_mode = await start_server(app=create_app(
        memory_config(tmp_path / "o.sqlite", mode="none"), engines=engines))
    assert (await request("GET", f"{open_mode}/v1/callers/user-1/memory"))[0] == 401
    assert (await request("GET", f"{open_mode}/v1/callers/user-1/memory", ADMIN))[0] == 200
    # Memory off: 404 with a clear code.
    off = await start_server(app=create_app(TEST_CONFIG.replace(
        auth=AuthSettings(admin_tokens=(ADMIN,))), engines=engines))
    status, body = await request("GET", f"{off}/v1/callers/user-1/memory", ADMIN)
    assert status == 404 and body["error"]["code"] == "memory_disabled"


async def test_personal_data_is_redacted_before_a_note_is_stored(
        engines: Engines, tmp_path: Path) -> None:
    from callbot.pipeline.safety import SafetySettings
    from callbot.signalling.calls.memory import MemoryService

    said = ("my card number is 4111 1111 1111 1111 and my phone is +1 415 555 0199, "
            "mail me at ada@example.com")
    history = [{"role": "system", "content": "prompt"},
               {"role": "user", "content": said},
               {"role": "assistant", "content": "Thanks, I will call +1 415 555 0199."}]
    for redact in (True, False):
        config = TEST_CONFIG.replace(
            memory=MemorySettings(enabled=True, db=str(tmp_path / f"{redact}.sqlite"),
                                  keep_transcripts=True, summarizer="last_turns"),
            safety=SafetySettings(redact_pii=redact))
        service = MemoryService(config, engines)
        try:
            await service._save("ada", "call-1", history)
            note = service.store.notes("ada")[0]
            stored = note.summary + json.dumps(note.transcript)
            if redact:
                for secret in ("4111", "415 555", "0199", "ada@example.com"):
                    assert secret not in stored, (secret, stored)
                assert "[card]" in stored and "[phone]" in stored and "[email]" in stored
            else:  # off: kept as said (the operator chose so)
                assert "4111 1111 1111 1111" in note.summary
        finally:
            service.close()


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
    anonymous = SyntheticCaller(base, headers={"Authorization": f"Bearer {OPERATOR}"})
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
