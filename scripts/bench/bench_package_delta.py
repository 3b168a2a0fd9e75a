"""Benchmark: rsync-style delta (cuttle.protocol.delta) for a 1% change of a package.

A package of files of ~25 KiB (half incompressible bytes, half text) is built as .zip, .tar and
.tar.gz; version 2 changes 1% of the files (a few bytes rewritten, a few hundred appended, so
everything after them shifts). Per format: bytes sent (signature up + delta chunks down) as a
share of the package, and the delta's speed against the bare minimum a full transfer costs the
server per byte (reading the file and hashing it with SHA-256), plus signature and patch speed.
The rebuilt file is checked byte for byte.

Run: .venv/bin/python scripts/bench/bench_package_delta.py [--mib 50] [--quick]
"""

from __future__ import annotations

import argparse
import io
import random
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import benchlib
from benchlib import compare

from cuttle.protocol import delta

FILE_SIZE = 25 * 1024
WORDS = [f"word{n}" for n in range(2000)]


def _files(rng: random.Random, mib: int) -> list[tuple[str, bytes]]:
    count = mib * 1024 * 1024 // FILE_SIZE
    files = []
    for n in range(count):
        if n % 2:
            data = rng.randbytes(FILE_SIZE)
        else:
            data = " ".join(rng.choices(WORDS, k=FILE_SIZE // 6)).encode()[:FILE_SIZE]
        files.append((f"app/m{n // 100:03d}/f{n:05d}.bin", data))
    return files


def _changed(rng: random.Random, files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    changed = list(files)
    for index in rng.sample(range(len(files)), max(1, len(files) // 100)):
        name, data = files[index]
        at = rng.randrange(len(data) - 64)
        changed[index] = (name, data[:at] + rng.randbytes(64) + data[at + 64 :] + b"+" * 300)
    return changed


def _write(path: Path, files: list[tuple[str, bytes]]) -> None:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
            for name, data in files:
                package.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, 8)
        return
    mode = "w:gz" if path.name.endswith(".gz") else "w"
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


def _timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def measure(old: Path, new: Path, rebuilt: Path) -> dict[str, float]:
    """Sign, delta, patch and verify; the figures of one format."""
    size = new.stat().st_size
    mib = size / 1024 / 1024
    sign_s, sig = _timed(lambda: delta.signature_of_file(old))
    assert isinstance(sig, delta.Signature)
    signature_bytes = len(sig.to_bytes())

    def make_delta() -> list[bytes]:
        with new.open("rb") as source:
            return list(delta.encode_ops(delta.delta(sig, source)))

    delta_s, chunks = _timed(make_delta)
    assert isinstance(chunks, list)
    sent = signature_bytes + sum(len(chunk) for chunk in chunks)

    def rebuild() -> None:
        with old.open("rb") as basis, rebuilt.open("wb") as out:
            delta.patch(basis, delta.decode_ops(chunks), out, sig.block_size)

    patch_s, _ = _timed(rebuild)
    delta.verify_sha256(rebuilt, delta.sha256_file(new))
    bare_s, _ = _timed(lambda: delta.sha256_file(new))
    print(
        f"  {new.name}: {mib:.1f} MiB, blocks of {sig.block_size} B, signature "
        f"{signature_bytes / 1024:.0f} KiB, {len(chunks)} delta chunks"
    )
    compare("delta speed (vs read+SHA-256)", mib / delta_s, mib / bare_s, "MiB/s")
    print(
        f"  sent {sent / 1024:.0f} KiB = {100 * sent / size:.2f}% of the package; "
        f"signature {mib / sign_s:.0f} MiB/s, patch {mib / patch_s:.0f} MiB/s"
    )
    return {"percent": 100 * sent / size, "mib_s": mib / delta_s}


def main() -> None:
    """Build the three formats, measure each, print one SUMMARY line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=50, help="raw size of the package's files")
    parser.add_argument("--quick", action="store_true", help="8 MiB")
    args = parser.parse_args()
    mib = 8 if args.quick else args.mib
    rng = random.Random(16)  # noqa: S311 - reproducible benchmark data
    files = _files(rng, mib)
    changed = _changed(rng, files)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as scratch:
        root = Path(scratch)
        for suffix in (".zip", ".tar", ".tar.gz"):
            benchlib.heading(f"{suffix}: 1% of {len(files)} files changed")
            old, new = root / f"web.1.0.0{suffix}", root / f"web.1.0.1{suffix}"
            _write(old, files)
            _write(new, changed)
            results[suffix] = measure(old, new, root / f"rebuilt{suffix}")
    zip_result = results[".zip"]
    print(
        f"SUMMARY package_delta zip_sent={zip_result['percent']:.2f}% (goal <=3%) "
        f"zip_speed={zip_result['mib_s']:.0f}MiB/s tar_sent={results['.tar']['percent']:.2f}% "
        f"tar_gz_sent={results['.tar.gz']['percent']:.1f}% ({mib} MiB of files, 1% changed)"
    )


if __name__ == "__main__":
    main()
