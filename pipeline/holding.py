"""What the bot says while it thinks, and when thinking took too long.

A caller who hears nothing for seconds thinks the line is dead. When the LLM's first token has
not come `ReplySettings.hold_after_s` after the turn (a bigger model on 2 busy cores), the bot
says a short holding phrase in the call's language, chosen so it never contradicts the answer
that follows. A reply that misses its deadline ends with a polite apology instead of silence.
Neither joins the reply's text or the history, and neither counts as the answer's first audio.
"""

from __future__ import annotations

HOLD_PHRASES = {
    "en": "One moment, please.",
    "zh": "请稍等。",
    "de": "Einen Moment, bitte.",
    "fr": "Un instant, s'il vous plaît.",
    "es": "Un momento, por favor.",
}

APOLOGIES = {
    "en": "Sorry, that took too long. Could you ask me again?",
    "zh": "抱歉，我没能及时回答。请再问一次好吗？",
    "de": "Entschuldigung, das hat zu lange gedauert. Können Sie die Frage wiederholen?",
    "fr": "Désolé, cela a pris trop de temps. Pouvez-vous répéter la question ?",
    "es": "Lo siento, tardé demasiado. ¿Puede repetir la pregunta?",
}


def hold_phrase(language: str | None) -> str:
    return HOLD_PHRASES.get(language or "en", HOLD_PHRASES["en"])


def apology(language: str | None) -> str:
    return APOLOGIES.get(language or "en", APOLOGIES["en"])
