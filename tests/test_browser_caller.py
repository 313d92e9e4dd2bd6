"""The demo page as a caller experiences it, in real headless Chromium against real servers:
what it shows must match what is heard, hang-ups count as hang-ups, mute mutes, a vanished
server is noticed, and the page works by keyboard and passes axe-core.

Run inside a loopback-only network namespace (see tests/test_browser.py). axe-core comes from
npm into .ci/npm (`.ci/run` installs it; pinned there).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from support import speech
from support.browser import FAKE_MIC, chromium_page
from tests.conftest import free_port
from tests.test_browser import ARTIFACTS, _calls, _wait_event, hangup_count

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / ".ci" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
LEAD_S = 2.5  # silence before the question: the test's own audio tap starts within it
QUESTION = "What is the capital of France?"
TAP_BLOCK = 256  # samples per level of the test's own tap


@pytest.fixture(scope="module")
def clip() -> speech.Clip:
    return speech.espeak(QUESTION, 48_000).padded(LEAD_S, 3.0)


@pytest.fixture(scope="module")
def wav(clip: speech.Clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clip.write_wav(tmp_path_factory.mktemp("caller") / "question.wav")


def _speech_span_s(clip: speech.Clip, db: float) -> float:
    """How long the WAV's speech lasts: first to last TAP_BLOCK block above `db` dBFS."""
    x = clip.pcm.astype(np.float64) / 32768.0
    n = len(x) // TAP_BLOCK
    rms = np.sqrt((x[: n * TAP_BLOCK].reshape(n, TAP_BLOCK) ** 2).mean(axis=1))
    loud = np.nonzero(20 * np.log10(np.maximum(rms, 1e-9)) > db)[0]
    return float((loud[-1] + 1 - loud[0]) * TAP_BLOCK / 48_000)


# The test's own caller-side truth, independent of the page's measuring code: one
# ScriptProcessor in a separate AudioContext records the level of the microphone stream and
# of the received bot stream, block by block, on one sample clock.
_START_TAP = """async (block) => {
  const ctx = new AudioContext({sampleRate: 48000});
  await ctx.resume();
  const merger = ctx.createChannelMerger(2);
  const proc = ctx.createScriptProcessor(block, 2, 1);
  const levels = [];
  window.__tap = {ctx, levels, rate: ctx.sampleRate, remoteAttached: false};
  proc.onaudioprocess = (e) => {
    const a = e.inputBuffer.getChannelData(0), b = e.inputBuffer.getChannelData(1);
    let sa = 0, sb = 0;
    for (let i = 0; i < a.length; i++) { sa += a[i] * a[i]; sb += b[i] * b[i]; }
    levels.push([Math.sqrt(sa / a.length), Math.sqrt(sb / b.length)]);
  };
  const micStream = new MediaStream(window.callbot.localStream.getAudioTracks());
  const mic = ctx.createMediaStreamSource(micStream);
  mic.connect(merger, 0, 0);
  merger.connect(proc);
  proc.connect(ctx.destination);
  const attach = () => {
    const s = document.getElementById('remote-audio').srcObject;
    if (!s) return setTimeout(attach, 20);
    ctx.createMediaStreamSource(s).connect(merger, 0, 1);
    window.__tap.remoteAttached = true;
  };
  attach();
}"""


async def test_displayed_latency_matches_what_the_caller_hears(server: str, wav: Path,
                                                               clip: speech.Clip) -> None:
    async with chromium_page(wav) as page:
        await page.goto(f"{server}/")
        await page.click("#call")
        await page.wait_for_function("window.callbot.localStream")
        await page.evaluate(_START_TAP, TAP_BLOCK)
        await page.wait_for_function("window.__tap.remoteAttached")
        await page.wait_for_function("window.callbot.latencies.length >= 1", timeout=60_000)
        await asyncio.sleep(0.3)
        levels = await page.evaluate("window.__tap.levels")
        shown = await page.evaluate("window.callbot.latencies[0]")
        text = await page.locator("#latency").inner_text()
        data_ms = int(await page.locator("#latency").get_attribute("data-ms") or -1)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "demo-desktop-latency.png"), full_page=True)
        await page.click("#hangup")

    block_s = TAP_BLOCK / 48_000
    db = np.array([[20 * math.log10(max(v, 1e-9)) for v in row] for row in levels])
    mic_on = np.nonzero(db[:, 0] > -40)[0]
    assert len(mic_on), "the test's tap never heard the microphone"
    speech_end = mic_on[0] * block_s + _speech_span_s(clip, -40)
    after = np.nonzero((db[:, 1] > -40) & (np.arange(len(db)) * block_s > speech_end))[0]
    assert len(after), "the test's tap never heard the bot"
    truth_ms = (after[0] * block_s - speech_end) * 1000
    shown_s = float(text.split("started ")[1].split(" s")[0])
    print(f"caller latency: truth {truth_ms:.0f} ms, page {data_ms} ms, shown {text!r}")
    assert shown["from"] == "speech" and "after you stopped talking" in text, (shown, text)
    assert abs(data_ms - truth_ms) <= 100, (data_ms, truth_ms)
    assert abs(shown_s * 1000 - truth_ms) <= 100, (text, truth_ms)


