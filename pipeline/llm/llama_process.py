"""The embedded llama.cpp model in a child process of its own.

In the server's process every generated token needs the GIL a dozen times (llama-cpp-python's
streaming is Python around many small C calls), and the event loop (RTP, Opus, VAD for every
call) holds it often: measured on 2 cores, a token took 25-70 ms in-process against 12-22 ms
alone, so the first sentence of every reply came ~100-200 ms later. In its own process the
model computes at its own pace; the server only reads finished pieces of text from a pipe.

Protocol (JSON lines): the parent writes `{"messages", "max_tokens", "temperature"}` or
`{"stop": true}` to the child's stdin; the child answers each request with `{"delta": text}`
lines and one `{"done": true}` or `{"error": message}`. One generation at a time (the parent's
ModelWorker orders them). A child that dies fails the generation in progress and is started
again for the next one.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
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
    ) -> None:
        from .llama_local import smollm2_gguf_path

        self._path = model_path or smollm2_gguf_path()
        self.name = self._path.stem
        self.supports_tools = False  # the embedded chat template has no function calling
        self._args = [str(self._path), str(n_ctx), str(n_threads), str(state_cache_bytes)]
        self._worker = worker or ModelWorker("llm-llama")
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # start/stop of the child vs a generation
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
        stop = threading.Event()

        def push(item: Any) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        request = {"messages": list(messages), "max_tokens": max_tokens,
                   "temperature": temperature}
        job = self._worker.submit(self._generate, request, push, stop)
        try:
            while True:
                item = await deltas.get()
                if item is _DONE:
                    break
                yield item
            await job  # re-raises a failure of the generation
        except asyncio.CancelledError:
            raise
        except LLMError:
            raise
        except Exception as exc:
            raise LLMError(f"local LLM failed: {exc}") from exc
        finally:
            stop.set()  # the child stops at its next token if we stopped listening
            job.cancel()  # and never starts if it was still queued

    def _generate(self, request: dict[str, Any], push: Any, stop: threading.Event) -> None:
        try:
            proc = self._child()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                _write(proc.stdin, request)
            except OSError as exc:
                raise LLMError(f"local LLM process gone: {exc}") from exc
            stop_sent = False
            while True:
                if stop.is_set() and not stop_sent:
                    stop_sent = _try_write(proc.stdin, {"stop": True})
                reply = _read(proc.stdout, None)
                if reply is None:
                    raise LLMError("local LLM process exited during a reply")
                if "delta" in reply and not stop.is_set():
                    push(reply["delta"])
                elif reply.get("done"):
                    return
                elif "error" in reply:
                    raise LLMError(f"local LLM failed: {reply['error']}")
        finally:
            push(_DONE)

    def warm_up(self, system_prompt: str) -> None:
        """Evaluate the system prompt once (blocking; at start-up only), so calls start with
        it in the child's cache."""
        done = threading.Event()
        self._generate({"messages": [{"role": "system", "content": system_prompt},
                                     {"role": "user", "content": "Hi"}],
                        "max_tokens": 1, "temperature": 0.0},
                       lambda item: done.set() if item is _DONE else None, threading.Event())

    async def close(self) -> None:
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


def _serve(model_path: str, n_ctx: int, n_threads: int, state_cache_bytes: int) -> None:
    """Runs in the child: load the model, then answer requests from stdin until EOF."""
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
    stop = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin.buffer:
            message = json.loads(line)
            if message.get("stop"):
                stop.set()
            else:
                requests.put(message)
        requests.put(None)
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    while (request := requests.get()) is not None:
        stop.clear()
        try:
            model.generate_into(
                request["messages"], request["max_tokens"], request["temperature"],
                lambda text: _write(out, {"delta": text}), stop)
            _write(out, {"done": True})
        except Exception as exc:  # one bad request must not end the child
            _write(out, {"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
