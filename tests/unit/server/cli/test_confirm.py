"""Destructive commands: --yes goes on, no terminal refuses, a terminal asks."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cuttle.server.cli import confirm as c


def test_consequences_are_said_with_what_is_done() -> None:
    assert c.with_consequences("delete project Web", [c.count(12, "release"), ""]) == (
        "delete project Web and its 12 releases"
    )
    assert c.with_consequences("delete environment Dev", []) == "delete environment Dev"
    assert c.count(1, "release") == "its 1 release"
    assert c.count(0, "release") == ""


def test_yes_goes_on_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c, "is_interactive", lambda: False)
    c.confirm("delete project Web", ["its 2 releases"], yes=True)


def test_without_a_terminal_it_refuses_and_says_to_pass_yes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(c, "is_interactive", lambda: False)
    with pytest.raises(click.ClickException) as raised:
        c.confirm("delete project Web", ["its 2 releases"], yes=False)
    message = raised.value.format_message()
    assert "refusing to delete project Web and its 2 releases" in message
    assert "pass --yes" in message


@click.command()
@c.yes_option
def _delete(yes: bool) -> None:
    c.confirm("delete project Web", ["its 2 releases"], yes=yes)
    click.echo("deleted")


@pytest.mark.parametrize(("answer", "done"), [("y\n", True), ("n\n", False), ("\n", False)])
def test_on_a_terminal_it_asks_and_no_is_the_default(
    monkeypatch: pytest.MonkeyPatch, answer: str, done: bool
) -> None:
    monkeypatch.setattr(c, "is_interactive", lambda: True)
    result = CliRunner().invoke(_delete, [], input=answer)
    assert "Delete project Web and its 2 releases? [y/N]" in result.output
    assert ("deleted" in result.output.splitlines()) is done
    assert result.exit_code == (0 if done else 1)
