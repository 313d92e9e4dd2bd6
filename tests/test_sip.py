"""The phone line: a real SIP softphone (Debian's baresip) calls callbot on loopback.

baresip plays a WAV question as its microphone (`aufile`, padded with silence so the call
does not end with the file) and records what it hears (`sndfile`); it is driven over its
`ctrl_tcp` socket (dial, DTMF, hang up). The SIP floods and refusals use raw UDP INVITEs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from callbot.pipeline import events as ev
from callbot.pipeline.audio import PIPELINE_RATE
from callbot.pipeline.engines import Engines
from callbot.signalling.app import SIP_LINE, create_app
from callbot.signalling.calls.handle import CallHandle
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.config import CallbotConfig, Limits, SipSettings
from callbot.signalling.protocols.sip.line import SipLine
from callbot.signalling.server.state import STATE
from tests import speech
from tests.conftest import LOOPBACK, TEST_CONFIG

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def sip_config(**sip: Any) -> CallbotConfig:
    settings = SipSettings(enabled=True, host=LOOPBACK, port=free_udp_port(),
                           rtp_port_min=31000, rtp_port_max=31400, **sip)
    return replace(TEST_CONFIG, sip=settings)


class Recorder:
    """The hooks' view of the calls: every call started, its events, how it ended."""

    def __init__(self) -> None:
        self.handles: list[CallHandle] = []
        self.events: list[ev.Event] = []
        self.ended: list[str] = []
        self.started = asyncio.Event()
        self.ended_event = asyncio.Event()

    def hooks(self) -> CallHooks:
        def started(call: CallHandle) -> None:
            self.handles.append(call)
            call.subscribe(self.events.append)
            self.started.set()

        def ended(call: CallHandle, reason: str) -> None:
            self.ended.append(reason)
            self.ended_event.set()

        return CallHooks(on_call_started=started, on_call_ended=ended)


class App:
    def __init__(self, app: web.Application, runner: web.AppRunner) -> None:
        self.app = app
        self.runner = runner

    @property
    def line(self) -> SipLine:
        return self.app[SIP_LINE]

    @property
    def calls(self) -> int:
        return len(self.app[STATE].registry.all())


@contextlib.asynccontextmanager
async def sip_app(engines: Engines, config: CallbotConfig,
                  hooks: CallHooks | None = None) -> AsyncIterator[App]:
    app = create_app(config, engines=engines, hooks=hooks)
    runner = web.AppRunner(app)
    await runner.setup()  # on_startup: the SIP line listens
    try:
        yield App(app, runner)
    finally:
        await runner.cleanup()


