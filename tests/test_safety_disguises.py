"""Disguised abuse, threats and self-harm in every supported language are flagged; ordinary
sentences that merely look like them pass. The word lists and the real alt-profanity-check
classifier (extra 'safety'), no mocks. Also: each check stays in the microseconds."""

from __future__ import annotations

import time

import pytest

from callbot.pipeline.safety.moderation import (
    ModerationPipeline,
    ProfanityClassifier,
    WordListModerator,
)
from callbot.pipeline.safety.normalise import classifier_text, fold, latin_part
from support.safety_sets import DISGUISED, ORDINARY

LISTS = WordListModerator()

@pytest.mark.parametrize(("language", "text", "category"), DISGUISED)
def test_disguised_abuse_is_flagged_in_each_language(language: str, text: str,
                                                      category: str) -> None:
    found = LISTS.match(text)
    assert category in found, (language, text, fold(text), found)


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_passes(text: str) -> None:
    assert LISTS.match(text) == (), (text, fold(text))


def test_folding_undoes_the_text_disguises() -> None:
    assert fold("ＦＵＣＫ") == "fuck"
    assert fold("Ѕсunthоrре") == "scunthorpe"  # Cyrillic look-alikes
    assert fold("f . u . c . k") == "fuck"
    assert fold("b1 b2 vitamins") == "b1 b2 vitamins"  # numbers stay numbers
    assert classifier_text(fold("sh1t $tuff fuuuuck")) == "shit stuff fuck"
    assert latin_part("you are 傻 stupid") == "you are   stupid"


@pytest.mark.skipif(not ProfanityClassifier.available(), reason="extra 'safety' not installed")
async def test_english_abuse_with_a_chinese_word_reaches_the_classifier() -> None:
    classifier = ProfanityClassifier(0.85)
    # Not on any list: only the classifier can catch it, and it used to skip any CJK text.
    abuse = "you worthless piece of garbage, go screw yourself 笨蛋"
    assert LISTS.match(abuse) == ()
    verdict = await classifier.check(abuse, "zh")
    assert verdict.flagged, classifier.score(latin_part(abuse))
    assert not (await classifier.check("请问 how many legs does a spider have", "zh")).flagged
    pipeline = ModerationPipeline(LISTS, [classifier])
    assert (await pipeline.check("sh1tty worthless id10t 你好", "en")).flagged


def test_a_check_takes_microseconds_even_on_crafted_text() -> None:
    texts = [t for _, t, _ in DISGUISED] + ORDINARY
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            LISTS.match(text)
    per_check_us = (time.perf_counter() - started) / (rounds * len(texts)) * 1e6
    print(f"\nword-list check: {per_check_us:.0f} µs per turn "
          f"({len(texts)} turns x {rounds}, shared 2-core machine)")
    assert per_check_us < 2000, per_check_us  # generous: the machine is shared
    # Inputs built to make a backtracking regex explode stay linear.
    for crafted in ("ki" + "l1" * 5000 + "x", "a" * 20000, "f u " * 5000, "傻" * 20000,
                    "i will " * 3000):
        started = time.perf_counter()
        LISTS.match(crafted)
        assert time.perf_counter() - started < 0.5, crafted[:20]
