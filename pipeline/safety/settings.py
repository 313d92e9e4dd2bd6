"""Safety settings (the `[safety]` table of the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SettingsError

CALLER_ACTIONS = ("refuse", "warn")


@dataclass(frozen=True)
class SafetySettings:
    enabled: bool = True
    check_caller: bool = True  # the caller's final transcript and typed text
    check_bot: bool = True  # each sentence of the bot, before it is spoken
    # "refuse": a flagged caller turn gets a short calm reply instead of the LLM's;
    # "warn": the event is sent and the LLM answers as usual.
    caller_action: str = "refuse"
    classifier: bool = True  # alt-profanity-check (English), when installed (extra 'safety')
    classifier_threshold: float = 0.85
    default_word_lists: bool = True  # callbot's lists for en/zh/de/fr/es
    # Extra terms per language ("*": every language); a term in /slashes/ is a regex.
    word_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    endpoint_url: str | None = None  # an OpenAI-compatible base URL; POST {url}/moderations
    endpoint_model: str = "omni-moderation-latest"
    endpoint_api_key: str | None = None
    endpoint_timeout_s: float = 0.8  # a slower answer counts as no answer
    fail_open: bool = True  # endpoint down/slow: True lets the text through, False blocks it
    refusals: dict[str, str] = field(default_factory=dict)  # language -> the calm reply
    redact_pii: bool = False  # phones, e-mails, card numbers out of logs and stored transcripts

    def __post_init__(self) -> None:
        if self.caller_action not in CALLER_ACTIONS:
            raise SettingsError("caller_action: expected 'refuse' or 'warn'")
        if not 0 < self.classifier_threshold <= 1:
            raise SettingsError("classifier_threshold: expected 0 < x <= 1")
        if self.endpoint_timeout_s <= 0:
            raise SettingsError("endpoint_timeout_s: must be greater than 0")
