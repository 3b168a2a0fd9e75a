"""Conditionals, truthiness, comparisons, calc and run conditions."""

from __future__ import annotations

import pytest

from cuttle.protocol.variables import condition_is_true, evaluate, is_truthy


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        ("0", False),
        ("", False),
        ("false", False),
        (" FALSE ", False),
        ("No", False),
        (" 0", True),
        (" ", True),
        ("off", True),
        ("n", True),
        ("null", True),
        ("True", True),
        ("1", True),
    ],
)
def test_truthiness(value: str, truthy: bool) -> None:
    assert is_truthy(value) is truthy
    assert evaluate("#{if V}T#{else}F#{/if}", {"V": value}) == ("T" if truthy else "F")


def test_missing_in_conditions_is_empty() -> None:
    assert evaluate('#{if M == ""}eq#{/if}#{if M == N}both#{/if}#{unless M}u#{/unless}', {}) == (
        "eqbothu"
    )


def test_unquoted_right_side_is_a_variable() -> None:
    assert evaluate("#{if Count == 3}y#{else}n#{/if}", {"Count": "3"}) == "n"
    assert evaluate("#{if Count == 3}y#{else}n#{/if}", {"Count": "3", "3": "3"}) == "y"
    assert evaluate('#{if Count == \\"3\\"}y#{/if}', {"Count": "3"}) == "y"


def test_comparison_is_exact() -> None:
    v = {"A": "Prod"}
    assert evaluate('#{if A == "prod"}y#{else}n#{/if}#{if A != "prod"}!#{/if}', v) == "n!"


def test_filters_on_both_sides() -> None:
    v = {"A": "PROD", "B": "prod "}
    assert evaluate("#{if A | ToLower == B | Trim}same#{/if}", v) == "same"


def test_unless_else_and_nesting() -> None:
    t = "#{unless A}#{if B}b#{else}nb#{/if}#{else}a#{/unless}"
    assert evaluate(t, {"A": "no", "B": "0"}) == "nb"
    assert evaluate(t, {"A": "yes"}) == "a"


def test_whitespace_in_block_tags() -> None:
    assert evaluate('#{ if A  ==  "b" }y#{/if}', {"A": "b"}) == "y"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("#{calc 1 + 2 * 3}", "7"),
        ("#{calc (1 + 2) * 3}", "9"),
        ("#{calc 7 / 2}", "3.5"),
        ("#{calc 10 - 2 - 3}", "5"),
        ("#{calc X * 2}", "8"),
        ("#{calc {Max-Count}-1}", "8"),
        ("#{calc IP[Primary] + 1}", "11"),
        ("#{calc Bad + 1}", "#{Bad+1}"),
        ("#{calc Nope * 2}", "#{Nope*2}"),
        ("#{calc 0.5 * 4}", "2"),
    ],
)
def test_calc(template: str, expected: str) -> None:
    v = {"X": "4", "Max-Count": "9", "IP[Primary]": "10", "Bad": "x"}
    assert evaluate(template, v) == expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("#{Missing}", False),
        ("#{if Missing}true#{/if}", False),
        ("#{unless Missing}true#{/unless}", True),
        ("#{On} #{Missing}", False),
        ("#{Ptr}", False),
        ('#{if Env == "Prod"}true#{/if}', True),
        ("#{On}", True),
        ("#{Off}", False),
        ("False", False),
        ("anything", True),
        ("#{if X}unclosed", False),
        ("#{Loop}", False),
    ],
)
def test_condition_is_true(condition: str, expected: bool) -> None:
    v = {"On": "True", "Off": "False", "Ptr": "#{Nope}", "Env": "Prod", "Loop": "#{Loop}"}
    assert condition_is_true(condition, v) is expected
