"""Text helpers for turn-taking: cutting an LLM stream into speakable pieces, and judging
whether a transcript sounds finished."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"([.!?]+[\"')\]]*)(\s+|$)")
# Chinese/Japanese full-width sentence ends need no space after them (the script has none).
_CJK_SENTENCE_END = re.compile(r"([。！？!?；…]+[」』”’）)]*)")
_CLAUSE_END = re.compile(r"([,;:])\s+")
_CJK_CLAUSE_END = re.compile(r"([，、；：])")
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# "Dr. Smith", "z. B. morgen", "Sr. García": a period that ends an abbreviation, not a sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "approx", "no",  # en
    "z.b", "bzw", "usw", "nr", "ca", "str", "hr", "fr", "vgl", "d.h", "u.a", "dr.-ing",  # de
    "m", "mme", "mlle", "env", "p.ex", "cf",  # fr
    "sr", "sra", "srta", "ud", "uds", "pág", "aprox", "p.ej",  # es
}
# Markdown and emoji a language model likes to emit, that a voice should not read aloud.
_UNSPEAKABLE = re.compile(r"[*_#`~>|]+|[\U0001F300-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]")


class SentenceChunker:
    """Accumulates streamed text; yields pieces for TTS as soon as they are speakable.

    The first piece of a reply may be cut at a clause boundary (a comma after a few words), so
    the bot starts talking sooner; later pieces are whole sentences, which sound better.
    """

    def __init__(self, first_clause_min_words: int = 5, *, language: str | None = None) -> None:
        self._buffer = ""
        self._first = True
        self._first_clause_min_words = first_clause_min_words
        self.language = language  # "de": "am 3. Mai" is no sentence end

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while True:
            cut_at = self._sentence_end()
            if cut_at is not None:
                cut = cut_at
            elif self._first and (clause := self._long_enough_clause()):
                cut = clause
            else:
                break
            piece = clean_for_speech(self._buffer[:cut])
            self._buffer = self._buffer[cut:].lstrip()
            if piece:
                pieces.append(piece)
                self._first = False
        return pieces

    def _sentence_end(self) -> int | None:
        """Where the first complete sentence in the buffer ends, if one does."""
        ends: list[int] = []
        for match in _SENTENCE_END.finditer(self._buffer):
            if not match.group(2):  # need the whitespace after: "3.5" is no sentence end
                continue
            if match.group(1) == "." and self._abbreviation_before(match.start(1)):
                continue
            ends.append(match.end(1))
            break
        cjk = _CJK_SENTENCE_END.search(self._buffer)
        if cjk and (cjk.group(1)[0] not in "!?" or _is_cjk_before(self._buffer, cjk.start(1))):
            end = cjk.end(1)
            if end < len(self._buffer) or cjk.group(1)[-1] not in "…":
                ends.append(end)
        return min(ends) if ends else None

    def _abbreviation_before(self, period: int) -> bool:
        word = re.search(r"([\w.\-]+)$", self._buffer[:period])
        if word is None:
            return False
        token = word.group(1).lower()
        if token in _ABBREVIATIONS:
            return True
        # German ordinals: "am 3. Mai", "der 2. Weltkrieg"
        return self.language == "de" and token.isdigit()

    def _long_enough_clause(self) -> int | None:
        """End of the first clause with enough words to be worth saying on its own (in
        Chinese, enough characters: about two per word)."""
        for clause in _CLAUSE_END.finditer(self._buffer):
            if speech_length(self._buffer[: clause.end(1)]) >= self._first_clause_min_words:
                return clause.end(1)
        for clause in _CJK_CLAUSE_END.finditer(self._buffer):
            if speech_length(self._buffer[: clause.end(1)]) >= self._first_clause_min_words:
                return clause.end(1)
        return None

    def flush(self) -> list[str]:
        piece = clean_for_speech(self._buffer)
        self._buffer = ""
        return [piece] if piece else []


def clean_for_speech(text: str) -> str:
    return " ".join(_UNSPEAKABLE.sub(" ", text).split())


def _is_cjk_before(text: str, index: int) -> bool:
    return index > 0 and bool(_CJK_CHAR.match(text[index - 1]))


def has_cjk(text: str) -> bool:
    return _CJK_CHAR.search(text) is not None


def speech_length(text: str) -> float:
    """About how many words `text` is: Latin words, plus two Chinese characters per word."""
    cjk = len(_CJK_CHAR.findall(text))
    return len(_CJK_CHAR.sub(" ", text).split()) + cjk / 2


def speech_tokens(text: str) -> list[str]:
    """Words to count and cut by: Latin words, and each Chinese character on its own."""
    return re.findall(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\s\u3040-"
                      r"\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+", text)


def needs_space(before: str, after: str) -> bool:
    """Whether two pieces of a reply are joined with a space (never around Chinese text)."""
    if not before or not after or before[-1].isspace() or after[0].isspace():
        return False
    return not (has_cjk(before[-1]) or has_cjk(after[0]) or before[-1] in "。！？，、；：…」』）")


def join_tokens(tokens: list[str]) -> str:
    """Inverse of `speech_tokens`: no spaces around Chinese characters."""
    out = ""
    for token in tokens:
        if out and not (has_cjk(token[:1]) or has_cjk(out[-1:])):
            out += " "
        out += token
    return out


_TRAILING_INCOMPLETE = {
    "and", "or", "but", "so", "because", "the", "a", "an", "to", "of", "with", "for", "if",
    "um", "uh", "er", "like", "is", "my", "your", "what", "how", "then", "that", "in", "on",
    # German, French, Spanish: conjunctions, articles, prepositions, fillers
    "und", "oder", "aber", "weil", "dass", "der", "die", "das", "ein", "eine", "mit", "für",
    "ähm", "äh", "mein", "meine", "wenn", "zu", "von",
    "et", "ou", "mais", "parce", "que", "le", "la", "les", "un", "une", "avec", "pour",
    "euh", "mon", "ma", "si", "de", "du", "des",
    "y", "o", "pero", "porque", "el", "los", "las", "una", "con", "para", "eh", "mi",
    "este", "del",
}
# Chinese: a trailing conjunction, particle of an unfinished phrase, or filler.
_CJK_TRAILING_INCOMPLETE = (
    "和", "跟", "但是", "可是", "因为", "所以", "然后", "还有", "或者", "如果", "的", "那个",
    "这个", "嗯", "呃", "就是", "而且", "我想", "请问",
)
# Chinese questions often end in a particle, with or without a question mark.
_CJK_QUESTION_END = re.compile(r"(吗|呢|么|嘛|吧)[。.]?$")
_CJK_QUESTION_WORD = re.compile(r"几|多少|什么|怎么|为什么|哪|谁|是不是|有没有|能不能|可不可以")
_GREETING_ONLY = re.compile(
    r"^((hi|hello|hey|okay|ok|so|well|um+|uh+|h?m+|erm?|ah+|yes|yeah|right"
    r"|hallo|guten tag|bonjour|salut|hola|buenos días|buenas)( there| again| bot)?"
    r"|(hi|hello|hey|hallo|bonjour|hola),? [\w']+)[.!,]*$",  # "Hello, Sarah." (or "there")
    re.I,
)
_CJK_GREETING_ONLY = re.compile(r"^(你好|您好|喂|嗨|哈喽|早上好|晚上好)[啊呀，,。.！!]*$")


def turn_completeness(text: str) -> str:
    """'question', 'statement' or 'incomplete': how sure we are the user has finished.

    A greeting on its own ("Hello there.", "你好。") is usually followed by the actual request,
    so it counts as incomplete: the bot waits longer rather than answering half a question.
    Works for English, German, French, Spanish ("¿...?") and Chinese (no spaces, "？" or a
    question particle such as 吗/呢).
    """
    stripped = text.strip()
    if not stripped:
        return "incomplete"
    if has_cjk(stripped):
        core = stripped.rstrip("。.！!")
        if _CJK_GREETING_ONLY.match(stripped) or stripped.endswith(("，", "、", "…", ",", "-")):
            return "incomplete"
        if (stripped.endswith(("？", "?")) or _CJK_QUESTION_END.search(core)
                or (_CJK_QUESTION_WORD.search(core) and not stripped.endswith(("。", ".")))):
            return "question"
        if core.endswith(_CJK_TRAILING_INCOMPLETE):
            return "incomplete"
        return "statement"
    words = re.findall(r"[\w']+", stripped.lower())
    if _GREETING_ONLY.match(stripped) or stripped.endswith((",", "...", "-", "…")):
        return "incomplete"
    if words and words[-1] in _TRAILING_INCOMPLETE:
        return "incomplete"
    if stripped.endswith(("?", "？")):
        return "question"
    return "statement"


_NUMBER_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
}


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, small numbers spelled out, for WER."""
    text = re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " "))
    return [_NUMBER_WORDS.get(w, w) for w in text.split()]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two token sequences."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference word count)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    errors, words = word_errors(reference, hypothesis)
    return errors / max(1, words)


def character_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in characters, reference length), punctuation and spaces ignored: the
    measure for Chinese, which has no spaces between words."""
    def chars(text: str) -> list[str]:
        return [c for c in text.lower() if c.isalnum()]

    ref, hyp = chars(reference), chars(hypothesis)
    return edit_distance(ref, hyp), len(ref)
