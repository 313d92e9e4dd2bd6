"""The shared transcript check tolerates a misheard word but not a different sentence."""

from __future__ import annotations

import pytest

from support import speech

QUESTION = "How many legs does a spider have?"


@pytest.mark.parametrize("heard", [
    "How many legs does a spider have?",
    "How many lenses does a spider hand?",  # heard on a busy CI machine (issue 24)
    "how many legs does the spider have",
    "How many legs does a spider have 8?",
])
def test_a_misheard_word_or_two_still_counts_as_heard(heard: str) -> None:
    speech.assert_heard(heard, QUESTION)


@pytest.mark.parametrize("heard", ["", "What is the weather like today?", "Spider."])
def test_silence_or_another_sentence_does_not(heard: str) -> None:
    with pytest.raises(AssertionError):
        speech.assert_heard(heard, QUESTION)


def test_other_scripts_compare_by_letters() -> None:
    speech.assert_heard("我想知道现在几点", "我想知道现在几点了。", min_ratio=0.5, min_words=0.0)
    speech.assert_heard("Ich möchte gern wissen, wie spät es ist.",
                        "Ich möchte gerne wissen, wie spät es jetzt ist.")
