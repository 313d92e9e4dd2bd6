"""Tools (function calling) over the OpenAI-compatible backend, against a real HTTP server
that speaks the chat-completions streaming protocol, and through a real call with hooks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.llm.openai_compat import OpenAICompatibleModel
from callbot.pipeline.llm.tools import Tool, ToolRegistry
from callbot.signalling.app import create_app
from callbot.signalling.calls.call import CallOptions
from callbot.signalling.calls.hooks import CallHooks
from tests.conftest import TEST_CONFIG

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}},
           "required": ["city"]}


class FakeOpenAI:
    """A chat-completions server: the first answer (with tools offered) is a tool call whose
    name and arguments arrive in pieces; the answer after the tool result is text."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.completions)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            event = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())

        last = body["messages"][-1]
        if body.get("tools") and last["role"] == "user":
            args = json.dumps({"city": "Oslo"})
            await send({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "call_abc", "type": "function",
                 "function": {"name": "get_", "arguments": ""}}]})
            await send({"tool_calls": [{"index": 0, "function": {"name": "weather",
                                                                  "arguments": args[:7]}}]})
            await send({"tool_calls": [{"index": 0, "function": {"arguments": args[7:]}}]})
            await send({}, "tool_calls")
        else:
            sky = json.loads(last["content"])["sky"] if last["role"] == "tool" else "no tool"
            answer = f"The weather: {sky}. Anything else?"
            for word in answer.split(" "):
                await send({"content": word + " "})
            await send({}, "stop")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture(scope="module")
async def llm_server(start_server) -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    base = await start_server(app=fake.app)
    fake.base_url = f"{base}/v1"  # type: ignore[attr-defined]
    yield fake


def _weather_tool(calls: list[dict[str, Any]]) -> Tool:
    async def get_weather(city: str) -> dict[str, Any]:
        calls.append({"city": city})
        await asyncio.sleep(0)
        return {"city": city, "sky": "sunny and 21 degrees"}

    return Tool("get_weather", "Current weather in a city.", WEATHER, get_weather)


async def _collect(stream: AsyncIterator[str]) -> str:
    return "".join([piece async for piece in stream])


async def test_tool_call_is_run_and_the_completion_continues(llm_server: FakeOpenAI) -> None:
    calls: list[dict[str, Any]] = []
    model = OpenAICompatibleModel(llm_server.base_url, "fake")  # type: ignore[attr-defined]
    llm_server.requests.clear()
    try:
        text = await _collect(model.stream_chat(
            [{"role": "system", "content": "be brief"},
             {"role": "user", "content": "Weather in Oslo?"}],
            max_tokens=50, temperature=0.0, tools=[_weather_tool(calls)],
        ))
    finally:
        await model.close()
    assert calls == [{"city": "Oslo"}]
    assert text.strip() == "The weather: sunny and 21 degrees. Anything else?"
    first, second = llm_server.requests
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert first["tools"][0]["function"]["parameters"] == WEATHER
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"] == [{"id": "call_abc", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_abc"
    assert json.loads(tool["content"])["sky"] == "sunny and 21 degrees"


async def test_without_tools_nothing_changes(llm_server: FakeOpenAI) -> None:
    model = OpenAICompatibleModel(llm_server.base_url, "fake")  # type: ignore[attr-defined]
    llm_server.requests.clear()
    try:
        text = await _collect(model.stream_chat(
            [{"role": "user", "content": "hi"}], max_tokens=10, temperature=0.0))
    finally:
        await model.close()
    assert "tools" not in llm_server.requests[0]
    assert text.strip() == "The weather: no tool. Anything else?"


async def test_tool_errors_go_back_to_the_model() -> None:
    async def broken(city: str) -> str:
        raise RuntimeError("database down")

    registry = ToolRegistry([Tool("w", "weather", WEATHER, broken)])
    assert "database down" in json.loads(await registry.run("w", '{"city": "x"}'))["error"]
    assert "not valid JSON" in json.loads(await registry.run("w", "{nope"))["error"]
    assert "bad arguments" in json.loads(await registry.run("w", '{"town": "x"}'))["error"]
    assert "no tool" in json.loads(await registry.run("missing", "{}"))["error"]

    @registry.tool("echo", "echo back", {"type": "object", "properties": {}})
    def echo(**kwargs: Any) -> str:  # plain functions work too
        return "echo"

    assert await registry.run("echo", {}) == "echo"
    with pytest.raises(ValueError, match="already registered"):
        registry.add(Tool("echo", "again"))


async def test_a_call_uses_tools_and_hooks(engines, llm_server: FakeOpenAI, start_server
                                           ) -> None:
    """A real call: the options factory picks the prompt, the typed question makes the LLM
    call the tool, the answer is spoken, and the hooks see the call start, the transcript
    and the end."""
    calls: list[dict[str, Any]] = []
    seen: list[tuple[str, Any]] = []
    model = OpenAICompatibleModel(llm_server.base_url, "fake")  # type: ignore[attr-defined]
    call_engines = dataclasses.replace(engines, llm=model)

    def options_for(request: web.Request, requested: CallOptions) -> CallOptions:
        return dataclasses.replace(requested, system_prompt="You are the weather line.")

    async def on_transcript(info, text: str) -> None:
        seen.append(("transcript", text))

    hooks = CallHooks(
        on_call_started=lambda info: seen.append(("started", info.call_id)),
        on_call_ended=lambda info, reason: seen.append(("ended", reason)),
        on_transcript=on_transcript,
        options_factory=options_for,
        tools=[_weather_tool(calls)],
    )
    app = create_app(TEST_CONFIG, engines=call_engines, hooks=hooks)
    base = await start_server(app=app)
    llm_server.requests.clear()
    caller = SyntheticCaller(base, keep_audio=False)
    try:
        call_id = await caller.connect()
        caller.send({"type": "input.text", "text": "What is the weather in Oslo?"})
        await caller.wait_event("response.audio.done", timeout=30)
    finally:
        await caller.hangup()
        await model.close()
    for _ in range(50):
        if ("ended", "hangup") in seen:
            break
        await asyncio.sleep(0.1)
    assert calls == [{"city": "Oslo"}]
    spoken = "".join(e["delta"] for e in caller.events_of("response.text.delta"))
    assert "sunny and 21 degrees" in spoken
    assert llm_server.requests[0]["messages"][0]["content"] == "You are the weather line."
    assert seen == [("started", call_id), ("transcript", "What is the weather in Oslo?"),
                    ("ended", "hangup")]
