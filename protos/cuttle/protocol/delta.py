"""rsync-style delta between two versions of a file: signature, delta, patch, wire encoding.

The Tentacle signs the package it has cached (`signature`), the server compares the new version
against that signature (`delta`) and sends only what the Tentacle lacks, the Tentacle rebuilds the
new file from its cached copy (`patch`) and checks the result's SHA-256 (`verify_sha256`) before
anything uses it.

Per block of the basis file the signature holds three things:

- the block's first 24 bytes, its *prefix*: the 16 machine words (8 bytes) that start at its
  offsets 0..15 are the search keys. Reading the new file as words every 16 bytes, a block that
  starts at any offset shows one of its keys in some word, so one `set.intersection` over an
  `array` (C code) finds every candidate offset; a rolling checksum updated per byte in Python
  would be some 50x slower;
- its Adler-32, a cheap second filter;
- the first 16 bytes of its SHA-256, the strong hash that decides a match.

Blocks are compared aligned first (a run of unchanged blocks costs one dictionary lookup and one
Adler-32 per block); only after a mismatch does the search scan forward for the next matching
block, in a window that doubles while nothing matches. The new file is read in bounded pieces:
memory stays around `SEARCH_WINDOW_MAX + READ_SIZE` whatever the file size.

On the wire the ops are encoded in chunks of at least `CHUNK_SIZE` bytes (except the last),
each holding whole ops so a chunk decodes on its own (resuming after the last verified chunk).
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MIN_BLOCK_SIZE = 32
MAX_BLOCK_SIZE = 1024 * 1024
WORD = 8  # a search key is one machine word ("Q")
STRIDE = 16  # the new file is read as a word every STRIDE bytes
PREFIX_SIZE = STRIDE + WORD  # bytes of each block kept in the signature
STRONG_SIZE = 16  # bytes of SHA-256 kept per block: collisions need 2**64 blocks to matter
CHUNK_SIZE = 256 * 1024
MAX_LITERAL = CHUNK_SIZE  # a literal op never exceeds this, so a chunk is < 2 * CHUNK_SIZE
READ_SIZE = 4 * 1024 * 1024
SEARCH_WINDOW_MAX = 4 * 1024 * 1024
_FEW_HITS = 4  # distinct key words in a window up to which array.index beats a Python pass
_COMPACT_AT = 16 * 1024 * 1024  # drop consumed bytes from the read buffer past this offset

_MAGIC = b"CDS1"
_HEADER = struct.Struct("<4sIQI")  # magic, block size, basis size, block count
_OP_COPY = 1
_OP_LITERAL = 2


class DeltaError(ValueError):
    """A signature, delta stream or patch input is malformed or does not fit the basis."""


class HashMismatch(DeltaError):
    """A rebuilt file's SHA-256 is not the expected one: the caller falls back to a full file."""


@dataclass(frozen=True, slots=True)
class Copy:
    """Copy `count` consecutive blocks of the basis, starting at block `first`."""

    first: int
    count: int


@dataclass(frozen=True, slots=True)
class Literal:
    """Bytes of the new file that the basis does not hold."""

    data: bytes


Op = Copy | Literal


@dataclass(frozen=True)
class Signature:
    """Per-block search keys, Adler-32 and strong hashes of a basis file."""

    block_size: int
    file_size: int
    prefixes: bytes  # PREFIX_SIZE bytes per full block (a short last block has none)
    weaks: array[int] = field(repr=False)  # one Adler-32 per block ("I", 32 bits)
    strongs: bytes = field(repr=False)  # STRONG_SIZE bytes per block

    @property
    def block_count(self) -> int:
        """How many blocks the basis has (the last one may be short)."""
        return len(self.weaks)

    def strong(self, index: int) -> bytes:
        """The strong hash of block `index`."""
        return self.strongs[index * STRONG_SIZE : (index + 1) * STRONG_SIZE]

    def to_bytes(self) -> bytes:
        """Compact serialisation: a 20-byte header then 44 bytes per block."""
        weaks = array("I", self.weaks)
        if sys.byteorder != "little":
            weaks.byteswap()
        header = _HEADER.pack(_MAGIC, self.block_size, self.file_size, self.block_count)
        return header + self.prefixes + weaks.tobytes() + self.strongs

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        """Parse `to_bytes` output; raises DeltaError saying what is wrong."""
        if len(data) < _HEADER.size:
            raise DeltaError(f"signature is {len(data)} bytes, shorter than its header")
        magic, block_size, file_size, count = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise DeltaError(f"signature starts with {magic!r}, expected {_MAGIC!r}")
        _check_block_size(block_size)
        if count != math.ceil(file_size / block_size):
            raise DeltaError(
                f"signature lists {count} blocks for {file_size} bytes in blocks of {block_size}"
            )
        full = file_size // block_size
        expected = _HEADER.size + full * PREFIX_SIZE + count * (4 + STRONG_SIZE)
        if len(data) != expected:
            raise DeltaError(f"signature is {len(data)} bytes, expected {expected}")
        at = _HEADER.size
        prefixes = data[at : at + full * PREFIX_SIZE]
        at += full * PREFIX_SIZE
        weaks = array("I")
        weaks.frombytes(data[at : at + 4 * count])
        if sys.byteorder != "little":
            weaks.byteswap()
        at += 4 * count
        return cls(block_size, file_size, prefixes, weaks, data[at:])


