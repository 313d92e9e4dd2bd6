"""The one place tests (and benchmarks) get speech clips from.

Real speech: Debian's pocketsphinx-testdata (LibriVox and 'cards' clips with reference text).
Synthetic speech: espeak-ng + sox, rendered once per text into a cache folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
CACHE = Path(os.environ.get("CALLBOT_TEST_CLIPS", Path(tempfile.gettempdir()) / "callbot-clips"))


@dataclass(frozen=True)
class Clip:
    pcm: np.ndarray  # int16 mono
    rate: int
    text: str
    name: str = ""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate

    def at_rate(self, rate: int) -> Clip:
        from callbot.rtc.resample import resample_pcm

        return Clip(resample_pcm(self.pcm, self.rate, rate), rate, self.text, self.name)

    def padded(self, lead_s: float = 0.0, tail_s: float = 0.0) -> Clip:
        lead = np.zeros(int(lead_s * self.rate), dtype=np.int16)
        tail = np.zeros(int(tail_s * self.rate), dtype=np.int16)
        return Clip(np.concatenate([lead, self.pcm, tail]), self.rate, self.text, self.name)

    def write_wav(self, path: Path) -> Path:
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.rate)
            out.writeframes(self.pcm.astype(np.int16).tobytes())
        return path


def read_wav(path: Path, text: str = "") -> Clip:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return Clip(pcm, w.getframerate(), text, path.stem)


def espeak(text: str, rate: int = 16_000, *, words_per_minute: int = 160,
           voice: str = "en-us") -> Clip:
    """Synthetic speech of `text` (cached); espeak-ng and sox must be installed."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install espeak-ng sox)")
    key = hashlib.sha1(f"{text}|{rate}|{words_per_minute}|{voice}".encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"espeak-{key}.wav"
    if not path.exists():
        raw = CACHE / f"espeak-{key}.raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw),
                        text], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)],
                       check=True, capture_output=True)
        raw.unlink()
    return read_wav(path, text)


def _transcriptions(path: Path) -> dict[str, str]:
    refs = {}
    for line in path.read_text().splitlines():
        match = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.*)\)", line.strip())
        if match:
            refs[match.group(2)] = match.group(1)
    return refs


def librivox_clips() -> list[Clip]:
    """5 real read-speech clips (24.7 s in all), 16 kHz, with reference text."""
    folder = POCKETSPHINX_DATA / "librivox"
    refs = _transcriptions(folder / "transcription")
    return [read_wav(folder / f"{name}.wav", text) for name, text in sorted(refs.items())]


def cards_clips() -> list[Clip]:
    """5 real short command clips ('ten of clubs'), 16 kHz, with reference text."""
    folder = POCKETSPHINX_DATA / "cards"
    refs = _transcriptions(folder / "cards.transcription")
    return [read_wav(folder / f"{name}.wav", text) for name, text in sorted(refs.items())]


def real_speech_available() -> bool:
    return (POCKETSPHINX_DATA / "librivox" / "transcription").exists()


# --- Checking what a recogniser heard -------------------------------------------------------
# Synthetic speech over Opus on a busy machine is not heard the same way twice: on a loaded
# CI box Whisper turned "How many legs does a spider have?" into "How many lenses does a
# spider hand?" (two of seven words wrong). A test checks that the question came through,
# not which exact word survived, so it compares letters and words with a margin.

def heard_words(text: str) -> list[str]:
    """Lower-case words without punctuation (any script), small numbers spelled out."""
    words = re.findall(r"\w+(?:'\w+)?", text.lower())
    return [_NUMBER_WORDS.get(w, w) for w in words]


_NUMBER_WORDS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
                 "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


def heard_similarity(transcript: str, expected: str) -> tuple[float, float]:
    """(letter similarity of the word sequences, share of expected words heard roughly).

    A word counts as heard when some transcript word is at least 60 % the same letters
    ("legs"/"lenses" counts, "spider"/"water" does not)."""
    from difflib import SequenceMatcher
    said, want = heard_words(transcript), heard_words(expected)
    letters = SequenceMatcher(None, " ".join(want), " ".join(said)).ratio()
    if not want:
        return letters, 1.0
    found = sum(any(SequenceMatcher(None, w, s).ratio() >= 0.6 for s in said) for w in want)
    return letters, found / len(want)


def assert_heard(transcript: str, expected: str, *, min_ratio: float = 0.7,
                 min_words: float = 0.6) -> None:
    """The recogniser heard roughly `expected`: most letters and most words came through.

    Never one exact word: any single word may be misheard from synthetic speech over Opus."""
    assert transcript.strip(), f"nothing was heard (expected {expected!r})"
    letters, words = heard_similarity(transcript, expected)
    assert letters >= min_ratio and words >= min_words, (
        f"heard {transcript!r} for {expected!r}: letters {letters:.2f} (need {min_ratio}), "
        f"words {words:.2f} (need {min_words})")
