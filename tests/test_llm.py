"""The LLM engines: embedded llama.cpp, the OpenAI-compatible client against a real
llama-cpp-python server on loopback, and the ModelWorker they run on."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callbot.pipeline.engines import Engines
from callbot.pipeline.llm.base import ChatMessage, LLMError
from callbot.pipeline.llm.llama_local import smollm2_gguf_path
from callbot.pipeline.llm.openai_compat import OpenAICompatibleModel
from callbot.pipeline.worker import PRIORITY_BACKGROUND, PRIORITY_URGENT, ModelWorker
from tests.conftest import free_port

QUESTION: list[ChatMessage] = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "How many legs does a spider have?"},
]
LONG_TASK: list[ChatMessage] = [
    {"role": "user", "content": "Count from 1 to 100, separated by commas."},
]


async def collect(stream: object) -> list[str]:
    return [delta async for delta in stream]  # type: ignore[attr-defined]


# ---- embedded llama.cpp ---------------------------------------------------------------------


async def test_embedded_model_streams_a_reply(engines: Engines) -> None:
    deltas = await collect(engines.llm.stream_chat(QUESTION, max_tokens=24, temperature=0.0))
    assert len(deltas) >= 3, deltas  # streamed token by token, not in one piece
    assert all(isinstance(d, str) and d for d in deltas)
    reply = "".join(deltas)
    assert len(reply.split()) >= 3, reply


async def test_closing_the_stream_stops_generation(engines: Engines) -> None:
    worker: ModelWorker = engines.llm._worker  # type: ignore[attr-defined]
    stream = engines.llm.stream_chat(LONG_TASK, max_tokens=300, temperature=0.0)
    got = []
    async for delta in stream:
        got.append(delta)
        if len(got) == 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    # Counting to 100 is ~300 tokens (seconds of work); stopping takes one token.
    for _ in range(150):  # 1.5 s at most
        if worker.idle:
            break
        await asyncio.sleep(0.01)
    assert worker.idle, "generation went on after the stream was closed"
    # The shared model still answers.
    started = time.monotonic()
    again = await collect(engines.llm.stream_chat(QUESTION, max_tokens=8, temperature=0.0))
    assert again and time.monotonic() - started < 10


# ---- OpenAI-compatible client against a real llama-cpp-python server ------------------------



def wait_for_server(proc: subprocess.Popen[bytes], url: str, log: Path,
                    timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"llama_cpp.server exited ({proc.returncode}): {tail}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server did not answer on {url} in {timeout_s} s")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible server (llama-cpp-python[server]) on loopback; its /v1 URL."""
    port = free_port()
    # Its log goes to a file: llama.cpp writes >64 KB while loading, which would fill a pipe
    # nobody reads and block the server.
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with running_llama_server(port, log, "--n_threads", "1") as url:
        yield url


