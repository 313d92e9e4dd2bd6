"""End to end through a real browser: headless Chromium runs the demo page and calls the
server over WebRTC on loopback, with a spoken question played as its (fake) microphone.

Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up; python3 -m pytest -q tests/test_browser.py'
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callbot.signalling.app import create_app
from callbot.signalling.server.state import STATE
from support import speech
from support.browser import CHROMIUM, chromium_page
from tests.conftest import TEST_CONFIG

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"  # CI keeps this folder
QUESTION = "How many legs does a spider have?"


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    # The file starts playing at getUserMedia time: 1 s of silence first, then the question,
    # then a long enough tail of silence for the end of the turn to be detected.
    clip = speech.espeak(QUESTION, 48_000).padded(1.0, 3.0)
    return clip.write_wav(tmp_path_factory.mktemp("browser") / "question.wav")


async def _events(page: Any, kind: str) -> list[dict[str, Any]]:
    return await page.evaluate(
        "(kind) => window.callbot.events.filter((e) => e.type === kind)", kind
    )


async def _wait_event(page: Any, kind: str, timeout_s: float, count: int = 1) -> None:
    """Waits until the page has received `count` events of type `kind`."""
    try:
        await page.wait_for_function(
            "([kind, n]) => window.callbot.events.filter((e) => e.type === kind).length >= n",
            arg=[kind, count], timeout=timeout_s * 1000,
        )
    except Exception:
        seen = await page.evaluate("window.callbot.events.map((e) => e.type)")
        error = await page.evaluate("window.callbot.lastError")
        pytest.fail(f"no {kind} event #{count} within {timeout_s} s; events: {seen}; "
                    f"error: {error}")


_INBOUND_AUDIO = """async () => {
  const pc = window.callbot.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  for (const s of stats.values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      return {energy: s.totalAudioEnergy || 0, samples: s.totalSamplesReceived || 0,
              bytes: s.bytesReceived || 0};
    }
  }
  return null;
}"""


async def _calls(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/calls") as resp:
        assert resp.status == 200
        return (await resp.json())["calls"]


async def test_spoken_question_gets_a_spoken_answer(server: str, question_wav: Path) -> None:
    async with chromium_page(question_wav) as page:
        await page.goto(f"{server}/")
        assert await page.locator("#hangup").is_disabled()
        await page.click("#call")

        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        await _wait_event(page, "transcript.final", timeout_s=90)
        finals = await _events(page, "transcript.final")
        heard = finals[0]["text"].lower()
        # The browser's own audio processing (echo cancel, noise suppression, AGC) and Opus
        # sit in between: allow one misheard word out of seven ("legs" came back as "leks").
        speech.assert_heard(heard, QUESTION)
        assert await page.evaluate("window.callbot.micPeak") > 30, "the mic meter never moved"

        await _wait_event(page, "response.audio.started", timeout_s=120)
        assert await _events(page, "response.text.delta")
        # Let some of the answer play: it reached the page and was played (Web Audio plays
        # it, so getStats' totalAudioEnergy stays 0; the page's played-level meter moved).
        await page.wait_for_function("window.callbot.audio && window.callbot.audio.botPeak > 30",
                                     timeout=20_000)
        # Bytes of voice, not only of the silence before it: the first audible frames can
        # come after as little as ~1.5 kB of silent Opus (replies got faster), so wait a bit.
        for _ in range(50):  # 10 s at most
            audio = await page.evaluate(_INBOUND_AUDIO)
            if audio is None or audio["bytes"] > 2000:
                break
            await asyncio.sleep(0.2)
        assert audio is not None and audio["samples"] > 0 and audio["bytes"] > 2000, audio

        # The page shows it: the final transcript, the bot's reply, then the turn's latencies.
        log_text = (await page.locator("#log").inner_text()).lower()
        reply = "".join(e["delta"] for e in await _events(page, "response.text.delta"))
        assert heard in log_text and reply.strip().lower() in log_text, (log_text, reply)
        assert await page.locator("#log .entry-bot").count() == 1
        assert await page.locator("#log .entry-user.partial").count() == 0
        assert await _calls(server), "the server lists no call during the call"
        await _wait_event(page, "metrics", timeout_s=30)
        # The caller's own figure, in words; the server's stages behind a toggle.
        await page.wait_for_function("document.querySelector('#latency').dataset.ms")
        assert "after you stopped talking" in await page.locator("#latency").inner_text()
        assert await page.locator("#latency-details").is_visible()
        assert await page.locator("#server-breakdown").is_hidden()
        await page.click("#latency-details summary")
        assert "Speech recognition" in await page.locator("#server-breakdown").inner_text()

        # A typed turn, stopped with "Stop bot" while the bot speaks.
        await page.fill("#text-input", "Please count slowly from one to twenty.")
        await page.click("#send-text")
        await _wait_event(page, "response.audio.started", timeout_s=60, count=2)
        await page.wait_for_function("window.callbot.state === 'speaking'")
        await page.click("#stop-bot")
        # Silent at once in the page, and the label says so at the same moment.
        await page.wait_for_function("window.callbot.stops.length === 1"
                                     " && window.callbot.stops[0].playedSilentMs !== null")
        stop = (await page.evaluate("window.callbot.stops"))[0]
        assert stop["playedSilentMs"] <= 30, stop
        print(f"Stop: played audio silent after {stop['playedSilentMs']} ms")
        assert await page.evaluate("window.callbot.state") != "speaking"
        await _wait_event(page, "response.interrupted", timeout_s=10)
        await page.wait_for_function("window.callbot.stops[0].receivedSilentMs !== null")
        stop = (await page.evaluate("window.callbot.stops"))[0]
        print(f"Stop: received audio (what plays without the page's gate) stopped after "
              f"{stop['receivedSilentMs']} ms")
        interrupted = (await _events(page, "response.interrupted"))[0]
        assert interrupted["reason"] == "cancelled", interrupted
        await page.wait_for_function("window.callbot.state === 'listening'")
        assert await page.locator("#log .entry-user.typed").count() == 1
        assert "interrupted" in await page.locator("#log .entry-bot.interrupted").inner_text()
        assert await page.locator("#error").is_hidden()
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "demo-desktop-call.png"), full_page=True)

        events = await page.evaluate("window.callbot.events")
        assert all("type" in e and "t_ms" in e for e in events)
        assert not [e for e in events if e["type"] == "error"], events

        hangups = await hangup_count(server)
        await page.click("#hangup")
        await page.wait_for_function("window.callbot.connection === 'ended'")
        assert await page.locator("#call").is_enabled()
        assert await page.evaluate("document.activeElement.id") == "call"
        assert await page.evaluate("window.callbot.pc") is None
        assert await hangup_count(server) == hangups + 1, "the hang-up was not counted as one"
        deadline = time.monotonic() + 10
        while await _calls(server):
            assert time.monotonic() < deadline, "the call outlived the hang-up"
            await asyncio.sleep(0.2)
        assert await page.locator("#error").is_hidden()


async def test_camera_video_and_server_side_hangup(server: str, question_wav: Path) -> None:
    async with chromium_page(question_wav) as page:
        await page.goto(f"{server}/")
        # The video panel (camera, screen, the bot's tile) shows only when /healthz says the
        # server uses video, and the language picker only with a "languages" list: the test
        # rewrites the real /healthz answer (the only rewritten response in these tests) to
        # see both ways on one server.
        async def health_with(extra: dict[str, Any]) -> None:
            async def rewrite(route: Any) -> None:
                response = await route.fetch()
                await route.fulfill(response=response, json=(await response.json()) | extra)
            await page.unroute("**/healthz")
            await page.route("**/healthz", rewrite)
            await page.reload()
            await page.evaluate("window.callbot.whenHealth")

        await health_with({"vision": None, "bot_video": False})
        assert await page.locator("#video-panel").is_hidden()
        assert await page.locator("#language").is_hidden()
        await health_with({"vision": "x", "languages": ["en", "de"]})
        assert await page.locator("#video-panel").is_visible()
        await page.click("#settings summary")
        assert await page.locator("#language option").all_inner_texts() == [
            "Automatic", "English (en)", "German (de)"]
        await page.select_option("#language", "en")  # this server accepts "en" only
        await page.check("#camera")
        async with page.expect_request("**/v1/calls") as offer:
            await page.click("#call")
        assert (await offer.value).post_data_json["options"] == {"language": "en"}
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        assert await page.locator("#local-video").is_visible()
        deadline = time.monotonic() + 10
        while True:
            calls = await _calls(server)
            if calls and calls[0]["video_frames_in"] > 10:
                break
            assert time.monotonic() < deadline, f"no video reached the server: {calls}"
            await asyncio.sleep(0.25)

        # The server ends the call: the page says so and is ready for a new one.
        call_id = await page.evaluate("window.callbot.callId")
        async with aiohttp.ClientSession() as http, \
                http.delete(f"{server}/v1/calls/{call_id}") as resp:
            assert resp.status == 204
        error = page.locator("#error")
        await error.wait_for(state="visible", timeout=10_000)
        assert "ended the call" in await error.inner_text()
        assert "microphone" not in await error.inner_text()
        assert await page.locator("#call").is_enabled()
        assert await page.locator("#local-video").is_hidden()
        assert await page.evaluate("window.callbot.pc") is None
        assert not await _calls(server)


async def test_refused_call_shows_the_server_message(start_server: Any, engines: Any,
                                                     question_wav: Path) -> None:
    app = create_app(TEST_CONFIG, engines=engines)
    base = await start_server(app=app)
    app[STATE].draining = True  # every new call gets 503 shutting_down
    async with chromium_page(question_wav) as page:
        await page.goto(f"{base}/")
        await page.click("#call")
        error = page.locator("#error")
        await error.wait_for(state="visible")
        assert "the server is shutting down" in (await error.inner_text())
        assert await page.locator("#call").is_enabled()
        assert await page.locator("#hangup").is_disabled()
        assert await page.evaluate("window.callbot.pc") is None


async def test_denied_microphone_gives_a_typed_call(server: str, question_wav: Path) -> None:
    async with chromium_page(question_wav) as page:
        await page.add_init_script(
            "navigator.mediaDevices.getUserMedia = () => Promise.reject("
            "new DOMException('Permission denied', 'NotAllowedError'));"
        )
        await page.goto(f"{server}/")
        await page.click("#call")
        notice = page.locator("#notice")
        await notice.wait_for(state="visible")
        text = (await notice.inner_text()).lower()
        assert "microphone access was denied" in text and "camera" not in text, text
        # The call goes on, receive-only: type, read and hear the answer.
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        assert await page.evaluate("window.callbot.textOnly")
        await page.wait_for_function("!document.querySelector('#text-input').disabled")
        assert await page.evaluate("document.activeElement.id") == "text-input"
        await page.keyboard.type("Hello, what color is the sky?")
        await page.keyboard.press("Enter")
        await _wait_event(page, "transcript.final", timeout_s=20)
        await _wait_event(page, "response.audio.started", timeout_s=120)
        await page.wait_for_function("window.callbot.state === 'speaking'", timeout=20_000)
        assert await page.locator("#log .entry-bot").count() == 1
        await page.wait_for_function("window.callbot.latencies.length === 1")
        assert "after you sent your message" in await page.locator("#latency").inner_text()
        calls = await _calls(server)
        assert len(calls) == 1 and calls[0]["audio_frames_in"] == 0, calls
        assert await page.locator("#error").is_hidden()
        await page.click("#hangup")
        await page.wait_for_function("window.callbot.connection === 'ended'")
        assert not await _calls(server)


async def hangup_count(base: str) -> float:
    """`callbot_calls_ended_total{reason="hangup"}` from the server's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith('callbot_calls_ended_total{reason="hangup"}'):
            return float(line.split()[-1])
    return 0.0
