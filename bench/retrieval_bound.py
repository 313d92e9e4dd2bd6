"""Retrieval cost against the question's length, before and after the query bound (issue 28).

    python3 -m bench.retrieval_bound [--cap 60]

Indexes examples/knowledge/docs, then times `KnowledgeBase.search` (hybrid) for questions of
1,000 / 10,000 / 1,000,000 characters: "before" = no bound (`max_query_tokens` huge, what the
code did), each in a child process killed after `--cap` seconds; "after" = the default bound.
Writes bench/results/retrieval_bound.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "examples" / "knowledge" / "docs"
RESULTS = ROOT / "bench" / "results"
SIZES = (1_000, 10_000, 1_000_000)
SENTENCE = "I was wondering, since my bike broke last week, what your opening hours are on Sunday. "


def question(chars: int) -> str:
    return (SENTENCE * (chars // len(SENTENCE) + 1))[:chars]


def one(db: str, chars: int, unbounded: bool, repeats: int) -> list[float]:
    from callbot.pipeline.knowledge import KnowledgeBase

    kb = KnowledgeBase(db)
    kb.search("warm up")
    text = question(chars)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        kb.search(text, max_query_tokens=10**9) if unbounded else kb.search(text)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cap", type=float, default=60.0)
    parser.add_argument("--one", nargs=3, metavar=("DB", "CHARS", "UNBOUNDED"))
    args = parser.parse_args()
    if args.one:
        db, chars, unbounded = args.one
        print(json.dumps(one(db, int(chars), unbounded == "1", 1 if unbounded == "1" else 5)))
        return
    from callbot.pipeline.knowledge import KnowledgeBase, SearchBudget, SearchCancelled

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "kb.sqlite")
        KnowledgeBase(db).add([DOCS])
        rows = []
        for chars in SIZES:
            row: dict[str, object] = {"chars": chars}
            for label, unbounded in (("before", "1"), ("after", "0")):
                try:
                    out = subprocess.run(
                        [sys.executable, "-m", "bench.retrieval_bound", "--one", db, str(chars),
                         unbounded], capture_output=True, text=True, timeout=args.cap,
                        cwd=ROOT, check=True)
                    row[f"{label}_s"] = round(statistics.median(json.loads(out.stdout)), 3)
                except subprocess.TimeoutExpired:
                    row[f"{label}_s"] = f">{args.cap:.0f} (killed)"
            rows.append(row)
            print(row, flush=True)
        # The timeout stops the work: a search given 50 ms gives up at the next checkpoint.
        kb = KnowledgeBase(db)
        kb.search("warm up")
        started = time.perf_counter()
        try:
            kb.search(question(1_000_000), budget=SearchBudget.within(0.05))
            stopped = "finished"
        except SearchCancelled:
            stopped = "cancelled"
        cancel = {"budget_s": 0.05, "outcome": stopped,
                  "returned_after_s": round(time.perf_counter() - started, 3)}
        print(cancel)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrieval_bound.json").write_text(json.dumps(
        {"rows": rows, "cancel": cancel, "cap_s": args.cap,
         "note": "shared 2-core machine, other agents running"}, indent=1) + "\n")
    print("| question | before (unbounded) | after (bounded) |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['chars']:,} chars | {row['before_s']} s | {row['after_s']} s |")


if __name__ == "__main__":
    main()
