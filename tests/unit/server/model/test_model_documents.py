"""The schemas refuse at save time what would go wrong at deploy time."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cuttle.server.model import documents as d


def _project(*variables: d.Variable) -> d.Project:
    return d.Project(name="Web", variables=list(variables))


def _value(value: str, **scope: list[str]) -> d.Variable:
    return d.Variable(name="Port", value=value, scope=d.Scope(**scope))


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            [_value("1", environments=["Dev", "Test"]), _value("2", environments=["Dev"])],
            "Variable 'Port' is ambiguous",
        ),
        (
            [_value("1", environments=["Dev"]), _value("2", environments=["dev"])],
            "two values with the same scope",
        ),
        (
            [_value("1", environments=["Dev"], channels=[]), _value("2", environments=["Dev"])],
            "two values with the same scope",
        ),
    ],
)
def test_values_that_would_tie_are_refused(values: list[d.Variable], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        _project(*values)


@pytest.mark.parametrize(
    "values",
    [
        # Disjoint environments, plus the unscoped fallback.
        [_value("1", environments=["Dev"]), _value("2", environments=["Prod"]), _value("3")],
        # A role outranks an environment: never a tie.
        [_value("1", environments=["Dev"]), _value("2", roles=["web"])],
        # Only a machine with both roles would tie; allowed, as Octopus allows it.
        [_value("1", roles=["web"]), _value("2", roles=["db"])],
        # Equal values cannot be told apart, so they do not conflict.
        [_value("1", environments=["Dev", "Test"]), _value("1", environments=["Dev"])],
    ],
)
def test_values_that_never_tie_are_accepted(values: list[d.Variable]) -> None:
    assert len(_project(*values).variables) == len(values)


def test_malformed_templates_are_refused_with_their_position() -> None:
    with pytest.raises(ValidationError, match=r"line 2, column \d+"):
        _project(d.Variable(name="Greeting", value="hello\n#{if Ready}never closed"))


def test_sensitive_values_are_not_parsed_as_templates() -> None:
    # Their text is a secret (or a ciphertext once stored): an error would quote it.
    project = _project(d.Variable(name="Password", value="p#{ss", sensitive=True))
    assert project.variables[0].sensitive
