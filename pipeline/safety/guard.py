"""The session's safety hook: a `TurnGuard` checks the caller's turn before the LLM sees it
and each sentence of the bot before it is spoken (`VoiceSession(guards=[...])`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from .moderation import (
    ModerationEndpoint,
    ModerationPipeline,
    Moderator,
    ProfanityClassifier,
    WordListModerator,
)
from .settings import SafetySettings
from .wordlists import DEFAULT_REFUSALS, DEFAULT_SUPPORT, DEFAULT_WORD_LISTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardDecision:
    categories: tuple[str, ...]
    # "refused": the caller's turn gets `reply` instead of the LLM's answer;
    # "warned": the caller's turn is answered as usual; "blocked": a bot sentence not spoken.
    action: str
    reply: str | None = None


class TurnGuard(Protocol):
    name: str

    async def check_caller(self, text: str, language: str | None) -> GuardDecision | None:
        """None: let the turn through."""
        ...

    async def check_bot(self, text: str, language: str | None) -> GuardDecision | None:
        """None: the sentence may be spoken."""
        ...

    async def close(self) -> None:
        """At shutdown (guards are shared by every call of an app)."""
        ...


class ModerationGuard:
    name = "moderation"

    def __init__(self, moderator: Moderator, settings: SafetySettings | None = None) -> None:
        self.moderator = moderator
        self.settings = settings or SafetySettings()

    async def check_caller(self, text: str, language: str | None) -> GuardDecision | None:
        if not self.settings.check_caller or not text.strip():
            return None
        verdict = await self.moderator.check(text, language)
        if not verdict.flagged:
            return None
        if self.settings.caller_action == "warn":
            return GuardDecision(verdict.categories, "warned")
        return GuardDecision(verdict.categories, "refused",
                             self.reply_for(verdict.categories, language))

    async def check_bot(self, text: str, language: str | None) -> GuardDecision | None:
        if not self.settings.check_bot or not text.strip():
            return None
        verdict = await self.moderator.check(text, language)
        return GuardDecision(verdict.categories, "blocked") if verdict.flagged else None

    async def close(self) -> None:
        await self.moderator.close()

    def reply_for(self, categories: tuple[str, ...], language: str | None) -> str:
        lang = language if language in DEFAULT_REFUSALS else "en"
        if "self_harm" in categories:
            return DEFAULT_SUPPORT[lang]
        return self.settings.refusals.get(lang) or DEFAULT_REFUSALS[lang]


_classifier: ProfanityClassifier | None = None
_classifier_lock = threading.Lock()


def shared_classifier(threshold: float) -> ProfanityClassifier | None:
    """alt-profanity-check, loaded once per process (blocking); None when not installed."""
    global _classifier
    if not ProfanityClassifier.available():
        log.info("alt-profanity-check is not installed (extra 'safety'): word lists only")
        return None
    with _classifier_lock:
        if _classifier is None:
            _classifier = ProfanityClassifier(threshold)
            _classifier.warm_up()
        if _classifier.threshold != threshold:
            return ProfanityClassifier(threshold)
        return _classifier


def build_guard(settings: SafetySettings) -> ModerationGuard | None:
    """Blocking (loads the classifier): call it from a thread at start-up."""
    if not settings.enabled:
        return None
    word_list = WordListModerator(
        DEFAULT_WORD_LISTS if settings.default_word_lists else {},
        settings.word_lists,
    )
    others: list[Moderator] = []
    if settings.classifier:
        classifier = shared_classifier(settings.classifier_threshold)
        if classifier is not None:
            others.append(classifier)
    if settings.endpoint_url:
        others.append(ModerationEndpoint(
            settings.endpoint_url, model=settings.endpoint_model,
            api_key=settings.endpoint_api_key, timeout_s=settings.endpoint_timeout_s,
            fail_open=settings.fail_open,
        ))
    return ModerationGuard(ModerationPipeline(word_list, others), settings)
