"""Caller memory: a short note per call of a known caller, kept in SQLite and given to that
caller's next call as context. Off unless configured; anonymous callers never get one.

At hang-up the call's conversation becomes a note: a summary written by the LLM (when a
capable model is configured), or the last turns verbatim (the default: a 135M model writes
poor summaries). Notes older than the retention period are deleted. Transcripts are kept
only when configured. Blocking (SQLite): call it from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import PipelineError
from .llm.base import ChatMessage, LanguageModel

MAX_CALLER_ID_CHARS = 128
SUMMARY_PROMPT = (
    "Summarize this phone call for the assistant's next call with the same caller, in at "
    "most three short sentences: the caller's name if given, their preferences, and any open "
    "request. Only facts from the call."
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories(
    id INTEGER PRIMARY KEY,
    caller_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    summary TEXT NOT NULL,
    transcript TEXT
);
CREATE INDEX IF NOT EXISTS memories_caller ON memories(caller_id, created_at);
"""


class CallerMemoryError(PipelineError):
    """The memory store cannot be used."""


@dataclass(frozen=True)
class MemoryNote:
    caller_id: str
    call_id: str
    created_at: float  # unix seconds
    summary: str
    transcript: list[ChatMessage] | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"call_id": self.call_id, "created_at": self.created_at,
                                  "summary": self.summary}
        if self.transcript is not None:
            out["transcript"] = self.transcript
        return out


def valid_caller_id(caller_id: object) -> bool:
    return (isinstance(caller_id, str) and 0 < len(caller_id) <= MAX_CALLER_ID_CHARS
            and caller_id.isprintable() and caller_id.strip() == caller_id)


class CallerMemory:
    def __init__(self, path: str | Path, *, retention_days: float = 30.0,
                 max_chars: int = 800, keep_transcripts: bool = False) -> None:
        self.path = Path(path)
        self.retention_s = retention_days * 86400
        self.max_chars = max_chars
        self.keep_transcripts = keep_transcripts
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CallerMemoryError(f"{self.path}: cannot use as caller memory ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def purge_expired(self, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - self.retention_s
        with self._lock:
            return self._db.execute("DELETE FROM memories WHERE created_at < ?",
                                    (cutoff,)).rowcount

    def notes(self, caller_id: str, *, now: float | None = None) -> list[MemoryNote]:
        """The caller's notes within the retention period, oldest first."""
        self.purge_expired(now)
        with self._lock:
            rows = self._db.execute(
                "SELECT call_id, created_at, summary, transcript FROM memories "
                "WHERE caller_id = ? ORDER BY created_at, id", (caller_id,)).fetchall()
        return [MemoryNote(caller_id, r[0], r[1], r[2], json.loads(r[3]) if r[3] else None)
                for r in rows]

    def context(self, caller_id: str) -> str | None:
        """What the next call is told: the newest notes that fit `max_chars`."""
        lines: list[str] = []
        used = 0
        for note in reversed(self.notes(caller_id)):
            day = time.strftime("%Y-%m-%d", time.gmtime(note.created_at))
            line = f"Call on {day}: {note.summary}"
            if lines and used + len(line) > self.max_chars:
                break
            lines.insert(0, line[: self.max_chars])
            used += len(line)
        if not lines:
            return None
        return ("What you remember about this caller from earlier calls (use it, and do not "
                "ask again for what you know):\n" + "\n".join(lines))

    def save(self, caller_id: str, call_id: str, summary: str,
             transcript: Sequence[ChatMessage] = (), *, now: float | None = None) -> None:
        summary = summary.strip()[: self.max_chars]
        if not summary:
            return
        kept = json.dumps(list(transcript)) if self.keep_transcripts and transcript else None
        with self._lock:
            self._db.execute(
                "INSERT INTO memories(caller_id, call_id, created_at, summary, transcript) "
                "VALUES (?, ?, ?, ?, ?)",
                (caller_id, call_id, time.time() if now is None else now, summary, kept))

    def forget(self, caller_id: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM memories WHERE caller_id = ?",
                                    (caller_id,)).rowcount


def conversation(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The caller's and the bot's turns (no system messages)."""
    return [m for m in history if m["role"] in ("user", "assistant") and m["content"].strip()]


def last_turns(history: Sequence[ChatMessage], max_chars: int) -> str:
    """The memory without a summarizer: the last exchanges, verbatim, newest kept."""
    parts: list[str] = []
    used = 0
    for message in reversed(conversation(history)):
        who = "The caller said" if message["role"] == "user" else "You said"
        part = f'{who}: "{message["content"].strip()}"'
        if parts and used + len(part) > max_chars:
            break
        parts.insert(0, part)
        used += len(part) + 1
    return " ".join(parts)[:max_chars]


async def summarize(llm: LanguageModel, history: Sequence[ChatMessage], *,
                    max_tokens: int = 120) -> str:
    lines = [("Caller: " if m["role"] == "user" else "Assistant: ") + m["content"].strip()
             for m in conversation(history)]
    messages: list[ChatMessage] = [
        {"role": "system", "content": SUMMARY_PROMPT},
        {"role": "user", "content": "\n".join(lines)[-6000:]},
    ]
    text = ""
    async for delta in llm.stream_chat(messages, max_tokens=max_tokens, temperature=0.0):
        text += delta
    return text.strip()
