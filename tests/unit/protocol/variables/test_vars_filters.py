"""Every built-in filter, its arguments, and its failure behaviour."""

from __future__ import annotations

import re

import pytest

from cuttle.protocol.variables import evaluate, register_filter


def ev(template: str, **variables: str) -> str:
    return evaluate(template, variables)


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ("#{V | ToUpper}", "straße", "STRAßE"),
        ("#{V | ToLower}", "ABC", "abc"),
        ("#{V | toupper x}", "a", "#{V | toupper x}"),
        ("[#{V | Trim}]", " \tx \n", "[x]"),
        ("[#{V | Trim START}]", " x ", "[x ]"),
        ("[#{V | Trim middle}]", " x ", "[#{V | Trim middle}]"),
        ("#{V | Truncate 3}", "abcdef", "abc..."),
        ('#{V | Truncate 3 "~"}', "abcdef", "abc~"),
        ('#{V | Truncate 3 ""}', "abcdef", "abc"),
        ("#{V | Truncate 10}", "abc", "abc"),
        ("#{V | Truncate -1}", "abc", "#{V | Truncate -1}"),
        ("#{V | Truncate x}", "abc", "#{V | Truncate x}"),
        ("#{V | Substring 2 3}", "Octopus Deploy", "top"),
        ("#{V | Substring 7}", "Octopus Deploy", "Octopus"),
        ("#{V | Substring 3 99}", "abcdef", "def"),
        ("#{V | Substring 99 1}", "abc", "#{V | Substring 99 1}"),
        ("#{V | Substring 1 2 3}", "abc", "#{V | Substring 1 2 3}"),
        ("#{V | Substring}", "abc", "#{V | Substring}"),
        ('#{V | Replace "a+" "-"}', "baaad", "b-d"),
        ('#{V | Replace "(?<w>[a-z]+)(\\d)" "${w}:$2:$$:$0"}', "ab1", "ab:1:$:ab1"),
        ('#{V | Replace "x" "$9"}', "axb", "a$9b"),
        ('#{V | Replace "("}', "abc", '#{V | Replace "("}'),
        ("#{V | Append a b}", "x", "xab"),
        ("#{V | Prepend a b}", "x", "abx"),
        ("#{V | Append}", "x", "#{V | Append}"),
        ("#{V | StartsWith ab}|#{V | EndsWith bc}|#{V | Contains B}", "abc", "true|true|false"),
        ("#{V | StartsWith}", "abc", "#{V | StartsWith}"),
        ('#{V | Match "^a.c$"}|#{V | Match "b"}|#{V | Match "z"}', "abc", "true|true|false"),
        ("#{V | null}", "abc", "#{V | null}"),
    ],
)
def test_text_filters(template: str, value: str, expected: str) -> None:
    assert ev(template, V=value) == expected


def test_filters_without_input() -> None:
    assert ev("#{ | Append x y}") == "xy"
    assert ev("#{Missing | Prepend p}") == "p"
    assert ev("#{Missing | ToUpper}") == "#{Missing | ToUpper}"


def test_unknown_filter_poisons_the_chain() -> None:
    assert ev("#{V | Frob | ToUpper}", V="x") == "#{V | Frob | ToUpper}"


def test_filter_arguments_from_variables_and_quotes() -> None:
    assert ev("#{V | Replace #{A}#{B}}", V="a-a", A="a", B="b") == "b-b"
    assert ev("#{V | Replace #{A} z}", V="a-a", A="a") == "z-z"
    assert ev('#{V | Append \\"#a"b\\"}', V="x") == 'x#a"b'


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("", "    a\n    b\n"),
        (" 2", "  a\n  b\n"),
        (" /2", "a\n  b\n"),
        (" 1/3", " a\n   b\n"),
        (" //", "//a\n//b\n"),
        (" 256", "256a\n256b\n"),
        (' ">" "."', ">a\n.b\n"),
        (" a b c", "#{V | Indent a b c}"),
    ],
)
def test_indent(args: str, expected: str) -> None:
    assert ev("#{V | Indent" + args + "}", V="a\nb") == expected.rstrip("\n")
    assert ev("[#{E | Indent}]", E="") == "[]"