def choose_block_size(file_size: int) -> int:
    """8 KiB up to 256 MiB, then half of sqrt(size) (whole KiB), at most 64 KiB.

    What a delta costs is about 44 bytes of signature per block plus one to two blocks per
    changed region; for packages where 1% of files of a few dozen KiB change that is smallest
    near 7 KiB whatever the package's size. Larger files get larger blocks only to keep the
    signature (and the server's index of it) small.
    """
    half_root = math.isqrt(max(0, file_size)) // 2
    rounded = -(-half_root // 1024) * 1024
    return min(64 * 1024, max(8 * 1024, rounded))


def signature(source: BinaryIO, block_size: int) -> Signature:
    """Sign a file read from `source` (streamed, block by block)."""
    _check_block_size(block_size)
    prefixes = bytearray()
    weaks = array("I")
    strongs = bytearray()
    size = 0
    while block := _read_exactly(source, block_size):
        size += len(block)
        if len(block) == block_size:
            prefixes += block[:PREFIX_SIZE]
        weaks.append(zlib.adler32(block))
        strongs += _strong(block)
        if len(block) < block_size:
            break
    return Signature(block_size, size, bytes(prefixes), weaks, bytes(strongs))


def signature_of_file(path: Path, block_size: int | None = None) -> Signature:
    """Sign the file at `path`, with `choose_block_size` unless a block size is given."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        return signature(handle, block_size or choose_block_size(size))


def delta(sig: Signature, new: BinaryIO) -> Iterator[Op]:
    """The ops that rebuild the file read from `new` out of the file `sig` describes."""
    return _DeltaSearch(sig, new).run()


def patch(basis: BinaryIO, ops: Iterable[Op], out: BinaryIO, block_size: int) -> int:
    """Write the new file to `out` from the seekable `basis` and the ops; returns bytes written."""
    _check_block_size(block_size)
    basis_size = basis.seek(0, 2)
    written = 0
    for op in ops:
        if isinstance(op, Literal):
            out.write(op.data)
            written += len(op.data)
            continue
        start = op.first * block_size
        if op.first < 0 or op.count <= 0 or start + (op.count - 1) * block_size >= basis_size:
            raise DeltaError(
                f"delta copies blocks {op.first}..{op.first + op.count - 1} but the basis "
                f"has {math.ceil(basis_size / block_size)} blocks of {block_size} bytes"
            )
        remaining = min(op.count * block_size, basis_size - start)
        basis.seek(start)
        while remaining:
            piece = basis.read(min(remaining, READ_SIZE))
            if not piece:
                raise DeltaError(f"basis ended at offset {basis.tell()} while copying")
            out.write(piece)
            remaining -= len(piece)
            written += len(piece)
    return written


def patch_file(
    basis: Path, ops: Iterable[Op], out: Path, block_size: int, expected_sha256: str
) -> None:
    """Rebuild into `out` and verify its SHA-256; on any failure `out` is removed and it raises.

    A HashMismatch or DeltaError tells the caller to fall back to the full file.
    """
    try:
        with basis.open("rb") as source, out.open("wb") as target:
            patch(source, ops, target, block_size)
        verify_sha256(out, expected_sha256)
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def encode_ops(ops: Iterable[Op], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Wire chunks of whole ops, each at least `chunk_size` bytes except the last."""
    pending = bytearray()
    for op in ops:
        if isinstance(op, Copy):
            pending.append(_OP_COPY)
            pending += _uvarint(op.first)
            pending += _uvarint(op.count)
        else:
            pending.append(_OP_LITERAL)
            pending += _uvarint(len(op.data))
            pending += op.data
        if len(pending) >= chunk_size:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


def decode_ops(chunks: Iterable[bytes]) -> Iterator[Op]:
    """The ops held by wire chunks; raises DeltaError naming the chunk and offset of bad data."""
    for number, chunk in enumerate(chunks):
        view = memoryview(chunk)
        at = 0
        while at < len(view):
            kind = view[at]
            at += 1
            if kind == _OP_COPY:
                first, at = _read_uvarint(view, at, number)
                count, at = _read_uvarint(view, at, number)
                if count == 0:
                    raise DeltaError(f"delta chunk {number}: copy of zero blocks at {at}")
                yield Copy(first, count)
            elif kind == _OP_LITERAL:
                length, at = _read_uvarint(view, at, number)
                if at + length > len(view):
                    raise DeltaError(
                        f"delta chunk {number}: literal of {length} bytes at {at} runs past "
                        f"the chunk's end ({len(view)} bytes)"
                    )
                yield Literal(bytes(view[at : at + length]))
                at += length
            else:
                raise DeltaError(f"delta chunk {number}: unknown op {kind} at offset {at - 1}")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file as lowercase hex, read in pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(READ_SIZE):
            digest.update(piece)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise HashMismatch unless the file at `path` has SHA-256 `expected` (hex)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise HashMismatch(f"{path} has SHA-256 {actual}, expected {expected.lower()}")


# -- internals ---------------------------------------------------------------------------------


class _OpBuilder:
    """Coalesces consecutive block copies and splits literals at MAX_LITERAL."""

    def __init__(self) -> None:
        self.copy: Copy | None = None
        self.literal = bytearray()

    def add_copy(self, block: int) -> Iterator[Op]:
        yield from self._flush_literal()
        if self.copy is not None and self.copy.first + self.copy.count == block:
            self.copy = Copy(self.copy.first, self.copy.count + 1)
            return
        if self.copy is not None:
            yield self.copy
        self.copy = Copy(block, 1)

    def add_literal(self, data: bytes | bytearray | memoryview) -> Iterator[Op]:
        if not len(data):
            return
        if self.copy is not None:
            yield self.copy
            self.copy = None
        self.literal += data
        while len(self.literal) >= MAX_LITERAL:
            yield Literal(bytes(self.literal[:MAX_LITERAL]))
            del self.literal[:MAX_LITERAL]

    def _flush_literal(self) -> Iterator[Op]:
        if self.literal:
            yield Literal(bytes(self.literal))
            self.literal.clear()

    def finish(self) -> Iterator[Op]:
        if self.copy is not None:
            yield self.copy
            self.copy = None
        yield from self._flush_literal()


class _DeltaSearch:
    """One pass over the new file against a signature (see the module docstring)."""

    def __init__(self, sig: Signature, new: BinaryIO) -> None:
        self.sig = sig
        self.new = new
        self.size = sig.block_size
        # key -> codes `block * STRIDE + shift`: the word at offset `shift` of `block`.
        self.index: dict[int, list[int]] = {}
        full = len(sig.prefixes) // PREFIX_SIZE
        per_prefix = PREFIX_SIZE // WORD
        for phase in range(WORD):
            # Words read from `phase` on: word i sits at offset phase + WORD * i of the
            # concatenated prefixes: block i // per_prefix, shift phase + WORD * (i % per_prefix).
            words = array("Q")
            usable = (len(sig.prefixes) - phase) // WORD * WORD
            words.frombytes(sig.prefixes[phase : phase + usable])
            for step in range(STRIDE // WORD):
                shift = phase + WORD * step
                codes = range(shift, full * STRIDE, STRIDE)
                for key, code in zip(words[step::per_prefix], codes, strict=False):
                    self.index.setdefault(key, []).append(code)
        self.keyset = frozenset(self.index)
        self.buf = bytearray()
        self.pos = 0
        self.eof = False
        tail = sig.file_size % self.size
        self.tail_block = sig.block_count - 1 if tail else -1
        self.tail_size = tail

    def _fill(self, need: int) -> None:
        while not self.eof and len(self.buf) - self.pos < need:
            piece = self.new.read(READ_SIZE)
            if not piece:
                self.eof = True
            self.buf += piece

    def _block_matches(self, block: int, at: int) -> bool:
        """Whether the full block `block` of the basis sits at offset `at` of the buffer."""
        prefix = self.sig.prefixes[block * PREFIX_SIZE : (block + 1) * PREFIX_SIZE]
        if self.buf[at : at + PREFIX_SIZE] != prefix:
            return False
        with memoryview(self.buf) as view:
            window = view[at : at + self.size]
            return zlib.adler32(window) == self.sig.weaks[block] and _strong(
                window
            ) == self.sig.strong(block)

    def _match_at(self, at: int) -> int | None:
        key = int.from_bytes(self.buf[at : at + WORD], sys.byteorder)
        for code in self.index.get(key, ()):
            block, shift = divmod(code, STRIDE)
            if shift == 0 and self._block_matches(block, at):
                return block
        return None

    def _search(self, start: int, end: int) -> tuple[int, int] | None:
        """The first offset in [start, end) where a basis block starts, with that block."""
        # Every block starting in [start, end) shows one of its keys in a word read at
        # start + STRIDE * j for some j < count (the last word is at or past end - 1).
        if end <= start:
            return None
        count = (end - 1 - start + STRIDE - 1) // STRIDE + 1
        words = array("Q")
        with memoryview(self.buf) as view:
            words.frombytes(view[start : start + STRIDE * (count - 1) + WORD])
        words = words[:: STRIDE // WORD]
        hits = self.keyset.intersection(words)
        if not hits:
            return None
        # Word j's candidates start in (start + STRIDE*(j-1), start + STRIDE*j]: visiting words
        # in order and their candidates by offset finds the earliest match first and stops.
        if len(hits) <= _FEW_HITS:
            indexes = sorted(_all_indexes(words, hits))
        else:  # low-entropy data: one pass beats scanning the array once per word
            indexes = [j for j, word in enumerate(words) if word in hits]
        for j in indexes:
            base = start + STRIDE * j
            for code in sorted(self.index[words[j]], key=lambda c: -(c % STRIDE)):
                block, shift = divmod(code, STRIDE)
                at = base - shift
                if start <= at < end and self._block_matches(block, at):
                    return at, block
        return None

    def run(self) -> Iterator[Op]:
        size = self.size
        ops = _OpBuilder()
        window = 2 * size
        while True:
            self._fill(size + window)
            if self.pos >= _COMPACT_AT:
                del self.buf[: self.pos]
                self.pos = 0
            pos = self.pos
            avail = len(self.buf) - pos
            if avail < size:  # only at the end of the new file
                yield from self._tail(ops, avail)
                break
            block = self._match_at(pos)
            if block is not None:
                yield from ops.add_copy(block)
                self.pos = pos + size
                window = 2 * size
                continue
            # No block starts here: look for the next offset where one does.
            end = min(pos + window, len(self.buf) - size + 1)
            found = self._search(pos + 1, end)
            if found is None:
                yield from ops.add_literal(self.buf[pos:end])
                self.pos = end
                window = min(window * 2, SEARCH_WINDOW_MAX)
                continue
            hit, block = found
            yield from ops.add_literal(self.buf[pos:hit])
            yield from ops.add_copy(block)
            self.pos = hit + size
            window = 2 * size
        yield from ops.finish()

    def _tail(self, ops: _OpBuilder, avail: int) -> Iterator[Op]:
        """The last bytes (shorter than a block): the basis's short last block, or a literal."""
        tail = self.buf[self.pos :]
        if (
            avail
            and avail == self.tail_size
            and zlib.adler32(tail) == self.sig.weaks[self.tail_block]
            and _strong(tail) == self.sig.strong(self.tail_block)
        ):
            yield from ops.add_copy(self.tail_block)
        else:
            yield from ops.add_literal(tail)


def _all_indexes(words: array[int], hits: Iterable[int]) -> Iterator[int]:
    """Every index of each hit word (array.index runs in C)."""
    for word in hits:
        j = -1
        while True:
            try:
                j = words.index(word, j + 1)
            except ValueError:
                break
            yield j


def _strong(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(data).digest()[:STRONG_SIZE]


def _check_block_size(block_size: int) -> None:
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise DeltaError(
            f"block size {block_size} is outside {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE} bytes"
        )


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    """Read `size` bytes unless the file ends first (a raw stream may return short reads)."""
    data = source.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size and (more := source.read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uvarint(view: memoryview, at: int, chunk: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if at >= len(view):
            raise DeltaError(f"delta chunk {chunk}: number cut off at offset {at}")
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise DeltaError(f"delta chunk {chunk}: number too long at offset {at}")
