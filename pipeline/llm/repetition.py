"""Stop a small model that loops ("请请请…", "the the the", one clause again and again).

Greedy or low-temperature decoding of a 135M–1.5B model sometimes falls into a loop and fills
`max_tokens` with it (a Mandarin reply said 请 28 times). `RepetitionCut` watches the text as
it streams and says when to stop: a letter repeated 4 times in a row, or a stretch of 2–40
characters repeated 3 times in a row. Digits and punctuation runs ("1000000", "...") are not
loops.
"""

from __future__ import annotations

import re

# One non-digit, non-punctuation, non-space character, then itself 3 more times.
_CHAR_LOOP = re.compile(r"([^\W\d_])\1{3,}$")
# A unit of 2-40 characters that contains a letter, repeated 3 times at the end.
_UNIT_LOOP = re.compile(r"(?=.{0,38}[^\W\d_])(.{2,40}?)\1{2,}$", re.DOTALL)
_WINDOW = 160  # the tail examined: bounded work per delta


class RepetitionCut:
    def __init__(self) -> None:
        self.text = ""

    def looping(self, delta: str) -> bool:
        """Add `delta`; true once the text ends in a loop (stop generating)."""
        self.text += delta
        tail = self.text[-_WINDOW:].rstrip()
        return bool(_CHAR_LOOP.search(tail) or _UNIT_LOOP.search(tail))
