"""Word-list check cost and coverage on the disguise corpus of tests/test_safety_disguises.py.

    python3 -m bench.safety_disguises

Prints µs per check (median of 7 rounds of 10 passes) for the corpus' short turns and for
the same with one 14,000-character turn added, and how many disguised turns were flagged and
ordinary ones let through. Writes bench/results/safety_disguises.json.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from callbot.pipeline.safety.moderation import WordListModerator
from support.safety_sets import DISGUISED, ORDINARY

RESULTS = Path(__file__).resolve().parent / "results"


def per_check_us(moderator: WordListModerator, texts: list[str]) -> float:
    runs = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(10):
            for text in texts:
                moderator.match(text)
        runs.append((time.perf_counter() - started) / (10 * len(texts)) * 1e6)
    return round(statistics.median(runs), 1)


def main() -> None:
    moderator = WordListModerator()
    short = [t for _, t, _ in DISGUISED] + ORDINARY
    out = {
        "us_per_check_short_turns": per_check_us(moderator, short),
        "us_per_check_with_a_14k_turn": per_check_us(moderator,
                                                      short + ["please " * 2000 + "help"]),
        "disguised_flagged": f"{sum(c in moderator.match(t) for _, t, c in DISGUISED)}"
                             f"/{len(DISGUISED)}",
        "ordinary_flagged": f"{sum(bool(moderator.match(t)) for t in ORDINARY)}/{len(ORDINARY)}",
        "note": "shared 2-core machine, other agents running",
    }
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "safety_disguises.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
