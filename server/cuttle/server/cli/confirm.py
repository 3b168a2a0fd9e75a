"""Asking before a command destroys something: on a terminal, a question; otherwise --yes.

A script that deletes must say so (`--yes`): a pipeline that happens to run without a terminal
must not delete what a person would have been asked about.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])

yes_option: Callable[[F], F] = click.option(
    "--yes",
    "-y",
    is_flag=True,
    help="Do not ask for confirmation (needed when there is no terminal to ask on).",
)


def with_consequences(what: str, consequences: Sequence[str]) -> str:
    """'delete project Web and its 12 releases, 2 runbooks' from what and what goes with it."""
    shown = [c for c in consequences if c]
    return f"{what} and {', '.join(shown)}" if shown else what


def is_interactive() -> bool:
    """Whether a person can answer a question: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm(what: str, consequences: Sequence[str] = (), *, yes: bool) -> None:
    """Go on only when --yes was given or the person at the terminal agrees; else exit 1.

    what is the action in the imperative ('delete project Web'); consequences say what else
    goes with it ('its 12 releases').
    """
    text = with_consequences(what, consequences)
    if yes:
        return
    if not is_interactive():
        raise click.ClickException(
            f"refusing to {text} without confirmation: there is no terminal to ask on, so pass "
            "--yes to confirm"
        )
    if not click.confirm(f"{text[:1].upper()}{text[1:]}?", default=False, err=True):
        raise click.ClickException("cancelled; nothing was changed")


def count(number: int, singular: str, plural: str | None = None) -> str:
    """'its 12 releases' / 'its 1 release' / '' for none."""
    if number == 0:
        return ""
    noun = singular if number == 1 else (plural or f"{singular}s")
    return f"its {number} {noun}"
