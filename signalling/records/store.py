"""Where ended calls' records are kept: SQLite in WAL mode (readers never wait on the writer),
recordings as files beside it. Records older than the retention are erased, file and row.

Blocking: call it from a thread (`asyncio.to_thread`); one lock serializes the connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS call_records (
    call_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL NOT NULL,
    transcript TEXT NOT NULL,
    recording TEXT
);
CREATE INDEX IF NOT EXISTS call_records_ended ON call_records (ended);
"""


@dataclass(frozen=True)
class StoredRecord:
    call_id: str
    owner: str
    started: float  # wall-clock seconds
    ended: float
    transcript: dict[str, Any]
    recording: Path | None


class RecordStore:
    def __init__(self, path: str, retention_days: float) -> None:
        self.retention_s = retention_days * 86_400
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable enough, far fewer fsyncs
        self._db.executescript(SCHEMA)

    def save(self, call_id: str, owner: str, started: float, ended: float,
             transcript: dict[str, Any], recording: Path | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO call_records VALUES (?, ?, ?, ?, ?, ?)",
                (call_id, owner, started, ended, json.dumps(transcript),
                 str(recording) if recording is not None else None))

    def get(self, call_id: str) -> StoredRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT call_id, owner, started, ended, transcript, recording "
                "FROM call_records WHERE call_id = ? AND ended >= ?",
                (call_id, time.time() - self.retention_s)).fetchone()
        if row is None:
            return None
        return StoredRecord(row[0], row[1], row[2], row[3], json.loads(row[4]),
                            Path(row[5]) if row[5] else None)

    def delete(self, call_id: str) -> bool:
        """Erase the record and its recording; False if there was none."""
        with self._lock:
            row = self._db.execute("SELECT recording FROM call_records WHERE call_id = ?",
                                   (call_id,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM call_records WHERE call_id = ?", (call_id,))
        if row[0]:
            Path(row[0]).unlink(missing_ok=True)
        return True

    def purge(self, now: float | None = None) -> int:
        """Erase what is older than the retention; how many records went."""
        cutoff = (now if now is not None else time.time()) - self.retention_s
        with self._lock:
            rows = self._db.execute("SELECT recording FROM call_records WHERE ended < ?",
                                    (cutoff,)).fetchall()
            self._db.execute("DELETE FROM call_records WHERE ended < ?", (cutoff,))
        for (recording,) in rows:
            if recording:
                Path(recording).unlink(missing_ok=True)
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
