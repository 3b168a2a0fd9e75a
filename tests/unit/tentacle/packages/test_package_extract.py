"""Safe extraction: archives land whole inside the target, attacks are refused leaving nothing."""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuttle.tentacle.packages import extract as extract_module
from cuttle.tentacle.packages.errors import (
    ArchiveTooLarge,
    InstallPathExists,
    NotEnoughSpace,
    UnsafeArchive,
    UnsupportedArchive,
)
from cuttle.tentacle.packages.extract import (
    ArchiveFormat,
    ExtractionLimits,
    archive_format,
    extract,
    safe_relative_path,
)

TarEntry = tuple[str, str, bytes | str, int]  # (name, kind, data or link target, mode)


def _tar(path: Path, entries: list[TarEntry], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, kind, payload, perms in entries:
            info = tarfile.TarInfo(name)
            info.mode = perms
            info.mtime = 1_600_000_000
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            if isinstance(payload, str):
                info.linkname = payload
            tar.addfile(info)
    return path


def _zip(path: Path, entries: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
        for name, data, unix_mode in entries:
            info = zipfile.ZipInfo(name, (2024, 5, 1, 12, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if unix_mode is None:
                info.create_system = 0  # made on Windows: no Unix mode
            else:
                info.create_system = 3
                info.external_attr = unix_mode << 16
            package.writestr(info, data)
    return path


def _left_over(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(folder holding archives, applications parent, the target that must appear or not)."""
    archives = tmp_path / "archives"
    archives.mkdir()
    apps = tmp_path / "apps" / "Production" / "web"
    return archives, apps, apps / "1.4.0"


def test_tar_gz_keeps_modes_without_setuid_links_and_mtimes(
    layout: tuple[Path, Path, Path],
) -> None:
    archives, _, target = layout
    archive = _tar(
        archives / "web.1.4.0.tar.gz",
        [
            ("bin", "dir", b"", 0o755),
            ("bin/deploy.sh", "file", b"#!/bin/sh\necho hi\n", 0o4755),
            ("conf/app.json", "file", b'{"a": 1}', 0o640),
            ("conf/link.json", "symlink", "app.json", 0o777),
            ("conf/copy.json", "hardlink", "conf/app.json", 0o640),
            ("readonly", "dir", b"", 0o555),
            ("readonly/inside.txt", "file", b"x", 0o444),
            ("./", "dir", b"", 0o4755),
        ],
    )
    result = extract(archive, target)
    assert result.path == target
    assert result.files == 4
    assert result.links == 1
    assert stat.S_IMODE((target / "bin/deploy.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "conf/app.json").stat().st_mode) == 0o640
    assert (target / "conf/link.json").is_symlink()
    assert (target / "conf/link.json").read_text() == '{"a": 1}'
    assert (target / "conf/copy.json").stat().st_ino == (target / "conf/app.json").stat().st_ino
    assert stat.S_IMODE((target / "readonly").stat().st_mode) == 0o555
    assert (target / "readonly/inside.txt").read_text() == "x"
    assert (target / "bin/deploy.sh").stat().st_mtime == 1_600_000_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # the "./" entry's mode
    assert _left_over(target.parent) == ["1.4.0"]


@pytest.mark.parametrize(
    ("suffix", "mode"), [(".tar", "w"), (".tar.bz2", "w:bz2"), (".tgz", "w:gz")]
)
def test_every_tar_flavour_extracts(
    layout: tuple[Path, Path, Path], suffix: str, mode: str
) -> None:
    archives, _, target = layout
    archive = _tar(archives / f"p.1.0{suffix}", [("a/b.txt", "file", b"hello", 0o644)], mode)
    extract(archive, target)
    assert (target / "a/b.txt").read_bytes() == b"hello"


@pytest.mark.parametrize("name", ["p.1.0.zip", "p.1.0.nupkg"])
def test_zip_and_nupkg_keep_unix_modes_and_treat_backslashes_as_separators(
    layout: tuple[Path, Path, Path], name: str
) -> None:
    archives, _, target = layout
    archive = _zip(
        archives / name,
        [
            ("run.sh", b"echo", stat.S_IFREG | 0o6750),
            ("lib\\windows.dll", b"MZ", None),
            ("empty/", b"", None),
        ],
    )
    extract(archive, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "run.sh").stat().st_mode) == 0o750
    assert (target / "lib" / "windows.dll").read_bytes() == b"MZ"
    assert stat.S_IMODE((target / "lib" / "windows.dll").stat().st_mode) == 0o644
    assert (target / "empty").is_dir()


def test_nupkg_packaging_files_are_not_extracted(layout: tuple[Path, Path, Path]) -> None:
    archives, _, target = layout
    entries = [
        "[Content_Types].xml",
        "_rels/.rels",
        "package/services/metadata/core-properties/abc.psmdcp",
        "Web.nuspec",
        "bin/Web.dll",
    ]
    extract(_zip(archives / "Web.1.0.0.nupkg", [(n, b"x", None) for n in entries]), target)
    found = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert found == ["Web.nuspec", "bin/Web.dll"]


def test_zip_symlink_inside_is_kept(layout: tuple[Path, Path, Path]) -> None:
    archives, _, target = layout
    archive = _zip(
        archives / "p.zip",
        [("real.txt", b"data", stat.S_IFREG | 0o644), ("alias", b"real.txt", stat.S_IFLNK | 0o777)],
    )
    extract(archive, target)
    assert os.readlink(target / "alias") == "real.txt"


def _tar_attack(entries: list[TarEntry]) -> list[TarEntry]:
    return [("good.txt", "file", b"fine", 0o644), *entries]


TAR_ATTACKS: dict[str, tuple[list[TarEntry], str]] = {
    "dot-dot": (_tar_attack([("../evil.txt", "file", b"x", 0o644)]), "'../evil.txt' escapes"),
    "nested dot-dot": (
        _tar_attack([("a/../../evil.txt", "file", b"x", 0o644)]),
        "'a/../../evil.txt' escapes",
    ),
    "absolute": (_tar_attack([("/tmp/evil.txt", "file", b"x", 0o644)]), "absolute path"),
    "symlink absolute": (
        _tar_attack([("etc", "symlink", "/etc", 0o777)]),
        "link 'etc' points at the absolute path",
    ),
    "symlink up": (
        _tar_attack([("up", "symlink", "../../outside", 0o777)]),
        "link 'up' -> '../../outside' points outside",
    ),
    "symlink chain": (
        _tar_attack([("a", "symlink", ".", 0o777), ("b", "symlink", "a/..", 0o777)]),
        "link 'b' -> 'a/..' leads outside",
    ),
    "write through a link": (
        _tar_attack(
            [("d", "dir", b"", 0o755), ("l", "symlink", "d", 0o777), ("l/f", "file", b"x", 0o644)]
        ),
        "'l' would replace a folder",
    ),
    "hard link outside": (
        _tar_attack([("h", "hardlink", "../../../etc/passwd", 0o644)]),
        "escapes the target",
    ),
    "hard link to nothing": (
        _tar_attack([("h", "hardlink", "missing.txt", 0o644)]),
        "hard link 'h' points at 'missing.txt', which is not a file",
    ),
    "fifo": (_tar_attack([("pipe", "fifo", b"", 0o644)]), "'pipe' is a fifo"),
    "device": (_tar_attack([("null", "chr", b"", 0o644)]), "'null' is a character device"),
}


@pytest.mark.parametrize("attack", sorted(TAR_ATTACKS))
def test_tar_attacks_are_refused_naming_the_entry_and_leave_nothing(
    layout: tuple[Path, Path, Path], tmp_path: Path, attack: str
) -> None:
    archives, apps, target = layout
    entries, message = TAR_ATTACKS[attack]
    archive = _tar(archives / "evil.1.0.tar.gz", entries)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UnsafeArchive, match=message.replace("(", r"\(")):
        extract(archive, target)
    assert not target.exists()
    # the folders made for the target are removed again too
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [("../evil.txt", "escapes"), ("/abs.txt", "absolute"), ("C:\\evil.txt", "absolute")],
)
def test_zip_attacks_are_refused(layout: tuple[Path, Path, Path], name: str, message: str) -> None:
    archives, apps, target = layout
    archive = _zip(archives / "evil.zip", [("ok.txt", b"ok", None), (name, b"x", None)])
    with pytest.raises(UnsafeArchive, match=message):
        extract(archive, target)
    assert not apps.exists()


def test_zip_bomb_is_refused_by_total_size(layout: tuple[Path, Path, Path]) -> None:
    archives, apps, target = layout
    archive = _zip(archives / "bomb.zip", [(f"z{i}", bytes(2_000_000), None) for i in range(5)])
    with pytest.raises(ArchiveTooLarge, match="declare 10000000 bytes"):
        extract(archive, target, limits=ExtractionLimits(max_total_bytes=5_000_000))
    assert not apps.exists()


def test_compression_ratio_is_checked_on_written_bytes_naming_the_entry(
    layout: tuple[Path, Path, Path],
) -> None:
    archives, apps, target = layout
    archive = _tar(archives / "bomb.tar.gz", [("zeros.bin", "file", bytes(8_000_000), 0o644)])
    limits = ExtractionLimits(max_ratio=50, ratio_floor=1_000_000)
    with pytest.raises(ArchiveTooLarge, match="more than 50 times .*at entry 'zeros.bin'"):
        extract(archive, target, limits=limits)
    assert not apps.exists()


def test_entry_count_limit(layout: tuple[Path, Path, Path]) -> None:
    archives, _, target = layout
    archive = _tar(archives / "many.tar", [(f"f{i}", "file", b"", 0o644) for i in range(5)], "w")
    with pytest.raises(ArchiveTooLarge, match="more than 3 entries"):
        extract(archive, target, limits=ExtractionLimits(max_entries=3))


def test_disk_full_is_a_clear_error_and_removes_the_partial_folder(
    layout: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    archives, apps, target = layout
    archive = _tar(
        archives / "p.tar", [("a.txt", "file", b"a", 0o644), ("b.txt", "file", b"b", 0o644)], "w"
    )
    real_write = os.write
    written: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(1)
        return real_write(fd, data)

    monkeypatch.setattr(extract_module.os, "write", write)
    with pytest.raises(NotEnoughSpace, match="disk full while extracting p.tar entry 'b.txt'"):
        extract(archive, target)
    assert not apps.exists()
    assert NotEnoughSpace.kind == "disk_full"


def test_existing_target_is_refused(layout: tuple[Path, Path, Path]) -> None:
    archives, _, target = layout
    target.mkdir(parents=True)
    archive = _tar(archives / "p.tar", [("a", "file", b"a", 0o644)], "w")
    with pytest.raises(InstallPathExists, match="exists already"):
        extract(archive, target)


def test_corrupt_archives_are_refused(layout: tuple[Path, Path, Path]) -> None:
    archives, apps, target = layout
    for name in ("bad.zip", "bad.tar.gz", "bad.tar"):
        (archives / name).write_bytes(b"this is not an archive" * 100)
        with pytest.raises(UnsupportedArchive, match=name):
            extract(archives / name, target)
    assert not apps.exists()


def test_truncated_tar_gz_is_refused(layout: tuple[Path, Path, Path]) -> None:
    archives, apps, target = layout
    archive = _tar(archives / "p.tar.gz", [("a", "file", os.urandom(100_000), 0o644)])
    archive.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(UnsupportedArchive, match="p.tar.gz"):
        extract(archive, target)
    assert not apps.exists()


def test_format_comes_from_the_name_or_is_refused() -> None:
    assert archive_format("Web.1.0.NUPKG") is ArchiveFormat.NUPKG
    assert archive_format("web.1.0.zip") is ArchiveFormat.ZIP
    assert archive_format("web.1.0.tgz") is ArchiveFormat.TAR_GZ
    with pytest.raises(UnsupportedArchive, match="'web.rar' is not a supported"):
        archive_format("web.rar")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_owner_is_the_given_user(layout: tuple[Path, Path, Path]) -> None:
    archives, _, target = layout
    archive = _tar(
        archives / "p.tar",
        [("d/a.txt", "file", b"a", 0o644), ("d/l", "symlink", "a.txt", 0o777)],
        "w",
    )
    extract(archive, target, owner=(4321, 4322))
    for path in (target, target / "d", target / "d/a.txt", target / "d/l"):
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (4321, 4322)


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet=st.sampled_from(list("ab./\\:\x00 ")), max_size=20))
def test_any_accepted_entry_name_stays_inside_the_target(name: str) -> None:
    root = PurePosixPath("/target")
    try:
        relative = safe_relative_path(name, "p.zip")
    except UnsafeArchive:
        return
    if relative is None:
        return
    joined = PurePosixPath(posixpath.normpath(root / relative))
    assert joined.is_relative_to(root)
    assert joined != root
