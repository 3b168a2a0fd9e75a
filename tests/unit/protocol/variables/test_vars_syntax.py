"""Text, escaping, token syntax, parse errors and malformed-template recovery."""

from __future__ import annotations

import pytest

from cuttle.protocol.variables import (
    Template,
    TemplateSyntaxError,
    evaluate,
    evaluate_detailed,
    parse,
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("##{X}", "#{X}"),
        ("###{X}", "#v"),
        ("####{X}", "###{X}"),
        ("#####{X}", "###v"),
        ("a#b ## # ###", "a#b ## # ###"),
        ("end#", "end#"),
        ("#{ X }", "v"),
        ("#{X}#{X}", "vv"),
    ],
)
def test_hash_escapes(template: str, expected: str) -> None:
    assert evaluate(template, {"X": "v"}) == expected


def test_escape_inside_loop_builds_literal_token() -> None:
    out = evaluate("#{each k in Keys}##{#{k}}#{/each}", {"Keys": "a,b"})
    assert out == "#{a}#{b}"


def test_output_is_never_rescanned() -> None:
    assert evaluate("#{A}", {"A": "##{B}", "B": "no"}) == "#{B}"


def test_block_tags_keep_newlines() -> None:
    assert evaluate("a\n#{if X}\nb\n#{/if}\nc", {"X": "1"}) == "a\n\nb\n\nc"


@pytest.mark.parametrize(
    "template",
    ["#{Missing}", "#{Missing | ToUpper}", "#{Missing.Deep[x]}", "#{if Ghost | ToLower}y#{/if}"],
)
def test_unresolved_tokens_left_as_written(template: str) -> None:
    result = evaluate_detailed(template, {})
    assert result.text == template
    assert result.unresolved == (template,)


def test_failed_calc_echo_drops_the_keyword() -> None:
    assert evaluate("#{calc A - B}", {"A": "1", "B": "2"}) == "#{A - B}"


@pytest.mark.parametrize(
    ("template", "line", "column", "fragment"),
    [
        ("abc #{ x", 1, 5, "never closed"),
        ("line1\n  #{if X}body", 2, 3, "#{/if}"),
        ("#{/if}", 1, 1, "closes nothing"),
        ("#{if X}a#{/IF}", 1, 9, "lower case"),
        ("#{}", 1, 3, "variable name"),
        ("#{ }", 1, 4, "variable name"),
        ("#{X | Format 0.00}", 1, 15, "'.'"),
        ("#{each x in L | ToUpper}#{/each}", 1, 15, "filters are not allowed"),
        ("#{if A}#{/unless}", 1, 8, "does not match"),
        ("#{each x in L}x", 1, 1, "#{/each}"),
        ("#{X | Replace #{A} | Trim}", 1, 20, "'|'"),
    ],
)
def test_parse_errors_have_positions(template: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        parse(template)
    assert (info.value.line, info.value.column) == (line, column)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "plain",
        "#{A}",
        '#{if A == "x"}y#{else}z#{/if}',
        "#{each a in B}#{a}#{/each}",
        "#{calc 1 + {X-Y}}",
        "#{X | Replace #{A}#{B}}",
        "#{ | NowDate}",
        "#{else}",
        "#{Octopus.Action[#{Step}].Output[web-01].X}",
        '#{X | Format \\"#,##0.00\\"}',
    ],
)
def test_valid_templates_parse_and_evaluate(template: str) -> None:
    parsed = parse(template)
    assert isinstance(parsed, Template)
    assert isinstance(parsed.evaluate({"A": "x"}), str)


def test_parse_is_cached() -> None:
    assert parse("#{A} cached") is parse("#{A} cached")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("a #{Name} b #{oops", "a World b #{oops"),
        ("x#{/if}y #{Name}", "x#{/if}y World"),
        ("#{if Zed}unclosed #{Name}", "#{if Zed}unclosed World"),
        ("#{}#{Name}", "#{}World"),
        ("#{if A}#{else}#{else}#{/if}", "#{else}"),
    ],
)
def test_lenient_evaluation_keeps_bad_parts(template: str, expected: str) -> None:
    assert evaluate(template, {"Name": "World"}) == expected


def test_identifier_stops_before_keywords() -> None:
    # `a in b` cannot be referenced: the name stops before ` in `.
    assert evaluate("#{a in b}", {"a in b": "x"}) == "#{a in b}"


def test_else_outside_block_is_a_variable() -> None:
    assert evaluate("#{else}", {"else": "E"}) == "E"


def test_keywords_are_case_insensitive() -> None:
    assert evaluate("#{IF A}y#{ELSE}n#{/if}", {"A": "1", "ELSE": "?"}) == "y?n"
    assert evaluate("#{EACH x in L}#{x}#{/each}", {"L": "a,b"}) == "ab"
    # The name scanner only stops before a lower-case ` in ` (an Octostache quirk).
    assert evaluate("#{each x IN L}#{x}#{/each}", {"L": "a,b"}) == "#{each x IN L}#{x}#{/each}"


def test_elseif_chain() -> None:
    t = "#{if A}a#{elseif B}b#{elseif C}c#{else}d#{/if}"
    assert evaluate(t, {"A": "0", "B": "0", "C": "1"}) == "c"
    assert evaluate(t, {"A": "0", "B": "1"}) == "b"
    assert evaluate(t, {}) == "d"