@pytest.mark.parametrize(
    ("flt", "value", "expected"),
    [
        ("HtmlEscape", "<a href='/x'>&\"", "&lt;a href=&apos;&#x2F;x&apos;&gt;&amp;&quot;"),
        ("XmlEscape", "<a href='/x'>&\"", "&lt;a href=&apos;/x&apos;&gt;&amp;&quot;"),
        ("JsonEscape", 'a"b\\c\r\n\t/é\x01', 'a\\"b\\\\c\\r\\n\\t/é\x01'),
        ("YamlSingleQuoteEscape", "it's\nx\n\ny\r\nz", "it''s\n\nx\n\n\ny\r\n\r\nz"),
        ("YamlDoubleQuoteEscape", 'a"\\\n\té😀', 'a\\"\\\\\\n\\t\\u00e9\\ud83d\\ude00'),
        ("PropertiesKeyEscape", "a b:c=d\\ÿ", "a\\ b\\:c\\=d\\\\\\u00ff"),
        ("PropertiesValueEscape", " a b:c=d", "\\ a b:c=d"),
        ("UriEscape", "a b/é?x=[1]", "a%20b/%C3%A9?x=[1]"),
        ("UriDataEscape", "a b/é~", "a%20b%2F%C3%A9~"),
    ],
)
def test_escape_filters(flt: str, value: str, expected: str) -> None:
    assert ev("#{V | " + flt + "}", V=value) == expected


def test_markdown() -> None:
    out = ev("#{V | Markdown}", V="  **bold** text  ")
    assert "<strong>bold</strong>" in out
    assert out.endswith("\n")


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ("#{V | ToBase64}", "cuttle:secret", "Y3V0dGxlOnNlY3JldA=="),
        ("#{V | ToBase64 unicode}", "hi", "aABpAA=="),
        ("#{V | FromBase64}", "ZGVwbG95", "deploy"),
        ("#{V | FromBase64 Unicode}", "aABpAA==", "hi"),
        ("#{V | FromBase64}", "not base64!", "#{V | FromBase64}"),
        ("#{V | ToBase64 ascii}", "x", "#{V | ToBase64 ascii}"),
        ("#{V | Sha1}", "octo", "6e1cc60e25630284701a7bea25813c453e76ad9b"),
        ("#{V | Sha256 4}", "octo", "e5cd9f39"),
        ("#{V | Sha256 utf8 2}", "octo", "e5cd"),
        ("#{V | Md5 base64}", "b2N0bw==", "39eafcc8caa450a7bd41a961c137bc2c"),
        ("#{V | Md5 0}", "octo", "#{V | Md5 0}"),
        ("#{V | Md5 latin1}", "octo", "#{V | Md5 latin1}"),
        ("#{V | Sha512 1000}", "", None),
    ],
)
def test_encoding_filters(template: str, value: str, expected: str | None) -> None:
    out = ev(template, V=value)
    if expected is None:
        assert re.fullmatch("[0-9a-f]{128}", out)
    else:
        assert out == expected


@pytest.mark.parametrize(
    ("args", "value", "expected"),
    [
        ('"0.00"', "7.5", "7.50"),
        ("N2", "1234567.891", "1,234,567.89"),
        ("F1", "2.25", "2.3"),
        ("Int32 D5", "42", "00042"),
        ("int X", "255", "FF"),
        ("D5", "42", "#{V | Format D5}"),
        ("P1", "0.256", "25.6 %"),
        ('\\"#,##0.00\\"', "1234.5", "1,234.50"),
        ('"0%"', "0.5", "50%"),
        ('"yyyy-MM-dd"', "2031-11-05 14:30:00", "2031-11-05"),
        ('"dd MMM yyyy HH:mm tt"', "2031-11-05T09:05:00", "05 Nov 2031 09:05 AM"),
        ('DateTime "yyyy/MM/dd"', "11/05/2031", "2031/11/05"),
        ('DateTimeOffset "zzz"', "2031-11-05T14:30:00+02:00", "+02:00"),
        ("date s", "2031-11-05 14:30:00", "2031-11-05T14:30:00"),
        ('"0.00"', "not a number", '#{V | Format "0.00"}'),
        ("", "1", "#{V | Format}"),
    ],
)
def test_format(args: str, value: str, expected: str) -> None:
    assert ev("#{V | Format " + args + "}" if args else "#{V | Format}", V=value) == expected


