"""Names given as filters are checked before the call: a typo must not silently match nothing.

Also: `cuttle --space` given to commands about server-wide things (machines, ad-hoc scripts)
is refused with the reason, instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

import click
from click.core import ParameterSource

from cuttle.server.cli.context import run_call
from cuttle.server.cli.suggest import check_known, document_names, names_in_every_space
from cuttle.server.domain.audit import CATEGORIES


def check_environments(ctx: click.Context, given: Iterable[str], option: str, space: str) -> None:
    """Refuse an --environment that names no environment of the space, with a close one."""
    wanted = list(given)
    if not wanted:
        return
    known = run_call(ctx, document_names(space, "environment"))
    check_known("environment", wanted, known, option)


def check_anywhere(ctx: click.Context, kind: str, given: str, option: str) -> None:
    """Refuse a filter naming a document of no space (tasks span spaces), with a close one."""
    if given:
        own_space = str((ctx.find_root().obj or {}).get("space", ""))
        known = run_call(ctx, names_in_every_space(kind, own_space))
        if known is not None:
            check_known(kind.replace("_", " "), [given], known, option)


def check_category(category: str) -> None:
    """Refuse an events --category that no event can have."""
    if category:
        check_known("category", [category], sorted(CATEGORIES), "--category")


def refuse_space(ctx: click.Context, what: str) -> None:
    """Refuse `cuttle --space X` for a command group that is not per space, saying why."""
    root = ctx.find_root()
    if root.get_parameter_source("space") == ParameterSource.COMMANDLINE:
        raise click.UsageError(
            f"{what} are server-wide, not per space: --space does not apply here (their "
            "environments, tenants and policies are those of the default space)",
            ctx=ctx,
        )
