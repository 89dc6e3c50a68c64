"""Incremental text: whole characters only, stop strings never half-shown."""

from __future__ import annotations

from conversations.inference.detokenize import REPLACEMENT, IncrementalDecoder, StopMatcher

MULTIBYTE = "Café crème, naïve señor 😀🎉👍🏽 日本語のテキスト — ok ✓"


def test_it_never_yields_a_replacement_character_for_multibyte_text(tokenizer):
    ids = tokenizer.encode(MULTIBYTE, add_special_tokens=False)
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    deltas.append(decoder.flush())
    assert all(REPLACEMENT not in d for d in deltas)
    assert "".join(deltas) == MULTIBYTE
    assert any(d == "" for d in deltas), "some tokens end mid-character and must be held back"


def test_it_finds_a_stop_string_split_across_pushes():
    matcher = StopMatcher(("User:",))
    assert matcher.push("Sure, done. Us") == ("Sure, done. ", False)
    assert matcher.push("er: next") == ("", True)


def test_it_releases_a_held_tail_that_turned_out_not_to_be_a_stop():
    matcher = StopMatcher(("User:",))
    assert matcher.push("Use") == ("", False)
    assert matcher.push("ful") == ("Useful", False)
    assert matcher.flush() == ""


def test_it_passes_text_straight_through_without_stop_strings():
    matcher = StopMatcher(())
    assert matcher.push("abc") == ("abc", False)
