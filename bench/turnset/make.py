"""Build the turn-taking quality set: utterances with mid-sentence pauses, hesitations, trailing
conjunctions, lists and short complete answers, in several voices, mixed with noise.

Each utterance is spoken in parts (espeak-ng voices, the Piper voice at several speeds, or
real LibriVox / cards clips cut at a pause); the parts are joined with the pauses given in
SPEC, then noise is added at 10-20 dB SNR (speech power over the spoken parts). The manifest
says where each utterance really ends (`speech_end_s`: the end of its last spoken part), where
its pauses are, and what the noise is, so a runner can tell a premature reply (before
`speech_end_s`) from a late one.

    python3 -m bench.turnset.make          # writes bench/turnset/audio/*.flac + manifest.json

Deterministic for a given espeak-ng / Piper version: voices, pauses, SNRs and noise seeds are
fixed here. The audio files hold the utterance with LEAD_S of noise before and TAIL_S after;
the runner continues the noise (same kind, level and seed) for as long as it needs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
AUDIO = HERE / "audio"
MANIFEST = HERE / "manifest.json"
RATE = 16_000
LEAD_S = 0.4
TAIL_S = 0.3
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CARDS = Path("/usr/share/pocketsphinx/test/data/cards")

# (id, category, parts): a part is text, or an int = pause in ms before the next part.
SPEC: list[tuple[str, str, list[str | int]]] = [
    ("mid-book-table", "mid_pause", ["I'd like to book", 700, "a table for two."]),
    ("mid-store-closes", "mid_pause", ["Can you tell me", 600, "when the store closes?"]),
    ("mid-account", "mid_pause", ["My account number is", 800, "four five six seven."]),
    ("mid-flight", "mid_pause", ["I'm looking for", 650, "a flight to Boston on Friday."]),
    ("mid-internet", "mid_pause", ["The problem is that", 700, "my internet keeps dropping."]),
    ("mid-password", "mid_pause", ["I need to", 500, "reset my password."]),
    ("mid-invoice", "mid_pause", ["Could you send me", 750, "the invoice from last month?"]),
    ("mid-hello-spider", "mid_pause",
     ["Hello there.", 600, "How many legs does a spider have?"]),
    ("hes-um-open", "hesitation", ["Um,", 700, "what time do you open tomorrow?"]),
    ("hes-so-cancel", "hesitation", ["So...", 800, "I want to cancel my order."]),
    ("hes-wondering", "hesitation",
     ["I was wondering, um,", 700, "if you deliver on Sundays."]),
    ("hes-well", "hesitation", ["Well,", 600, "I think the second option is better."]),
    ("hes-let-me-think", "hesitation", ["Uh, let me think.", 900, "Make it Tuesday at noon."]),
    ("hes-blue-one", "hesitation", ["It's, uh,", 650, "it's the blue one."]),
    ("hes-hmm-card", "hesitation", ["Hmm,", 700, "can I pay by card?"]),
    ("conj-pasta", "trailing_conjunction", ["I want the pasta and", 700, "a glass of water."]),
    ("conj-called", "trailing_conjunction", ["I called yesterday but", 800, "nobody answered."]),
    ("conj-monday", "trailing_conjunction",
     ["We could meet on Monday or", 600, "maybe Tuesday."]),
    ("conj-because", "trailing_conjunction",
     ["I'm calling because", 700, "my package never arrived."]),
    ("conj-office", "trailing_conjunction",
     ["Send it to my office so", 600, "I can sign for it."]),
    ("conj-room", "trailing_conjunction", ["I'd like a room with", 700, "a view of the sea."]),
    ("list-groceries", "list", ["I need eggs,", 500, "milk,", 500, "and bread."]),
    ("list-colours", "list", ["The options are red,", 600, "green,", 500, "or blue."]),
    ("list-steps", "list", ["First, check the cable,", 700, "then restart the router."]),
    ("list-days", "list", ["Monday,", 500, "Wednesday,", 500, "and Friday work for me."]),
    ("list-order", "list", ["One large pizza,", 600, "two salads,", 500, "and a lemonade."]),
    ("short-yes", "short_complete", ["Yes."]),
    ("short-no-thanks", "short_complete", ["No thanks."]),
    ("short-sure", "short_complete", ["Sure."]),
    ("short-thats-right", "short_complete", ["That's right."]),
    ("short-nope", "short_complete", ["Nope."]),
    ("short-yes-please", "short_complete", ["Yes, please."]),
    ("short-okay", "short_complete", ["Okay."]),
    ("short-no", "short_complete", ["No."]),
    ("full-capital", "complete", ["What is the capital of France?"]),
    ("full-spider", "complete", ["How many legs does a spider have?"]),
    ("full-cancel", "complete", ["Please cancel my appointment."]),
    ("full-pharmacy", "complete", ["Where is the nearest pharmacy?"]),
]
# Real speech: LibriVox sentences cut at their longest inner pause, the pause stretched to
# the given length (a reader stopping mid-sentence); cards clips as they are.
REAL: list[tuple[str, str, str, int]] = [
    ("real-libri-0870", "real_mid_pause", "librivox/sense_and_sensibility_01_austen_64kb-0870",
     650),
    ("real-libri-0890", "real_mid_pause", "librivox/sense_and_sensibility_01_austen_64kb-0890",
     600),
    ("real-libri-0920", "real_mid_pause", "librivox/sense_and_sensibility_01_austen_64kb-0920",
     700),
    ("real-libri-0930", "real_mid_pause", "librivox/sense_and_sensibility_01_austen_64kb-0930",
     550),
    ("real-cards-005", "real_list", "cards/005", 0),
    ("real-cards-001", "real_short", "cards/001", 0),
]
# espeak-ng voices (with variants) and the Piper voice at several speeds, used in turn.
VOICES: list[tuple[str, str, float]] = [  # (engine, voice, speed: wpm or length_scale)
    ("espeak", "en-us", 165), ("piper", "en_US-joe-medium", 1.0),
    ("espeak", "en-gb+f3", 150), ("espeak", "en-gb-scotland", 175),
    ("piper", "en_US-joe-medium", 1.2), ("espeak", "en-029+m3", 160),
    ("espeak", "en-us-nyc+f4", 185), ("piper", "en_US-joe-medium", 0.85),
    ("espeak", "en-gb-x-rp", 140), ("espeak", "en-us+m7", 170),
]
NOISES = ("pink", "white", "hum", "brown")
SNRS_DB = (10, 12, 14, 16, 18, 20)


def _seed(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)


def noise(kind: str, n: int, seed: int) -> np.ndarray:
    """Unit-RMS noise of `kind` (float64): pink / brown (1/f, 1/f^2), white, or mains hum
    (50 Hz + harmonics) over pink."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n + 1)
    if kind == "white":
        out = white[:n]
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(len(white), 1 / RATE)
        freqs[0] = freqs[1]
        power = 1.0 if kind in ("pink", "hum") else 2.0
        out = np.fft.irfft(spectrum / freqs ** (power / 2), len(white))[:n]
        if kind == "brown":  # keep the rumble out of the speech band's bottom
            out = out - np.convolve(out, np.ones(32) / 32, mode="same")
        out = out / (np.std(out) + 1e-12)
        if kind == "hum":
            t = np.arange(n) / RATE
            hum = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3, 5))
            out = 0.5 * out + hum / np.std(hum)
    return out / (np.std(out) + 1e-12)


