"""examples/embed_app.py: a shop app with callbot mounted under /callbot."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from callbot.loadtest.caller import SyntheticCaller
from examples import embed_app
from tests.conftest import TEST_CONFIG

TOKEN = "shop-token-123"
OFFER = {"type": "offer", "sdp": "v=0 but nothing else"}


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("shop") / "shop.sqlite")


@pytest.fixture(scope="module")
async def shop(start_server, engines, db_path: str) -> str:
    app = embed_app.build_app(db_path, TOKEN, config=TEST_CONFIG, engines=engines)
    return await start_server(app=app)


async def test_shop_routes_keep_their_own_auth(shop: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{shop}/") as resp:
            assert resp.status == 200 and "Shop" in await resp.text()
        async with http.get(f"{shop}/api/orders/A1001") as resp:
            assert resp.status == 401
        async with http.get(f"{shop}/api/orders/a1001",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert (await resp.json())["customer"] == "Ada Lovelace"


async def test_mounted_health_and_demo(shop: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{shop}/callbot/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with http.get(f"{shop}/callbot/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
        async with http.get(f"{shop}/callbot", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/callbot/"


async def test_mounted_call_api_needs_the_shop_token(shop: str) -> None:
    url = f"{shop}/callbot/v1/calls"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=OFFER) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with http.post(url, json=OFFER, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        async with http.post(url, json=OFFER,
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 400  # past auth: the offer itself is refused
        # A browser gets a one-call token from the shop's API.
        async with http.get(f"{shop}/api/call-token?user=ada",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            call_token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {call_token}"}
        async with http.post(url, json=OFFER, headers=headers) as resp:
            assert resp.status == 400
        async with http.post(url, json=OFFER, headers=headers) as resp:
            assert resp.status == 401  # single use


async def test_order_tool_reads_the_database(db_path: str) -> None:
    embed_app.create_db(db_path)
    tool = embed_app.order_tool(db_path)
    assert tool.spec()["function"]["name"] == "lookup_order"
    found = json.loads(await tool.run('{"order_id": "a1002"}'))
    assert found == {"found": True, "status": "processing", "items": "1 keyboard",
                     "shipped_on": None}
    missing = json.loads(await tool.run({"order_id": "Z9"}))
    assert missing == {"found": False, "order_id": "Z9"}
    # Ids are data, never SQL.
    sneaky = json.loads(await tool.run({"order_id": "A1001' OR '1'='1"}))
    assert sneaky["found"] is False


@pytest.mark.e2e
async def test_signed_in_customer_is_greeted_by_name_through_the_call_handle(
        shop: str, engines) -> None:
    """A real call with the shop's one-call token for 'ada': the app's on_call_started hook
    uses the handle to give the LLM her record and to greet her by name, out loud."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{shop}/api/call-token?user=ada",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            call_token = (await resp.json())["token"]
    caller = SyntheticCaller(f"{shop}/callbot", headers={"Authorization": f"Bearer {call_token}"})
    try:
        await caller.connect()
        started = await caller.wait_event("response.audio.started", 20)
        done = await caller.wait_event("response.audio.done", 20)
        deltas = "".join(data["delta"] for _, data in caller.events
                         if data.get("type") == "response.text.delta")
        assert deltas.startswith("Hello Ada,")
        # The greeting was heard, not only sent as text: Whisper hears the name.
        heard = caller.heard.audio_between(0, time.monotonic())  # the whole call so far
        assert len(heard) / 16_000 > 0.5
        text = (await engines.asr.transcribe(heard)).text
        assert "ada" in text.lower(), text
        assert done["turn_id"] == started["turn_id"]
    finally:
        await caller.hangup()


@pytest.mark.e2e
async def test_an_anonymous_caller_gets_the_generic_greeting(shop: str) -> None:
    caller = SyntheticCaller(f"{shop}/callbot", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        await caller.connect()
        await caller.wait_event("response.audio.done", 20)
        deltas = "".join(data["delta"] for _, data in caller.events
                         if data.get("type") == "response.text.delta")
        assert deltas.startswith("Hello, thanks for calling the shop.")
    finally:
        await caller.hangup()