async def test_barge_in_silences_the_bot_in_the_page(server: str, tmp_path: Path) -> None:
    import base64

    interruption = speech.espeak("Wait, stop, I have another question.", 48_000).padded(0, 1.0)
    clip_b64 = base64.b64encode(interruption.write_wav(tmp_path / "barge.wav").read_bytes())
    async with chromium_page(tmp_path / "barge.wav") as page:
        await page.add_init_script(FAKE_MIC)
        await page.goto(f"{server}/")
        await page.click("#call")
        await page.wait_for_function("!document.querySelector('#text-input').disabled")
        # The tiny model's replies are sometimes short: if one ends before the caller's
        # words reach the server (no barge-in then), ask again.
        for attempt in range(3):
            await page.fill("#text-input", "Please tell me a long story about a dragon.")
            await page.press("#text-input", "Enter")
            await page.wait_for_function("window.callbot.state === 'speaking'", timeout=60_000)
            await page.evaluate("(b64) => window.__fakeMic.say(b64)", clip_b64.decode())
            try:
                await page.wait_for_function(
                    "window.callbot.events.some((e) => e.type === 'response.interrupted'"
                    " && e.reason === 'barge_in')",
                    timeout=8_000)
                break
            except Exception:
                assert attempt < 2, "three replies ended before the caller spoke over them"
                await page.wait_for_function("window.callbot.serverState === 'listening'",
                                             timeout=30_000)
        barge = "window.callbot.stops.find((s) => s.reason === 'barge_in')"
        await page.wait_for_function(f"{barge} && {barge}.playedSilentMs !== null")
        stop = await page.evaluate(barge)
        print(f"barge-in: {stop}")
        assert stop["playedSilentMs"] <= 30, stop
        assert stop["fromSpeechMs"] is not None and stop["fromSpeechMs"] < 3000, stop
        # The page's own figure for the caller: speech start to the bot no longer heard
        # (the server pauses its voice at the onset; bench/browser_bargein.py measures it).
        await page.wait_for_function("window.callbot.bargeIns.length > 0", timeout=5_000)
        heard = await page.evaluate("window.callbot.bargeIns[0].heardStopMs")
        print(f"barge-in heard stop: {heard} ms")
        assert 0 < heard < 3000, heard
        state = await page.evaluate("[window.callbot.state, window.callbot.audio.gateClosed, "
                                    "window.callbot.events.map(e => e.type + '@' + e.t_ms)]")
        assert state[0] != "speaking", state
        await page.click("#hangup")


async def test_muted_mic_is_not_heard(server: str, wav: Path) -> None:
    async with chromium_page(wav, loop=True) as page:  # the question, over and over
        await page.goto(f"{server}/")
        await page.click("#mute")
        assert await page.get_attribute("#mute", "aria-pressed") == "true"
        await page.click("#call")
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        await asyncio.sleep(LEAD_S + 3.5)  # the whole question plays (muted)
        calls = await _calls(server)
        assert calls and calls[0]["audio_frames_in"] > 100, calls  # audio flows, silent
        types = await page.evaluate("window.callbot.events.map((e) => e.type)")
        assert "vad.speech_started" not in types, types
        assert await page.evaluate("window.callbot.micPeak") == 0
        await page.click("#mute")
        assert await page.get_attribute("#mute", "aria-pressed") == "false"
        await _wait_event(page, "vad.speech_started", timeout_s=15)
        await page.click("#hangup")


async def test_tab_close_hangs_up(server: str, wav: Path) -> None:
    async with chromium_page(wav) as page:
        await page.goto(f"{server}/")
        await page.click("#call")
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        assert len(await _calls(server)) == 1
        before = await hangup_count(server)
        other = await page.context.new_page()  # keeps the browser open after the tab closes
        await page.close(run_before_unload=True)
        deadline = time.monotonic() + 10
        while await _calls(server):
            assert time.monotonic() < deadline, "the call outlived its tab"
            await asyncio.sleep(0.1)
        assert await hangup_count(server) == before + 1, "a closed tab did not count as hangup"
        await other.close()



