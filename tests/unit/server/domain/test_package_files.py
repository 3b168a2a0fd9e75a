"""Package file names as the feed reads them (cuttle.server.domain.package_files)."""

from __future__ import annotations

import pytest

from cuttle.server.domain.package_files import (
    InvalidPackage,
    check_package_id,
    package_key,
    package_name,
    parse_file_name,
    version_key,
)
from cuttle.server.domain.versions import parse_version


@pytest.mark.parametrize(
    ("file_name", "package_id", "version", "kind"),
    [
        ("web.1.4.0.tar.gz", "web", "1.4.0", "tar.gz"),
        ("My.App.2.0.0-beta.1.zip", "My.App", "2.0.0-beta.1", "zip"),
        ("web.1.4.0.tgz", "web", "1.4.0", "tar.gz"),
        ("web.1.4.0.tar.bz2", "web", "1.4.0", "tar.bz2"),
        ("web.1.4.0.tar", "web", "1.4.0", "tar"),
        ("Acme.Web.1.2.3.4.nupkg", "Acme.Web", "1.2.3.4", "nupkg"),
        ("web.1.4.0+build.7.ZIP", "web", "1.4.0+build.7", "zip"),
        # Digits in the id: the first split whose rest is a version, the id as short as can be.
        ("app2.1.0.zip", "app2", "1.0", "zip"),
        ("foo.1bar.1.0.0.zip", "foo.1bar", "1.0.0", "zip"),
        ("web.v2.0.1.zip", "web", "v2.0.1", "zip"),
        ("my_app-x.10.0.0-rc.2.tar.gz", "my_app-x", "10.0.0-rc.2", "tar.gz"),
    ],
)
def test_id_version_and_format_come_from_the_file_name(
    file_name: str, package_id: str, version: str, kind: str
) -> None:
    parsed = parse_file_name(file_name)
    assert (parsed.package_id, str(parsed.version), parsed.format) == (package_id, version, kind)


@pytest.mark.parametrize(
    ("file_name", "problem"),
    [
        ("web.zip", "has no version in its name"),
        ("web-latest.tar.gz", "has no version in its name"),
        ("build-7.zip", "has no version in its name"),
        ("web.1.4.0.rar", "not a supported package file"),
        ("web.1.4.0.gz", "not a supported package file"),
        ("web.1.4.0", "not a supported package file"),
        (".zip", "not a supported package file"),
    ],
)
def test_a_file_name_without_id_version_or_known_extension_is_refused(
    file_name: str, problem: str
) -> None:
    with pytest.raises(InvalidPackage, match=problem):
        parse_file_name(file_name)


def test_given_id_and_version_win_and_only_the_extension_is_needed() -> None:
    named = package_name("output.zip", "web", "1.4.0")
    assert (named.package_id, str(named.version), named.format) == ("web", "1.4.0", "zip")
    # One of the two given: the other still comes from the name.
    named = package_name("web.1.4.0.zip", version="1.4.1")
    assert (named.package_id, str(named.version)) == ("web", "1.4.1")
    with pytest.raises(InvalidPackage, match="--version: 'one' is not a valid version"):
        package_name("output.zip", "web", "one")
    with pytest.raises(InvalidPackage, match="not a supported package file"):
        package_name("output.exe", "web", "1.0.0")


@pytest.mark.parametrize("bad", ["", ".web", "web.", "we..b", "web app", "web/../x", "a" * 101])
def test_package_ids_are_checked(bad: str) -> None:
    with pytest.raises(InvalidPackage):
        check_package_id(bad)


def test_ids_compare_without_case_and_versions_canonically() -> None:
    assert package_key("My.App") == package_key("my.app")
    same = ["1.0", "1.0.0", "1.0.0.0", "01.0.0", "v1.0.0", "1.0.0+build.9"]
    assert {version_key(parse_version(text)) for text in same} == {"1.0.0"}
    assert version_key(parse_version("1.0.0-beta")) != version_key(parse_version("1.0.0"))
    assert version_key(parse_version("1.0.0.1")) == "1.0.0.1"