class Softphone:
    """baresip in a folder of its own, answering nothing, calling when told."""

    def __init__(self, folder: Path, microphone: Path, *, user: str = "alice",
                 password: str | None = None) -> None:
        self.folder = folder
        self.ctrl_port = free_udp_port()
        self.sip_port = free_udp_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config").write_text("\n".join([
            f"module_path {MODULES}",
            f"sip_listen {LOOPBACK}:{self.sip_port}",
            "net_interface 127.0.0.1",  # a loopback-only namespace: no other interface
            "net_af ipv4",
            f"audio_source aufile,{microphone}",
            "audio_player aubridge,nowhere",
            "audio_alert aubridge,nowhere",
            "ausrc_srate 8000",
            "auplay_srate 8000",
            f"snd_path {folder}",
            "rtp_timeout 0",
            f"ctrl_tcp_listen {LOOPBACK}:{self.ctrl_port}",
            "module_tmp uuid.so",
            "module_tmp account.so",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            "module sndfile.so",
            "module menu.so",
            "module_app ctrl_tcp.so",
            "",
        ]))
        auth = f";auth_pass={password}" if password else ""
        (folder / "accounts").write_text(
            f"<sip:{user}@{LOOPBACK}>{auth};regint=0;audio_codecs=PCMU,PCMA\n")
        self.process: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BARESIP), "-f", str(self.folder)], stdin=subprocess.DEVNULL,
            stdout=(self.folder / "baresip.log").open("wb"), stderr=subprocess.STDOUT)
        for _ in range(100):
            with contextlib.suppress(OSError):
                self._reader, self._writer = await asyncio.open_connection(
                    LOOPBACK, self.ctrl_port)
                return
            await asyncio.sleep(0.1)
        raise AssertionError("baresip did not start: " + self.log())

    async def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        data = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        self._writer.write(b"%d:%s," % (len(data), data))
        await self._writer.drain()

    def log(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def heard(self) -> np.ndarray:
        """What the phone played (sndfile's decode-side dump), 8 kHz int16."""
        dumps = sorted(self.folder.glob("dump-*-dec.wav"))
        assert dumps, "sndfile recorded nothing: " + self.log()
        with wave.open(str(dumps[-1])) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def microphone(folder: Path, clip: speech.Clip, seconds: float) -> Path:
    """The question at 8 kHz, padded with silence to `seconds` (aufile ends the call at EOF)."""
    phone = clip.at_rate(8000)
    tail = max(0.0, seconds - phone.seconds)
    folder.mkdir(parents=True, exist_ok=True)
    return phone.padded(0.5, tail).write_wav(folder / "question.wav")


async def until(predicate: Any, timeout: float, what: str) -> None:
    for _ in range(int(timeout * 10)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(BARESIP is None, reason="baresip-core is not installed (.ci/debian-packages)")
async def test_a_softphone_asks_presses_a_digit_and_hangs_up(engines: Engines, question,
                                                            tmp_path: Path) -> None:
    recorder = Recorder()
    config = sip_config()
    async with sip_app(engines, config, recorder.hooks()) as served:
        line = served.line
        phone = Softphone(tmp_path / "phone", microphone(tmp_path, question, 40.0))
        await phone.start()
        try:
            host, port = line.address
            await phone.command("dial", f"sip:bot@{host}:{port}")
            await asyncio.wait_for(recorder.started.wait(), 20)
            handle = recorder.handles[0]
            call = served.app[STATE].registry.get(handle.call_id)
            assert call is not None and call.transport.kind == "sip"
            # the bot answers the spoken question
            await until(lambda: any(isinstance(e, ev.ResponseAudioDone) for e in recorder.events),
                        60, "the bot's spoken answer")
            await phone.command("sndcode", "2")
            await until(lambda: any(isinstance(e, ev.Dtmf) for e in recorder.events), 10,
                        "the dtmf event")
            digits = [e.digit for e in recorder.events if isinstance(e, ev.Dtmf)]
            assert digits[0] == "2", digits
            # the keypad entry becomes a turn the bot answers too
            answers = sum(isinstance(e, ev.ResponseAudioDone) for e in recorder.events)
            await until(lambda: sum(isinstance(e, ev.ResponseAudioDone)
                                    for e in recorder.events) > answers, 60,
                        "the bot's reaction to the digit")
            await asyncio.sleep(1.0)  # hear a little of the reaction
            await phone.command("hangup")
            await asyncio.wait_for(recorder.ended_event.wait(), 15)
            assert recorder.ended == ["caller_hangup"]
            await until(lambda: served.calls == 0 and line.ports_in_use == 0, 10,
                        "the call and its RTP port released")
            assert not line.uas.active_calls, "the dialog was not forgotten"
        finally:
            await phone.stop()  # the recording is complete once baresip is gone
        heard = phone.heard()
    # the phone heard the bot: speech energy, and Whisper hears words in it
    assert heard.size > 8000 * 5, "the recording is too short"
    frames = heard[: heard.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    voiced_s = float((rms > 300).sum()) * 0.02
    assert voiced_s > 1.0, f"only {voiced_s:.2f} s of the bot's voice reached the phone"
    from callbot.rtc.resample import resample_pcm

    text = (await engines.asr.transcribe(resample_pcm(heard, 8000, PIPELINE_RATE))).text
    assert len(text.split()) >= 3, f"the phone heard no reply: {text!r}"