@contextlib.contextmanager
def running_llama_server(port: int, log: Path, *args: str) -> Iterator[str]:
    """llama_cpp.server with the embedded SmolLM2 on loopback `port`, logging to `log`;
    yields its /v1 URL and stops the process (by its handle) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
             "--host", "127.0.0.1", "--port", str(port), "--verbose", "False", *args],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_server(proc, f"http://127.0.0.1:{port}/v1/models", log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_openai_compatible_server_streams_a_reply(llama_server: str) -> None:
    model = OpenAICompatibleModel(llama_server, "smollm2")
    try:
        deltas = await collect(model.stream_chat(QUESTION, max_tokens=16, temperature=0.0))
        assert len(deltas) >= 3, deltas
        assert len("".join(deltas).split()) >= 3
        # One client, several requests (the session is reused).
        again = await collect(model.stream_chat(QUESTION, max_tokens=4, temperature=0.0))
        assert again
    finally:
        await model.close()


async def test_unreachable_server_raises_llm_error() -> None:
    base = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    model = OpenAICompatibleModel(base, "smollm2")
    try:
        with pytest.raises(LLMError, match="unreachable") as info:
            await collect(model.stream_chat(QUESTION, max_tokens=4, temperature=0.0))
        assert base in str(info.value)
    finally:
        await model.close()


async def test_wrong_path_raises_llm_error(llama_server: str) -> None:
    model = OpenAICompatibleModel(llama_server.replace("/v1", "/nothing/v1"), "smollm2")
    try:
        with pytest.raises(LLMError, match="404"):
            await collect(model.stream_chat(QUESTION, max_tokens=4, temperature=0.0))
    finally:
        await model.close()


# ---- ModelWorker --------------------------------------------------------------------------


async def test_worker_runs_urgent_jobs_before_background_ones() -> None:
    worker = ModelWorker("test-priority")
    gate = threading.Event()
    order: list[str] = []
    try:
        blocker = worker.submit(gate.wait, 5)
        await asyncio.sleep(0.05)  # the blocker is running: the rest queue up
        assert not worker.idle and worker.backlog == 1
        jobs = [
            worker.submit(order.append, "partial-1", priority=PRIORITY_BACKGROUND),
            worker.submit(order.append, "final-1", priority=PRIORITY_URGENT),
            worker.submit(order.append, "partial-2", priority=PRIORITY_BACKGROUND),
            worker.submit(order.append, "final-2", priority=PRIORITY_URGENT),
        ]
        assert worker.backlog == 5
        gate.set()
        assert await blocker is True
        await asyncio.gather(*jobs)
        assert order == ["final-1", "final-2", "partial-1", "partial-2"]  # FIFO within a level
        assert worker.idle
    finally:
        gate.set()
        worker.close()


async def test_worker_skips_a_cancelled_job() -> None:
    worker = ModelWorker("test-cancel")
    gate = threading.Event()
    ran: list[str] = []
    try:
        blocker = worker.submit(gate.wait, 5)
        await asyncio.sleep(0.05)
        skipped = worker.submit(ran.append, "skipped")
        kept = worker.submit(ran.append, "kept")
        skipped.cancel()  # the caller gave up (barge-in) before the job started
        gate.set()
        await blocker
        await kept
        assert ran == ["kept"]
        assert skipped.cancelled()
    finally:
        gate.set()
        worker.close()


async def test_worker_returns_results_and_raises_errors() -> None:
    worker = ModelWorker("test-errors")
    try:
        assert await worker.submit(sum, [1, 2, 3]) == 6
        with pytest.raises(ZeroDivisionError):
            await worker.submit(lambda: 1 / 0)
        assert await worker.submit(str.upper, "still alive") == "STILL ALIVE"
    finally:
        worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(sum, [1])


# ---- the embedded model in its own process ---------------------------------------------------


async def test_embedded_model_runs_in_a_child_process_by_default(engines: Engines) -> None:
    from callbot.pipeline.llm.llama_process import LlamaProcessModel

    assert isinstance(engines.llm, LlamaProcessModel)
    child = engines.llm._proc  # type: ignore[attr-defined]
    assert child is not None and child.poll() is None


async def test_a_dead_llm_process_fails_one_reply_and_is_restarted() -> None:
    from callbot.pipeline.llm.llama_process import LlamaProcessModel

    model = LlamaProcessModel()
    try:
        stream = model.stream_chat(LONG_TASK, max_tokens=300, temperature=0.0)
        got = []
        with pytest.raises(LLMError, match="exited"):
            async for delta in stream:
                got.append(delta)
                if len(got) == 2:  # the child dies in the middle of a reply
                    model._proc.kill()  # type: ignore[union-attr]
        assert got
        reply = "".join(await collect(model.stream_chat(QUESTION, max_tokens=16,
                                                        temperature=0.0)))
        assert len(reply.split()) >= 3, reply  # the next turn is answered by a new child
        assert model.restarts == 1
    finally:
        await model.close()
    assert model._proc is None


async def test_process_and_thread_models_give_the_same_reply() -> None:
    from callbot.pipeline.llm.llama_local import LlamaCppModel
    from callbot.pipeline.llm.llama_process import LlamaProcessModel

    replies = []
    for engine in (LlamaProcessModel, LlamaCppModel):
        model = engine()
        try:
            replies.append("".join(await collect(
                model.stream_chat(QUESTION, max_tokens=16, temperature=0.0))))
        finally:
            await model.close()
    assert replies[0] == replies[1] and replies[0], replies


async def test_state_cache_brings_back_each_calls_history_without_logits() -> None:
    """Two calls take turns: the second turn of the first call starts from its own saved
    state (not the other call's prompt), and no saved state carries the logits (they made
    each entry 100 MB and were never used)."""
    from callbot.pipeline.llm.llama_local import LlamaCppModel

    capacity = 64 << 20
    model = LlamaCppModel(state_cache_bytes=capacity)
    loads: list[int] = []
    load_state = model._llama.load_state

    def counting_load(state: Any) -> None:
        loads.append(state.n_tokens)
        load_state(state)

    model._llama.load_state = counting_load  # type: ignore[method-assign]
    try:
        first: list[ChatMessage] = [*QUESTION]
        first.append({"role": "assistant", "content": "".join(await collect(
            model.stream_chat(first, max_tokens=16, temperature=0.0)))})
        other: list[ChatMessage] = [{"role": "user", "content": "Name a colour."}]
        assert "".join(await collect(model.stream_chat(other, max_tokens=8, temperature=0.0)))
        assert loads == []  # nothing cached shares more with it than the last prompt did
        first.append({"role": "user", "content": "And how many eyes?"})
        reply = "".join(await collect(model.stream_chat(first, max_tokens=16,
                                                        temperature=0.0)))
        assert reply.strip()
        assert len(loads) == 1 and loads[0] > 20, loads  # the first call's history came back
        cache = model._llama.cache
        assert cache is not None and 0 < cache.cache_size <= capacity
        states = list(cache.cache_state.values())
        assert len(states) == 3 and all(state.scores.size == 0 for state in states)
    finally:
        await model.close()


def test_a_parked_reply_resumes_exactly_where_it_was() -> None:
    """Another reply runs in the middle of one (its state parked, then resumed): greedy
    decoding gives the very same text as without the interruption."""
    from callbot.pipeline.llm.llama_local import LlamaCppModel

    colours: list[ChatMessage] = [{"role": "user", "content": "Name three colours."}]
    alone = "".join(LlamaCppModel().start(colours, 32, 0.0))
    model = LlamaCppModel()
    pieces = []
    for i, text in enumerate(model.start(colours, 32, 0.0)):
        pieces.append(text)
        if i == 3:
            parked = model.park()
            assert "".join(model.start(QUESTION, 16, 0.0)).strip()
            model.resume(parked)
    assert "".join(pieces) == alone
