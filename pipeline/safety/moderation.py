"""Moderators: each says whether a text is abusive, threatening or otherwise not to be let
through. `ModerationPipeline` runs the cheap local ones first and the others concurrently.

- `WordListModerator`: per-language word lists / patterns (microseconds; every language is
  checked whatever the call's language, so mixed-script text is covered).
- `ProfanityClassifier`: alt-profanity-check, a linear English model (~3 ms, on a thread).
- `ModerationEndpoint`: any OpenAI-compatible `/v1/moderations`, with a bounded timeout; when
  it is down or slow the verdict follows `fail_open`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..text import has_cjk
from .wordlists import DEFAULT_WORD_LISTS

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()
    checker: str = ""
    error: str | None = None  # the checker could not answer (the verdict is its fallback)
    elapsed_ms: float = 0.0


CLEAN = Verdict(False)


class Moderator(Protocol):
    name: str

    async def check(self, text: str, language: str | None) -> Verdict: ...

    async def close(self) -> None: ...


def _compile(term: str) -> re.Pattern[str]:
    if len(term) > 2 and term.startswith("/") and term.endswith("/"):
        body = term[1:-1]
    else:
        body = r"\s+".join(re.escape(word) for word in term.split())
    if has_cjk(term):
        return re.compile(body, re.I)
    return re.compile(rf"(?<![\w]){body}(?![\w])", re.I)


def _normalise(text: str) -> str:
    """Undo the cheap disguises: f.u.c.k, f*ck stays a miss (see ProfanityClassifier)."""
    text = re.sub(r"(?<=\w)[.\-_](?=\w\b|\w[.\-_])", "", text)
    return text.replace("’", "'")


class WordListModerator:
    name = "word_list"

    def __init__(self, lists: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                 extra: Mapping[str, Sequence[str]] | None = None) -> None:
        source = DEFAULT_WORD_LISTS if lists is None else lists
        self._patterns: list[tuple[str, str, re.Pattern[str]]] = []
        for language, categories in source.items():
            for category, terms in categories.items():
                for term in terms:
                    self._patterns.append((language, category, _compile(term)))
        for language, terms in (extra or {}).items():
            for term in terms:
                self._patterns.append((language, "custom", _compile(term)))

    def match(self, text: str) -> tuple[str, ...]:
        normalised = _normalise(text)
        found: list[str] = []
        for _, category, pattern in self._patterns:
            if category not in found and pattern.search(normalised):
                found.append(category)
        return tuple(found)

    async def check(self, text: str, language: str | None) -> Verdict:
        started = time.perf_counter()
        categories = self.match(text)
        return Verdict(bool(categories), categories, self.name,
                       elapsed_ms=(time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        pass


class ProfanityClassifier:
    """alt-profanity-check (extra 'safety'): English abuse; other scripts are skipped."""

    name = "profanity_check"

    def __init__(self, threshold: float = 0.85) -> None:
        from profanity_check import predict_prob
        from threadpoolctl import threadpool_limits  # comes with scikit-learn

        self._predict_prob = predict_prob
        self._one_thread = threadpool_limits
        self.threshold = threshold
        self._lock = threading.Lock()  # sklearn's vectorizer is not documented thread-safe

    @staticmethod
    def available() -> bool:
        import importlib.util

        return importlib.util.find_spec("profanity_check") is not None

    def score(self, text: str) -> float:
        # One BLAS/OpenMP thread: a scoring job is tiny, and pool threads left spinning after
        # it would steal the 2 cores the LLM and TTS need for the reply.
        with self._lock, self._one_thread(limits=1):
            return float(self._predict_prob([text])[0])

    def warm_up(self) -> None:
        self.score("hello there")

    async def check(self, text: str, language: str | None) -> Verdict:
        if language not in (None, "en") or has_cjk(text) or not re.search(r"[A-Za-z]", text):
            return Verdict(False, checker=self.name)
        started = time.perf_counter()
        probability = await asyncio.to_thread(self.score, text)
        flagged = probability >= self.threshold
        return Verdict(flagged, ("harassment",) if flagged else (), self.name,
                       elapsed_ms=(time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        pass


class ModerationEndpoint:
    """POST {base_url}/moderations {"model", "input"} -> results[0].flagged / categories."""

    name = "endpoint"

    def __init__(self, base_url: str, *, model: str = "omni-moderation-latest",
                 api_key: str | None = None, timeout_s: float = 0.8,
                 fail_open: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.fail_open = fail_open
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        self.failures = 0

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp  # here, not at import: the pipeline stays free of HTTP code until used

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def check(self, text: str, language: str | None) -> Verdict:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self._post(text)
            verdict = _parse_moderation(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # down, slow, or nonsense: the call goes on
            self.failures += 1
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)[:200]
            log.warning("moderation endpoint %s: %s (failing %s)", self.base_url, reason,
                        "open" if self.fail_open else "closed")
            if self.fail_open:
                verdict = Verdict(False, error=reason)
            else:
                verdict = Verdict(True, ("moderation_unavailable",), error=reason)
        return Verdict(verdict.flagged, verdict.categories, self.name, verdict.error,
                       (time.perf_counter() - started) * 1000)

    async def _post(self, text: str) -> Any:
        async with self._client().post(f"{self.base_url}/moderations", headers=self._headers,
                                       json={"model": self.model, "input": text}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"answered {resp.status}")
            return await resp.json(content_type=None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _parse_moderation(data: Any) -> Verdict:
    try:
        result = data["results"][0]
        flagged = bool(result["flagged"])
        categories = result.get("categories") or {}
    except (KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(f"malformed moderation answer: {exc!r}") from None
    if not isinstance(categories, dict):
        categories = {}
    names = tuple(sorted(k.replace("/", "_").replace("-", "_")
                         for k, v in categories.items() if v))
    return Verdict(flagged, names if flagged else ())


class ModerationPipeline:
    """Word lists first (a hit needs nothing else); then the others concurrently."""

    name = "moderation"

    def __init__(self, word_list: WordListModerator | None,
                 others: Sequence[Moderator] = ()) -> None:
        self.word_list = word_list
        self.others = list(others)

    async def check(self, text: str, language: str | None) -> Verdict:
        started = time.perf_counter()
        if self.word_list is not None:
            verdict = await self.word_list.check(text, language)
            if verdict.flagged:
                return verdict
        if not self.others:
            return Verdict(False, elapsed_ms=(time.perf_counter() - started) * 1000)
        verdicts = await asyncio.gather(*(m.check(text, language) for m in self.others))
        flagged = [v for v in verdicts if v.flagged]
        categories: list[str] = []
        for v in flagged:
            categories.extend(c for c in v.categories if c not in categories)
        errors = "; ".join(v.error for v in verdicts if v.error) or None
        return Verdict(bool(flagged), tuple(categories),
                       "+".join(v.checker for v in flagged), errors,
                       (time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        for moderator in self.others:
            await moderator.close()
