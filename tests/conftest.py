"""Shared fixtures: the models (loaded once), servers on loopback, speech clips."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from callbot.pipeline.engines import Engines
from callbot.pipeline.settings import EngineSettings
from callbot.pipeline.vision import VisionSettings
from callbot.signalling.app import create_app, shared_engines
from callbot.signalling.config import AuthSettings, CallbotConfig, Limits
from support import speech

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any attempt to reach a model hub fails loudly
# Tests never read or write the user's ~/.callbot (the default knowledge base lives there):
# a fresh, empty CALLBOT_HOME per test run, inherited by the `callbot` subprocesses too.
os.environ["CALLBOT_HOME"] = tempfile.mkdtemp(prefix="callbot-home-")
for _var in ("CALLBOT_KB", "CALLBOT_KB_DB"):
    os.environ.pop(_var, None)
# The suite's calls run on the fast SmolLM2 (the default Qwen2.5 1.5B is ~10x slower to its first
# token on 2 cores): here and in the `callbot` subprocesses. tests/test_default_brain.py and
# bench/quality.py cover the default model.
os.environ["CALLBOT_LLM_LOCAL_MODEL"] = "smollm2-135m"

LOOPBACK = "127.0.0.1"
# Every test call comes from 127.0.0.1: one client, so lift the per-client limits. Auth stays
# at its default ("auto": open for these local requests); clients may set `system_prompt`
# here (off by default without auth) so the option's own checks are tested.
TEST_CONFIG = CallbotConfig(
    ice_hosts=(LOOPBACK,),
    limits=Limits(max_calls_per_client=100, call_rate_per_minute=10_000),
    auth=AuthSettings(client_system_prompt="allow"),
    # Vision loads OCR models (~3 s, ~500 MB): only the tests that look use it (test_vision*).
    vision=VisionSettings(engine="none"),
    # The suite's calls are English on the fast tiny.en path (the default is all five languages
    # with tiny.en + base): tests/test_multilingual.py covers the other languages.
    languages=("en",),
    engines=EngineSettings(asr_model="tiny.en", llm_model="smollm2-135m"),
)

ServerFactory = Callable[..., Awaitable[str]]


def free_port() -> int:
    """A loopback port nothing listens on (for servers a test starts in a subprocess)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


async def raw_request(base: str, head: bytes, parts: list[bytes], pause: float = 0.2
                      ) -> tuple[int, dict]:
    """Sends `head`, then each body part after `pause` (stopping once the server has closed),
    as a real network may deliver a request; returns the status and the JSON answer."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    for part in parts:
        await writer.drain()
        await asyncio.sleep(pause)
        if reader.at_eof():
            break
        writer.write(part)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    body = rest.split(b"\r\n\r\n", 1)[1]
    return int(status_line.split()[1]), json.loads(body) if body.strip() else {}


@pytest.fixture(autouse=True)
def _no_load_shedding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run many calls back to back on two busy cores: load shedding (503 `overloaded`)
    would refuse calls that other tests need, depending on the machine. It stays on for the
    tests marked `overload`, which test it (tests/test_overload.py)."""
    if request.node.get_closest_marker("overload") is None:
        from callbot.signalling.server.overload import OverloadMonitor

        monkeypatch.setattr(OverloadMonitor, "reason", lambda self: None)


@pytest.fixture(scope="session")
def engines() -> Engines:
    return shared_engines(TEST_CONFIG.engines)


@pytest.fixture(scope="session")
async def start_server(engines: Engines) -> AsyncIterator[ServerFactory]:
    """Starts callbot apps on loopback (free port); returns their base URL."""
    runners: list[web.AppRunner] = []

    async def start(config: CallbotConfig = TEST_CONFIG, *, app_engines: Engines | None = None,
                    app: web.Application | None = None) -> str:
        application = app or create_app(config, engines=app_engines or engines)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{LOOPBACK}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(scope="session")
async def server(start_server: ServerFactory) -> str:
    """The default server (embedded models, loopback ICE), shared by tests that only call."""
    return await start_server()


@pytest.fixture(scope="session")
def question() -> speech.Clip:
    """One spoken question with 0.5 s of silence before and 1.5 s after, at 48 kHz."""
    return speech.espeak("How many legs does a spider have?", 48_000).padded(0.5, 1.5)


@pytest.fixture(scope="session")
def require_real_speech() -> None:
    if not speech.real_speech_available():
        pytest.fail("pocketsphinx-testdata is not installed (apt-get install it)")
