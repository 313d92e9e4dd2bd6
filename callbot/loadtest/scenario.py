"""Load-test scenarios: steps (say / pause / barge_in), clip files, the built-in questions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TURN_TIMEOUT_S = 30.0
DEFAULT_QUESTIONS = (
    "How many legs does a spider have?",
    "What is the capital of France?",
)


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    kind: str  # "say", "pause", "barge_in", "backchannel"
    path: str = ""
    text: str | None = None
    seconds: float = 0.0

    @property
    def is_turn(self) -> bool:
        return self.kind in ("say", "barge_in", "backchannel")


@dataclass
class LoadOptions:
    url: str = "http://127.0.0.1:8080"
    calls: int = 1
    procs: int = 1
    ramp_s: float = 0.0
    turns: int | None = None  # None: the scenario once
    scenario: list[Step] = field(default_factory=list)
    max_p95_ms: float | None = None
    ice_hosts: tuple[str, ...] | None = None
    echo: bool = False  # transport-only server: it echoes, it does not answer
    # A speakerphone caller: the bot's voice back into the caller's microphone this many dB
    # down (None: no echo), this late.
    echo_db: float | None = None
    echo_delay_ms: float = 120.0
    hangup_delay_s: float = 0.3
    # HTTP headers sent with each call's offer and hang-up (e.g. Authorization): pairs, so
    # the options pickle to the load processes unchanged.
    headers: tuple[tuple[str, str], ...] = ()


# ---- scenarios ----------------------------------------------------------------------------------


def load_scenario(path: str | os.PathLike[str]) -> list[Step]:
    """A JSON or YAML list of steps (or {"steps": [...]}); clip paths relative to the file."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {file}: {exc}") from exc
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        kind = file.suffix.lstrip(".") or "JSON"
        raise ScenarioError(f"{file}: not valid {kind}: {exc}") from exc
    return parse_scenario(data, file.parent)


def parse_scenario(data: Any, base: Path = Path(".")) -> list[Step]:
    if isinstance(data, dict):
        data = data.get("steps")
    if not isinstance(data, list) or not data:
        raise ScenarioError("a scenario is a non-empty list of steps")
    steps: list[Step] = []
    for i, raw in enumerate(data):
        where = f"step {i + 1}"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: expected an object like {{\"say\": \"clip.wav\"}}")
        kinds = [k for k in ("say", "pause", "barge_in", "backchannel") if k in raw]
        if len(kinds) != 1:
            raise ScenarioError(f"{where}: needs exactly one of say, pause, barge_in, backchannel")
        kind = kinds[0]
        text = raw.get("text")
        if text is not None and not isinstance(text, str):
            raise ScenarioError(f"{where}: 'text' must be a string")
        if kind == "pause":
            seconds = raw["pause"]
            if not isinstance(seconds, int | float) or seconds < 0:
                raise ScenarioError(f"{where}: 'pause' must be seconds >= 0")
            steps.append(Step("pause", seconds=float(seconds)))
            continue
        clip = raw[kind]
        if not isinstance(clip, str):
            raise ScenarioError(f"{where}: '{kind}' must be a WAV file path")
        clip_path = Path(clip) if Path(clip).is_absolute() else base / clip
        if not clip_path.is_file():
            raise ScenarioError(f"{where}: no such file {clip_path}")
        read_wav(clip_path)  # fail now, not in the middle of the load
        steps.append(Step(kind, path=str(clip_path), text=text))
    if not any(s.is_turn for s in steps):
        raise ScenarioError("the scenario has no say or barge_in step")
    return steps


def default_scenario(cache: Path | None = None) -> list[Step]:
    """The built-in questions, synthesized once with the packaged Piper voice (cached WAVs)."""
    folder = cache or Path(tempfile.gettempdir()) / "callbot-loadtest"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    synth = None
    try:
        for text in DEFAULT_QUESTIONS:
            key = hashlib.sha1(text.encode()).hexdigest()[:12]
            path = folder / f"piper-{key}.wav"
            if not path.exists():
                if synth is None:
                    from callbot.pipeline.tts.piper import PiperSynthesizer

                    synth = PiperSynthesizer()
                audio = asyncio.run(synth.synthesize(text))
                lead = np.zeros(int(0.3 * audio.sample_rate), dtype=np.int16)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                write_wav(tmp, np.concatenate([lead, audio.pcm]), audio.sample_rate)
                tmp.rename(path)
            paths.append(str(path))
    finally:
        if synth is not None:
            synth.close()
    first, second = zip(paths, DEFAULT_QUESTIONS, strict=True)
    return [
        Step("say", path=first[0], text=first[1]),
        Step("pause", seconds=0.5),
        Step("say", path=second[0], text=second[1]),
        Step("barge_in", path=first[0], text=first[1]),
    ]


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path)) as w:
            if w.getsampwidth() != 2:
                raise ScenarioError(f"{path}: expected 16-bit PCM WAV")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
            channels = w.getnchannels()
            rate = w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ScenarioError(f"{path}: not a WAV file: {exc}") from exc
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm, rate


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype(np.int16).tobytes())


def plan_steps(scenario: Sequence[Step], turns: int | None) -> list[Step]:
    """The scenario, repeated until `turns` turns are planned (None: once)."""
    if turns is None:
        return list(scenario)
    plan: list[Step] = []
    count = 0
    while count < turns:
        for step in scenario:
            if count >= turns:
                break
            plan.append(step)
            count += step.is_turn
    return plan


# ---- one call -----------------------------------------------------------------------------------

