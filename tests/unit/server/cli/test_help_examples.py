"""Every list, show and delete command says what it does and shows an example."""

from __future__ import annotations

from collections.abc import Iterator

import click

from cuttle.server.cli.admin_main import main
from cuttle.server.cli.set_keys import set_keys
from cuttle.server.model.kinds import KINDS


def _commands(group: click.Group, path: str = "cuttle") -> Iterator[tuple[str, click.Command]]:
    # list_commands first: the `cuttle` group loads the model's commands only when listed.
    group.list_commands(click.Context(group))
    for name, command in group.commands.items():
        here = f"{path} {name}"
        yield here, command
        if isinstance(command, click.Group):
            yield from _commands(command, here)


def test_every_list_show_and_delete_has_help_and_an_example() -> None:
    missing = []
    for path, command in _commands(main):
        if path.rsplit(" ", 1)[-1] not in {"list", "show", "delete", "remove"}:
            continue
        text = f"{command.help or ''}\n{command.epilog or ''}"
        if not command.help or "cuttle " not in text:
            missing.append(path)
    assert missing == []


def test_create_and_update_help_list_every_field_of_the_schema() -> None:
    ctx = click.Context(main, info_name="cuttle")
    for document_kind in KINDS:
        # get_command, not .commands: the model's commands load only when asked for.
        group = main.get_command(ctx, document_kind.name.replace("_", "-"))
        assert isinstance(group, click.Group)
        for verb in ("create", "update"):
            command = group.commands[verb]
            shown = command.get_help(click.Context(command, parent=ctx, info_name=verb))
            for field, _ in set_keys(document_kind.model):
                assert f"  {field}  " in shown, (document_kind.name, verb, field)
