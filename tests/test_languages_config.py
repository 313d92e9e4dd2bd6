"""The [safety] and [tts] tables and the language settings, from a file and the environment;
bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbot.pipeline.lang import VoiceSettings, voices_by_language
from callbot.signalling.config import CallbotConfig, ConfigError


def test_safety_and_voice_tables_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "callbot.toml"
    path.write_text('''
languages = ["en", "zh", "de"]
[engines]
asr_model = "auto"
[safety]
caller_action = "warn"
word_lists = {en = ["competitor corp"], zh = ["竞争对手"]}
refusals = {zh = "请文明用语。"}
endpoint_url = "http://127.0.0.1:9999/v1"
fail_open = false
redact_pii = true
[tts]
by_language = {de = "espeak-de"}
server_url = "http://127.0.0.1:8880/v1"
server_voices = ["alloy"]
''')
    config = CallbotConfig.load(path, env={})
    assert config.languages == ("en", "zh", "de")
    assert config.engines.asr_model == "auto"
    assert config.safety.word_lists == {"en": ("competitor corp",), "zh": ("竞争对手",)}
    assert config.safety.refusals == {"zh": "请文明用语。"}
    assert not config.safety.fail_open and config.safety.redact_pii
    assert config.tts.server_voices == ("alloy",)
    env = CallbotConfig.load(path, env={"CALLBOT_LANGUAGES": "en,es", "CALLBOT_SAFETY": "0",
                                        "CALLBOT_REDACT_PII": "false"})
    assert env.languages == ("en", "es") and not env.safety.enabled
    assert not env.safety.redact_pii and env.safety.word_lists == config.safety.word_lists


@pytest.mark.parametrize(("text", "key"), [
    ('languages = ["en", "xx"]', "languages"),
    ('[safety]\ncaller_action = "shout"', "caller_action"),
    ('[safety]\nword_lists = {en = [1, 2]}', "safety.word_lists.en"),
    ('[safety]\nendpoint_timeout_s = 0', "endpoint_timeout_s"),
    ('[tts]\nserver_url = "http://x/v1"', "server_voices"),
    ('[engines]\nasr_model = "large"', "asr_model"),
])
def test_bad_values_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        CallbotConfig.load(path, env={})


def test_voices_by_language() -> None:
    voices = ("en_US-joe-medium", "espeak-cmn", "espeak-de", "openai-nova")
    assert voices_by_language(("en", "zh", "de"), voices, VoiceSettings()) == {
        "en": "en_US-joe-medium", "zh": "espeak-cmn", "de": "espeak-de"}
    server = VoiceSettings(server_url="http://127.0.0.1:1/v1", server_voices=("nova",),
                           by_language={"de": "espeak-de"})
    assert voices_by_language(("en", "zh", "de"), voices, server) == {
        "en": "en_US-joe-medium", "zh": "openai-nova", "de": "espeak-de"}
    with pytest.raises(ValueError, match="tts.by_language.zh"):
        voices_by_language(("zh",), voices, VoiceSettings(by_language={"zh": "nope"}))


def test_the_defaults_hear_and_answer_every_supported_language(tmp_path: Path) -> None:
    """`pip install .` + `callbot serve`: zh, en, de, fr, es, with tiny.en + Whisper base."""
    from callbot.pipeline.lang import SUPPORTED_LANGUAGES

    for config in (CallbotConfig(), CallbotConfig.load(None, env={})):
        assert set(config.languages) == {"zh", "en", "de", "fr", "es"} == set(SUPPORTED_LANGUAGES)
        assert config.engines.asr_model == "auto"
    path = tmp_path / "callbot.toml"
    path.write_text("[limits]\nmax_calls = 4\n")
    assert CallbotConfig.load(path, env={}).languages == CallbotConfig().languages
