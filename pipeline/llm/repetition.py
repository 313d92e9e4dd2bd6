"""Stop a small model that loops ("请请请…", "the the the", one clause again and again).

Greedy or low-temperature decoding of a 135M–1.5B model sometimes falls into a loop and fills
`max_tokens` with it (a Mandarin reply said 请 28 times). `RepetitionCut` watches the text as
it streams and says when to stop: a letter repeated 4 times in a row, or a stretch of 2–40
characters repeated 3 times in a row. Digits and punctuation runs ("1000000", "...") are not
loops.
"""

from __future__ import annotations

_WINDOW = 160  # the tail examined: bounded work per delta


def _is_letter(char: str) -> bool:
    return char.isalpha()


def ends_in_loop(text: str) -> bool:
    """A letter 4 times in a row, or a unit of 2-40 characters (with a letter in it) 3 times
    in a row, at the end of `text`. Plain comparisons of the tail: a regex with a
    backreference backtracked for seconds on long digit runs."""
    tail = text[-_WINDOW:].rstrip()
    if len(tail) >= 4 and _is_letter(tail[-1]) and tail[-4:] == tail[-1] * 4:
        return True
    for size in range(2, min(40, len(tail) // 3) + 1):
        unit = tail[-size:]
        if (tail[-2 * size:-size] == unit and tail[-3 * size:-2 * size] == unit
                and any(_is_letter(c) for c in unit)):
            return True
    return False


class RepetitionCut:
    def __init__(self) -> None:
        self.text = ""

    def looping(self, delta: str) -> bool:
        """Add `delta`; true once the text ends in a loop (stop generating)."""
        self.text = (self.text + delta)[-_WINDOW:]
        return ends_in_loop(self.text)
