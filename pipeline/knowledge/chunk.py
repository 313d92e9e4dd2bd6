"""Splitting a document into passages: whole paragraphs packed up to a word budget, each
under its nearest heading (so "Returns" stays attached to the paragraph about returns)."""

from __future__ import annotations

import re
from dataclasses import dataclass

TARGET_WORDS = 90  # passages are packed up to about this many words
MAX_WORDS = 160  # a longer paragraph is cut at sentence ends


@dataclass(frozen=True)
class Chunk:
    heading: str  # the section the passage is in ("" before the first heading)
    text: str


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_passages(text: str) -> list[Chunk]:
    chunks: list[Chunk] = []
    heading = ""
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            chunks.append(Chunk(heading, " ".join(buffer).strip()))
            buffer.clear()

    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [ln for ln in block.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        match = _HEADING.match(lines[0].strip())
        if match:
            flush()
            heading = match.group(2).strip()
            lines = lines[1:]
            if not lines:
                continue
        for piece in _pieces(" ".join(ln.strip() for ln in lines)):
            words = len(piece.split())
            if buffer and sum(len(b.split()) for b in buffer) + words > TARGET_WORDS:
                flush()
            buffer.append(piece)
    flush()
    return [c for c in chunks if c.text]


def _pieces(paragraph: str) -> list[str]:
    """A paragraph, or its sentences packed into pieces of at most MAX_WORDS words."""
    if len(paragraph.split()) <= MAX_WORDS:
        return [paragraph]
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        words = sentence.split()
        while len(words) > MAX_WORDS:  # a "sentence" with no full stop (a table, a list)
            if current:
                pieces.append(" ".join(current))
                current = []
            pieces.append(" ".join(words[:MAX_WORDS]))
            words = words[MAX_WORDS:]
        if current and len(" ".join(current).split()) + len(words) > MAX_WORDS:
            pieces.append(" ".join(current))
            current = []
        if words:
            current.append(" ".join(words))
    if current:
        pieces.append(" ".join(current))
    return pieces
