"""Did-you-mean: close names offered, far ones not, and the refusals that carry them."""

from __future__ import annotations

import click
import pytest

from cuttle.server.cli.suggest import check_known, closest, did_you_mean, missing_name


def test_a_close_name_is_offered_in_its_own_spelling() -> None:
    assert closest("prodution", ["Dev", "Production"]) == "Production"
    assert did_you_mean("Wbe", ["Web", "Api"]) == "; did you mean 'Web'?"


def test_nothing_is_offered_when_no_name_is_close() -> None:
    assert closest("zzz", ["Dev", "Production"]) is None
    assert did_you_mean("anything", []) == ""


def test_an_unknown_name_is_a_usage_error_naming_the_option() -> None:
    check_known("environment", ["dev"], ["Dev", "Test"], "--environment")
    with pytest.raises(click.BadParameter) as raised:
        check_known("environment", ["Tset"], ["Dev", "Test"], "--environment")
    text = raised.value.format_message()
    assert "environment 'Tset' does not exist; did you mean 'Test'?" in text
    with pytest.raises(click.BadParameter) as raised:
        check_known("environment", ["Dev"], [], "--environment")
    assert "there are no environments" in raised.value.format_message()


@pytest.mark.parametrize(
    ("details", "name"),
    [
        ("project 'Wbe' was not found", "Wbe"),
        ("library variable set 'Comon' was not found", "Comon"),
        ("no environment named 'Prodution'", "Prodution"),
        ("no enabled machine named web-1", "web-1"),
        ("machine 'web-1' was not found", "web-1"),
        ("space 'Defualt' was not found", "Defualt"),
        ("project 'Web' has no runbook 'Restrat' (it has: Restart)", "Restrat"),
    ],
)
def test_the_missing_name_is_read_from_the_servers_message(details: str, name: str) -> None:
    found = missing_name(details, "")
    assert found is not None
    assert found[0] == name


def test_other_messages_suggest_nothing() -> None:
    assert missing_name("task 'abc' was not found", "") is None
    assert missing_name("release 1.0 of Web is gone", "") is None
