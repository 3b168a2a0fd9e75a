"""Versions, channel version rules and release version templates (cuttle.server.domain.versions)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cuttle.server.domain.versions import (
    InvalidPrereleaseRule,
    InvalidVersion,
    InvalidVersionRange,
    InvalidVersionTemplate,
    Version,
    apply_mask,
    check_channel_version,
    compile_prerelease_rule,
    next_version,
    parse_version,
    parse_version_range,
    satisfies_prerelease_rule,
)


def v(text: str) -> Version:
    return parse_version(text)


# --- parsing and order ------------------------------------------------------------------------

PARSED = {
    "1.4.0": (1, 4, 0, None, (), ()),
    "1.4.0-beta.2": (1, 4, 0, None, ("beta", "2"), ()),
    "1.2.3.4": (1, 2, 3, 4, (), ()),
    "v1.2.3": (1, 2, 3, None, (), ()),
    "V2.0": (2, 0, 0, None, (), ()),
    "7": (7, 0, 0, None, (), ()),
    "2016.09.01-beta.0001": (2016, 9, 1, None, ("beta", "0001"), ()),
    "1.0.0-rc-1+build.5.sha-1a2b": (1, 0, 0, None, ("rc-1",), ("build", "5", "sha-1a2b")),
    "1.0.0+meta": (1, 0, 0, None, (), ("meta",)),
    " 1.0.0 ": (1, 0, 0, None, (), ()),
}


@pytest.mark.parametrize(("text", "parts"), PARSED.items(), ids=PARSED.keys())
def test_parse(text: str, parts: tuple[object, ...]) -> None:
    version = v(text)
    assert (
        version.major,
        version.minor,
        version.patch,
        version.revision,
        version.prerelease,
        version.metadata,
    ) == parts
    assert str(version) == text.strip()


# Strictly ascending: SemVer 2.0's own example, then the numeric parts and Octopus's extensions.
ASCENDING = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.0.1-beta",
    "1.0.0.1",
    "1.0.1",
    "1.0.10",
    "1.4.008",
    "1.4.9",
    "1.4.10",
    "1.10.0",
    "2.0.0-Beta",  # ASCII order: upper case sorts before lower case
    "2.0.0-beta",
    "3.0.0-beta.9",
    "3.0.0-beta.10",
    "3.0.0-beta.10a",
]


def test_ascending_table() -> None:
    versions = [v(t) for t in ASCENDING]
    for lower, higher in zip(versions, versions[1:], strict=False):
        assert lower < higher, (str(lower), str(higher))
        assert higher > lower
        assert lower != higher
    assert sorted(reversed(versions)) == versions


EQUAL = [
    ("1.0.0.0", "1.0.0"),
    ("1.0", "1.0.0"),
    ("2016.01.02", "2016.1.2"),
    ("1.0.0+build.1", "1.0.0+build.2"),
    ("1.0.0+meta", "1.0.0"),
    ("v1.2.3", "1.2.3"),
    ("1.0.0-beta.01", "1.0.0-beta.1"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_equal_precedence(a: str, b: str) -> None:
    assert v(a) == v(b)
    assert hash(v(a)) == hash(v(b))
    assert v(a) <= v(b)
    assert v(a) >= v(b)
    assert not v(a) < v(b)
    assert str(v(a)) == a  # equal, but still shown as written


def test_normalized_and_create() -> None:
    assert v("v2016.09.01.0-beta.0001+sha").normalized == "2016.9.1-beta.1+sha"
    assert v("1.2.3.4").normalized == "1.2.3.4"
    assert Version.create(1, 2, 3, prerelease="rc.1") == v("1.2.3-rc.1")
    assert str(Version.create(1, 2, 3, 4, metadata="m")) == "1.2.3.4+m"
    assert v("1.0.0-beta").is_prerelease
    assert not v("1.0.0+beta").is_prerelease


PARSE_ERRORS = {
    "": (1, "a version cannot be empty"),
    "1.2.x": (5, "expected a number after '.', found 'x' (at character 5)"),
    "1..2": (3, "expected a number after '.', found '.'"),
    "x1.0": (1, "expected a number, found 'x'"),
    "1.2.3.4.5": (8, "a version has at most four numeric parts"),
    "1.0.0-": (7, "expected a pre-release identifier (letters, digits, '-'), found the end"),
    "1.0.0-beta..1": (12, "expected a pre-release identifier"),
    "1.0.0-beta_1": (11, "unexpected '_'"),
    "1.0.0+": (7, "expected a build metadata identifier"),
    "1.0.0 beta": (6, "unexpected ' '"),
    "1.0.*": (5, "floating versions ('*') are not supported"),
    "3000000000.0": (1, "3000000000 is too large (a part is at most 2147483647)"),
    "1.0.0-béta": (8, "unexpected 'é'"),
}


@pytest.mark.parametrize(("text", "expected"), PARSE_ERRORS.items(), ids=PARSE_ERRORS.keys())
def test_parse_errors_name_the_position(text: str, expected: tuple[int, str]) -> None:
    column, message = expected
    with pytest.raises(InvalidVersion) as info:
        parse_version(text)
    assert info.value.column == column
    assert message in str(info.value)
    if text:
        assert str(info.value).startswith(f"{text!r} is not a valid version: ")


# --- hypothesis: a total order consistent with parsing and formatting ------------------------

_alnum_identifier = st.from_regex(r"[0-9A-Za-z-]{0,3}[A-Za-z-][0-9A-Za-z-]{0,3}", fullmatch=True)
_numeric_identifier = st.integers(0, 120).map(str)
_padded = st.tuples(st.integers(0, 30), st.sampled_from(["", "0", "00"])).map(
    lambda t: t[1] + str(t[0])
)


@st.composite
def version_texts(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "", "v", "V"]))
    numbers = draw(st.lists(_padded, min_size=1, max_size=4))
    prerelease = draw(st.lists(_alnum_identifier | _numeric_identifier | _padded, max_size=3))
    metadata = draw(st.lists(_alnum_identifier | _numeric_identifier, max_size=2))
    text = prefix + ".".join(numbers)
    if prerelease:
        text += "-" + ".".join(prerelease)
    if metadata:
        text += "+" + ".".join(metadata)
    return text


def _reference_compare(a: str, b: str) -> int:
    """SemVer 2.0 precedence written from the spec, independently of the implementation."""

    def split(text: str) -> tuple[list[int], list[str]]:
        text = text.lstrip("vV").split("+", 1)[0]
        core, _, pre = text.partition("-")
        numbers = [int(n) for n in core.split(".")]
        return numbers + [0] * (4 - len(numbers)), (pre.split(".") if pre else [])

    (na, pa), (nb, pb) = split(a), split(b)
    if na != nb:
        return -1 if na < nb else 1
    if not pa or not pb:
        return (len(pa) == 0) - (len(pb) == 0)
    for x, y in zip(pa, pb, strict=False):
        if x == y or (x.isdigit() and y.isdigit() and int(x) == int(y)):
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


@given(version_texts())
def test_parse_format_round_trip(text: str) -> None:
    version = v(text)
    assert str(version) == text
    assert v(str(version)) == version
    assert v(version.normalized) == version
    assert v(version.normalized).normalized == version.normalized


@given(version_texts(), version_texts())
def test_order_matches_semver_precedence(a: str, b: str) -> None:
    expected = _reference_compare(a, b)
    va, vb = v(a), v(b)
    assert (va < vb, va == vb, va > vb) == (expected < 0, expected == 0, expected > 0)
    assert (va <= vb) == (expected <= 0)
    assert (va >= vb) == (expected >= 0)
    if va == vb:
        assert hash(va) == hash(vb)


@given(st.lists(version_texts(), min_size=3, max_size=8))
def test_order_is_total_and_transitive(texts: list[str]) -> None:
    versions = [v(t) for t in texts]
    ordered = sorted(versions)
    for lower, higher in zip(ordered, ordered[1:], strict=False):
        assert lower <= higher
        assert not higher < lower
    for a in versions:
        for b in versions:
            assert sum((a < b, a == b, a > b)) == 1
            for c in versions:
                if a <= b and b <= c:
                    assert a <= c


# --- ranges -----------------------------------------------------------------------------------

RANGES = [
    ("1.0", "1.0.0", True),
    ("1.0", "0.9.9", False),
    ("1.0", "99.0", True),
    ("1.0", "1.0.0-beta", False),  # a pre-release sorts before its release
    ("[1.0]", "1.0.0", True),
    ("[1.0]", "1.0.0.0", True),
    ("[1.0]", "1.0.1", False),
    ("[1.0,2.0)", "1.0.0", True),
    ("[1.0,2.0)", "1.9.99", True),
    ("[1.0,2.0)", "2.0.0-beta", True),
    ("[1.0,2.0)", "2.0.0", False),
    ("[1.0,2.0]", "2.0.0", True),
    ("(1.0,2.0)", "1.0.0", False),
    ("(1.0,2.0)", "1.0.0.1", True),
    ("(1.0,)", "1.0.0", False),
    ("(1.0,)", "1.0.1", True),
    ("(,1.0]", "1.0.0", True),
    ("(,1.0]", "0.0.1", True),
    ("(,1.0)", "1.0.0", False),
    ("[,1.0)", "0.1", True),
    ("[2.0.0-alpha.1,2.0.0)", "2.0.0-alpha.1", True),
    ("[2.0.0-alpha.1,2.0.0)", "2.0.0-beta", True),
    ("[2.0.0-alpha.1,2.0.0)", "2.0.0-alpha", False),
    ("[2.0.0-alpha.1,2.0.0)", "2.0.0", False),
    (" [ 1.0 , 2.0 ) ", "1.5", True),
]


@pytest.mark.parametrize(("text", "version", "inside"), RANGES)
def test_range_contains(text: str, version: str, inside: bool) -> None:
    assert parse_version_range(text).contains(v(version)) is inside


def test_range_describes_itself() -> None:
    assert parse_version_range("[1.0,2.0)").describe() == "at least 1.0 and below 2.0"
    assert parse_version_range("(1.0,2.0]").describe() == "above 1.0 and at most 2.0"
    assert parse_version_range("[1.0]").describe() == "exactly 1.0"
    assert parse_version_range("1.0").describe() == "at least 1.0"
    assert parse_version_range("(,3)").describe() == "below 3"
    assert str(parse_version_range(" [1.0,2.0) ")) == "[1.0,2.0)"


RANGE_ERRORS = {
    "": (1, "a range cannot be empty"),
    "(1.0)": (1, "an exact version is written [1.0]"),
    "[]": (2, "expected a version inside [ ]"),
    "[1.0,2.0": (9, "expected ']' or ')' to close the range"),
    "[2.0,1.0]": (2, "the lower bound 2.0 is above the upper bound 1.0"),
    "(1.0,1.0]": (1, "the range contains no version"),
    "[1.0,2.0,3.0]": (9, "a range has one ',' between its lower and upper bound"),
    "(,)": (1, "a range needs a lower or an upper bound"),
    "[1.x,2.0]": (4, "expected a number after '.', found 'x'"),
    "[1.0,2.0-]": (10, "expected a pre-release identifier"),
    "1.0 ]": (4, "unexpected ' '"),
}


@pytest.mark.parametrize(("text", "expected"), RANGE_ERRORS.items(), ids=RANGE_ERRORS.keys())
def test_range_errors_name_the_position(text: str, expected: tuple[int, str]) -> None:
    column, message = expected
    with pytest.raises(InvalidVersionRange) as info:
        parse_version_range(text)
    assert info.value.column == column
    assert message in str(info.value)
    assert f"(at character {column})" in str(info.value)


# --- pre-release rules (the examples of Octopus's channel documentation) ---------------------

PRERELEASE_RULES = [
    (r"^[^\+].*", "1.0.0-beta", True),
    (r"^[^\+].*", "1.0.0", False),
    (r"^[^\+].*", "1.0.0+meta", False),
    (r"^(|\+.*)$", "1.0.0", True),
    (r"^(|\+.*)$", "1.0.0+meta", True),
    (r"^(|\+.*)$", "1.0.0-beta", False),
    ("^$", "1.0.0", True),
    ("^$", "1.0.0-beta", False),
    ("^$", "1.0.0+meta", False),
    ("^beta", "1.0.0-beta0003", True),
    ("^beta", "1.0.0-mybeta", False),
    ("^beta", "1.0.0+beta", False),
    ("beta", "1.0.0-mybeta", True),
    ("^(?!beta).+", "1.0.0-feature-x", True),
    ("^(?!beta).+", "1.0.0-beta.1", False),
    ("^bugfix-", "1.0.0-bugfix-syscrash", True),
    ("^(?<kind>rc)\\.\\d+$", "1.0.0-rc.2", True),  # .NET named group
    ("", "1.0.0-anything", True),
]


@pytest.mark.parametrize(("pattern", "version", "allowed"), PRERELEASE_RULES)
def test_prerelease_rule(pattern: str, version: str, allowed: bool) -> None:
    assert satisfies_prerelease_rule(v(version), pattern) is allowed


def test_invalid_prerelease_rule_names_the_position() -> None:
    with pytest.raises(InvalidPrereleaseRule) as info:
        compile_prerelease_rule("^(beta")
    assert info.value.column == 2
    assert str(info.value).startswith("'^(beta' is not a valid pre-release rule: missing )")


CHANNEL_CHECKS = {
    "fits": ("1.4.0", "[1.0,2.0)", "^$", []),
    "no rules": ("1.4.0-anything", "", "", []),
    "pre-release rule": (
        "1.4.0-beta",
        "",
        "^$",
        [
            "1.4.0-beta does not satisfy the channel's pre-release rule ^$ "
            "(its pre-release tag is 'beta')"
        ],
    ),
    "pre-release rule, full release": (
        "1.4.0",
        "",
        "^beta",
        ["1.4.0 does not satisfy the channel's pre-release rule ^beta (it has no pre-release tag)"],
    ),
    "metadata": (
        "1.4.0-rc+sha",
        "",
        "^rc$",
        [
            "1.4.0-rc+sha does not satisfy the channel's pre-release rule ^rc$ "
            "(its pre-release tag and metadata are 'rc+sha')"
        ],
    ),
    "range": (
        "2.1.0",
        "[1.0,2.0)",
        "",
        [
            "2.1.0 is outside the channel's version range [1.0,2.0) "
            "(it must be at least 1.0 and below 2.0)"
        ],
    ),
    "both": (
        "0.9-beta",
        "1.0",
        "^$",
        [
            "0.9-beta is outside the channel's version range 1.0 (it must be at least 1.0)",
            "0.9-beta does not satisfy the channel's pre-release rule ^$ "
            "(its pre-release tag is 'beta')",
        ],
    ),
    "invalid version": (
        "1.x",
        "",
        "",
        ["'1.x' is not a valid version: expected a number after '.', found 'x' (at character 3)"],
    ),
    "broken channel rules": (
        "1.0.0",
        "[1.0",
        "(",
        [
            "the channel's version range is unusable: '[1.0' is not a valid version range: "
            "expected ']' or ')' to close the range (at character 5)",
            "the channel's pre-release rule is unusable: '(' is not a valid pre-release rule: "
            "missing ), unterminated subpattern (at character 1)",
        ],
    ),
}


@pytest.mark.parametrize(
    ("version", "version_range", "pattern", "problems"),
    CHANNEL_CHECKS.values(),
    ids=CHANNEL_CHECKS.keys(),
)
def test_check_channel_version(
    version: str, version_range: str, pattern: str, problems: list[str]
) -> None:
    assert check_channel_version(version, version_range, pattern) == problems


def test_check_channel_version_takes_parsed_values() -> None:
    rule = parse_version_range("[1.0,2.0)")
    assert check_channel_version(v("1.5.0"), rule, "^$") == []
    assert len(check_channel_version(v("2.5.0"), rule, "^$")) == 1


# --- release version templates ----------------------------------------------------------------

DEFAULT_TEMPLATE = (
    "#{Octopus.Version.LastMajor}.#{Octopus.Version.LastMinor}.#{Octopus.Version.NextPatch}"
)
CHANNEL_TEMPLATE = (
    "#{Octopus.Version.Channel.LastMajor}.#{Octopus.Version.Channel.LastMinor}."
    "#{Octopus.Version.Channel.NextPatch}"
    '#{if Octopus.Release.Channel.Name != "Default"}-#{Octopus.Release.Channel.Name}#{/if}'
)
NOW = datetime(2020, 10, 2, 13, 5, 9)

TEMPLATES = {
    "Octopus's default": (DEFAULT_TEMPLATE, "1.4.7", None, "1.4.8"),
    "first release": (DEFAULT_TEMPLATE, None, None, "0.0.1"),
    "next minor": (
        "#{Octopus.Version.LastMajor}.#{Octopus.Version.NextMinor}.0",
        "1.4.7",
        None,
        "1.5.0",
    ),
    "next major": ("#{Octopus.Version.NextMajor}.0.0", "1.4.7", None, "2.0.0"),
    "build is the third part": (
        "#{Octopus.Version.LastMajor}.#{Octopus.Version.LastMinor}.#{Octopus.Version.NextBuild}",
        "1.4.7",
        None,
        "1.4.8",
    ),
    "revision": (
        "#{Octopus.Version.LastMajor}.#{Octopus.Version.LastMinor}.#{Octopus.Version.LastPatch}"
        ".#{Octopus.Version.NextRevision}",
        "1.4.7.3",
        None,
        "1.4.7.4",
    ),
    "suffix keeps the dash": (
        "#{Octopus.Version.LastMajor}.#{Octopus.Version.LastMinor}.#{Octopus.Version.NextPatch}"
        "#{Octopus.Version.LastSuffix}",
        "1.4.7-beta.2",
        None,
        "1.4.8-beta.2",
    ),
    "channel versions": (CHANNEL_TEMPLATE, "3.0.0", "1.2.3", "1.2.4-Hotfix"),
    "the channel name": ("1.0.0-#{Octopus.Release.Channel.Name}", None, None, "1.0.0-Hotfix"),
    "other channel by name": (
        "#{Octopus.Version.Channel[Beta].LastMajor}.#{Octopus.Version.Channel[Beta].NextMinor}.0",
        "3.0.0",
        None,
        "2.6.0",
    ),
    "date": (
        "#{Octopus.Date.Year}.#{Octopus.Date.Month}.#{Octopus.Date.Day}",
        None,
        None,
        "2020.10.2",
    ),
    "i mask": ("1.2.i", "1.2.3", None, "1.2.4"),
    "i mask on a new minor restarts": ("1.3.i", "1.2.3", None, "1.3.0"),
    "date with a revision counter": (
        "#{Octopus.Date.Year}.#{Octopus.Date.Month}.#{Octopus.Date.Day}.i",
        "2020.10.2.4",
        None,
        "2020.10.2.5",
    ),
    "date counter restarts each day": (
        "#{Octopus.Date.Year}.#{Octopus.Date.Month}.#{Octopus.Date.Day}.i",
        "2020.10.1.7",
        None,
        "2020.10.2.0",
    ),
    "spread over lines": (
        "#{Octopus.Version.LastMajor}.\n  #{Octopus.Version.LastMinor}.\n  c.i\n",
        "1.2.3.4",
        None,
        "1.2.3.5",
    ),
    "project variable": ("#{AppMajor}.0.i", "4.0.9", None, "4.0.10"),
}


@pytest.mark.parametrize(
    ("template", "last", "channel_last", "expected"), TEMPLATES.values(), ids=TEMPLATES.keys()
)
def test_next_version(
    template: str, last: str | None, channel_last: str | None, expected: str
) -> None:
    last_version = v(last) if last else None
    result = next_version(
        template,
        last_version,
        "Hotfix",
        channel_last_version=v(channel_last) if channel_last else last_version,
        other_channels={"Beta": v("2.5.1")},
        variables={"AppMajor": "4"},
        now=NOW,
    )
    assert str(result) == expected


def test_channel_variables_default_to_the_project_s_last_version() -> None:
    assert str(next_version(CHANNEL_TEMPLATE, v("3.1.4"), "Default")) == "3.1.5"
    no_channel_release = next_version(
        CHANNEL_TEMPLATE, v("3.1.4"), "Beta", channel_last_version=None
    )
    assert str(no_channel_release) == "0.0.1-Beta"


def test_mask_base_is_the_highest_matching_existing_version() -> None:
    existing = [v("1.2.3"), v("2.0.5"), v("1.2.9"), v("1.3.0")]
    assert str(next_version("1.2.i", v("2.0.5"), "Default", existing_versions=existing)) == "1.2.10"
    assert str(next_version("2.0.i", v("2.0.5"), "Default", existing_versions=existing)) == "2.0.6"
    assert str(next_version("3.0.i", v("2.0.5"), "Default", existing_versions=existing)) == "3.0.0"


# Facts from Octopus's mask tests; the last two deliberately differ (see apply_mask).
MASKS = [
    ("1.2.3-alpha.i", None, "1.2.3-alpha.0"),
    ("1.2.3-alpha.i", "1.2.3-alpha.25", "1.2.3-alpha.26"),
    ("i.2.3-alpha.i", "1.2.3-alpha.25", "2.2.3-alpha.26"),
    ("1.3.i-alpha.i", "1.2.3-alpha.25", "1.3.0-alpha.0"),  # no base with 1.3: i and c are 0
    ("c.c.i", "1.2.3-alpha.25", "1.2.4"),
    ("c.c.i-alpha.c", "1.2.3-alpha.25", "1.2.4-alpha.25"),
    ("c.i.c", "1.2.3-alpha.25", "1.3.0"),
    ("i.i.i-alpha.i", "1.2.3-alpha.25", "2.0.0-alpha.26"),
    ("c.c.i", "1.2.3.4", "1.2.4.0"),
    ("c.c.c-i", "1.2.3-4", "1.2.3-5"),
    ("c.c.c-i", "1.2.3", "1.2.3-1"),
    ("1.2.3.4-i.1", "1.2.3.4-25.2", "1.2.3.4-26.1"),
    ("1.2.3.4-c.1", "1.2.3.4-25.2", "1.2.3.4-25.1"),
    ("v1.2.i", "1.2.3", "v1.2.4"),
    ("c.c.i+meta", "1.2.3", "1.2.4+meta"),
    ("i.c.c", "1.2.3-alpha.25", "2.0.0"),  # Octopus keeps the patch: 2.0.3
    ("i.c.c.c", "1.2.3.4", "2.0.0.0"),
]


@pytest.mark.parametrize(("mask", "base", "expected"), MASKS)
def test_apply_mask(mask: str, base: str | None, expected: str) -> None:
    assert apply_mask(mask, [v(base)] if base else []) == expected


@pytest.mark.parametrize("text", ["1.2.3", "1.2.3-beta", "c.c.c_i", "1.2.3-i ", "1.2.3.4-cc"])
def test_apply_mask_ignores_what_is_not_a_mask(text: str) -> None:
    assert apply_mask(text, [v("1.0.0")]) is None


TEMPLATE_ERRORS = {
    "unknown variable": (
        "1.#{Octopus.Version.Next}.0",
        "the release version template '1.#{Octopus.Version.Next}.0' uses what it cannot "
        "resolve: #{Octopus.Version.Next}",
    ),
    "not a version": (
        "release-#{Octopus.Version.NextPatch}",
        "the release version template 'release-#{Octopus.Version.NextPatch}' produced "
        "'release-4', which is not a version: 'release-4' is not a valid version: expected a "
        "number, found 'r' (at character 1)",
    ),
    "date without a clock": ("#{Octopus.Date.Year}.i", "uses what it cannot resolve"),
}


@pytest.mark.parametrize(
    ("template", "message"), TEMPLATE_ERRORS.values(), ids=TEMPLATE_ERRORS.keys()
)
def test_template_errors(template: str, message: str) -> None:
    with pytest.raises(InvalidVersionTemplate) as info:
        next_version(template, v("1.2.3"), "Default")
    assert message in str(info.value)
