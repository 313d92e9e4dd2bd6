"""pipeline.text: cutting a streamed reply into speakable pieces, turn completeness, WER."""

from __future__ import annotations

import pytest

from callbot.pipeline.text import (
    SentenceChunker,
    clean_for_speech,
    normalize_words,
    turn_completeness,
    word_error_rate,
    word_errors,
)


def stream(chunker: SentenceChunker, text: str, step: int = 3) -> list[str]:
    """Push `text` a few characters at a time, as an LLM stream would; then flush."""
    pieces: list[str] = []
    for i in range(0, len(text), step):
        pieces += chunker.push(text[i : i + step])
    return pieces + chunker.flush()


def test_sentences_are_cut_as_soon_as_they_end() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Spiders have eight legs") == []
    assert chunker.push(".") == []  # no whitespace yet: could still be "8.5"
    assert chunker.push(" They spin") == ["Spiders have eight legs."]
    assert chunker.push(" webs! Do you") == ["They spin webs!"]
    assert chunker.flush() == ["Do you"]
    assert chunker.flush() == []


def test_whole_reply_streamed_in_small_deltas() -> None:
    text = "Sure. Spiders have eight legs! Would you like to know more? I can tell you."
    assert stream(SentenceChunker(), text) == [
        "Sure.", "Spiders have eight legs!", "Would you like to know more?", "I can tell you.",
    ]


def test_first_clause_is_cut_at_a_comma_after_five_words() -> None:
    chunker = SentenceChunker()
    assert chunker.push("The answer to your") == []
    assert chunker.push(" question, I think") == ["The answer to your question,"]
    assert chunker.push(", is eight. Also, ") == ["I think, is eight."]
    # Only the first piece of a reply is cut at a comma; later ones wait for the sentence end.
    assert chunker.push("spiders are not insects, you see") == []
    assert chunker.flush() == ["Also, spiders are not insects, you see"]


def test_short_first_clause_is_not_cut() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Yes, of course ") == []  # two words before the comma
    assert chunker.push("they do.") == []
    assert chunker.flush() == ["Yes, of course they do."]


def test_min_words_setting() -> None:
    assert SentenceChunker(first_clause_min_words=2).push("Yes sir, of course") == ["Yes sir,"]


def test_decimal_point_is_not_a_sentence_end() -> None:
    assert stream(SentenceChunker(), "It is 3.5 meters long. Version 2.0 is out.") == [
        "It is 3.5 meters long.", "Version 2.0 is out.",
    ]


def test_closing_quote_stays_with_its_sentence() -> None:
    assert stream(SentenceChunker(), 'He said "no." Then he left.') == [
        'He said "no."', "Then he left.",
    ]


def test_markdown_and_emoji_are_stripped() -> None:
    text = "**Great** question! 🕷️ Here is `code` and _more_. # Heading > quote"
    pieces = stream(SentenceChunker(), text)
    assert [normalize_words(p) for p in pieces] == [
        ["great", "question"], ["here", "is", "code", "and", "more"], ["heading", "quote"],
    ]
    for piece in pieces:
        assert piece.isascii(), piece  # the emoji and its variation selector are gone
        assert not set(piece) & set("*_#`>"), piece
    assert clean_for_speech("  a   **b**  ") == "a b"
    assert stream(SentenceChunker(), "** ** ") == []  # nothing speakable: no empty piece


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("How many legs does a spider have?", "question"),
        ("Hello there.", "incomplete"),
        ("Hello, Sarah.", "incomplete"),  # a greeting with a name (or "there" misheard)
        ("Hello Nair", "incomplete"),
        ("Hello, I need help.", "statement"),
        ("hello", "incomplete"),
        ("Um", "incomplete"),
        ("m", "incomplete"),  # Whisper's "Hmm..." before the words: a filler, not a turn
        ("Mm.", "incomplete"),
        ("Erm,", "incomplete"),
        ("Ah.", "incomplete"),
        ("I want to book a table and", "incomplete"),
        ("My name is", "incomplete"),
        ("Let me think,", "incomplete"),
        ("", "incomplete"),
        ("   ", "incomplete"),
        ("Book a table for two.", "statement"),
        ("Hello there, how are you?", "question"),
        ("Thank you", "statement"),
    ],
)
def test_turn_completeness(text: str, kind: str) -> None:
    assert turn_completeness(text) == kind


def test_normalize_words() -> None:
    assert normalize_words("Ten of clubs, 7 of hearts! It's COLD-hearted.") == [
        "ten", "of", "clubs", "seven", "of", "hearts", "it's", "cold", "hearted",
    ]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "errors", "words"),
    [
        ("go forward ten meters", "Go forward, 10 meters.", 0, 4),
        ("go forward ten meters", "go forward meters", 1, 4),  # deletion
        ("go forward ten meters", "go go forward ten meters", 1, 4),  # insertion
        ("go forward ten meters", "go backward ten meters", 1, 4),  # substitution
        ("go forward ten meters", "", 4, 4),
        ("a b c d", "a x c", 2, 4),
    ],
)
def test_word_errors(reference: str, hypothesis: str, errors: int, words: int) -> None:
    assert word_errors(reference, hypothesis) == (errors, words)
    assert word_error_rate(reference, hypothesis) == pytest.approx(errors / words)


def test_word_error_rate_of_empty_reference_does_not_divide_by_zero() -> None:
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "extra words") == 2.0
