"""Kokoro-82M natural voices (pipeline/tts/kokoro.py): real synthesis of Chinese, Spanish and
French sentences, heard back by the real multilingual Whisper base (language detected, most
characters/words right), levels and lengths, the event loop kept free, the voices' install
from the npm tarball, and the per-language voice choice (German stays on espeak-ng).

The synthesis tests need the extra 'voices' and the kokoro-js voices (`.ci/run` installs both;
see docs/languages-safety.md); without them they skip and say what is missing."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
from callbot.pipeline.lang import VoiceSettings, voices_by_language
from callbot.pipeline.text import character_errors
from callbot.pipeline.tts import kokoro
from callbot.pipeline.tts.kokoro import KokoroMissing, KokoroSynthesizer
from callbot.rtc.resample import resample_pcm
from support import speech

MISSING = kokoro.kokoro_available()
needs_kokoro = pytest.mark.skipif(MISSING is not None,
                                  reason=f"Kokoro voices not installed: {MISSING}")

# Not Whisper's favourite test sentences: what a business assistant says.
SENTENCES = {
    "zh": ("kokoro-zf_xiaoxiao", "您好，我们的营业时间是每天早上九点到晚上六点。"),
    "es": ("kokoro-ef_dora", "Buenos días, nuestra oficina abre de lunes a viernes."),
    "fr": ("kokoro-ff_siwis", "Bonjour, notre magasin est ouvert tous les jours sauf dimanche."),
}


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0


@pytest.fixture(scope="module")
def voices() -> Iterator[KokoroSynthesizer]:
    if MISSING is not None:
        pytest.skip(f"Kokoro voices not installed: {MISSING}")
    engine = KokoroSynthesizer(voices=[voice for voice, _ in SENTENCES.values()])
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def whisper_base() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer("base")


@needs_kokoro
@pytest.mark.parametrize("language", ["zh", "es", "fr"])
async def test_heard_back_in_its_language(voices: KokoroSynthesizer,
                                          whisper_base: FasterWhisperRecognizer,
                                          language: str) -> None:
    voice, text = SENTENCES[language]
    audio = await voices.synthesize(text, voice=voice)
    assert audio.sample_rate == 24_000 and audio.pcm.dtype == np.int16
    # A 15-25 syllable sentence: 1.5-8 s at any speaking rate, and loud enough; never
    # clipped (overshooting sentences are scaled down).
    assert 1.5 <= audio.seconds <= 8.0, audio.seconds
    assert rms(audio.pcm) > 1000, rms(audio.pcm)
    assert np.abs(audio.pcm.astype(np.int32)).max() < 32767
    first_loud = np.flatnonzero(np.abs(audio.pcm.astype(np.int32)) > 300)[0]
    assert first_loud / audio.sample_rate < 0.02  # no lead-in silence to wait through
    pcm16 = resample_pcm(audio.pcm, audio.sample_rate, 16_000)
    padded = np.concatenate([np.zeros(4800, np.int16), pcm16, np.zeros(4800, np.int16)])
    heard = await whisper_base.transcribe(padded)  # no language given: detected
    print(f"\n{voice}: {text!r} -> {heard.language} {heard.text!r} "
          f"({audio.seconds:.2f} s in {audio.compute_ms:.0f} ms)")
    assert heard.language == language, heard
    if language == "zh":
        errors, length = character_errors(text, heard.text)
        assert errors / length <= 0.3, heard.text  # homophones happen; most characters right
    else:
        speech.assert_heard(heard.text, text, min_ratio=0.7, min_words=0.6)


@needs_kokoro
async def test_synthesis_leaves_the_event_loop_free(voices: KokoroSynthesizer) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    voice, text = SENTENCES["es"]
    audio = await voices.synthesize(text, voice=voice)
    stop.set()
    await ticker
    assert audio.compute_ms > 100  # real work happened meanwhile...
    assert max(gaps) < 0.25, max(gaps)  # ...on the worker thread, not the loop


@needs_kokoro
async def test_nothing_to_say_and_unknown_voice(voices: KokoroSynthesizer) -> None:
    assert (await voices.synthesize(" … ", voice="kokoro-ef_dora")).pcm.size == 0
    with pytest.raises(ValueError, match="unknown voice"):
        await voices.synthesize("Hola.", voice="kokoro-xx_nobody")
    assert voices.voice_languages["kokoro-zf_xiaoxiao"] == "zh"
    assert {"zh", "es", "fr"} <= set(voices.languages)


@needs_kokoro
def test_model_is_reassembled_when_the_cached_file_is_wrong(tmp_path: Path) -> None:
    (tmp_path / kokoro.KOKORO_FILE).write_bytes(b"truncated")
    path = kokoro.kokoro_model_path(tmp_path)
    assert path.stat().st_size == kokoro.KOKORO_SIZE
    assert not list(tmp_path.glob(".kokoro-*"))  # no temporary file left behind


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_voices_install_from_the_npm_tarball(tmp_path: Path) -> None:
    voice = np.arange(510 * 256, dtype="<f4").tobytes()
    source = _tarball(tmp_path / "kokoro-js.tgz", {
        "package/voices/zf_test.bin": voice, "package/voices/ef_test.bin": voice,
        "package/voices/voices.d.ts": b"types", "package/../../escape.bin": voice,
        "package/dist/kokoro.js": b"js"})
    folder = tmp_path / "voices"
    assert sorted(kokoro.install_voices(source, folder)) == ["ef_test", "zf_test"]
    assert not (tmp_path / "escape.bin").exists()
    installed = kokoro.installed_voices(folder)
    assert set(installed) == {"kokoro-ef_test", "kokoro-zf_test"}
    assert kokoro.voice_language("kokoro-zf_test") == "zh"
    bad = _tarball(tmp_path / "bad.tgz", {"package/voices/zf_short.bin": b"\0" * 100})
    with pytest.raises(KokoroMissing, match="not a Kokoro voice"):
        kokoro.install_voices(bad, tmp_path / "other")
    fake = _tarball(tmp_path / kokoro.KOKORO_JS_TARBALL, {"package/voices/zf_a.bin": voice})
    with pytest.raises(KokoroMissing, match="sha256"):  # named as the checked release, is not
        kokoro.install_voices(fake, tmp_path / "fake")
    with pytest.raises(KokoroMissing, match="no Kokoro voices"):
        kokoro.install_voices(_tarball(tmp_path / "empty.tgz", {"package/a.js": b""}),
                              tmp_path / "none")


def test_kokoro_speaks_zh_fr_es_and_german_stays_on_espeak() -> None:
    voices = ("en_US-joe-medium", "espeak-cmn", "espeak-de", "espeak-fr", "espeak-es",
              "kokoro-zf_xiaoxiao", "kokoro-ff_siwis", "kokoro-ef_dora", "kokoro-af_heart")
    chosen = voices_by_language(("en", "zh", "de", "fr", "es"), voices, VoiceSettings())
    assert chosen == {"en": "en_US-joe-medium", "zh": "kokoro-zf_xiaoxiao", "de": "espeak-de",
                      "fr": "kokoro-ff_siwis", "es": "kokoro-ef_dora"}
    # The operator's choice wins; without Kokoro voices, espeak-ng as before.
    pinned = VoiceSettings(by_language={"zh": "espeak-cmn"})
    assert voices_by_language(("zh",), voices, pinned) == {"zh": "espeak-cmn"}
    assert voices_by_language(("zh", "es"), voices[:5], VoiceSettings()) == {
        "zh": "espeak-cmn", "es": "espeak-es"}


@needs_kokoro
async def test_fixed_phrases_are_kept(voices: KokoroSynthesizer) -> None:
    """A holding phrase must play at once, even on a busy CPU: synthesized once, then kept."""
    first = await voices.synthesize("Un momento, por favor.", voice="kokoro-ef_dora")
    again = await voices.synthesize("Un momento, por favor.", voice="kokoro-ef_dora")
    assert first.compute_ms > 0 and again.compute_ms == 0.0
    assert np.array_equal(first.pcm, again.pcm)
