"""The loop cut for the embedded LLM's stream (pipeline/llm/repetition.py): pure text."""

from __future__ import annotations

import pytest

from callbot.pipeline.llm.repetition import RepetitionCut


def cut_at(text: str, step: int = 1) -> str | None:
    loop = RepetitionCut()
    for i in range(0, len(text), step):
        if loop.looping(text[i:i + step]):
            return loop.text
    return None


@pytest.mark.parametrize("text", ["请" * 28, "the the the the the", "你可以看到，" * 4,
                                  "Yes. Yes. Yes. Yes. Yes."])
def test_loops_are_cut_early(text: str) -> None:
    stopped = cut_at(text, step=2)
    assert stopped is not None and len(stopped) < len(text)


@pytest.mark.parametrize("text", ["Paris is the capital of France.", "It costs 1000000 dollars...",
                                  "我很好。你呢？", "Mississippi and a bookkeeper.",
                                  "Die Hauptstadt von Deutschland ist Berlin."])
def test_plain_answers_run_to_the_end(text: str) -> None:
    assert cut_at(text) is None
