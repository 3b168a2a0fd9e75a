"""Turning pipe chunks into blocks of whole lines: across chunks, overlong lines, counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cuttle.protocol.masking import MASK, Masker
from cuttle.tentacle.execution.lines import Block, LineAssembler


def lines_of(blocks: list[Block]) -> list[bytes]:
    """Blocks line by line; checks each block's count against its text."""
    out: list[bytes] = []
    for text, count in blocks:
        texts = text.split(b"\n")
        assert len(texts) == count
        out.extend(texts)
    return out


def test_lines_split_across_chunks_are_reassembled() -> None:
    assembler = LineAssembler()
    assert assembler.feed(b"hel") == []
    assert assembler.feed(b"lo\nwor") == [(b"hello", 1)]
    assert assembler.feed(b"ld\n\nlast") == [(b"world\n", 2)]
    assert lines_of(assembler.flush()) == [b"last"]
    assert assembler.flush() == []


def test_a_chunk_of_many_lines_is_one_block() -> None:
    assembler = LineAssembler()
    assert assembler.feed(b"1\n2\n3\n4") == [(b"1\n2\n3", 3)]
    assert assembler.feed(b"\n") == [(b"4", 1)]


def test_overlong_lines_are_cut_not_dropped() -> None:
    assembler = LineAssembler(max_line=10)
    out = assembler.feed(b"a" * 25)
    out += assembler.feed(b"b\nshort\n" + b"c" * 12 + b"\nend\n")
    assert lines_of(out) == [b"a" * 10, b"a" * 10, b"aaaaab", b"short", b"c" * 10, b"cc", b"end"]


@given(st.lists(st.binary(max_size=40), max_size=30))
def test_any_chunking_yields_exactly_the_lines(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    assembler = LineAssembler()
    out: list[Block] = []
    for chunk in chunks:
        out += assembler.feed(chunk)
    out += assembler.flush()
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()  # a final newline ends the last line; it does not start another
    assert lines_of(out) == expected


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(min_value=1, max_value=17))
def test_overlong_lines_are_cut_and_every_byte_kept(chunks: list[bytes], max_line: int) -> None:
    assembler = LineAssembler(max_line=max_line)
    out: list[Block] = []
    for chunk in chunks:
        out += assembler.feed(chunk)
    out += assembler.flush()
    got = lines_of(out)
    assert all(len(line) <= max_line for line in got)
    assert b"".join(got) == b"".join(chunks).replace(b"\n", b"")


def test_secret_split_across_chunks_is_masked_once_assembled() -> None:
    masker = Masker(["hunter2-secret"])
    assembler = LineAssembler()
    blocks = assembler.feed(b"password is hunter2") + assembler.feed(
        b"-secret twice hunter2-secret\nnext hunter2-secret\n"
    )
    assert [masker.mask(text) for text, _ in blocks] == [
        b"password is " + MASK + b" twice " + MASK + b"\nnext " + MASK
    ]
