"""Safety: moderation of what the caller says and what the bot is about to say, calm
refusals, and redaction of personal data from logs and stored transcripts."""

from .guard import GuardDecision, ModerationGuard, TurnGuard
from .moderation import (
    ModerationEndpoint,
    ModerationPipeline,
    Moderator,
    ProfanityClassifier,
    Verdict,
    WordListModerator,
)
from .pii import PiiRedactingFilter, redact_pii
from .settings import SafetySettings

__all__ = [
    "GuardDecision", "ModerationEndpoint", "ModerationGuard", "ModerationPipeline", "Moderator",
    "PiiRedactingFilter", "ProfanityClassifier", "SafetySettings", "TurnGuard", "Verdict",
    "WordListModerator", "redact_pii",
]
