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

from .normalise import classifier_text, fold, is_cjk_term, latin_part, term_body
from .wordlists import DEFAULT_WORD_LISTS

if TYPE_CHECKING:
    pass

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


def _compile_regex(term: str) -> re.Pattern[str]:
    """An operator's /regex/ term, matched as written against the folded text."""
    return re.compile(term[1:-1], re.I)


def _is_regex(term: str) -> bool:
    return len(term) > 2 and term.startswith("/") and term.endswith("/")


def _compile_terms(terms: Sequence[str]) -> list[re.Pattern[str]]:
    """All the plain terms of one category as (at most) two alternations: Latin terms as
    whole words, Chinese terms anywhere. One regex per category keeps a check to a few
    microseconds whatever the list length (the engine scans the text once per alternation)."""
    latin = [term_body(t) for t in terms if not is_cjk_term(t)]
    cjk = [term_body(t) for t in terms if is_cjk_term(t)]
    patterns: list[re.Pattern[str]] = []
    if latin:
        patterns.append(re.compile(rf"(?<!\w)(?:{'|'.join(latin)})(?!\w)", re.I))
    if cjk:
        patterns.append(re.compile("|".join(cjk), re.I))
    return patterns


class WordListModerator:
    """Per-language lists, every language checked whatever the call's language (so each
    script's part of mixed text is covered), against the text with its disguises undone
    (see `normalise`)."""

    name = "word_list"

    def __init__(self, lists: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                 extra: Mapping[str, Sequence[str]] | None = None) -> None:
        source = DEFAULT_WORD_LISTS if lists is None else lists
        by_category: dict[str, list[str]] = {}
        regexes: list[tuple[str, re.Pattern[str]]] = []
        groups = [(category, terms) for categories in source.values()
                  for category, terms in categories.items()]
        groups += [("custom", terms) for terms in (extra or {}).values()]
        for category, terms in groups:
            for term in terms:
                if _is_regex(term):
                    regexes.append((category, _compile_regex(term)))
                elif term.strip():
                    by_category.setdefault(category, []).append(term)
        self._patterns: list[tuple[str, re.Pattern[str]]] = [
            (category, pattern) for category, terms in by_category.items()
            for pattern in _compile_terms(terms)]
        self._patterns += regexes

    def match(self, text: str) -> tuple[str, ...]:
        folded = fold(text)
        found: list[str] = []
        for category, pattern in self._patterns:
            if category not in found and pattern.search(folded):
                found.append(category)
        return tuple(found)

    async def check(self, text: str, language: str | None) -> Verdict:
        started = time.perf_counter()
        categories = self.match(text)
        return Verdict(bool(categories), categories, self.name,
                       elapsed_ms=(time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        pass


_LATIN_NOT_ENGLISH = frozenset({"de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "no"})


class ProfanityClassifier:
    """alt-profanity-check (extra 'safety'): English abuse, in the Latin-script part of a
    turn, with its disguises undone."""

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
        # A German/French/Spanish turn is not English: the English model would misread it
        # (the word lists cover those). Any other turn's Latin-script part is scored on its
        # own, so English abuse with a Chinese word in it is still checked.
        if language in _LATIN_NOT_ENGLISH:
            return Verdict(False, checker=self.name)
        latin = classifier_text(fold(latin_part(text))).strip()
        if len(re.findall(r"[a-z]", latin)) < 2:
            return Verdict(False, checker=self.name)
        started = time.perf_counter()
        probability = await asyncio.to_thread(self.score, latin)
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
        # here, not at import: `import callbot.pipeline` stays free of HTTP code (aiohttp)
        from ..remote_http import RemoteClient

        self._client = RemoteClient.for_server(base_url, api_key=api_key, timeout_s=timeout_s)
        self.failures = 0

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
        async with self._client.post("/moderations",
                                     json={"model": self.model, "input": text}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"answered {resp.status}")
            return await resp.json(content_type=None)

    async def close(self) -> None:
        await self._client.aclose()


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
