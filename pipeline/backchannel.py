"""Backchannels: what a listener says to show they follow ("mm-hmm", "yeah", "okay", 嗯, vale,
d'accord, genau...), not to take the turn. Said over the bot, they must not stop it.

`is_backchannel` judges a transcript of the caller's overlap: only backchannel words (or
nothing: a cough, a laugh Whisper writes as "(laughs)" or leaves empty) -> True. Anything else
("wait", "stop", a question) is a real interruption. Deliberately a closed word list: a
mistaken "backchannel" makes the bot talk over the caller, so anything unknown interrupts.
"""

from __future__ import annotations

import re
import unicodedata

# Per supported language; all are checked whatever the call's language (callers mix, and
# Whisper may write "okay" in a Spanish call). Multi-word entries are matched whole.
BACKCHANNELS: dict[str, frozenset[str]] = {
    "en": frozenset({
        "m", "mm", "mmm", "mhm", "mm-hmm", "mmhmm", "mm hmm", "hmm", "hm", "uh-huh", "uh huh",
        "uhhuh",  # "m": Whisper's "m m" for a hummed "mm-hmm"
        "aha", "ah", "oh", "yeah", "yea", "yes", "yep", "yup", "ok", "okay", "right", "sure",
        "i see", "got it", "alright", "all right", "cool", "nice", "great", "true", "exactly",
        "indeed", "totally", "of course", "go on", "i know", "wow", "really", "uh", "um", "huh",
        "ha", "haha", "hahaha", "yeah yeah", "right right", "okay okay", "sure sure", "mm-hm",
    }),
    "zh": frozenset({
        "嗯", "嗯嗯", "嗯哼", "对", "对对", "对对对", "好", "好的", "是", "是的", "是啊",
        "哦", "噢", "啊", "明白", "知道了", "行", "没错", "呵呵", "哈哈", "对的", "好好", "嗯对",
    }),
    "es": frozenset({
        "sí", "si", "vale", "claro", "ajá", "aja", "ya", "bueno", "entiendo", "de acuerdo",
        "exacto", "ok", "okey", "mhm", "ah", "oh", "sí sí", "ya ya", "claro claro", "jaja",
    }),
    "fr": frozenset({
        "oui", "ouais", "d'accord", "daccord", "ok", "okay", "ah", "oh", "hum", "mhm", "voilà",
        "voila", "exactement", "bien sûr", "je vois", "ah bon", "c'est ça", "oui oui", "haha",
        "bon", "ben oui", "carrément",
    }),
    "de": frozenset({
        "ja", "jaja", "ja ja", "genau", "okay", "ok", "aha", "mhm", "hm", "ach so", "achso",
        "stimmt", "klar", "richtig", "gut", "alles klar", "verstehe", "ich verstehe", "ah", "oh",
        "na klar", "haha",
    }),
}
_ALL = frozenset().union(*BACKCHANNELS.values())
# Whisper's non-speech captions: "(laughs)", "[coughing]", "*cough*", "♪".
_CAPTION = re.compile(r"[\(\[\*][^\)\]\*]{0,40}[\)\]\*]|♪")
_SEPARATORS = re.compile(r"[\s,，。、.!！?？;；:：…~—–\"“”«»]+")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return _CAPTION.sub(" ", text)


def _pieces(text: str) -> list[str]:
    return [p.strip("-'") for p in _SEPARATORS.split(text) if p.strip("-'")]


def words(text: str) -> frozenset[str]:
    """`text`'s words as `is_backchannel` compares them (lower case, no punctuation)."""
    return frozenset(_pieces(_normalise(text)))


def is_backchannel(text: str, echo_words: frozenset[str] = frozenset()) -> bool:
    """True when `text` (a transcript of speech over the bot) holds only backchannel words or
    no words at all (a cough, a laugh). `echo_words`: what the bot was saying as the overlap
    began, on a call whose microphone hears the bot (a speakerphone): the echo still in flight
    may come out in the transcript ("and m m" for "mm-hmm" over "...dragon and..."), and those
    words are not the caller's."""
    pieces = [p for p in _pieces(_normalise(text)) if p not in echo_words or p in _ALL]
    # "Mm-mm-": Whisper's hyphenated hums, word by word
    pieces = [w for p in pieces for w in ([p] if p in _ALL else _pieces(p.replace("-", " ")))]
    if not pieces:
        return True
    if " ".join(pieces) in _ALL:
        return True
    # "Yeah, okay." / "嗯，对。": every comma-separated piece is a backchannel (pieces of
    # several words, like "i see", are tried whole before word by word).
    i = 0
    while i < len(pieces):
        for width in (3, 2, 1):
            if " ".join(pieces[i:i + width]) in _ALL and i + width <= len(pieces):
                i += width
                break
        else:
            return _all_cjk_backchannel("".join(pieces[i:]))
    return True


def _all_cjk_backchannel(rest: str) -> bool:
    """Chinese is written without spaces: "嗯嗯好的" is cut greedily into known words."""
    cjk = sorted((w for w in BACKCHANNELS["zh"]), key=len, reverse=True)
    while rest:
        for word in cjk:
            if rest.startswith(word):
                rest = rest[len(word):]
                break
        else:
            return False
    return True
