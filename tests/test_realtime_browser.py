"""The real OpenAI Realtime browser client (`@openai/agents-realtime` from npm, bundled with
esbuild at test time) in headless Chromium, calling callbot over WebRTC on loopback with a
spoken question as its fake microphone. The page is an app written for the OpenAI Realtime
API with only its base URL changed (tests/realtime_js/app.js).

`.ci/run` installs the npm packages (`npm install --prefix tests/realtime_js`).
Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up; python3 -m pytest -q tests/test_realtime_browser.py'
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from callbot.pipeline.engines import Engines
from callbot.signalling.app import create_app
from callbot.signalling.config import CallbotConfig
from callbot.signalling.server.state import STATE
from support import speech
from support.browser import CHROMIUM, chromium_args
from tests.conftest import TEST_CONFIG, ServerFactory
from tests.realtime_llm import SECRET_WORD, TOOL_CONFIG, tool_engines, tool_llm_url

pytestmark = pytest.mark.e2e
__all__ = ["tool_engines", "tool_llm_url"]  # fixtures

JS = Path(__file__).parent / "realtime_js"
QUESTION = "How many legs does a spider have?"
ID = re.compile(r"^(event|item|resp|sess|conv|call)_[0-9a-f]{20}$")
APPS: list[web.Application] = []  # the default server's app, to look at its calls
PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Realtime app</title></head>
<body><script type="module" src="/test-app/app.js"></script></body></html>"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    esbuild = JS / "node_modules" / ".bin" / "esbuild"
    if not (JS / "node_modules" / "@openai" / "agents-realtime").exists() or not esbuild.exists():
        pytest.fail("npm packages missing: npm install --prefix tests/realtime_js (.ci/run does)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    out = tmp_path_factory.mktemp("realtime-js") / "app.js"
    subprocess.run([str(esbuild), "app.js", "--bundle", "--format=esm", "--platform=browser",
                    f"--outfile={out}", "--log-level=warning"], cwd=JS, check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
async def base_url(start_server: ServerFactory, engines: Engines, bundle: bytes) -> str:
    app = _with_page(TEST_CONFIG, engines, bundle)
    APPS.append(app)
    return await start_server(app=app)


def _with_page(config: CallbotConfig, engines: Engines, bundle: bytes
                       ) -> web.Application:
    app = create_app(config, engines=engines)

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def script(request: web.Request) -> web.Response:
        return web.Response(body=bundle, content_type="text/javascript")

    app.router.add_get("/test-app/", page)
    app.router.add_get("/test-app/app.js", script)
    return app


def _wav(tmp: Path, text: str | None, tail_s: float = 4.0) -> Path:
    """The fake microphone: 1 s of silence (it starts at getUserMedia), the words, silence."""
    if text is None:
        clip = speech.Clip(speech.np.zeros(48_000 * 6, dtype=speech.np.int16), 48_000, "")
    else:
        clip = speech.espeak(text, 48_000).padded(1.5, tail_s)
    return clip.write_wav(tmp / "mic.wav")


@asynccontextmanager
async def realtime_page(base: str, wav: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="callbot-rt-chromium-")
    args = chromium_args(wav)
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=args)
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                page.set_default_timeout(30_000)
                crashes: list[str] = []
                page.on("pageerror", lambda exc: crashes.append(str(exc)))
                await page.goto(f"{base}/test-app/")
                await page.wait_for_function("typeof window.startCall === 'function'")
                yield page
                assert not crashes, crashes
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def _events(page: Any, kind: str) -> list[dict[str, Any]]:
    return await page.evaluate("(k) => window.rt.events.filter((e) => e.type === k)", kind)


async def _wait(page: Any, kind: str, timeout_s: float = 120, count: int = 1,
                where: str = "true") -> list[dict[str, Any]]:
    try:
        await page.wait_for_function(
            f"([k, n]) => window.rt.events.filter((e) => e.type === k && ({where})).length >= n",
            arg=[kind, count], timeout=timeout_s * 1000)
    except Exception:
        seen = await page.evaluate("window.rt.events.map((e) => e.type)")
        errors = await page.evaluate("window.rt.errors")
        pytest.fail(f"no {kind} #{count} within {timeout_s} s; events {seen}; errors {errors}")
    return await _events(page, kind)


async def _heard_energy(page: Any, seconds: float) -> float:
    """Audio energy the page received over the next `seconds`."""
    before = await page.evaluate("window.inboundAudio()")
    await asyncio.sleep(seconds)
    after = await page.evaluate("window.inboundAudio()")
    return float(after["energy"] - before["energy"])


async def test_spoken_question_is_answered_aloud(base_url: str, tmp_path: Path) -> None:
    async with realtime_page(base_url, _wav(tmp_path, QUESTION)) as page:
        await page.evaluate("window.startCall({instructions: 'You are a helpful assistant. "
                            "Answer in one short sentence.'})")
        assert await page.evaluate("window.rt.connected")
        updated = await _wait(page, "session.updated")
        assert updated[0]["session"]["instructions"].startswith("You are a helpful assistant")
        assert await page.evaluate("window.rt.transport.callId"), "no call id from Location"

        heard = await _wait(page, "conversation.item.input_audio_transcription.completed")
        speech.assert_heard(heard[0]["transcript"], QUESTION)
        await _wait(page, "output_audio_buffer.started")
        assert await _heard_energy(page, 1.0) > 0.001, "the reply is silent in the browser"
        done = await _wait(page, "response.done")
        assert done[0]["response"]["status"] == "completed"
        transcript = (await _wait(page, "response.output_audio_transcript.done"))[0]
        assert transcript["transcript"].strip()
        assert (await _wait(page, "output_audio_buffer.stopped"))[0]["response_id"] == \
            done[0]["response"]["id"]
        # the SDK's own history holds the whole exchange
        history = await page.evaluate("window.rt.session.history.map((i) => i.role)")
        assert history[:2] == ["user", "assistant"], history
        events = await page.evaluate("window.rt.events")
        assert all(ID.match(e["event_id"]) for e in events), events
        assert not await page.evaluate("window.rt.errors")


async def test_instructions_and_interruption(base_url: str, tmp_path: Path) -> None:
    async with realtime_page(base_url, _wav(tmp_path, None)) as page:
        await page.evaluate("window.startCall({instructions: 'You are a helpful assistant.'})")
        await _wait(page, "session.updated")
        # New instructions take effect on the next reply.
        await page.evaluate("window.setInstructions('Your name is Zorblax. When someone asks "
                            "your name, you say that your name is Zorblax.')")
        await _wait(page, "session.updated", count=2)
        await page.evaluate("window.say('What is your name?')")
        done = await _wait(page, "response.done")
        reply = done[0]["response"]["output"][0]["content"][0]["transcript"]
        assert "zorblax" in reply.lower(), reply

        # Interrupting: the SDK cancels the response and clears the output audio.
        await page.evaluate("window.say('Tell me a long story about a dragon and a knight.')")
        await _wait(page, "output_audio_buffer.started", count=2)
        talking = 0.0
        for _ in range(50):  # until the browser plays the reply (later on a loaded machine)
            talking = await _heard_energy(page, 0.3)
            if talking > 0.001:
                break
        assert talking > 0.001, "the reply never played"
        await page.evaluate("window.interrupt()")
        await _wait(page, "output_audio_buffer.cleared")
        done = await _wait(page, "response.done", count=2)
        assert done[1]["response"]["status"] == "cancelled", done[1]
        # the server dropped what was queued...
        call = max(APPS[0][STATE].registry.all(), key=lambda c: c.created_wall)
        assert call.output.pending_seconds() == 0
        # ...and the browser hears silence once its jitter buffer has played out
        await asyncio.sleep(1.5)
        after = await _heard_energy(page, 1.0)
        assert after < 0.1 * talking, (talking, after)


async def test_client_tool_is_called_and_its_output_used(
        start_server: ServerFactory, tool_engines: Engines, bundle: bytes,
        tmp_path: Path) -> None:
    base = await start_server(app=_with_page(TOOL_CONFIG, tool_engines, bundle))
    wav = _wav(tmp_path, "What is the secret word of the day?", tail_s=8.0)
    async with realtime_page(base, wav) as page:
        await page.evaluate("window.startCall({instructions: 'You are a helpful assistant. "
                            "Answer in one short sentence.', withTool: true})")
        updated = await _wait(page, "session.updated")
        assert updated[-1]["session"]["tools"][0]["name"] == "get_secret_word"
        first = (await _wait(page, "response.done", timeout_s=300))[0]
        assert first["response"]["output"][-1]["type"] == "function_call", first
        assert await page.evaluate("window.rt.toolCalls") == ["get_secret_word"]
        # the SDK ran the tool, sent its output and asked for the rest of the reply
        second = (await _wait(page, "response.done", count=2, timeout_s=300))[1]
        assert second["response"]["status"] == "completed", second
        reply = second["response"]["output"][0]["content"][0]["transcript"]
        assert SECRET_WORD in reply.lower(), reply
        assert await _heard_energy(page, 0.5) >= 0  # still connected
