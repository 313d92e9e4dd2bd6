"""Does this turn need the picture? A rule on the caller's words, in en, zh, de, fr and es.

Cheap (a few regular expressions) so that turns not about the camera pay nothing for vision.
"""

from __future__ import annotations

import re

_WORDS = {
    "en": [
        r"\b(can|could|do|did) you (see|read|look|tell what)\b",
        r"\bwhat (do|did|can|could) you see\b",
        r"\bwhat (does|did|do) (this|that|it|the \w+|these|those|my \w+) (say|read|show)\b",
        r"\bwhat('s| is) (this|written|on (the|my) \w+)\b",
        r"\bwhat am i (holding|showing|wearing|pointing at)\b",
        r"\bhow many fingers\b", r"\bwhat colou?r\b",
        r"\b(look|looking) at\b", r"\btake a look\b", r"\bhave a look\b",
        r"\bread (me |out |aloud |this|that|it|the)\b", r"\bread\b.*\b(sign|label|text)\b",
        r"\b(see|seeing) (me|this|that|it|my)\b", r"\bsee anything\b",
        r"\b(show|showing|shown|hold up|holding up|held up)\b",
        r"\b(camera|webcam|screen|picture|photo|image|video)\b",
        r"\b(sign|label|written|writing|handwriting)\b",
    ],
    "zh": [
        r"看", r"读", r"念", r"写着", r"写的", r"屏幕", r"摄像头", r"镜头", r"相机",
        r"这是什么", r"那是什么", r"图片", r"照片", r"牌子", r"标签", r"标志", r"拿着",
    ],
    "de": [
        r"\b(siehst|sehen|sieh|schau|schaust|guck|guckst)\b", r"\b(lies|lesen|vorlesen)\b",
        r"\bwas steht\b", r"\b(zeige|zeig|halte)\b", r"\bwas ist das\b",
        r"\b(kamera|bildschirm|schild|etikett|bild|foto)\b",
    ],
    "fr": [
        r"\b(vois|voir|voyez|regarde|regardez)\b", r"\b(lis|lire|lisez)\b",
        r"\bqu'est-ce qui est écrit\b", r"\bécrit\b", r"\b(montre|montrer)\b",
        r"\bqu'est-ce que c'est\b", r"\b(caméra|écran|panneau|étiquette|image|photo)\b",
    ],
    "es": [
        r"\b(ves|ver|veo|mira|mirar|miras)\b", r"\b(lee|leer|léeme)\b", r"\bqué dice\b",
        r"\bescrito\b", r"\b(muestro|muestra|mostrar)\b", r"\bqué es esto\b",
        r"\b(cámara|pantalla|letrero|cartel|etiqueta|imagen|foto)\b",
    ],
}
_PATTERN = re.compile("|".join(f"(?:{p})" for ps in _WORDS.values() for p in ps), re.IGNORECASE)
# Phrases that use a trigger word without asking about the picture.
_NOT_VISUAL = re.compile(
    r"\b(see you|you see,|i see\b|let me see|we'll see|see what i mean|look forward|"
    r"looking forward|show up|tv show)\b", re.IGNORECASE)


def needs_picture(text: str, language: str | None = None) -> bool:
    """True when the caller's words ask about what the camera shows. `language` is a hint;
    every supported language's phrases are checked (a caller may mix them)."""
    del language  # the rule is small enough to check every language
    if not text:
        return False
    cleaned = _NOT_VISUAL.sub(" ", text.replace("’", "'"))
    return _PATTERN.search(cleaned) is not None
