"""The Tentacle's package RPC handlers: lookups, signatures, chunked resumable transfers."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cuttle.protocol import delta
from cuttle.protocol.v1 import tentacle_pb2 as pb
from cuttle.tentacle.config import ConfigError, InstanceHome, TentacleConfig
from cuttle.tentacle.execution.manager import ScriptManager
from cuttle.tentacle.files.transfer import UploadStore
from cuttle.tentacle.packages.cache import PackageCache, cache_root
from cuttle.tentacle.packages.errors import NotEnoughSpace
from cuttle.tentacle.packages.receive import PackageReceiver, TransferNotOpen
from cuttle.tentacle.services.handlers import TentacleHandlers, describe_error

T = TypeVar("T")
CHUNK = 256 * 1024


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _handlers(tmp_path: Path, **cache_settings: Any) -> tuple[TentacleHandlers, PackageCache]:
    cache = PackageCache(cache_root(tmp_path), **cache_settings)
    handlers = TentacleHandlers(
        ScriptManager(tmp_path, use_cgroups=False),
        UploadStore(tmp_path / "uploads"),
        PackageReceiver(cache),
        thumbprint="0" * 64,
        comms_style="listening",
        disk_path=str(tmp_path),
    )
    return handlers, cache


def _package(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 - test data, not a secret


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _begin(
    handlers: TentacleHandlers, content: bytes, transfer_size: int | None = None, **extra: Any
) -> pb.PackageTransferState:
    request = pb.BeginPackageTransferRequest(
        sha256=_sha(content),
        package_id="Web",
        version="1.4.0",
        size=len(content),
        transfer_size=len(content) if transfer_size is None else transfer_size,
        **extra,
    )
    return _run(handlers.begin_package_transfer(request))


def _send(handlers: TentacleHandlers, transfer_id: str, index: int, data: bytes) -> Any:
    request = pb.PackageChunkRequest(
        transfer_id=transfer_id, index=index, data=data, sha256=_sha(data)
    )
    return _run(handlers.send_package_chunk(request))


def _commit(handlers: TentacleHandlers, transfer_id: str) -> pb.CommitPackageTransferResult:
    request = pb.CommitPackageTransferRequest(transfer_id=transfer_id)
    return _run(handlers.commit_package_transfer(request))


def _pieces(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _find(handlers: TentacleHandlers, sha256: str, package_id: str = "Web") -> Any:
    request = pb.FindPackageRequest(sha256=sha256, package_id=package_id)
    return _run(handlers.find_package(request))


def _send_full(handlers: TentacleHandlers, content: bytes) -> None:
    state = _begin(handlers, content)
    for index, piece in enumerate(_pieces(content)):
        _send(handlers, state.transfer_id, index, piece)
    assert _commit(handlers, state.transfer_id).cached


def test_a_full_transfer_in_chunks_enters_the_cache_verified(tmp_path: Path) -> None:
    handlers, cache = _handlers(tmp_path)
    content = _package(CHUNK * 3 + 17)
    assert not _find(handlers, _sha(content)).cached
    state = _begin(handlers, content)
    assert (state.next_chunk, state.received_bytes) == (0, 0)
    for index, piece in enumerate(_pieces(content)):
        state = _send(handlers, state.transfer_id, index, piece)
        assert state.next_chunk == index + 1
        assert not state.rejected
    assert _commit(handlers, state.transfer_id).cached
    assert cache.path_of(_sha(content)).read_bytes() == content
    assert _find(handlers, _sha(content)).cached
    assert list(cache.incoming.iterdir()) == []


def test_beginning_again_resumes_from_the_next_chunk(tmp_path: Path) -> None:
    handlers, cache = _handlers(tmp_path)
    content = _package(CHUNK * 4)
    pieces = _pieces(content)
    state = _begin(handlers, content)
    _send(handlers, state.transfer_id, 0, pieces[0])
    _send(handlers, state.transfer_id, 1, pieces[1])
    resumed = _begin(handlers, content)  # the server lost the connection and comes back
    assert (resumed.transfer_id, resumed.next_chunk) == (state.transfer_id, 2)
    assert resumed.received_bytes == 2 * CHUNK
    # a chunk resent after its answer was lost is acknowledged, not written twice
    again = _send(handlers, state.transfer_id, 1, pieces[1])
    assert (again.next_chunk, again.rejected) == (2, "")
    for index in (2, 3):
        _send(handlers, state.transfer_id, index, pieces[index])
    assert _commit(handlers, state.transfer_id).cached
    assert cache.path_of(_sha(content)).read_bytes() == content


def test_a_corrupt_or_out_of_order_chunk_is_refused_and_can_be_resent(tmp_path: Path) -> None:
    handlers, cache = _handlers(tmp_path)
    content = _package(CHUNK * 2)
    pieces = _pieces(content)
    state = _begin(handlers, content)
    flipped = bytes([pieces[0][0] ^ 0xFF]) + pieces[0][1:]
    corrupt = _run(
        handlers.send_package_chunk(
            pb.PackageChunkRequest(
                transfer_id=state.transfer_id, index=0, data=flipped, sha256=_sha(pieces[0])
            )
        )
    )
    assert corrupt.next_chunk == 0
    assert "chunk 0 arrived corrupt" in corrupt.rejected
    skipped = _send(handlers, state.transfer_id, 1, pieces[1])
    assert (skipped.next_chunk, skipped.rejected) == (0, "chunk 1 is out of order: send chunk 0")
    for index, piece in enumerate(pieces):
        assert not _send(handlers, state.transfer_id, index, piece).rejected
    assert _commit(handlers, state.transfer_id).cached
    assert cache.path_of(_sha(content)).read_bytes() == content


def test_a_truncated_or_wrong_transfer_never_enters_the_cache(tmp_path: Path) -> None:
    handlers, cache = _handlers(tmp_path)
    content = _package(CHUNK * 2)
    state = _begin(handlers, content)
    _send(handlers, state.transfer_id, 0, _pieces(content)[0])
    result = _commit(handlers, state.transfer_id)
    assert not result.cached
    assert result.failure == f"the transfer is truncated: {CHUNK} of {2 * CHUNK} bytes arrived"
    other = _package(CHUNK, seed=2)
    wrong = _run(
        handlers.begin_package_transfer(
            pb.BeginPackageTransferRequest(
                sha256="a" * 64, package_id="Web", version="1.4.0", size=CHUNK, transfer_size=CHUNK
            )
        )
    )
    _send(handlers, wrong.transfer_id, 0, other)
    result = _commit(handlers, wrong.transfer_id)
    assert not result.cached
    assert "expected aaaa" in result.failure
    assert cache.packages() == []
    assert list(cache.incoming.iterdir()) == []
    # the transfer is gone: a chunk or commit for it says to begin again
    with pytest.raises(TransferNotOpen, match="begin it again") as caught:
        _send(handlers, wrong.transfer_id, 1, other)
    assert describe_error(caught.value)[0] == "failed_precondition"


def test_a_delta_against_the_cached_version_rebuilds_the_new_one(tmp_path: Path) -> None:
    handlers, cache = _handlers(tmp_path)
    old = _package(1024 * 1024)
    new = bytearray(old)
    new[300_000:300_100] = b"x" * 100  # one small change in the middle
    new = bytes(new) + b"appended tail"
    _send_full(handlers, old)
    found = _find(handlers, _sha(new))
    assert not found.cached
    assert (found.basis_sha256, found.basis_version, found.basis_size) == (
        _sha(old),
        "1.4.0",
        len(old),
    )
    signature_bytes = b""
    while len(signature_bytes) < found.signature_size:
        chunk = _run(
            handlers.get_package_signature(
                pb.PackageSignatureRequest(
                    basis_sha256=found.basis_sha256, offset=len(signature_bytes), length=4096
                )
            )
        )
        assert chunk.total_size == found.signature_size
        signature_bytes += chunk.data
    signature = delta.Signature.from_bytes(signature_bytes)
    chunks = list(delta.encode_ops(delta.delta(signature, io.BytesIO(new))))
    total = sum(len(c) for c in chunks)
    assert total < len(new) // 10
    state = _run(
        handlers.begin_package_transfer(
            pb.BeginPackageTransferRequest(
                sha256=_sha(new),
                package_id="Web",
                version="1.4.1",
                size=len(new),
                transfer_size=total,
                basis_sha256=found.basis_sha256,
                block_size=signature.block_size,
            )
        )
    )
    assert state.transfer_id == f"{_sha(new)}-{_sha(old)}"
    for index, chunk in enumerate(chunks):
        _send(handlers, state.transfer_id, index, chunk)
    assert _commit(handlers, state.transfer_id).cached
    assert cache.path_of(_sha(new)).read_bytes() == new
    assert cache.get(_sha(new)).version == "1.4.1"  # type: ignore[union-attr]


def test_a_delta_that_rebuilds_other_bytes_is_refused(tmp_path: Path) -> None:
    handlers, cache = _handlers(tmp_path)
    old = _package(256 * 1024)
    _send_full(handlers, old)
    signature = delta.signature_of_file(cache.path_of(_sha(old)))
    ops = b"".join(delta.encode_ops([delta.Copy(0, 1)]))
    state = _run(
        handlers.begin_package_transfer(
            pb.BeginPackageTransferRequest(
                sha256="b" * 64,
                package_id="Web",
                version="1.4.1",
                size=len(old),
                transfer_size=len(ops),
                basis_sha256=_sha(old),
                block_size=signature.block_size,
            )
        )
    )
    _send(handlers, state.transfer_id, 0, ops)
    result = _commit(handlers, state.transfer_id)
    assert not result.cached
    assert "expected bbbb" in result.failure
    assert [p.sha256 for p in cache.packages()] == [_sha(old)]
    assert list(cache.incoming.iterdir()) == []


def test_a_missing_basis_is_a_failed_precondition(tmp_path: Path) -> None:
    handlers, _ = _handlers(tmp_path)
    with pytest.raises(Exception, match="basis .* is not in the cache") as caught:
        _begin(handlers, b"abc", transfer_size=3, basis_sha256="c" * 64, block_size=8192)
    assert describe_error(caught.value)[0] == "failed_precondition"


def test_no_room_fails_with_disk_full_before_any_byte(tmp_path: Path) -> None:
    handlers, cache = _handlers(
        tmp_path, min_free_bytes=1024**2, free_bytes=lambda _path: 1024**2 + 100
    )
    with pytest.raises(NotEnoughSpace, match="not enough disk space") as caught:
        _begin(handlers, _package(1000))
    assert describe_error(caught.value)[0] == "disk_full"
    assert cache.packages() == []
    assert list(cache.incoming.iterdir()) == []


def test_cache_settings_are_read_from_the_config_file(tmp_path: Path) -> None:
    home = InstanceHome(tmp_path)
    config = TentacleConfig()
    assert (config.package_cache_max_bytes, config.package_cache_min_free_bytes) == (
        10 * 1024**3,
        256 * 1024**2,
    )
    config.package_cache_max_bytes = 5000
    home.save(config)
    assert home.load().package_cache_max_bytes == 5000
    raw = json.loads(home.config_path.read_text())
    raw["package_cache_min_free_bytes"] = -1
    home.config_path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="package_cache_min_free_bytes must be a non-negative"):
        home.load()
