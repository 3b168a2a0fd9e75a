"""Line assembly across chunks, and secret masking on whole lines."""

from __future__ import annotations

from cuttle.tentacle.execution.masking import MASK, LineAssembler, Masker


def test_lines_split_across_chunks_are_reassembled() -> None:
    assembler = LineAssembler()
    assert assembler.feed(b"hel") == []
    assert assembler.feed(b"lo\nwor") == [b"hello"]
    assert assembler.feed(b"ld\n\nlast") == [b"world", b""]
    assert assembler.flush() == [b"last"]
    assert assembler.flush() == []


def test_overlong_lines_are_cut_not_dropped() -> None:
    assembler = LineAssembler(max_line=10)
    out = assembler.feed(b"a" * 25)
    out += assembler.feed(b"b\n")
    assert out == [b"a" * 10, b"a" * 10, b"aaaaab"]
    assert b"".join(out) == b"a" * 25 + b"b"


def test_secret_split_across_chunks_is_masked_once_assembled() -> None:
    masker = Masker()
    masker.add("hunter2-secret")
    assembler = LineAssembler()
    lines = assembler.feed(b"password is hunter2") + assembler.feed(
        b"-secret twice hunter2-secret\n"
    )
    assert [masker.mask(line) for line in lines] == [b"password is " + MASK + b" twice " + MASK]


def test_overlapping_secrets_mask_the_longest() -> None:
    masker = Masker()
    masker.add("abc")
    masker.add("abcdef")
    assert masker.mask(b"xabcdefx abc") == b"x" + MASK + b"x " + MASK


def test_multiline_secret_is_masked_line_by_line() -> None:
    masker = Masker()
    masker.add("first-line\nsecond-line")
    assert masker.mask(b"second-line") == MASK


def test_too_short_secrets_are_not_masked() -> None:
    masker = Masker()
    masker.add("")
    masker.add("ab")
    assert masker.mask(b"a b ab") == b"a b ab"
    assert masker.mask_text("keep") == "keep"
