"""Text helpers for turn-taking: cutting an LLM stream into speakable pieces, and judging
whether a transcript sounds finished."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"([.!?]+[\"')\]]*)(\s+|$)")
_CLAUSE_END = re.compile(r"([,;:])\s+")
# Markdown and emoji a language model likes to emit, that a voice should not read aloud.
_UNSPEAKABLE = re.compile(r"[*_#`~>|]+|[\U0001F300-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]")


class SentenceChunker:
    """Accumulates streamed text; yields pieces for TTS as soon as they are speakable.

    The first piece of a reply may be cut at a clause boundary (a comma after a few words), so
    the bot starts talking sooner; later pieces are whole sentences, which sound better.
    """

    def __init__(self, first_clause_min_words: int = 5) -> None:
        self._buffer = ""
        self._first = True
        self._first_clause_min_words = first_clause_min_words

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while True:
            match = _SENTENCE_END.search(self._buffer)
            if match and match.group(2):  # need the whitespace after: "3.5" is no sentence end
                cut = match.end(1)
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

    def _long_enough_clause(self) -> int | None:
        """End of the first clause with enough words to be worth saying on its own."""
        for clause in _CLAUSE_END.finditer(self._buffer):
            if len(self._buffer[: clause.end(1)].split()) >= self._first_clause_min_words:
                return clause.end(1)
        return None

    def flush(self) -> list[str]:
        piece = clean_for_speech(self._buffer)
        self._buffer = ""
        return [piece] if piece else []


def clean_for_speech(text: str) -> str:
    return " ".join(_UNSPEAKABLE.sub(" ", text).split())


_TRAILING_INCOMPLETE = {
    "and", "or", "but", "so", "because", "the", "a", "an", "to", "of", "with", "for", "if",
    "um", "uh", "er", "like", "is", "my", "your", "what", "how", "then", "that", "in", "on",
}
_GREETING_ONLY = re.compile(
    r"^((hi|hello|hey|okay|ok|so|well|um+|uh+|hmm+|yes|yeah|right)( there| again| bot)?"
    r"|(hi|hello|hey),? [\w']+)[.!,]*$",  # "Hello, Sarah." (or a misheard "there")
    re.I,
)


def turn_completeness(text: str) -> str:
    """'question', 'statement' or 'incomplete': how sure we are the user has finished.

    A greeting on its own ("Hello there.") is usually followed by the actual request, so it
    counts as incomplete: the bot waits longer rather than answering half a question.
    """
    stripped = text.strip()
    if not stripped:
        return "incomplete"
    words = re.findall(r"[\w']+", stripped.lower())
    if _GREETING_ONLY.match(stripped) or stripped.endswith((",", "...", "-")):
        return "incomplete"
    if words and words[-1] in _TRAILING_INCOMPLETE:
        return "incomplete"
    if stripped.endswith("?"):
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


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference word count)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    errors, words = word_errors(reference, hypothesis)
    return errors / max(1, words)
