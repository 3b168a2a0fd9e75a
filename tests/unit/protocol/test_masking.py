"""Masking secrets in output, the same on the Tentacle and the server."""

from __future__ import annotations

from cuttle.protocol.masking import MASK, Masker


def test_overlapping_secrets_mask_the_longest() -> None:
    masker = Masker()
    masker.add("abc")
    masker.add("abcdef")
    assert masker.mask(b"xabcdefx abc") == b"x" + MASK + b"x " + MASK


def test_multiline_secret_is_masked_line_by_line_and_keeps_the_line_count() -> None:
    masker = Masker(["first-line\nsecond-line"])
    assert masker.mask(b"second-line") == MASK
    # Masking a run of lines must never swallow a newline: the run's count would be wrong.
    run = b"a first-line\nsecond-line b"
    masked = masker.mask(run)
    assert masked == b"a " + MASK + b"\n" + MASK + b" b"
    assert masked.count(b"\n") == run.count(b"\n")


def test_too_short_secrets_are_not_masked() -> None:
    masker = Masker()
    masker.add("")
    masker.add("ab")
    assert not masker
    assert masker.mask(b"a b ab") == b"a b ab"
    assert masker.mask_text("keep") == "keep"


def test_secrets_given_at_construction_are_masked_in_text_too() -> None:
    masker = Masker(["s3cret", "other-value"])
    assert masker
    assert masker.mask_text("x s3cret y other-value") == "x ******** y ********"