@pytest.fixture(scope="module", autouse=True)
def doomed_server() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real `callbot serve` process for test_server_gone_is_noticed, started with the
    module (autouse) so that it loads its models while the other tests run."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "callbot", "serve", "--port", str(port), "--ice-host",
         "127.0.0.1"], cwd=ROOT, env=os.environ | {"HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_server_gone_is_noticed(
    wav: Path, doomed_server: tuple[subprocess.Popen[bytes], str]
) -> None:
    """That server, killed (SIGKILL) mid-call: no goodbye of any kind reaches the page."""
    proc, base = doomed_server
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "no server"
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.3)
    async with chromium_page(wav) as page:
        await page.goto(f"{base}/")
        await page.click("#call")
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        error = page.locator("#error")
        await error.wait_for(state="visible", timeout=10_000)
        noticed_s = time.monotonic() - killed
        message = await error.inner_text()
        assert "server is not responding" in message, message
        assert await page.locator("#status").inner_text() == "Disconnected"
        assert await page.locator("#call").is_enabled()
        print(f"server gone noticed after {noticed_s:.1f} s")
        assert noticed_s < 6, noticed_s


async def _axe(page: Any) -> list[dict[str, Any]]:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: npm install --prefix .ci/npm axe-core (see .ci/run)")
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


async def _focused(page: Any) -> str:
    return str(await page.evaluate("document.activeElement && document.activeElement.id"))


async def test_keyboard_walk_accessibility_and_screenshots(server: str, wav: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with chromium_page(wav) as page:
        await page.goto(f"{server}/")
        await page.evaluate("window.callbot.whenHealth")
        assert await page.locator("#model-note").is_visible()  # the tiny embedded model
        assert "--llm-base-url" in await page.locator("#model-note").inner_text()
        assert not await _axe(page), json.dumps(await _axe(page), indent=1)[:3000]
        await page.screenshot(path=str(ARTIFACTS / "demo-desktop-idle.png"), full_page=True)

        # Keyboard only: Tab to Call, Enter; focus lands on Hang up.
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await _focused(page) == "call":
                break
        assert await _focused(page) == "call"
        await page.keyboard.press("Enter")
        assert await _focused(page) == "hangup"
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        # Every control is reachable: walk the tab order once round.
        seen = set()
        for _ in range(40):
            await page.keyboard.press("Tab")
            seen.add(await _focused(page))
        assert {"hangup", "mute", "text-input"} <= seen, seen
        # Devices and volume, by keyboard: the fake microphones are listed and one can be
        # picked mid-call; the bot volume slider sets the playback gain.
        await page.focus("#settings summary")
        await page.keyboard.press("Enter")
        mics = await page.eval_on_selector_all("#mic-select option", "os => os.map(o => o.value)")
        assert len(mics) >= 2, mics
        await page.focus("#mic-select")
        await page.select_option("#mic-select", mics[-1])
        await page.wait_for_function(
            "(id) => window.callbot.localStream.getAudioTracks()[0].getSettings().deviceId === id",
            arg=mics[-1])
        await page.focus("#volume")
        await page.keyboard.press("Home")
        await page.wait_for_function("window.callbot.audio.volume.gain.value < 0.01")
        await page.keyboard.press("End")
        await page.wait_for_function("window.callbot.audio.volume.gain.value > 0.99")
        # Mute by keyboard and back.
        await page.focus("#mute")
        await page.keyboard.press("Space")
        assert await page.get_attribute("#mute", "aria-pressed") == "true"
        await page.keyboard.press("Space")
        # The live region gets final lines only: wait for the spoken question's final.
        await _wait_event(page, "transcript.final", timeout_s=30)
        await asyncio.sleep(0.3)
        lines = await page.locator("#announcer p").all_inner_texts()
        finals = await page.evaluate(
            "window.callbot.events.filter((e) => e.type === 'transcript.final').map((e) => e.text)")
        assert lines[:2] == ["Call connected.", f"You said: {finals[0]}"], lines
        assert all(line.startswith("Bot said:") for line in lines[2:]), lines
        assert not await _axe(page), json.dumps(await _axe(page), indent=1)[:3000]
        await page.screenshot(path=str(ARTIFACTS / "demo-desktop-in-call.png"), full_page=True)
        await page.focus("#hangup")
        await page.keyboard.press("Enter")
        await page.wait_for_function("window.callbot.connection === 'ended'")
        assert await _focused(page) == "call"

    # Phone size, dark theme (the system's), in a call: the conversation has most of it.
    async with chromium_page(wav, viewport=(390, 780), color_scheme="dark") as page:
        await page.goto(f"{server}/")
        await page.evaluate("window.callbot.whenHealth")
        await page.screenshot(path=str(ARTIFACTS / "demo-phone-idle-dark.png"))
        assert not await _axe(page), json.dumps(await _axe(page), indent=1)[:3000]
        await page.click("#call")
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        await _wait_event(page, "transcript.final", timeout_s=30)
        box = await page.locator(".conversation").bounding_box()
        assert box and box["height"] > 0.5 * 780, box
        assert not await _axe(page), json.dumps(await _axe(page), indent=1)[:3000]
        await page.screenshot(path=str(ARTIFACTS / "demo-phone-in-call-dark.png"))
        await page.click("#hangup")