def trim(pcm: np.ndarray, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing silence (below -40 dB of the clip's peak, in 10 ms frames)."""
    hop = RATE // 100
    n = len(pcm) // hop
    if n == 0:
        return pcm
    rms = np.sqrt(np.mean(pcm[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 0.01)
    margin = int(margin_s * RATE)
    start = max(0, int(loud[0]) * hop - margin)
    end = min(len(pcm), (int(loud[-1]) + 1) * hop + margin)
    return pcm[start:end]


def espeak(text: str, voice: str, wpm: float) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.raw"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(wpm)), "-w", str(raw), text],
                       check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed",
                        "-t", "raw", str(out)], check=True, capture_output=True)
        return np.frombuffer(out.read_bytes(), dtype=np.int16).copy()


class Piper:
    def __init__(self) -> None:
        from piper import PiperVoice, SynthesisConfig

        from callbot.pipeline.tts.piper import packaged_voices

        files = packaged_voices()["en_US-joe-medium"]
        self.voice = PiperVoice.load(files.model, config_path=files.config)
        self.config_cls = SynthesisConfig

    def __call__(self, text: str, length_scale: float) -> np.ndarray:
        from callbot.rtc.resample import resample_pcm

        chunks = [c.audio_int16_array for c in
                  self.voice.synthesize(text, self.config_cls(length_scale=length_scale))]
        pcm = np.concatenate(chunks)
        return resample_pcm(pcm, self.voice.config.sample_rate, RATE)


def read_clip(name: str) -> tuple[np.ndarray, str]:
    import wave

    folder, stem = name.split("/")
    base = LIBRIVOX if folder == "librivox" else CARDS
    with wave.open(str(base / f"{stem}.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()
        assert w.getframerate() == RATE
    ref_file = base / ("transcription" if folder == "librivox" else "cards.transcription")
    for line in ref_file.read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.*)\)", line.strip())
        if m and m.group(2) == stem:
            return pcm, m.group(1)
    raise KeyError(name)


def longest_inner_pause(pcm: np.ndarray) -> tuple[int, int]:
    """(start, end) samples of the longest quiet stretch inside the speech (10 ms frames,
    below -35 dB of the peak frame), ignoring the first and last 20 %."""
    hop = RATE // 100
    n = len(pcm) // hop
    rms = np.sqrt(np.mean(pcm[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    quiet = rms < rms.max() * 0.018
    best, run_start = (0, 0), None
    lo, hi = int(n * 0.2), int(n * 0.8)
    for i in range(lo, hi + 1):
        if i < hi and quiet[i]:
            run_start = i if run_start is None else run_start
        elif run_start is not None:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    return best[0] * hop, best[1] * hop


def build_parts(uid: str, parts: list[str | int], voice: tuple[str, str, float],
                piper: Piper | None) -> list[tuple[str, np.ndarray] | int]:
    engine, name, speed = voice
    out: list[tuple[str, np.ndarray] | int] = []
    for part in parts:
        if isinstance(part, int):
            out.append(part)
        elif engine == "espeak":
            out.append((part, trim(espeak(part, name, speed))))
        else:
            assert piper is not None
            out.append((part, trim(piper(part, speed))))
    return out


def assemble(uid: str, category: str, pieces: list[tuple[str, np.ndarray] | int],
             voice: str, snr_db: float, noise_kind: str) -> dict[str, Any]:
    lead = int(LEAD_S * RATE)
    chunks: list[np.ndarray] = [np.zeros(lead)]
    spoken: list[dict[str, Any]] = []
    pauses: list[list[float]] = []
    pos = lead
    for piece in pieces:
        if isinstance(piece, int):
            n = int(piece * RATE / 1000)
            pauses.append([round(pos / RATE, 3), round((pos + n) / RATE, 3)])
            chunks.append(np.zeros(n))
            pos += n
        else:
            text, pcm = piece
            spoken.append({"text": text, "start_s": round(pos / RATE, 3),
                           "end_s": round((pos + len(pcm)) / RATE, 3)})
            chunks.append(pcm.astype(np.float64))
            pos += len(pcm)
    speech_end = pos
    chunks.append(np.zeros(int(TAIL_S * RATE)))
    clean = np.concatenate(chunks)
    voiced = np.concatenate([c for c in chunks if np.any(c)])
    speech_rms = float(np.sqrt(np.mean(voiced**2)))
    noise_rms = speech_rms / 10 ** (snr_db / 20)
    seed = _seed(uid)
    mixed = clean + noise_rms * noise(noise_kind, len(clean), seed)
    peak = np.max(np.abs(mixed))
    gain = min(1.0, 30000 / peak)  # no clipping
    mixed = np.round(mixed * gain).astype(np.int16)
    AUDIO.mkdir(parents=True, exist_ok=True)
    path = AUDIO / f"{uid}.flac"
    with tempfile.NamedTemporaryFile(suffix=".raw") as raw:
        raw.write(mixed.tobytes())
        raw.flush()
        subprocess.run(["sox", "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c",
                        "1", raw.name, str(path)], check=True, capture_output=True)
    return {
        "id": uid, "category": category, "file": f"audio/{uid}.flac", "voice": voice,
        "text": " ".join(p["text"] for p in spoken), "parts": spoken, "pauses": pauses,
        "speech_end_s": round(speech_end / RATE, 3), "duration_s": round(len(mixed) / RATE, 3),
        "snr_db": snr_db, "noise": noise_kind, "noise_rms": round(noise_rms * gain, 2),
        "noise_seed": seed,
    }


def main() -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install espeak-ng sox)")
    piper = Piper()
    items = []
    for i, (uid, category, parts) in enumerate(SPEC):
        voice = VOICES[i % len(VOICES)]
        items.append(assemble(uid, category, build_parts(uid, parts, voice, piper),
                              f"{voice[0]}:{voice[1]}@{voice[2]:g}",
                              SNRS_DB[i % len(SNRS_DB)], NOISES[i % len(NOISES)]))
    for j, (uid, category, clip, stretch_ms) in enumerate(REAL, len(SPEC)):
        pieces: list[tuple[str, np.ndarray] | int]
        pcm, text = read_clip(clip)
        pcm = trim(pcm)
        if stretch_ms:
            start, end = longest_inner_pause(pcm)
            words = text.split()
            cut = _words_before(pcm, start, words)
            # the natural pause is cut out and replaced by one of `stretch_ms`; the words'
            # split is approximate (by share of time), the whole text is exact
            pieces = [
                (" ".join(words[:cut]), pcm[:start]), stretch_ms,
                (" ".join(words[cut:]), pcm[end:]),
            ]
        else:
            pieces = [(text, pcm)]
        items.append(assemble(uid, category, pieces, f"librivox:{clip}",
                              SNRS_DB[j % len(SNRS_DB)], NOISES[j % len(NOISES)]))
    MANIFEST.write_text(json.dumps({
        "rate": RATE, "lead_s": LEAD_S, "tail_s": TAIL_S,
        "note": "speech_end_s: where the utterance really ends (end of its last spoken part); "
                "a reply committed before it is premature. Times are from the file's start.",
        "utterances": items,
    }, indent=1) + "\n")
    print(f"{len(items)} utterances -> {MANIFEST.relative_to(HERE.parent.parent)}")


def _words_before(pcm: np.ndarray, cut: int, words: list[str]) -> int:
    """How many reference words fall before sample `cut` (by share of the speech time)."""
    return max(1, min(len(words) - 1, round(len(words) * cut / len(pcm))))


if __name__ == "__main__":
    main()