def test_now_dates() -> None:
    assert ev("#{ | NowDateUtc zz}") == "+00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", ev("#{ | NowDateUtc}"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}", ev("#{ | NowDate}"))
    assert ev("#{Missing | NowDateUtc yyyy}").isdigit()
    assert ev("#{V | NowDate}", V="x") == "#{V | NowDate}"


def test_add_hours_and_days() -> None:
    assert ev("#{V | AddHours 2}", V="2031-11-05T14:30:00") == "2031-11-05T16:30:00.0000000"
    assert ev("#{V | AddDays -1}", V="2031-11-05T14:30:00Z") == "2031-11-04T14:30:00.0000000Z"
    assert ev('#{V | AddHours "1.5"}', V="2031-11-05T14:30:00+02:00") == (
        "2031-11-05T16:00:00.0000000+02:00"
    )
    assert ev("#{V | AddDays 1}", V="soon") == "#{V | AddDays 1}"


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("Host", "example.com"),
        ("Port", "8443"),
        ("Scheme", "https"),
        ("AbsolutePath", "/p/a%20b"),
        ("Path", "/p/a b"),
        ("Query", "?q=1"),
        ("Fragment", "#frag"),
        ("PathAndQuery", "/p/a%20b?q=1"),
        ("Authority", "example.com:8443"),
        ("HostAndPort", "example.com:8443"),
        ("SchemeAndServer", "https://example.com:8443"),
        ("UserInfo", "u:p"),
        ("IsDefaultPort", "false"),
        ("IsAbsoluteUri", "true"),
        ("IsLoopback", "false"),
        ("HostNameType", "Dns"),
        ("Bogus", "[UriPart Bogus error: argument 'Bogus' not supported]"),
    ],
)
def test_uri_part(part: str, expected: str) -> None:
    assert ev("#{U | UriPart " + part + "}", U="https://u:p@Example.com:8443/p/a%20b?q=1#frag") == (
        expected
    )


def test_uri_part_defaults_and_errors() -> None:
    assert ev("#{U | UriPart Port}", U="http://h/x") == "80"
    assert ev("#{U | UriPart}", U="http://h/x") == "[UriPart error: no argument given]"
    assert ev("#{U | UriPart IsAbsoluteUri}", U="relative/path") == "false"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("V7.1-alpha.12", "7|1|0|0|alpha.12|alpha|12|"),
        ("4.2.0-beta.3+build77", "4|2|0|0|beta.3|beta|3|build77"),
        ("1.2.3.4-my-branch.1.2", "1|2|3|4|my-branch.1.2|my|branch.1.2|"),
        ("latest", "0|0|0|0|latest|latest||"),
    ],
)
def test_versions(value: str, expected: str) -> None:
    names = ["Major", "Minor", "Patch", "Revision", "PreRelease", "PreReleasePrefix",
             "PreReleaseCounter", "Metadata"]  # fmt: skip
    template = "|".join("#{V | Version" + n + "}" for n in names)
    assert ev(template, V=value) == expected


def test_bad_version_is_left_as_written() -> None:
    assert ev("#{V | VersionMajor}", V="99999999999.1") == "#{V | VersionMajor}"


def test_register_filter_builtins_win() -> None:
    register_filter("Shout", lambda value, args: None if value is None else value + "!")
    register_filter("ToUpper", lambda value, args: "hijacked")
    assert ev("#{V | shout | ToUpper}", V="x") == "X!"
