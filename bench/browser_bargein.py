"""Barge-in as a browser caller hears it: headless Chromium on the demo page, its microphone a
WebAudio source the bench plays a sentence into while the bot is talking.

The page measures it itself (`window.callbot.bargeIns`): from the start of the caller's speech
(its own voice-activity edge on the microphone) to the start of 200 ms of silence in the bot's
audio as played. Unlike the aiortc caller's fixed 80 ms playout buffer, Chromium's is adaptive
(short on loopback), so this is the figure a caller of the demo gets.

    python3 -m bench.browser_bargein [--rounds 2] [--barges 4] [--baseline]

`--baseline` interleaves a server with `pause_on_onset = false` (the bot stops only once the
segment opens) with the default one. Needs Debian's chromium and playwright (the test extra).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
from pathlib import Path
from typing import Any

from support import speech
from support.browser import FAKE_MIC, chromium_page

from .common import ServerProcess, save, table

LONG_ASK = "Please tell me a long story about a dragon."
BASELINE = "[turn.interruption]\npause_on_onset = false\n"


async def measure(url: str, barges: int, clip_b64: str, wav: Path) -> list[float]:
    """Barge in on `barges` replies; the page's heard-stop figures (ms)."""
    heard: list[float] = []
    async with chromium_page(wav) as page:
        await page.add_init_script(FAKE_MIC)
        await page.goto(f"{url}/")
        await page.click("#call")
        await page.wait_for_function("!document.querySelector('#text-input').disabled")
        for _ in range(barges * 3):  # a short reply may end before the caller speaks
            if len(heard) >= barges:
                break
            await page.wait_for_function("window.callbot.serverState === 'listening'",
                                         timeout=60_000)
            before = await page.evaluate("window.callbot.bargeIns.length")
            await page.fill("#text-input", LONG_ASK)
            await page.press("#text-input", "Enter")
            await page.wait_for_function("window.callbot.state === 'speaking'", timeout=60_000)
            await asyncio.sleep(0.6)  # well into the reply
            await page.evaluate("(b64) => window.__fakeMic.say(b64)", clip_b64)
            try:
                await page.wait_for_function(
                    f"window.callbot.bargeIns.length > {before}", timeout=8_000)
            except Exception:
                continue  # the reply ended by itself: nothing to measure
            heard.append(float(await page.evaluate(
                "window.callbot.bargeIns[window.callbot.bargeIns.length - 1].heardStopMs")))
            await asyncio.sleep(4.0)  # the bot answers the interruption
        await page.click("#hangup")
    return heard


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="callbot-barge-"))
    clip = speech.espeak("Wait, stop, I have another question.", 48_000).padded(0, 1.0)
    clip_b64 = base64.b64encode(clip.write_wav(folder / "barge.wav").read_bytes()).decode()
    variants = {"pause at the onset (default)": ""}
    if args.baseline:
        variants["pause_on_onset = false"] = BASELINE
    results: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, toml in variants.items():
            with ServerProcess(toml=toml) as server:
                got = await measure(server.url, args.barges, clip_b64, folder / "barge.wav")
            results[name].extend(got)
            print(f"round {r + 1} {name}: {got}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--barges", type=int, default=4, help="barge-ins per call")
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    rows = []
    for name, values in results.items():
        ordered = sorted(values)
        rows.append([name, len(ordered),
                     round(statistics.median(ordered), 1) if ordered else None,
                     ordered[-1] if ordered else None])
    print(table(["variant", "barge-ins", "heard stop p50 ms", "max ms"], rows))
    save("browser-bargein", {"results": results})


if __name__ == "__main__":
    main()
