"""Undo the disguises people use to slip abuse past a word list, before every check.

Two halves that work together:

- `fold(text)` rewrites the *text*: Unicode NFKC (full-width letters, ligatures), look-alike
  Cyrillic/Greek letters to Latin, case folding (ß -> ss), accents stripped, invisible
  characters dropped, and runs of single letters joined ("f u c k", "f.u.c.k" -> "fuck").
- `term_pattern(term)` compiles a *word-list term* so that it tolerates what is left: each
  letter also matches its leetspeak digits/symbols (0 for o, 1 for i/l, @ for a, v for u...)
  and may be repeated ("fuuuck", "kiiill"); words may be run together ("fuckyou").

Doing leetspeak in the pattern rather than the text keeps ordinary numbers ("b1 b2 vitamins",
"4 people") from ever becoming words. `classifier_text` is the text-side rewrite for the
English classifier, which cannot use patterns.
"""

from __future__ import annotations

import re
import unicodedata

# Look-alikes a caller can type instead of Latin letters (after lower-casing).
_HOMOGLYPHS = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
    "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ь": "b", "п": "n", "г": "r", "и": "u",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y", "μ": "u", "ϲ": "c", "ς": "s", "ѡ": "w",
    # Latin look-alikes NFKC leaves alone
    "ı": "i", "ɡ": "g", "ʀ": "r", "ɑ": "a",
})

# Leetspeak / symbol stand-ins, per Latin letter (used inside compiled patterns).
_LEET = {
    "a": "a4@", "b": "b8", "c": "c(", "e": "e3", "g": "g9", "i": "i1!|", "l": "l1|",
    "o": "o0", "s": "s5$", "t": "t7", "u": "uv*", "z": "z2",
}
# The same for text (the classifier): only inside a word that also has letters.
_LEET_TEXT = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t",
                            "@": "a", "$": "s", "!": "i"})

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_RUN = re.compile(f"[{_CJK}]+")

# "f u c k", "f.u.c.k", "f-u-c-k", "f*u*c*k": three or more single characters between
# separators are one word. A run of one-character "words" is rare in ordinary speech.
_SEP = r"[\s.\-_*·•,/\\~+:;]"
_CH = r"[^\s.\-_*·•,/\\~+:;]"
_SPACED = re.compile(rf"(?<!{_CH}){_CH}(?:{_SEP}+{_CH}){{2,}}(?!{_CH})")
_SEP_RE = re.compile(_SEP + "+")
_REPEATS = re.compile(r"(\w)\1{2,}")
_LEET_WORD = re.compile(r"[\w@$!]*[a-z][\w@$!]*")


def _strip_marks(text: str) -> str:
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    # Drop accents and invisible format characters (zero-width spaces and joiners).
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Cf"))
    return unicodedata.normalize("NFC", kept)


def fold_letters(text: str) -> str:
    """NFKC, case folding, look-alikes to Latin, accents and invisible characters gone."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_HOMOGLYPHS)
    return _strip_marks(text).replace("’", "'").replace("‘", "'")


def join_spaced_letters(text: str) -> str:
    return _SPACED.sub(lambda m: _SEP_RE.sub("", m.group(0)), text)


def fold(text: str) -> str:
    """The text every word-list pattern is matched against."""
    return join_spaced_letters(fold_letters(text))


def classifier_text(folded: str) -> str:
    """`fold`ed text with leetspeak undone inside words and long repeats squeezed."""
    text = _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET_TEXT), folded)
    return _REPEATS.sub(r"\1", text)


def latin_part(text: str) -> str:
    """The text without its Chinese/Japanese characters: what an English model can score."""
    return _CJK_RUN.sub(" ", text)


def has_cjk(text: str) -> bool:
    return _CJK_CHAR.search(text) is not None


# Between the words of a term: separators that are not themselves leetspeak letters.
_TERM_SEP = r"[^\w@$!|*(]*+"


def _letter(ch: str, count: int) -> str:
    if ch in _LEET:
        cls = f"[{re.escape(_LEET[ch])}]"
    else:
        cls = re.escape(ch)
    # Possessive (Python 3.11+): a letter run never gives characters back, so a crafted
    # "kil1l1l1..." cannot make the match backtrack quadratically.
    return cls + ("++" if count == 1 else f"{{{count},}}+")


def term_body(term: str) -> str:
    """A word-list term as a regex body. `(a|b)` chooses, `(...)?` is optional; a space
    matches any run of separators or none; each Latin letter matches its leetspeak forms,
    repeated ("ll" needs two or more); Chinese characters may have separators between them."""
    folded = fold_letters(term)
    out: list[str] = []
    i = 0
    while i < len(folded):
        ch = folded[i]
        run = 1
        while i + run < len(folded) and folded[i + run] == ch:
            run += 1
        if ch == "(":
            out.append("(?:" * run)
        elif ch in ")|?":
            out.append(ch * run)
        elif ch.isspace():
            out.append(_TERM_SEP)
        elif ch == "'":
            out.append("'?")
        elif _CJK_CHAR.match(ch):
            out.append((ch + r"[\W_]*+") * run)
        elif ch.isalnum():
            out.append(_letter(ch, run))
        else:
            out.append(re.escape(ch) * run)
        i += run
    return "".join(out)


def is_cjk_term(term: str) -> bool:
    return has_cjk(term)
