"""The embedded llama.cpp model in a child process of its own.

In the server's process every generated token needs the GIL a dozen times (llama-cpp-python's
streaming is Python around many small C calls), and the event loop (RTP, Opus, VAD for every
call) holds it often: measured on 2 cores, a token took 25-70 ms in-process against 12-22 ms
alone, so the first sentence of every reply came ~100-200 ms later. In its own process the
model computes at its own pace; the server only reads finished pieces of text from a pipe.

Protocol (JSON lines): the parent writes `{"id", "messages", "max_tokens", "temperature"}` or
`{"stop": id}` to the child's stdin; the child answers each request with `{"id", "delta"}` lines
and one `{"id", "done": true}` or `{"id", "error"}`. A child that dies fails the generations in
progress and is started again for the next one.

Several calls' replies share the one context in turn order, sentence by sentence: the child
runs one reply at a time, and at the end of a sentence, while another reply still waits for
its first sentence, it parks the running one (its llama.cpp state, ~10 ms for SmolLM2) and
runs that one. So with three callers finishing at once, each hears a first sentence after
about three first sentences' worth of tokens, not after the whole replies queued before it
(first-come: the third waited for two complete replies, 60 tokens each).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..worker import ModelWorker
from .base import ChatMessage, LLMError
from .tools import Tool

_DONE = object()
START_TIMEOUT_S = 60.0


class LlamaProcessModel:
    """`LlamaCppModel`'s behaviour (same model, same prompt fitting) out of the GIL's way."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        state_cache_bytes: int = 0,
        worker: ModelWorker | None = None,
        interleave: bool = True,
    ) -> None:
        from .llama_local import smollm2_gguf_path

        self._path = model_path or smollm2_gguf_path()
        self.name = self._path.stem
        self.supports_tools = False  # the embedded chat template has no function calling
        self._args = [str(self._path), str(n_ctx), str(n_threads), str(state_cache_bytes),
                      "1" if interleave else "0"]
        self._worker = worker  # unused: the child orders the generations (kept for the API)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # start/stop of the child vs a generation
        self._write_lock = threading.Lock()  # one request line at a time on the child's stdin
        self._ids = itertools.count(1)
        self._pending: dict[int, Callable[[Any], None]] = {}  # generation id -> its push
        self._owner: dict[int, subprocess.Popen[bytes]] = {}
        self._unfinished: set[int] = set()  # sent, and the child has not said done yet
        started = time.perf_counter()
        self._start()
        self.load_s = time.perf_counter() - started
        self.restarts = 0

    # ---- the child process ----------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, *self._args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        )
        assert proc.stdout is not None
        ready = _read(proc.stdout, START_TIMEOUT_S)  # the model is loaded
        if ready is None or not ready.get("ready"):
            proc.kill()
            proc.wait()
            detail = ready.get("error") if ready else "exited"
            raise LLMError(f"local LLM process failed to start: {detail}")
        self._proc = proc
        threading.Thread(target=self._read_answers, args=(proc,), name="llm-answers",
                         daemon=True).start()
        return proc

    def _child(self) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.restarts += 1
                return self._start()
            return self._proc

    # ---- LanguageModel ----------------------------------------------------------------------

    async def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float,
        tools: Sequence[Tool] = (),
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Any] = asyncio.Queue()

        def push(item: Any) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        request = {"messages": list(messages), "max_tokens": max_tokens,
                   "temperature": temperature}
        gen_id = await asyncio.to_thread(self._send, request, push)  # may (re)start the child
        finished = False
        try:
            while True:
                item = await deltas.get()
                if item is _DONE:
                    finished = True
                    break
                if isinstance(item, LLMError):
                    finished = True
                    raise item
                yield item
        finally:
            self._pending.pop(gen_id, None)
            self._owner.pop(gen_id, None)
            if not finished:  # the child stops it at its next token (barge-in, hang-up)
                self._stop_generation(gen_id)

    @property
    def idle(self) -> bool:
        """No generation in progress in the child (a stopped one counts until it stopped)."""
        return not self._unfinished

    def _send(self, request: dict[str, Any], push: Callable[[Any], None]) -> int:
        """Hand a request to the child; its answers go to `push` (from the reader thread)."""
        gen_id = next(self._ids)
        proc = self._child()
        self._pending[gen_id] = push
        self._owner[gen_id] = proc
        self._unfinished.add(gen_id)
        assert proc.stdin is not None
        try:
            with self._write_lock:
                _write(proc.stdin, {"id": gen_id, **request})
        except OSError as exc:
            self._pending.pop(gen_id, None)
            self._owner.pop(gen_id, None)
            self._unfinished.discard(gen_id)
            raise LLMError(f"local LLM process gone: {exc}") from exc
        return gen_id

    def _stop_generation(self, gen_id: int) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with self._write_lock:
                _try_write(proc.stdin, {"stop": gen_id})

    def _read_answers(self, proc: subprocess.Popen[bytes]) -> None:
        """The child's answers, each to its generation's `push` (one thread per child)."""
        assert proc.stdout is not None
        while True:
            try:
                reply = _read(proc.stdout, None)
            except ValueError:  # a line cut short: the child died while writing it
                reply = None
            if reply is None:
                break
            if "delta" not in reply:
                self._unfinished.discard(reply.get("id", -1))
            push = self._pending.get(reply.get("id", -1))
            if push is None:
                continue  # a generation nobody waits for any more
            if "delta" in reply:
                push(reply["delta"])
            elif reply.get("done"):
                push(_DONE)
            elif "error" in reply:
                push(LLMError(f"local LLM failed: {reply['error']}"))
        self._unfinished.difference_update(
            [g for g, owner in list(self._owner.items()) if owner is proc])
        for gen_id, push in list(self._pending.items()):  # the child exited
            if self._owner.get(gen_id) is proc:
                push(LLMError("local LLM process exited during a reply"))

    def warm_up(self, system_prompt: str) -> None:
        """Evaluate the system prompt once (blocking; at start-up only), so calls start with
        it in the child's cache."""
        done = threading.Event()
        self._send({"messages": [{"role": "system", "content": system_prompt},
                                 {"role": "user", "content": "Hi"}],
                    "max_tokens": 1, "temperature": 0.0},
                   lambda item: done.set() if item is _DONE or isinstance(item, LLMError)
                   else None)
        done.wait(START_TIMEOUT_S)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            await asyncio.to_thread(_stop, proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        try:
            proc.stdin.close()  # the child's loop ends at EOF
        except OSError:
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _write(stream: IO[bytes], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


def _try_write(stream: IO[bytes], message: dict[str, Any]) -> bool:
    try:
        _write(stream, message)
        return True
    except OSError:
        return False


def _read(stream: IO[bytes], timeout_s: float | None) -> dict[str, Any] | None:
    """One JSON line, or None at EOF (the child exited). `timeout_s` bounds the start only."""
    if timeout_s is not None:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        line = result[0] if result else b""
    else:
        line = stream.readline()
    if not line:
        return None
    value: dict[str, Any] = json.loads(line)
    return value


# ---- the child's side ---------------------------------------------------------------------


SENTENCE_END = (".", "!", "?", "\n", "\u3002", "\uff01", "\uff1f")


class _Reply:
    """One generation in the child: its text stream and, while another runs, its place."""

    def __init__(self, gen_id: int, chunks: Iterator[str]) -> None:
        self.id = gen_id
        self.chunks = chunks
        self.first_sentence = False  # its first sentence is out
        self.parked: Any = None


def _serve(model_path: str, n_ctx: int, n_threads: int, state_cache_bytes: int,
           interleave: bool = True) -> None:
    """Runs in the child: load the model, then answer requests from stdin until EOF.
    `interleave` false: each reply runs whole, first come first served."""
    import queue

    from .llama_local import LlamaCppModel

    out = sys.stdout.buffer
    try:
        model = LlamaCppModel(Path(model_path), n_ctx=n_ctx, n_threads=n_threads,
                              state_cache_bytes=state_cache_bytes)
    except Exception as exc:  # the parent reports it
        _write(out, {"error": f"{type(exc).__name__}: {exc}"})
        return
    _write(out, {"ready": True})
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    stopped: set[int] = set()

    def read_stdin() -> None:
        for line in sys.stdin.buffer:
            message = json.loads(line)
            if "stop" in message:
                stopped.add(int(message["stop"]))
            else:
                requests.put(message)
        requests.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    replies: dict[int, _Reply] = {}  # in arrival order: turn order
    running: _Reply | None = None

    def take(message: dict[str, Any] | None) -> bool:
        if message is None:
            return False
        gen_id = int(message["id"])
        replies[gen_id] = _Reply(gen_id, model.start(
            message["messages"], message["max_tokens"], message["temperature"]))
        return True

    while True:
        try:
            if not replies and not take(requests.get()):
                return
            while not requests.empty():
                if not take(requests.get_nowait()):
                    return
        except queue.Empty:
            pass
        for gen_id in [g for g in replies if g in stopped]:
            del replies[gen_id]
            stopped.discard(gen_id)
            _write(out, {"id": gen_id, "done": True})
        if not replies:
            continue
        # Turn order: the oldest reply still without its first sentence, else the oldest.
        reply = next((r for r in replies.values() if not r.first_sentence),
                     next(iter(replies.values())))
        if reply is not running:
            if running is not None and running.id in replies:
                running.parked = model.park()
            if reply.parked is not None:
                model.resume(reply.parked)
                reply.parked = None
            running = reply
        try:
            for text in reply.chunks:
                _write(out, {"id": reply.id, "delta": text})
                if reply.id in stopped:
                    break
                if not interleave:
                    continue
                if text.rstrip().endswith(SENTENCE_END) or "\n" in text:
                    reply.first_sentence = True
                    if len(replies) > 1 or not requests.empty():
                        break  # a sentence out: another reply may go on now
                elif reply.first_sentence and not requests.empty():
                    break  # a new turn waits for its first sentence
            else:
                del replies[reply.id]
                stopped.discard(reply.id)
                _write(out, {"id": reply.id, "done": True})
        except Exception as exc:  # one bad request must not end the child
            replies.pop(reply.id, None)
            running = None
            _write(out, {"id": reply.id, "error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
           sys.argv[5:6] != ["0"])
