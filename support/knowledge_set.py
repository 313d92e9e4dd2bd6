"""The example knowledge base and its questions (examples/knowledge/): retrieval quality."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from callbot.pipeline.knowledge import KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "examples" / "knowledge" / "docs"
QUESTIONS = ROOT / "examples" / "knowledge" / "questions.json"


def load_questions() -> list[dict[str, Any]]:
    questions: list[dict[str, Any]] = json.loads(QUESTIONS.read_text())["questions"]
    return questions


def mentions(text: str, groups: list[list[str]]) -> bool:
    """Every group has one alternative in `text` (whole words, case-insensitive)."""
    low = text.lower()
    return all(any(re.search(rf"(?<![\w]){re.escape(alt.lower())}(?![\w])", low) for alt in group)
               for group in groups)


def gold_ids(kb: KnowledgeBase, question: dict[str, Any]) -> set[int]:
    """Passages of the right document that hold the answer."""
    rows = kb._db().execute(
        "SELECT p.id, p.text, d.path FROM passages p JOIN documents d ON d.id = p.doc_id")
    return {pid for pid, text, path in rows
            if path.endswith("/" + question["source"]) and mentions(text, question["answer"])}


def retrieval_quality(kb: KnowledgeBase, questions: list[dict[str, Any]]) -> dict[str, Any]:
    """Hit@1 and MRR@5 of the gold passage for each mode, on the answerable questions."""
    out: dict[str, Any] = {}
    answerable = [q for q in questions if q["source"]]
    for mode in ("keyword", "vector", "hybrid"):
        hit1, rr = 0, 0.0
        for q in answerable:
            gold = gold_ids(kb, q)
            ranked = [h.passage_id for h in kb.search(q["q"], limit=5, mode=mode)]
            for rank, pid in enumerate(ranked, start=1):
                if pid in gold:
                    rr += 1 / rank
                    hit1 += rank == 1
                    break
        out[mode] = {"hit_at_1": hit1, "mrr_at_5": round(rr / len(answerable), 3),
                     "questions": len(answerable)}
    return out
