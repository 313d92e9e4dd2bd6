"""A real LLM server that can call tools, for the Realtime function-call tests: llama-cpp-python's
OpenAI-compatible server on loopback, SmolLM2 with the `chatml-function-calling` chat format
(its grammar makes the small model emit a well-formed call when the session's `tool_choice`
names the tool), behind callbot's OpenAI-compatible LLM client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator

import pytest

from callbot.pipeline.engines import Engines
from callbot.pipeline.llm.openai_compat import OpenAICompatibleModel
from callbot.pipeline.settings import ReplySettings
from callbot.signalling.config import CallbotConfig
from tests.conftest import TEST_CONFIG
from tests.test_llm import free_port, running_llama_server

SECRET_WORD = "pineapple"
TOOL_OUTPUT = f"The secret word of the day is {SECRET_WORD}."
# Grammar-constrained sampling is slow on a loaded 2-core machine: allow a reply more time.
TOOL_CONFIG: CallbotConfig = dataclasses.replace(
    TEST_CONFIG, turn=dataclasses.replace(
        TEST_CONFIG.turn, reply=ReplySettings(timeout_s=300, max_tokens=40)))


@pytest.fixture(scope="module")
def tool_llm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama-tools") / "server.log"
    with running_llama_server(port, log, "--n_threads", "2",
                              "--chat_format", "chatml-function-calling") as url:
        yield url


@pytest.fixture(scope="module")
async def tool_engines(engines: Engines, tool_llm_url: str) -> AsyncIterator[Engines]:
    llm = OpenAICompatibleModel(tool_llm_url, "smollm2", timeout_s=300)
    yield Engines(asr=engines.asr, llm=llm, tts=engines.tts)
    await llm.close()
