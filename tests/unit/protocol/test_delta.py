"""rsync-style delta: patch(basis, delta(signature(basis), new)) rebuilds new, whatever the edit."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cuttle.protocol import delta as d


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 - reproducible test data


def _roundtrip(basis: bytes, new: bytes, block_size: int) -> list[d.Op]:
    sig = d.Signature.from_bytes(d.signature(io.BytesIO(basis), block_size).to_bytes())
    chunks = list(d.encode_ops(d.delta(sig, io.BytesIO(new))))
    out = io.BytesIO()
    d.patch(io.BytesIO(basis), d.decode_ops(chunks), out, block_size)
    assert out.getvalue() == new
    return list(d.decode_ops(chunks))


edit = st.tuples(
    st.sampled_from(["insert", "delete", "replace"]),
    st.floats(min_value=0, max_value=1),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=300),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    basis=st.binary(max_size=4000),
    edits=st.lists(edit, max_size=5),
    block_size=st.sampled_from([32, 33, 64, 100, 512]),
)
def test_patch_of_delta_rebuilds_the_new_file_after_random_edits(
    basis: bytes, edits: list[tuple[str, float, bytes, int]], block_size: int
) -> None:
    new = bytearray(basis)
    for kind, where, data, length in edits:
        at = int(where * len(new))
        if kind == "insert":
            new[at:at] = data
        elif kind == "delete":
            del new[at : at + length]
        else:
            new[at : at + len(data)] = data
    _roundtrip(basis, bytes(new), block_size)


@settings(max_examples=100, deadline=None)
@given(basis=st.binary(max_size=200), new=st.binary(max_size=200))
def test_unrelated_short_and_empty_files_roundtrip(basis: bytes, new: bytes) -> None:
    _roundtrip(basis, new, 64)


@settings(max_examples=50, deadline=None)
@given(unit=st.binary(min_size=1, max_size=8), repeat=st.integers(0, 400), cut=st.integers(0, 50))
def test_repetitive_content_roundtrips(unit: bytes, repeat: int, cut: int) -> None:
    basis = unit * repeat
    _roundtrip(basis, basis[cut:] + unit * 3, 32)


def test_an_insertion_costs_about_one_block_plus_the_inserted_bytes() -> None:
    basis = _random_bytes(7, 1 << 20)
    new = basis[:300_000] + b"inserted" + basis[300_000:]
    ops = _roundtrip(basis, new, 4096)
    literal = sum(len(op.data) for op in ops if isinstance(op, d.Literal))
    assert literal <= 4096 + 8
    assert sum(op.count for op in ops if isinstance(op, d.Copy)) >= 255


def test_identical_file_is_one_copy_including_the_short_last_block() -> None:
    basis = _random_bytes(1, 10_000)
    assert _roundtrip(basis, basis, 4096) == [d.Copy(0, 3)]


def test_chunks_hold_whole_ops_and_are_at_least_256_kib_except_the_last() -> None:
    new = _random_bytes(3, 3 * 1024 * 1024 + 5)
    sig = d.signature(io.BytesIO(b""), 4096)
    chunks = list(d.encode_ops(d.delta(sig, io.BytesIO(new))))
    assert all(len(chunk) >= d.CHUNK_SIZE for chunk in chunks[:-1])
    assert all(len(chunk) < 2 * d.CHUNK_SIZE + 16 for chunk in chunks)
    # each chunk decodes on its own: a resumed transfer starts at any chunk
    rebuilt = b"".join(
        op.data for chunk in chunks for op in d.decode_ops([chunk]) if isinstance(op, d.Literal)
    )
    assert rebuilt == new


def test_signature_is_compact_and_survives_serialisation() -> None:
    basis = _random_bytes(2, 100_000)
    sig = d.signature(io.BytesIO(basis), 2048)
    data = sig.to_bytes()
    assert len(data) == 20 + 48 * d.PREFIX_SIZE + 49 * 20
    assert d.Signature.from_bytes(data) == sig


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"xx", "shorter than its header"),
        (b"NOPE" + bytes(16), "expected b'CDS1'"),
    ],
)
def test_malformed_signature_is_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(d.DeltaError, match=message):
        d.Signature.from_bytes(data)


def test_truncated_signature_is_refused() -> None:
    data = d.signature(io.BytesIO(bytes(5000)), 1024).to_bytes()
    with pytest.raises(d.DeltaError, match="expected"):
        d.Signature.from_bytes(data[:-1])


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (b"\x09", "unknown op 9"),
        (b"\x02\x05ab", "runs past the chunk's end"),
        (b"\x01\x80", "cut off"),
        (b"\x01\x00\x00", "zero blocks"),
    ],
)
def test_malformed_delta_chunk_is_refused_naming_where(chunk: bytes, message: str) -> None:
    with pytest.raises(d.DeltaError, match=message):
        list(d.decode_ops([chunk]))


def test_copy_beyond_the_basis_is_refused() -> None:
    with pytest.raises(d.DeltaError, match="basis has 2 blocks"):
        d.patch(io.BytesIO(bytes(100)), [d.Copy(1, 2)], io.BytesIO(), 64)


def test_block_size_out_of_range_is_refused() -> None:
    with pytest.raises(d.DeltaError, match="block size 8"):
        d.signature(io.BytesIO(b"abc"), 8)


def test_verify_sha256_accepts_the_right_hash_and_names_the_wrong_one(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    good = d.sha256_file(path)
    d.verify_sha256(path, good.upper())
    with pytest.raises(d.HashMismatch, match=f"has SHA-256 {good}"):
        d.verify_sha256(path, "0" * 64)


def test_block_size_rule_grows_with_the_file() -> None:
    assert d.choose_block_size(0) == 8192
    assert d.choose_block_size(200 * 1024 * 1024) == 8192
    assert d.choose_block_size(1024**3) == 16384
    assert d.choose_block_size(10**12) == 65536


def test_patch_file_verifies_and_removes_a_wrong_result(tmp_path: Path) -> None:
    basis, out = tmp_path / "basis", tmp_path / "out"
    basis.write_bytes(_random_bytes(5, 50_000))
    new = basis.read_bytes()[:20_000] + b"changed" + basis.read_bytes()[20_000:]
    sig = d.signature_of_file(basis, 4096)
    ops = list(d.delta(sig, io.BytesIO(new)))
    (tmp_path / "new").write_bytes(new)
    d.patch_file(basis, ops, out, 4096, d.sha256_file(tmp_path / "new"))
    assert out.read_bytes() == new
    with pytest.raises(d.HashMismatch):
        d.patch_file(basis, ops, out, 4096, "0" * 64)
    assert not out.exists()
